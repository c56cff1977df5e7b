"""The magics against the devnet: real logins, the emailed code, errors, endings.

The shell is an IPython ``InteractiveShell`` with atnb loaded; the session
API is the real one, logging in to the local network through its front,
which counts requests per NSID and injects faults.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from atnb import magics, widgets
from atnb.errors import LoginPendingError, SessionExpiredError
from tests.test_magics import run

pytestmark = pytest.mark.devnet


@pytest.fixture
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "atnb")
    magics.register(sh)
    yield sh
    for form in list(widgets._waiting):
        form.close()
    widgets._last_seen.clear()


# -- against the devnet ----------------------------------------------------------


@pytest.fixture
def real(shell, devnet_settings, front, monkeypatch):
    """The shell with the real session API; no session left over."""
    import atnb.session
    from atnb.store import MemoryStore

    monkeypatch.setattr(atnb.session, "_current", None)
    MemoryStore.clear()
    yield shell
    monkeypatch.setattr(atnb.session, "_current", None)
    MemoryStore.clear()


def atnb_logs(caplog) -> str:
    """What atnb and the HTTP client logged (not the devnet's own mail sink)."""
    names = ("atnb", "urllib3", "requests")
    return "\n".join(
        f"{r.name} {r.getMessage()}" for r in caplog.records if r.name.startswith(names)
    )


def new_code(devnet, email: str, seen: int, timeout: float = 15.0) -> str:
    """The sign-in code in the first mail to ``email`` after the ``seen`` first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mails = devnet.mails(email)
        if len(mails) > seen:
            return re.search(r"\b([A-Z0-9]{5}-[A-Z0-9]{5})\b", mails[-1]["text"])[1]
        time.sleep(0.05)
    raise AssertionError(f"no sign-in code mailed to {email}")


def test_devnet_env_login_rerun_whoami_xrpc_logout(
    real, devnet, front, account, capsys, monkeypatch, caplog
):
    caplog.set_level("DEBUG")
    monkeypatch.setenv("ATNB_IDENTIFIER", account.handle)
    monkeypatch.setenv("ATNB_PASSWORD", account.app_password)
    monkeypatch.setenv("ATNB_SERVICE", devnet.pds_url)

    result, out = run(real, capsys, "%atlogin")
    assert result.success, out
    assert f"Logged in as @{account.handle} ({account.did}) on {devnet.pds_url}" in out

    result, out = run(real, capsys, "%atlogin")
    assert "resumed" in out
    assert front.count("com.atproto.server.createSession") == 1

    _, out = run(real, capsys, "%atwhoami")
    assert f"@{account.handle}" in out and "access token valid until" in out

    result, out = run(
        real, capsys, f"%xrpc com.atproto.repo.describeRepo repo={account.handle} --raw"
    )
    assert result.success, out
    assert result.result["did"] == account.did

    body = json.dumps(
        {
            "repo": account.did,
            "collection": "app.bsky.feed.post",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": "hello from %%xrpc",
                "createdAt": "2026-12-04T16:00:00Z",
            },
        }
    )
    result, out = run(
        real, capsys, f"%%xrpc com.atproto.repo.createRecord -o created\n{body}"
    )
    assert result.success, out
    assert real.user_ns["created"]["uri"].startswith(f"at://{account.did}/")

    result, out = run(
        real,
        capsys,
        f"%xrpc com.atproto.repo.listRecords repo={account.did} "
        'collection="app.bsky.feed.post" --all -o posts',
    )
    assert result.success, out
    assert out.strip().startswith("posts: 1 rows")

    import atnb

    shown = repr(atnb.current_session()) + str(atnb.current_session())
    _, out = run(real, capsys, "%atlogout")
    assert "the server revoked the session" in out
    assert front.count("com.atproto.server.deleteSession") == 1
    assert front.count("com.atproto.server.createSession") == 1

    leaks = [account.password, account.app_password, "eyJ"]
    text = out + atnb_logs(caplog) + repr(real.user_ns.get("created")) + shown
    assert not [s for s in leaks if s in text]


def test_devnet_prompt_with_emailed_code(
    real, devnet, front, make_account, capsys, monkeypatch, caplog
):
    caplog.set_level("DEBUG")
    person = make_account()
    devnet.enable_email_2fa(person)
    seen = len(devnet.mails(person.email))
    codes = []

    def fake_getpass(prompt):
        if prompt.startswith("Password"):
            return person.password
        codes.append(new_code(devnet, person.email, seen))
        return codes[-1]

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    result, out = run(
        real, capsys, f"%atlogin {person.handle} --service {devnet.pds_url}"
    )

    assert result.success, out
    assert f"Logged in as @{person.handle}" in out
    assert len(codes) == 1
    assert front.count("com.atproto.server.createSession") == 2
    for secret in (person.password, codes[0], "eyJ"):
        assert secret not in out + atnb_logs(caplog)


@pytest.mark.parametrize(
    ("setup", "line", "expected"),
    [
        (None, "%atlogin {handle} --prompt", "AuthenticationError: "),
        (None, "%atlogin al..ice --prompt", "InvalidHandleError: "),
        (
            ("ratelimit", {"reset_in": 30}),
            "%atlogin {handle} --prompt",
            "RateLimitError",
        ),
        (("drop", {}), "%atlogin {handle} --prompt", "NetworkError: "),
    ],
)
def test_devnet_login_errors_are_one_line(
    real, devnet, front, account, capsys, monkeypatch, setup, line, expected
):
    monkeypatch.setenv("ATNB_SERVICE", devnet.pds_url)
    monkeypatch.setattr("getpass.getpass", lambda prompt: "not-the-password")
    if setup:
        front.fault("com.atproto.server.createSession", setup[0], **setup[1])

    result, out = run(real, capsys, line.format(handle=account.handle))

    assert not result.success
    lines = out.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out
    assert "not-the-password" not in out


def test_devnet_form_logs_in_with_the_code(
    real, devnet, front, make_account, monkeypatch
):
    import ipywidgets

    person = make_account()
    devnet.enable_email_2fa(person)
    seen = len(devnet.mails(person.email))
    form = widgets.login_widget(person.handle, service=devnet.pds_url)

    form.password.value = "wrong-password"
    form.button.click()
    assert form.status_text.startswith("Wrong identifier or password")
    assert not form.code_requested

    form.password.value = person.password
    form.button.click()
    assert form.code_requested and form.password.value == ""
    code = new_code(devnet, person.email, seen)
    form.code.value = code
    form.button.click()

    assert form.session is not None, form.status_text
    assert f"@{person.handle} ({person.did})" in form.status_text
    assert front.count("com.atproto.server.createSession") == 3
    state = json.dumps(ipywidgets.Widget.get_manager_state(drop_defaults=False))
    for secret in (person.password, code, "eyJ"):
        assert secret not in state


def test_devnet_refresh_rejected_says_so_and_offers_the_form(
    real, devnet, front, account, capsys, monkeypatch
):
    import atnb

    monkeypatch.setattr(magics, "_in_kernel", lambda shell: True)
    session = atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    expired = devnet.mint_access_jwt(account.did, exp=time.time() - 60)
    session._set_tokens(expired, session._refresh_jwt)  # the access JWT ran out
    front.fault(
        "com.atproto.server.refreshSession", "error", status=400, error="ExpiredToken"
    )

    result, out = run(
        real, capsys, f"%xrpc app.bsky.actor.getProfile actor={account.did}"
    )

    assert isinstance(result.error_in_exec, SessionExpiredError)
    lines = out.strip().splitlines()
    assert lines[0].startswith("atnb login form")  # the form, as text here
    assert lines[1].startswith("SessionExpiredError: ") and len(lines) == 2
    form = widgets.pending_form()
    assert form is not None and form.identifier.value == account.handle

    # No loop: the next magic points at the form and sends nothing.
    before = front.counts()
    result, out = run(real, capsys, "%atwhoami")
    assert isinstance(result.error_in_exec, LoginPendingError)
    assert front.counts() == before

    form.password.value = account.app_password
    form.button.click()
    result, out = run(
        real, capsys, f"%xrpc app.bsky.actor.getProfile actor={account.did}"
    )
    assert result.success, out


def test_devnet_inactivity_timeout_says_so(
    real, devnet, front, account, capsys, monkeypatch
):
    import atnb

    atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 1.0)
    time.sleep(1.5)

    result, out = run(
        real, capsys, "%xrpc app.bsky.actor.getProfile actor=x.test --raw"
    )

    assert isinstance(result.error_in_exec, SessionExpiredError)
    assert out.strip().startswith("SessionExpiredError: The session of")
    assert "%atlogin" in out
    assert len(out.strip().splitlines()) == 1
