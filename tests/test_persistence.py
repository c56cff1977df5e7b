"""Sessions that survive kernel restarts, against the devnet (issue #5).

Each "kernel" is a separate Python process sharing this run's private
Secret Service (and lock folder) through its environment. The front counts
``createSession`` and ``refreshSession``; no JWT is ever printed: processes
report a short hash of a refresh JWT when tests must compare them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import atnb
import atnb.store
from atnb._storebase import MAX_ENTRY_CHARS

pytestmark = pytest.mark.devnet

CREATE = "com.atproto.server.createSession"
REFRESH = "com.atproto.server.refreshSession"
GET_SESSION = "com.atproto.server.getSession"

PREAMBLE = """
import hashlib, json, os, sys, time, warnings
import atnb, atnb.store
from atnb.devnet import Front

def tag(jwt):
    return hashlib.sha256(jwt.encode()).hexdigest()[:12] if jwt else None

def stored_tag(did):
    entry = atnb.store.get_store().load(did)
    return tag(entry["refresh_jwt"]) if entry else None

def report(**values):
    print("RESULT " + json.dumps(values), flush=True)

front = Front(os.environ["TEST_CONTROL_URL"])
service = os.environ["TEST_PDS_URL"]
handle, did = os.environ["TEST_HANDLE"], os.environ["TEST_DID"]
password = os.environ["TEST_PASSWORD"]
"""


def tag(jwt: str | None) -> str | None:
    return hashlib.sha256(jwt.encode()).hexdigest()[:12] if jwt else None


@pytest.fixture
def kernel_env(devnet, devnet_env: dict, real_keyring: dict, monkeypatch) -> dict:
    """What every "kernel" gets: the shared keyring and devnet URLs."""
    monkeypatch.setattr(atnb.settings, "store", "keyring")
    return {
        **devnet_env,
        **real_keyring,
        "ATNB_STORE": "keyring",
        "TEST_CONTROL_URL": devnet.info["control_url"],
        "TEST_PDS_URL": devnet.pds_url,
    }


@pytest.fixture
def user(devnet, kernel_env: dict) -> dict:
    """A fresh account; its secrets only in the environment of the kernels."""
    account = devnet.create_account()
    devnet.front.reset()
    kernel_env.update(
        TEST_HANDLE=account.handle, TEST_DID=account.did, TEST_PASSWORD=account.password
    )
    return {"handle": account.handle, "did": account.did, "password": account.password}


def stored_secrets(did: str) -> tuple[str, ...]:
    entry = atnb.store.get_store("keyring").load(did) or {}
    return tuple(entry[k] for k in ("access_jwt", "refresh_jwt") if entry.get(k))


def assert_no_secret(result: dict, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in result["output"]


def start_kernel(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", PREAMBLE + textwrap.dedent(code)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    results = [line[7:] for line in out.splitlines() if line.startswith("RESULT ")]
    assert results, f"no result; stderr: {err[-2000:]}"
    return {**json.loads(results[-1]), "stderr": err, "output": out + err}


def kernel(code: str, env: dict) -> dict:
    return finish(start_kernel(code, env))


def expire_stored_access(devnet, did: str) -> str:
    """Put an expired (but validly signed) access JWT into the stored entry."""
    store = atnb.store.get_store("keyring")
    entry = store.load(did)
    assert entry is not None
    exp = int(time.time()) - 60
    entry.update(access_jwt=devnet.mint_access_jwt(did, exp=exp), access_exp=exp)
    store.save(did, entry)
    return tag(entry["refresh_jwt"])


def test_store_and_resume_across_processes_one_create_session(
    devnet, user: dict, kernel_env: dict
) -> None:
    """C07: login once; a new kernel resumes; a second login cell resumes too."""
    first = kernel(
        """
        session = atnb.login(handle, password, service=service)
        view = session.query("com.atproto.server.getSession")
        report(did=view["did"], store=session.store.name)
        """,
        kernel_env,
    )
    assert first["did"] == user["did"] and first["store"] == "keyring"
    assert_no_secret(first, (user["password"], *stored_secrets(user["did"])))

    again = kernel(
        """
        session = atnb.resume()
        view = session.query("com.atproto.server.getSession")
        by_handle = atnb.resume(handle).did
        relogin = atnb.login(handle, "not-the-password", service=service)
        view2 = relogin.query("com.atproto.server.getSession")
        report(did=view["did"], by_handle=by_handle, relogin=view2["did"],
               accounts=atnb.accounts())
        """,
        kernel_env,
    )
    assert again["did"] == again["by_handle"] == again["relogin"] == user["did"]
    (row,) = again["accounts"]
    assert row["handle"] == user["handle"] and row["current"] is True
    assert set(row) == {"handle", "did", "pds_url", "current", "last_used"}

    counts = devnet.front.counts()
    assert counts.get(CREATE, 0) == 1
    assert counts.get(REFRESH, 0) == 0
    assert counts.get(GET_SESSION, 0) == 3  # one in the first kernel, two here


def test_real_entry_is_small(devnet, user: dict, kernel_env: dict, capsys) -> None:
    """Measure a stored entry holding two real devnet JWTs."""
    import keyring

    kernel("atnb.login(handle, password, service=service); report()", kernel_env)
    raw = keyring.get_password(atnb.store.SERVICE, user["did"])
    entry = json.loads(raw)
    sizes = {
        "entry_chars": len(raw),
        "entry_utf16_bytes": len(raw.encode("utf-16-le")),
        "access_jwt_chars": len(entry["access_jwt"]),
        "refresh_jwt_chars": len(entry["refresh_jwt"]),
        "index_chars": len(keyring.get_password(atnb.store.SERVICE, "index")),
    }
    with capsys.disabled():
        print(f"\nreal stored entry: {sizes}")
    assert sizes["entry_chars"] < MAX_ENTRY_CHARS
    assert sizes["entry_utf16_bytes"] < 2560  # Windows' CRED_MAX_CREDENTIAL_BLOB_SIZE


def test_two_processes_refresh_the_same_expired_session_once(
    devnet, user: dict, kernel_env: dict, tmp_path: Path
) -> None:
    kernel("atnb.login(handle, password, service=service); report()", kernel_env)
    old = expire_stored_access(devnet, user["did"])
    devnet.front.reset()
    devnet.front.configure(reject_rotated=True)  # a second spend would fail
    devnet.front.fault(REFRESH, "delay", delay_ms=700)  # the other one must wait

    go = tmp_path / "go"
    code = f"""
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        session = atnb.resume()
        first = session.query("com.atproto.server.getSession")["did"]
        second = session.query("com.atproto.server.getSession")["did"]
        report(first=first, second=second, stored=stored_tag(did))
    """
    procs = [start_kernel(code, kernel_env) for _ in range(2)]
    time.sleep(0.5)  # both are waiting on the go file
    go.touch()
    results = [finish(p) for p in procs]

    counts = devnet.front.counts()
    assert counts.get(REFRESH, 0) == 1, counts
    assert counts.get(CREATE, 0) == 0
    new = tag(atnb.store.get_store("keyring").load(user["did"])["refresh_jwt"])
    assert new != old
    for result in results:
        assert result["first"] == result["second"] == user["did"]
        assert result["stored"] == new


def test_c01_store_follows_refresh_with_rotated_jwt_rejected_at_once(
    devnet, user: dict, kernel_env: dict
) -> None:
    devnet.front.configure(reject_rotated=True)
    first = kernel(
        """
        session = atnb.login(handle, password, service=service)
        one = stored_tag(did)
        seen = []
        session.on("update", lambda event, s: seen.append(stored_tag(did)))
        front.fault("com.atproto.server.getSession", "error", status=400,
                    error="ExpiredToken", message="Token has expired")
        view = session.query("com.atproto.server.getSession")
        report(did=view["did"], one=one, seen=seen, two=stored_tag(did))
        """,
        kernel_env,
    )
    assert first["did"] == user["did"]
    assert first["two"] != first["one"]
    assert first["seen"] == [first["two"]]  # stored before anyone heard of it
    assert_no_secret(first, (user["password"], *stored_secrets(user["did"])))
    assert devnet.front.count(REFRESH) == 1

    two = expire_stored_access(devnet, user["did"])  # the restarted kernel must refresh
    assert two == first["two"]
    second = kernel(
        """
        session = atnb.resume()
        view = session.query("com.atproto.server.getSession")
        report(did=view["did"], three=stored_tag(did))
        """,
        kernel_env,
    )
    assert second["did"] == user["did"]
    assert second["three"] not in (first["one"], first["two"])

    counts = devnet.front.counts()
    assert counts.get(CREATE, 0) == 1
    assert counts.get(REFRESH, 0) == 2


def test_c01_the_front_really_rejects_a_spent_refresh_jwt(devnet, user, kernel_env):
    """The fault C01 needs is real: a spent refresh JWT fails at once."""
    done = kernel(
        """
        import requests
        session = atnb.login(handle, password, service=service)
        spent = atnb.store.get_store().load(did)["refresh_jwt"]
        session.refresh()
        answer = requests.post(
            service + "/xrpc/com.atproto.server.refreshSession",
            headers={"Authorization": "Bearer " + spent}, timeout=30)
        report(status=answer.status_code, error=answer.json().get("error"),
               view=session.query("com.atproto.server.getSession")["did"])
        """,
        kernel_env,
    )
    assert done["status"] == 200  # the grace period of the reference PDS
    devnet.front.configure(reject_rotated=True)
    done = kernel(
        """
        import requests
        session = atnb.resume()
        spent = atnb.store.get_store().load(did)["refresh_jwt"]
        session.refresh()
        answer = requests.post(
            service + "/xrpc/com.atproto.server.refreshSession",
            headers={"Authorization": "Bearer " + spent}, timeout=30)
        report(status=answer.status_code, error=answer.json().get("error"))
        """,
        kernel_env,
    )
    assert (done["status"], done["error"]) == (400, "ExpiredToken")


def test_logout_and_expired_delete_the_entry(devnet, user, kernel_env) -> None:
    out = kernel(
        """
        session = atnb.login(handle, password, service=service)
        revoked = session.logout()
        index = atnb.store.get_store().index()
        try:
            atnb.resume()
            after = "resumed"
        except atnb.NotLoggedInError as exc:
            after = str(exc)
        report(revoked=revoked, entry=atnb.store.get_store().load(did),
               listed=did in index["accounts"], after=after)
        """,
        kernel_env,
    )
    assert out["revoked"] is True and out["entry"] is None and not out["listed"]
    assert out["after"].startswith("No stored session")

    out = kernel(
        """
        session = atnb.login(handle, password, service=service)
        events = []
        session.on("expired", lambda event, s: events.append(event))
        front.fault("com.atproto.server.refreshSession", "error", status=400,
                    error="ExpiredToken", message="Token has been revoked")
        try:
            session.refresh()
        except atnb.SessionExpiredError:
            pass
        report(events=events, entry=atnb.store.get_store().load(did),
               listed=did in atnb.store.get_store().index()["accounts"])
        """,
        kernel_env,
    )
    assert out == {**out, "events": ["expired"], "entry": None, "listed": False}
    assert atnb.store.find_account(user["did"], "keyring") is None


def test_c13_no_keyring_login_in_memory_warns_once_no_file(
    devnet, user, kernel_env: dict, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **kernel_env,
        "HOME": str(home),
        "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent/bus",
    }
    code = """
        warnings.simplefilter("always")
        try:
            session = atnb.resume()
            resumed = "resumed"
        except atnb.NotLoggedInError as exc:
            resumed = str(exc)
        session = atnb.login(handle, password, service=service)
        view = session.query("com.atproto.server.getSession")
        report(resumed=resumed, did=view["did"], store=session.store.name)
    """
    out = kernel(code, env)
    assert_no_secret(out, (user["password"],))
    assert out["did"] == user["did"] and out["store"] == "memory"
    assert out["resumed"].startswith("No stored session")
    assert out["stderr"].count("No usable keyring") == 1  # one warning
    assert "NoKeyringError" not in out["stderr"]
    assert "ATNB_STORE=file" in out["stderr"]

    restarted = kernel(code, env)  # the next kernel: nothing survived
    assert restarted["resumed"].startswith("No stored session")
    assert devnet.front.count(CREATE) == 2
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "lock" not in p.name]
    assert written == [], written


def test_in_process_store_logs_hold_no_secret(
    devnet, devnet_settings, user: dict, real_keyring: dict, caplog
) -> None:
    """Login, refresh, resume, forget with DEBUG logs on: no JWT, no password."""
    seen: set[str] = {user["password"]}
    with caplog.at_level(logging.DEBUG, logger="atnb"):
        session = atnb.login(user["handle"], user["password"], service=devnet.pds_url)
        seen.update(stored_secrets(user["did"]))
        session.refresh()
        seen.update(stored_secrets(user["did"]))
        resumed = atnb.resume(user["handle"])
        rows = atnb.accounts()
        atnb.forget(user["handle"])

    assert resumed.did == user["did"] and rows[0]["did"] == user["did"]
    assert atnb.store.get_store().load(user["did"]) is None
    assert "saved in the keyring store" in caplog.text
    text = caplog.text + repr(rows) + repr(atnb.store.get_store())
    for secret in seen:
        assert secret not in text
