"""The magics in an IPython shell: parsing, login paths, one-line errors.

Unit tests replace the session API with a small fake (``FakeAPI``) so each
path runs without a network; the devnet tests at the end of the file log in
to the real local network.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from atnb import magics, widgets
from atnb.errors import (
    AuthenticationError,
    AuthFactorTokenRequired,
    LoginPendingError,
    NetworkError,
    NotLoggedInError,
    RateLimitError,
    SessionExpiredError,
)

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "hunter2-main-password"
CODE = "ABCDE-12345"


class FakeSession:
    def __init__(self, handle="alice.test", did="did:plc:aaaa", fail=None):
        self.handle, self.did = handle, did
        self.pds_url = "http://127.0.0.1:2583"
        self.access_expires_at = dt.datetime(2026, 12, 4, 18, 30, tzinfo=dt.UTC)
        self.fail = fail
        self.calls: list[tuple] = []
        self.revoked = True

    def query(self, nsid, params=None, **kwargs):
        self.calls.append(("query", nsid, params))
        if self.fail:
            raise self.fail
        return {"nsid": nsid, "params": params}

    def procedure(self, nsid, data=None, **kwargs):
        self.calls.append(("procedure", nsid, data, kwargs.get("params")))
        if self.fail:
            raise self.fail
        return {"uri": "at://did:plc:aaaa/app.bsky.feed.post/1"}

    def logout(self):
        self.calls.append(("logout",))
        return self.revoked

    def refresh(self):
        # After 18:30 UTC the fixed expiry above has passed: %atlogin and
        # %atwhoami then refresh, which must not fail the test.
        self.calls.append(("refresh",))


class FakeAPI:
    """Stands in for atnb.session: current_session, resume, login."""

    def __init__(self):
        self.current = None
        self.stored = None
        self.login_outcomes: list = []
        self.logins: list[dict] = []
        self.resumes: list = []

    def current_session(self):
        return self.current

    def resume(self, account=None, *, store=None):
        self.resumes.append((account, store))
        if isinstance(self.stored, BaseException):
            raise self.stored
        if self.stored is None:
            raise NotLoggedInError("No stored session")
        self.current = self.stored
        return self.stored

    def login(self, identifier, password, **kwargs):
        self.logins.append({"identifier": identifier, "password": password, **kwargs})
        outcome = self.login_outcomes.pop(0) if self.login_outcomes else FakeSession()
        if isinstance(outcome, BaseException):
            raise outcome
        self.current = outcome
        return outcome


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "atnb")
    magics.register(sh)  # again, in case an earlier test unloaded it
    yield sh
    for form in list(widgets._waiting):
        form.close()
    widgets._last_seen.clear()


@pytest.fixture
def api(monkeypatch):
    fake = FakeAPI()
    monkeypatch.setattr(magics, "_session_api", lambda: fake)
    for name in ("ATNB_IDENTIFIER", "ATNB_PASSWORD", "ATNB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    return fake


@pytest.fixture
def frames(monkeypatch):
    calls = []

    def frame(nsid, params, **kwargs):
        calls.append((nsid, params, kwargs))
        return SimpleNamespace(shape=(3, 2), nsid=nsid)

    monkeypatch.setattr(magics, "_frame", lambda: frame)
    return calls


def run(shell, capsys, source):
    """Run a cell; return (result, stdout+stderr)."""
    result = shell.run_cell(source)
    out = capsys.readouterr()
    return result, out.out + out.err


# -- %atlogin ------------------------------------------------------------------


def test_atlogin_resumes_a_stored_session_without_login(shell, api, capsys):
    api.stored = FakeSession()
    result, out = run(shell, capsys, "%atlogin alice.test --store memory")

    assert result.success
    assert api.logins == []
    assert api.resumes == [("alice.test", "memory")]
    assert "@alice.test" in out and "resumed" in out


def test_atlogin_again_reuses_the_current_session(shell, api, capsys):
    api.current = FakeSession()
    run(shell, capsys, "%atlogin")
    run(shell, capsys, "%atlogin @Alice.Test")
    assert api.logins == [] and api.resumes == []


def test_atlogin_prompts_in_a_terminal_then_asks_for_the_code(
    shell, api, capsys, monkeypatch
):
    asked = []
    monkeypatch.setattr(
        "builtins.input", lambda prompt: asked.append(prompt) or "alice.test"
    )
    answers = iter([PASSWORD, CODE])
    monkeypatch.setattr(
        "getpass.getpass", lambda prompt: asked.append(prompt) or next(answers)
    )
    api.login_outcomes = [
        AuthFactorTokenRequired("code sent", status=401),
        FakeSession(),
    ]

    result, out = run(shell, capsys, "%atlogin --service http://127.0.0.1:9")

    assert result.success, out
    assert [c.get("auth_factor_token") for c in api.logins] == [None, CODE]
    assert {c["service"] for c in api.logins} == {"http://127.0.0.1:9"}
    assert "app password is recommended" in asked[1]
    assert "Sign-in code" in asked[2]
    assert "Logged in as @alice.test" in out
    assert PASSWORD not in out and CODE not in out


def test_atlogin_prompt_without_stdin_is_one_line(shell, api, capsys, monkeypatch):
    from IPython.core.error import StdinNotImplementedError

    def no_stdin(prompt):
        raise StdinNotImplementedError("raw_input was called")

    monkeypatch.setattr("getpass.getpass", no_stdin)
    result, out = run(shell, capsys, "%atlogin alice.test --prompt")

    assert not result.success
    assert out.strip().count("\n") == 0
    assert "ATNB_IDENTIFIER" in out


def test_atlogin_prompt_without_a_tty_reads_no_echoed_password(
    shell, api, capsys, monkeypatch
):
    import getpass
    import warnings

    read = []

    def echoing(prompt):  # what getpass does when there is no terminal
        warnings.warn("No echo control.", getpass.GetPassWarning, stacklevel=2)
        read.append(prompt)
        return "%atwhoami"

    monkeypatch.setattr("getpass.getpass", echoing)
    result, out = run(shell, capsys, "%atlogin alice.test --prompt")

    assert not result.success
    assert read == []  # refused before a line of the script was taken
    assert out.strip().count("\n") == 0
    assert "ATNB_IDENTIFIER" in out


def test_atlogin_from_environment_wins(shell, api, capsys, monkeypatch):
    monkeypatch.setenv("ATNB_IDENTIFIER", "bot.test")
    monkeypatch.setenv("ATNB_PASSWORD", PASSWORD)
    monkeypatch.setenv("ATNB_SERVICE", "http://127.0.0.1:7")
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)

    result, out = run(shell, capsys, "%atlogin alice.test --service http://x.test")

    assert result.success
    assert api.logins[0]["identifier"] == "bot.test"
    assert api.logins[0]["password"] == PASSWORD
    assert api.logins[0]["service"] == "http://127.0.0.1:7"
    assert widgets.pending_form() is None
    assert PASSWORD not in out


def test_atlogin_identifier_alone_from_environment_fills_the_form(
    shell, api, capsys, monkeypatch
):
    monkeypatch.setenv("ATNB_IDENTIFIER", "bot.test")
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    run(shell, capsys, "%atlogin")
    assert widgets.pending_form().identifier.value == "bot.test"
    assert api.logins == []


def test_atlogin_from_environment_with_code_needed_says_use_app_password(
    shell, api, capsys, monkeypatch
):
    monkeypatch.setenv("ATNB_IDENTIFIER", "bot.test")
    monkeypatch.setenv("ATNB_PASSWORD", PASSWORD)
    api.login_outcomes = [AuthFactorTokenRequired("code sent", status=401)]

    result, out = run(shell, capsys, "%atlogin")

    assert not result.success
    assert out.strip().count("\n") == 0
    assert "app password in ATNB_PASSWORD" in out


@pytest.mark.parametrize(
    "error",
    [
        AuthenticationError("Invalid identifier or password", status=401),
        NetworkError("connection refused"),
        RateLimitError("slow down", status=429, headers={"ratelimit-reset": "0"}),
    ],
)
def test_atlogin_errors_are_one_line_and_fail_the_cell(
    shell, api, capsys, monkeypatch, error
):
    monkeypatch.setattr("builtins.input", lambda prompt: "alice.test")
    monkeypatch.setattr("getpass.getpass", lambda prompt: PASSWORD)
    api.login_outcomes = [error]

    result, out = run(shell, capsys, "%atlogin")

    assert isinstance(result.error_in_exec, type(error))
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(type(error).__name__)
    assert "Traceback" not in out and PASSWORD not in out


def test_atlogin_in_a_kernel_shows_the_form_and_blocks_nothing(
    shell, api, capsys, monkeypatch
):
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    result, out = run(shell, capsys, "%atlogin alice.test")

    form = widgets.pending_form()
    assert result.success and form is not None
    assert form.identifier.value == "alice.test"
    assert "atnb login form" in out  # the text/plain fallback

    result, out = run(shell, capsys, "%xrpc app.bsky.actor.getProfile actor=a.test")
    assert isinstance(result.error_in_exec, LoginPendingError)
    assert out.strip() == (
        "LoginPendingError: A login form is waiting for you. "
        "Finish the login form above, then run this again."
    )

    # A second %atlogin replaces the first form instead of stacking them.
    run(shell, capsys, "%atlogin alice.test")
    assert widgets.pending_form() is not form and not form.waiting


def test_python_calls_while_the_form_waits_say_finish_the_form(
    shell, api, capsys, monkeypatch
):
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    run(shell, capsys, "%atlogin alice.test")

    shell.user_ns["NotLoggedInError"] = NotLoggedInError
    _, out = run(shell, capsys, "raise NotLoggedInError('Not logged in')")
    assert out.strip().startswith("LoginPendingError: ")
    assert "Finish the login form above" in out


def test_expired_session_says_so_once_and_offers_the_form(
    shell, api, capsys, monkeypatch, frames
):
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    ended = SessionExpiredError("The session for @alice.test ended (refresh rejected)")
    api.current = FakeSession(fail=ended)

    result, out = run(shell, capsys, "%xrpc app.bsky.actor.getProfile actor=a --raw")

    assert isinstance(result.error_in_exec, SessionExpiredError)
    assert "SessionExpiredError: The session for @alice.test ended" in out
    form = widgets.pending_form()
    assert form is not None and form.identifier.value == "alice.test"
    assert "The session ended" in form.status_text

    # The next call does not offer a second form: it points at the first.
    api.current = None
    result, out = run(shell, capsys, "%atwhoami")
    assert isinstance(result.error_in_exec, LoginPendingError)
    assert len(widgets._waiting) == 1


def test_expired_session_from_python_offers_the_form(shell, api, capsys, monkeypatch):
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    widgets._last_seen["handle"] = "carol.test"
    shell.user_ns["SessionExpiredError"] = SessionExpiredError

    _, out = run(shell, capsys, "raise SessionExpiredError('refresh rejected')")

    assert out.strip().splitlines()[-1].startswith("SessionExpiredError: refresh")
    assert "Traceback" not in out
    assert widgets.pending_form().identifier.value == "carol.test"


def test_atlogin_after_the_stored_session_ended_fills_the_identifier(
    shell, api, capsys, monkeypatch
):
    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    api.stored = SessionExpiredError("ended")
    widgets._last_seen["handle"] = "alice.test"

    result, _ = run(shell, capsys, "%atlogin")

    form = widgets.pending_form()
    assert result.success
    assert form.identifier.value == "alice.test"
    assert "log in again" in form.status_text


# -- %atlogout, %atwhoami --------------------------------------------------------


def test_atlogout_says_whether_the_server_confirmed(shell, api, capsys):
    api.current = FakeSession()
    _, out = run(shell, capsys, "%atlogout")
    assert "the server revoked the session" in out

    api.current = FakeSession()
    api.current.revoked = False
    _, out = run(shell, capsys, "%atlogout")
    assert "did not confirm the revoke" in out

    api.current = None
    _, out = run(shell, capsys, "%atlogout")
    assert "Not logged in" in out


def test_atwhoami(shell, api, capsys):
    result, out = run(shell, capsys, "%atwhoami")
    assert isinstance(result.error_in_exec, NotLoggedInError)
    assert out.strip().startswith("NotLoggedInError: Not logged in")
    assert "%atlogin" in out

    api.stored = FakeSession()
    _, out = run(shell, capsys, "%atwhoami")
    assert "@alice.test (did:plc:aaaa) on http://127.0.0.1:2583" in out
    assert "2026-12-04 18:30 UTC" in out


# -- %xrpc, %%xrpc ---------------------------------------------------------------


def test_xrpc_parses_shell_quoting_flags_and_lists(shell, api, capsys, frames):
    api.current = FakeSession()
    result, out = run(
        shell,
        capsys,
        '%xrpc app.bsky.feed.searchPosts q="climate policy" --max 50 '
        "tag=a tag=b -o posts",
    )

    assert result.success, out
    nsid, params, kwargs = frames[0]
    assert nsid == "app.bsky.feed.searchPosts"
    assert params == {"q": "climate policy", "tag": ["a", "b"]}
    assert kwargs == {"session": api.current, "all_pages": True, "max_items": 50}
    assert shell.user_ns["posts"].nsid == nsid
    assert out.strip() == "posts: 3 rows × 2 columns"


def test_xrpc_returns_the_frame_and_raw_json(shell, api, capsys, frames):
    api.current = FakeSession()
    result, _ = run(shell, capsys, "%xrpc app.bsky.actor.getProfile actor=a.test")
    assert result.result.shape == (3, 2)
    assert frames[0][2]["all_pages"] is False

    result, _ = run(shell, capsys, "%xrpc app.bsky.actor.getProfile actor=a.test --raw")
    assert result.result == {
        "nsid": "app.bsky.actor.getProfile",
        "params": {"actor": "a.test"},
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("%xrpc app.bsky.feed.searchPosts climate", "expected key=value"),
        ('%xrpc app.bsky.feed.searchPosts q="climate', "close the quote"),
        ("%xrpc app.bsky.feed.searchPosts q=a --raw --all", "--raw returns one"),
        ("%xrpc app.bsky.feed.searchPosts q=a -o 2x", "variable name"),
        ("%xrpc app.bsky.feed.searchPosts q=a --max many", "invalid int"),
        ("%atlogin --store vault", "invalid choice"),
    ],
)
def test_usage_errors_are_one_line(shell, api, capsys, frames, line, expected):
    api.current = FakeSession()
    result, out = run(shell, capsys, line)
    assert not result.success
    assert expected in out
    assert len(out.strip().splitlines()) == 1, out
    assert frames == []


def test_xrpc_server_errors_are_one_line(shell, api, capsys):
    api.current = FakeSession(
        fail=RateLimitError(
            "Rate Limit Exceeded",
            status=429,
            error="RateLimitExceeded",
            nsid="app.bsky.feed.searchPosts",
            headers={"ratelimit-reset": "1726684000"},
        )
    )
    result, out = run(shell, capsys, "%xrpc app.bsky.feed.searchPosts q=x --raw")
    assert isinstance(result.error_in_exec, RateLimitError)
    assert len(out.strip().splitlines()) == 1
    assert "Wait until 2024-09-18 18:26:40 UTC" in out


def test_xrpc_keeps_the_rows_of_a_pull_that_failed(shell, api, capsys, monkeypatch):
    api.current = FakeSession()
    stop = RateLimitError(
        "Rate Limit Exceeded",
        status=429,
        error="RateLimitExceeded",
        headers={"ratelimit-reset": "1726684000"},
    )
    stop.frame = ["row"] * 120

    def frame(nsid, params, **kwargs):
        raise stop

    monkeypatch.setattr(magics, "_frame", lambda: frame)
    result, out = run(
        shell, capsys, "%xrpc app.bsky.feed.searchPosts q=x --all -o posts"
    )

    assert isinstance(result.error_in_exec, RateLimitError)
    assert len(shell.user_ns["posts"]) == 120
    (line,) = out.strip().splitlines()
    assert "(120 rows fetched before it are in posts)" in line
    assert line.endswith("Wait until 2024-09-18 18:26:40 UTC, then try again.")


def test_cell_xrpc_sends_the_json_body(shell, api, capsys):
    api.current = FakeSession()
    body = {"repo": "alice.test", "collection": "app.bsky.feed.post"}
    result, out = run(
        shell,
        capsys,
        "%%xrpc com.atproto.repo.createRecord -o created\n" + json.dumps(body),
    )
    assert result.success, out
    assert api.current.calls == [
        ("procedure", "com.atproto.repo.createRecord", body, None)
    ]
    assert shell.user_ns["created"]["uri"].startswith("at://")

    result, out = run(shell, capsys, "%%xrpc com.atproto.repo.createRecord\n{oops")
    assert "not valid JSON (line 1 column 2" in out
    assert len(out.strip().splitlines()) == 1


def test_help_puts_usage_first(shell):
    for name, kind in [
        ("atlogin", "line"),
        ("atlogout", "line"),
        ("atwhoami", "line"),
        ("xrpc", "line"),
        ("xrpc", "cell"),
    ]:
        doc = shell.magics_manager.magics[kind][name].__doc__
        prefix = "%%" if kind == "cell" else "%"
        assert doc.lstrip(": \n").startswith(f"{prefix}{name}"), doc


# -- import cost -----------------------------------------------------------------

HEAVY = ["requests", "pandas", "keyring", "dns", "pyarrow", "ipywidgets", "IPython"]


def loaded_in_a_fresh_process(code: str, modules: list[str]) -> str:
    """Run ``code`` in a new interpreter; which of ``modules`` it imported."""
    code += f"\nimport sys; print([m for m in {modules!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return out.stdout.strip()


def test_import_atnb_loads_nothing_heavy():
    assert loaded_in_a_fresh_process("import atnb", HEAVY) == "[]"


def test_load_ext_loads_no_widgets_requests_or_pandas():
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "InteractiveShell.instance().run_line_magic('load_ext', 'atnb')"
    )
    assert loaded_in_a_fresh_process(code, HEAVY[:-1]) == "[]"
