"""Trying to break the notebook surface, as each of the four users would.

Each test names a hole that was found by typing what a user types: a plain
``http://`` service, a bad NSID, a wrong sign-in code, a form closed with a
password in it, ``%unload_ext``. The unit tests use the fake session API of
tests/test_magics.py; the ``devnet`` ones log in to the local network and
count what reached its front. Holes of the form alone are tested in
tests/test_widgets.py, and the saved notebook after a wrong code in
tests/test_notebooks_kernel.py.
"""

from __future__ import annotations

import time

import pytest

from atnb import _magic_login, magics, widgets
from atnb.errors import (
    AuthFactorTokenRequired,
    InsecureServiceError,
    InvalidNSIDError,
    NetworkError,
    NotLoggedInError,
    ResolutionError,
    SessionExpiredError,
)
from tests import test_magics, test_magics_devnet
from tests.test_magics import CODE, PASSWORD, FakeSession, run
from tests.test_widgets import all_widget_state, make_form

# The shell with atnb loaded, the fake session API, the stub frame(), and the
# shell with the real API on the devnet: the same fixtures as the magic tests.
shell, api, frames = test_magics.shell, test_magics.api, test_magics.frames
real = test_magics_devnet.real

WRONG_CODE = "ZZZZZ-00000"


def no_questions(monkeypatch) -> None:
    def refuse(prompt=""):
        raise AssertionError(f"asked {prompt!r}")

    monkeypatch.setattr("builtins.input", refuse)
    monkeypatch.setattr("getpass.getpass", refuse)


def one_line(out: str) -> str:
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "Traceback" not in out
    return lines[0]


# -- %atlogin --------------------------------------------------------------------


@pytest.mark.parametrize("in_kernel", [False, True])
@pytest.mark.parametrize("where", ["line", "environment"])
def test_plain_http_service_is_refused_before_anything_is_asked(
    shell, api, capsys, monkeypatch, in_kernel, where
):
    # Hole: the terminal asked for the handle and password first, and a
    # kernel showed the form; the refusal came only after the password.
    no_questions(monkeypatch)
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: in_kernel)
    line = "%atlogin alice.test"
    if where == "line":
        line += " --service http://example.com"
    else:
        monkeypatch.setenv("ATNB_SERVICE", "http://example.com")

    result, out = run(shell, capsys, line)

    assert isinstance(result.error_in_exec, InsecureServiceError)
    assert one_line(out).startswith("InsecureServiceError: Refusing http://example.com")
    assert out.strip().endswith("allowed only for localhost).")
    assert api.logins == [] and api.resumes == []
    assert widgets.pending_form() is None


@pytest.mark.parametrize(
    "line",
    [
        "%atlogin alice.test hunter2-typed",
        "%atlogin alice.test --password hunter2-typed",
    ],
)
def test_a_password_typed_on_the_line_is_not_repeated(shell, api, capsys, line):
    # Hole: "unrecognized arguments: <password>" copied it into the output.
    result, out = run(shell, capsys, line)
    assert not result.success
    assert "hunter2-typed" not in out
    assert "the password is asked for, never typed on the line" in one_line(out)
    assert api.logins == [] and api.resumes == []


@pytest.mark.parametrize("in_kernel", [False, True])
def test_a_malformed_identifier_is_refused_before_the_password(
    shell, api, capsys, monkeypatch, in_kernel
):
    # Hole: the password was asked for, then the handle was refused.
    no_questions(monkeypatch)
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: in_kernel)
    _, out = run(shell, capsys, "%atlogin Hunter2Pass!")
    assert one_line(out).startswith("InvalidHandleError: The identifier is not")
    assert "Hunter2Pass" not in out
    assert api.logins == [] and widgets.pending_form() is None


def test_a_later_atlogin_closes_the_form_left_waiting(shell, api, capsys, monkeypatch):
    # Hole: after %atlogin --prompt (or ATNB_*) logged in, the first form kept
    # waiting; once that session ended, every call pointed at the stale form.
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    run(shell, capsys, "%atlogin alice.test")
    form = widgets.pending_form()
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    result, out = run(shell, capsys, "%atlogin alice.test --prompt")
    assert result.success, out
    assert not form.waiting and widgets.pending_form() is None
    assert "later %atlogin" in form.status_text


def test_prompt_asks_the_code_again_after_a_wrong_one(shell, api, capsys, monkeypatch):
    asked = []
    answers = iter([PASSWORD, WRONG_CODE, CODE])
    monkeypatch.setattr(
        "getpass.getpass", lambda prompt: asked.append(prompt) or next(answers)
    )
    api.login_outcomes = [
        AuthFactorTokenRequired("A sign in code has been sent", status=401),
        AuthFactorTokenRequired("Invalid sign in code", status=401),
        FakeSession(),
    ]

    result, out = run(shell, capsys, "%atlogin alice.test --prompt")

    assert result.success, out
    assert [c["auth_factor_token"] for c in api.logins] == [None, WRONG_CODE, CODE]
    assert asked[2].startswith("That code was not accepted")
    assert "Logged in as @alice.test" in out
    assert not [s for s in (PASSWORD, CODE, WRONG_CODE) if s in out]


def test_prompt_stops_after_a_few_wrong_codes(shell, api, capsys, monkeypatch):
    monkeypatch.setattr("getpass.getpass", lambda prompt: WRONG_CODE)
    api.login_outcomes = [AuthFactorTokenRequired("no", status=401)] * 10

    result, out = run(shell, capsys, "%atlogin alice.test --prompt")

    assert not result.success
    assert len(api.logins) == 1 + _magic_login.MAX_CODE_TRIES
    line = one_line(out)
    assert "not accepted 3 times" in line and line.endswith("emails a new code.")


@pytest.mark.parametrize(
    ("answers", "expected"),
    [(["", PASSWORD], "No handle entered"), (["alice.test", ""], "No password")],
)
def test_prompt_with_nothing_typed_sends_nothing(
    shell, api, capsys, monkeypatch, answers, expected
):
    monkeypatch.setattr("builtins.input", lambda prompt: answers[0])
    monkeypatch.setattr("getpass.getpass", lambda prompt: answers[1])
    result, out = run(shell, capsys, "%atlogin --prompt")
    assert not result.success
    assert one_line(out).startswith(f"AtnbError: {expected}")
    assert "%atlogin" in out
    assert api.logins == []


def test_prompt_offers_the_last_identity(shell, api, capsys, monkeypatch):
    # Hole: after a session ended, the terminal asked for the handle afresh.
    widgets._last_seen["handle"] = "alice.test"
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "")
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    result, out = run(shell, capsys, "%atlogin --prompt")
    assert result.success, out
    assert asked == ["Handle, DID or email [alice.test]: "]
    assert api.logins[0]["identifier"] == "alice.test"


def test_a_new_form_is_filled_with_the_last_identity(shell, api, capsys, monkeypatch):
    # Hole: %atlogin after the session ended under the user showed an empty form.
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    widgets._last_seen.update(handle="alice.test", store="file")
    run(shell, capsys, "%atlogin")
    form = widgets.pending_form()
    assert form.identifier.value == "alice.test"
    assert form.store == "file"


def test_form_offered_again_keeps_the_store(shell, monkeypatch):
    # Hole: the form offered after an ending logged in to the default store.
    widgets.remember(FakeSession())
    widgets._last_seen["store"] = "file"
    form = widgets.offer_again(SessionExpiredError("ended"))
    assert form.store == "file" and form.identifier.value == "alice.test"
    assert widgets.offer_again(SessionExpiredError("ended")) is None  # once


@pytest.mark.parametrize(
    ("error", "in_magic", "in_form"),
    [
        # Hole: %atlogin and the form told a notebook user to "pass service=".
        (
            ResolutionError("could not resolve alice.test"),
            "--service and your PDS URL.",
            "%atlogin <handle> --service URL.",
        ),
        # Hole: a failed login said "the session was kept" (there was none).
        (
            NetworkError("could not reach 127.0.0.1:9"),
            "service URL, then run %atlogin again.",
            "then press Log in again.",
        ),
    ],
)
def test_login_failures_name_the_next_step_in_notebook_words(
    shell, api, capsys, monkeypatch, error, in_magic, in_form
):
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    api.login_outcomes = [error]
    _, out = run(shell, capsys, "%atlogin alice.test")
    assert one_line(out).endswith(in_magic)
    assert "service=" not in out and "session was kept" not in out

    form, _ = make_form(type(error)(error.message))
    form.identifier.value, form.password.value = "alice.test", PASSWORD
    form.submit()
    assert form.status_text.endswith(in_form)


def test_atlogout_twice_and_whoami_when_logged_out(shell, api, capsys):
    api.current = FakeSession()
    _, out = run(shell, capsys, "%atlogout")
    assert "revoked" in out
    api.current = None
    for _ in range(2):
        result, out = run(shell, capsys, "%atlogout")
        assert result.success and out.strip() == "Not logged in; nothing to log out."
    result, out = run(shell, capsys, "%atwhoami")
    assert one_line(out).endswith("Log in with %atlogin or atnb.login().")


# -- %xrpc, %%xrpc ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%xrpc", "%xrpc needs an NSID, e.g. %xrpc app.bsky"),
        ("%%xrpc\n{}", "%%xrpc needs an NSID"),
        ("%xrpc app.bsky.feed.searchPosts q=x --max 0", "--max needs a positive"),
        ("%xrpc app.bsky.feed.searchPosts q=x --max -5", "--max needs a positive"),
        ("%xrpc app.bsky.feed.searchPosts q=x -o class", "-o needs a Python variable"),
        ("%xrpc app.bsky.feed.searchPosts --bogus", "see %xrpc? for the usage"),
        ("%atlogin --store bogus", "see %atlogin? for the usage"),
        ("%%xrpc com.atproto.repo.createRecord --raw\n{}", "see %%xrpc? for"),
        ("%%xrpc com.atproto.repo.createRecord\n[1]", "must be a JSON object"),
        ('%%xrpc com.atproto.repo.createRecord\n"x"', "must be a JSON object"),
    ],
)
def test_usage_mistakes_are_one_line_and_send_nothing(
    shell, api, capsys, frames, line, expected
):
    api.current = FakeSession()
    result, out = run(shell, capsys, line)
    assert not result.success
    assert expected in one_line(out)
    assert frames == [] and api.current.calls == []


@pytest.mark.parametrize(
    "line",
    [
        "%xrpc com.atproto.server.createSession --raw",
        '%%xrpc com.atproto.server.createSession\n{"identifier": "a", "password": "b"}',
        "%%xrpc com.atproto.server.refreshSession\n{}",
        "%%xrpc com.atproto.server.deleteSession\n{}",
    ],
)
def test_session_methods_are_refused(shell, api, capsys, line):
    # Hole: %%xrpc com.atproto.server.refreshSession printed fresh JWTs into
    # the notebook and rotated the refresh JWT behind the kept session's back.
    api.current = FakeSession()
    _, out = run(shell, capsys, line)
    assert "would put session tokens in the notebook" in one_line(out)
    assert api.current.calls == []


@pytest.mark.parametrize("logged_in", [False, True])
def test_a_bad_nsid_is_named_before_anything_else(
    shell, api, capsys, frames, logged_in
):
    # Hole: before login a bad NSID was reported as "Not logged in".
    api.current = FakeSession() if logged_in else None
    result, out = run(shell, capsys, "%xrpc app.bsky q=x")
    assert isinstance(result.error_in_exec, InvalidNSIDError)
    assert one_line(out).endswith("An NSID looks like app.bsky.feed.getAuthorFeed.")
    assert frames == [] and api.resumes == []


def test_public_reads_before_login_skip_the_session(shell, api, capsys, frames):
    # Hole: every %xrpc before login said "Not logged in", public reads too.
    result, out = run(shell, capsys, "%xrpc app.bsky.actor.getProfile actor=a.test")
    assert result.success, out
    assert frames[0][2]["session"] is None

    for nsid in ("com.atproto.repo.listRecords", "app.bsky.feed.getTimeline"):
        result, out = run(shell, capsys, f"%xrpc {nsid} repo=a.test")
        assert isinstance(result.error_in_exec, NotLoggedInError)
        assert one_line(out).startswith("NotLoggedInError: Not logged in")
    assert len(frames) == 1


def test_values_quote_as_in_a_shell(shell, api, capsys, frames):
    api.current = FakeSession()
    result, out = run(
        shell,
        capsys,
        "%xrpc app.bsky.feed.getPosts uris=at://a/1 'uris=at://b/2' "
        'q="climate policy" limit=5 includePins=true --all --max 7 -o rows',
    )
    assert result.success, out
    _, params, kwargs = frames[0]
    assert params == {
        "uris": ["at://a/1", "at://b/2"],
        "q": "climate policy",
        "limit": "5",
        "includePins": "true",
    }
    assert kwargs["all_pages"] and kwargs["max_items"] == 7


# -- load, unload, load -------------------------------------------------------------


def test_unload_removes_the_magics_and_load_brings_them_back(
    shell, api, capsys, monkeypatch
):
    # Hole: %unload_ext atnb left every magic working and a form waiting.
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    run(shell, capsys, "%atlogin alice.test")
    form = widgets.pending_form()
    form.password.value = PASSWORD

    run(shell, capsys, "%unload_ext atnb")
    result, out = run(shell, capsys, "%atwhoami")
    assert "not found" in out and not result.success
    assert not form.waiting and form.password.value == ""
    assert shell.custom_exceptions == ()

    run(shell, capsys, "%load_ext atnb")
    result, out = run(shell, capsys, "%atwhoami")
    assert isinstance(result.error_in_exec, NotLoggedInError)
    assert shell.custom_exceptions == magics._STATES


# -- against the devnet -------------------------------------------------------------


@pytest.mark.devnet
def test_devnet_refusals_send_nothing(real, front, capsys, monkeypatch):
    no_questions(monkeypatch)
    lines = [
        "%atlogin alice.test --service http://example.com",
        "%xrpc app.bsky q=x",
        "%xrpc com.atproto.repo.listRecords repo=alice.test",
        "%%xrpc com.atproto.repo.createRecord\n{oops",
    ]
    for line in lines:
        result, out = run(real, capsys, line)
        assert not result.success
        one_line(out)
    assert front.counts() == {}


@pytest.mark.devnet
def test_devnet_public_read_before_login(real, devnet, account, front, capsys):
    devnet.wait_for_indexing()
    result, out = run(
        real, capsys, f"%xrpc app.bsky.actor.getProfile actor={account.did} --raw"
    )
    assert result.success, out
    assert result.result["did"] == account.did
    assert front.counts() == {}  # straight to the AppView, not via the PDS


@pytest.mark.devnet
def test_devnet_form_wrong_code_ratelimit_drop_then_login(
    real, devnet, front, make_account, caplog
):
    caplog.set_level("DEBUG")
    person = make_account()
    devnet.enable_email_2fa(person)
    seen = len(devnet.mails(person.email))
    form = widgets.login_widget(person.handle, service=devnet.pds_url)
    secrets = [person.password]

    def check(step: str) -> None:
        assert form.password.value == "" and form.code.value == "", step
        text = all_widget_state() + form.status_text + repr(form)
        leaked = [s for s in [*secrets, "eyJ"] if s in text]
        assert not leaked, step

    for kind, expected in [
        ("ratelimit", "Wait until"),
        ("drop", "Check the connection"),
    ]:
        front.fault("com.atproto.server.createSession", kind, reset_in=30)
        form.password.value = person.password
        form.button.click()
        assert expected in form.status_text, form.status_text
        assert form.waiting
        check(kind)

    form.password.value = person.password
    form.button.click()
    assert form.code_requested
    check("code asked")
    code = test_magics_devnet.new_code(devnet, person.email, seen)
    secrets.append(code)

    form.code.value = WRONG_CODE
    form.button.click()
    assert form.status_text.startswith("That sign-in code was not accepted")
    check("wrong code")

    form.code.value = code
    form.button.click()
    assert form.session is not None, form.status_text
    check("logged in")
    assert front.count("com.atproto.server.createSession") == 5
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert not [s for s in [*secrets, WRONG_CODE, "eyJ"] if s in logs]


@pytest.mark.devnet
def test_devnet_prompt_wrong_code_then_right(
    real, devnet, front, make_account, capsys, monkeypatch
):
    person = make_account()
    devnet.enable_email_2fa(person)
    seen = len(devnet.mails(person.email))
    answers = []

    def fake_getpass(prompt):
        if prompt.startswith("Password"):
            return person.password
        if not answers:
            answers.append(WRONG_CODE)
        else:
            answers.append(test_magics_devnet.new_code(devnet, person.email, seen))
        return answers[-1]

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    line = f"%atlogin {person.handle} --prompt --service {devnet.pds_url}"
    result, out = run(real, capsys, line)

    assert result.success, out
    assert front.count("com.atproto.server.createSession") == 3
    assert not [s for s in (person.password, *answers, "eyJ") if s in out]


@pytest.mark.devnet
@pytest.mark.parametrize("store", ["file", "memory", "keyring"])
def test_devnet_stores_log_in_once_then_resume(
    real, devnet, front, account, capsys, monkeypatch, store, request
):
    if store == "keyring":
        request.getfixturevalue("real_keyring")  # gnome-keyring, not a fallback
    monkeypatch.setattr("getpass.getpass", lambda prompt: account.app_password)
    line = f"%atlogin {account.handle} --store {store} --service {devnet.pds_url}"
    result, out = run(real, capsys, line)
    assert result.success, out
    result, out = run(real, capsys, line)
    assert "resumed; no new login" in out
    assert front.count("com.atproto.server.createSession") == 1
    assert account.app_password not in out
    assert "No usable keyring" not in out
    run(real, capsys, "%atlogout")


@pytest.mark.devnet
def test_devnet_atlogin_after_inactivity_does_not_claim_a_resume(
    real, devnet, front, account, capsys, monkeypatch
):
    # Hole: %atlogin and %atwhoami said "resumed" for a session the
    # inactivity timeout had ended; the next call then failed.
    import atnb

    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    monkeypatch.setattr(atnb.session, "_current", None)  # a new kernel
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 1.0)
    time.sleep(1.5)

    result, out = run(real, capsys, "%atlogin")

    assert result.success, out
    assert "resumed" not in out
    form = widgets.pending_form()
    assert form is not None and form.identifier.value == account.handle
    assert "log in again" in form.status_text
    assert front.count("com.atproto.server.createSession") == 1


@pytest.mark.devnet
def test_devnet_python_login_then_ending_offers_the_filled_form(
    real, devnet, front, account, capsys, monkeypatch
):
    # Hole: after atnb.login() from Python (no magic, no form), the form
    # offered when the session ended had an empty identifier.
    import atnb

    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    real.user_ns["atnb"] = atnb
    session = atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    expired = devnet.mint_access_jwt(account.did, exp=time.time() - 60)
    session._set_tokens(expired, session._refresh_jwt)
    front.fault(
        "com.atproto.server.refreshSession", "error", status=400, error="ExpiredToken"
    )

    _, out = run(
        real,
        capsys,
        "atnb.current_session().query('app.bsky.actor.getProfile', {'actor': 'x'})",
    )

    assert out.strip().splitlines()[-1].startswith("SessionExpiredError: ")
    form = widgets.pending_form()
    assert form is not None and form.identifier.value == account.handle


@pytest.mark.devnet
def test_devnet_inactivity_ending_offers_the_filled_form(
    real, devnet, front, account, capsys, monkeypatch
):
    import atnb

    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    run(real, capsys, "%atwhoami")
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 1.0)
    time.sleep(1.5)

    result, out = run(real, capsys, "%xrpc com.atproto.repo.describeRepo repo=x --raw")

    assert isinstance(result.error_in_exec, SessionExpiredError)
    assert out.strip().splitlines()[-1].startswith("SessionExpiredError: The session")
    form = widgets.pending_form()
    assert form is not None and form.identifier.value == account.handle
    before = front.counts()
    for _ in range(3):  # no loop, no second form, nothing sent
        run(real, capsys, "%xrpc com.atproto.repo.describeRepo repo=x --raw")
    assert front.counts() == before and len(widgets._waiting) == 1
