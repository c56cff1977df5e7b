"""The devnet itself, with plain requests: accounts, tokens, the front, the 2FA gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from atnb.devnet import MissingSystemPiece

pytestmark = pytest.mark.devnet


def xrpc(base, method, nsid, *, jwt=None, timeout=10, **kwargs):
    headers = {"authorization": f"Bearer {jwt}"} if jwt else {}
    return requests.request(
        method, f"{base}/xrpc/{nsid}", headers=headers, timeout=timeout, **kwargs
    )


def test_account_login_refresh_logout(devnet, front):
    account = devnet.create_account()
    login = xrpc(
        devnet.pds_url,
        "POST",
        "com.atproto.server.createSession",
        json={"identifier": account.handle, "password": account.password},
    )
    assert login.status_code == 200
    session = login.json()
    assert session["did"] == account.did
    # didDoc names the front, so clients that follow it pass through it.
    services = {s["id"]: s for s in session["didDoc"]["service"]}
    assert services["#atproto_pds"]["serviceEndpoint"] == devnet.pds_url

    refreshed = xrpc(
        devnet.pds_url,
        "POST",
        "com.atproto.server.refreshSession",
        jwt=session["refreshJwt"],
    )
    assert refreshed.status_code == 200
    new = refreshed.json()
    assert new["refreshJwt"] != session["refreshJwt"]

    out = xrpc(
        devnet.pds_url,
        "POST",
        "com.atproto.server.deleteSession",
        jwt=new["refreshJwt"],
    )
    assert out.status_code == 200
    again = xrpc(
        devnet.pds_url,
        "POST",
        "com.atproto.server.refreshSession",
        jwt=new["refreshJwt"],
    )
    assert again.status_code == 400
    assert again.json()["error"] == "ExpiredToken"
    assert front.counts()["com.atproto.server.createSession"] == 1


def test_minted_expired_access_jwt_is_refused(devnet, account):
    valid = devnet.mint_access_jwt(account.did)
    ok = xrpc(devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=valid)
    assert ok.status_code == 200

    expired = devnet.mint_access_jwt(account.did, exp=time.time() - 60)
    answer = xrpc(devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=expired)
    assert answer.status_code == 400
    assert answer.json()["error"] == "ExpiredToken"


def test_plc_document_names_the_front(devnet, account):
    doc = requests.get(f"{devnet.plc_url}/{account.did}", timeout=10).json()
    assert doc["alsoKnownAs"] == [f"at://{account.handle}"]
    assert doc["service"][0]["serviceEndpoint"] == devnet.pds_url


def test_two_factor_gate(devnet, front):
    account = devnet.create_account(app_password=True)
    devnet.enable_email_2fa(account)
    body = {"identifier": account.handle, "password": account.password}
    url_nsid = "com.atproto.server.createSession"
    mails_before = len(devnet.mails(account.email))

    first = xrpc(devnet.pds_url, "POST", url_nsid, json=body)
    assert first.status_code == 401
    assert first.json()["error"] == "AuthFactorTokenRequired"
    assert len(devnet.mails(account.email)) == mails_before + 1
    code = devnet.latest_code(account.email)

    wrong = xrpc(
        devnet.pds_url,
        "POST",
        url_nsid,
        json={**body, "authFactorToken": "AAAAA-AAAAA"},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "AuthFactorTokenRequired"

    right = xrpc(
        devnet.pds_url, "POST", url_nsid, json={**body, "authFactorToken": code}
    )
    assert right.status_code == 200
    assert right.json()["emailAuthFactor"] is True

    # App-password logins are never asked for a code.
    app = xrpc(
        devnet.pds_url,
        "POST",
        url_nsid,
        json={"identifier": account.handle, "password": account.app_password},
    )
    assert app.status_code == 200


def test_fault_drop(devnet, front, account):
    front.fault("com.atproto.server.getSession", "drop")
    with pytest.raises(requests.ConnectionError):
        xrpc(
            devnet.pds_url,
            "GET",
            "com.atproto.server.getSession",
            jwt=account.access_jwt,
        )
    after = xrpc(
        devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=account.access_jwt
    )
    assert after.status_code == 200


def test_fault_delay(devnet, front, account):
    front.fault("com.atproto.server.getSession", "delay", delay_ms=400)
    started = time.monotonic()
    answer = xrpc(
        devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=account.access_jwt
    )
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.4


def test_fault_html_5xx(devnet, front, account):
    front.fault("*", "html", status=503)
    answer = xrpc(
        devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=account.access_jwt
    )
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("text/html")


def test_fault_rate_limit_headers(devnet, front, account):
    front.fault("com.atproto.server.getSession", "ratelimit", reset=1726684000)
    answer = xrpc(
        devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=account.access_jwt
    )
    assert answer.status_code == 429
    assert answer.json()["error"] == "RateLimitExceeded"
    assert answer.headers["ratelimit-reset"] == "1726684000"
    assert answer.headers["ratelimit-remaining"] == "0"
    assert answer.headers["ratelimit-policy"] == "100;w=300"


def test_fault_error_and_counts(devnet, front, account):
    front.fault("com.atproto.server.getSession", "error", status=400, error="Nope")
    answer = xrpc(
        devnet.pds_url, "GET", "com.atproto.server.getSession", jwt=account.access_jwt
    )
    assert answer.json()["error"] == "Nope"
    assert front.count("com.atproto.server.getSession") == 1


def test_front_rejects_rotated_refresh_jwt(devnet, front, account):
    front.configure(reject_rotated=True)
    nsid = "com.atproto.server.refreshSession"
    first = xrpc(devnet.pds_url, "POST", nsid, jwt=account.refresh_jwt)
    assert first.status_code == 200
    # The reference PDS would answer the same pair for 2 hours; the front does not.
    reused = xrpc(devnet.pds_url, "POST", nsid, jwt=account.refresh_jwt)
    assert reused.status_code == 400
    assert reused.json() == {
        "error": "ExpiredToken",
        "message": "Token has been revoked",
    }


def test_seeded_author_feed(devnet, seeded):
    feed = xrpc(
        devnet.appview_url,
        "GET",
        "app.bsky.feed.getAuthorFeed",
        params={"actor": "alice.test", "limit": 100},
    ).json()["feed"]
    assert len(feed) == 100
    texts = [item["post"]["record"]["text"] for item in feed]
    assert any("#" in text for text in texts)
    profile = xrpc(
        devnet.appview_url,
        "GET",
        "app.bsky.actor.getProfile",
        params={"actor": "bob.test"},
    ).json()
    assert profile["postsCount"] >= 60


def test_cli_up_status_down(tmp_path):
    env = {**os.environ, "ATNB_DEVNET_DIR": str(tmp_path / "net")}
    run = [sys.executable, "-m", "atnb.devnet"]
    up = subprocess.run(
        [*run, "up", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stderr
    urls = json.loads(up.stdout)
    try:
        health = requests.get(f"{urls['pds_url']}/xrpc/_health", timeout=10)
        assert health.status_code == 200
        state = json.loads((tmp_path / "net" / "state.json").read_text())
        pids = [state["supervisor_pid"], state["node_pid"], state["postgres_pid"]]
        status = subprocess.run([*run, "status"], env=env, capture_output=True)
        assert status.returncode == 0
    finally:
        down = subprocess.run([*run, "down"], env=env, capture_output=True, timeout=120)
    assert down.returncode == 0
    time.sleep(0.5)
    listed = subprocess.run(["ps", "-eo", "pid=,stat="], capture_output=True, text=True)
    alive = {
        int(pid): stat
        for pid, stat in (line.split() for line in listed.stdout.splitlines())
    }
    assert [
        pid for pid in pids if pid in alive and not alive[pid].startswith("Z")
    ] == []
    assert not (tmp_path / "net").exists()


def test_missing_postgres_says_what_to_install(monkeypatch):
    from atnb.devnet import _postgres

    monkeypatch.setattr(_postgres.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(_postgres.shutil, "which", lambda name: None)
    with pytest.raises(MissingSystemPiece, match="apt-get install -y postgresql"):
        _postgres._bindir()


def test_missing_npm_says_what_to_install(monkeypatch):
    from atnb.devnet import _install

    monkeypatch.setattr(_install.shutil, "which", lambda name: None)
    with pytest.raises(MissingSystemPiece, match="apt-get install -y nodejs npm"):
        _install._npm()


def test_cli_without_a_running_devnet(tmp_path):
    env = {**os.environ, "ATNB_DEVNET_DIR": str(tmp_path / "none")}
    status = subprocess.run(
        [sys.executable, "-m", "atnb.devnet", "status"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 1
    assert status.stdout.strip() == "not running"


def test_devnet_environment_resolves_handles_without_dns(devnet, front, monkeypatch):
    import atnb
    from atnb import identity
    from atnb.config import Settings

    account = devnet.create_account(app_password=True)
    env = devnet.environment()
    configured = Settings.from_env(env)
    for name in ("plc_url", "entryway", "public_appview", "nameservers", "host_map"):
        monkeypatch.setattr(atnb.settings, name, getattr(configured, name))
    identity.clear_cache()

    asked = []
    monkeypatch.setattr(
        "dns.resolver.Resolver.resolve", lambda *a, **k: asked.append(a) or None
    )
    assert identity.pds_for(account.handle) == devnet.pds_url
    session = atnb.login(account.handle, account.app_password)  # no service=
    assert session.pds_url == devnet.pds_url
    assert front.count("com.atproto.server.createSession") == 1
    assert asked == []  # ATNB_NAMESERVERS=none: no DNS query at all
    session.logout()


def test_seeding_twice_says_so(devnet, seeded):
    from atnb.devnet.seed import seed

    with pytest.raises(RuntimeError, match="already seeded"):
        seed(devnet)
