"""atnb.session against the real local network (reference PDS behind the front).

Expired tokens are minted with a past ``exp``; faults, 429s and the 2FA gate
come from the front; requests are counted there.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.request

import pytest

import atnb
from atnb import errors, xrpc
from atnb import session as session_mod
from atnb import store as store_mod

pytestmark = pytest.mark.devnet

CREATE = "com.atproto.server.createSession"
REFRESH = "com.atproto.server.refreshSession"
DELETE = "com.atproto.server.deleteSession"
GET_SESSION = "com.atproto.server.getSession"


@pytest.fixture(autouse=True)
def _fresh_sessions(monkeypatch):
    store_mod._reset()
    monkeypatch.setattr(session_mod, "_current", None)
    fresh = {event: [] for event in session_mod.EVENTS}
    monkeypatch.setattr(session_mod, "_listeners", fresh)
    yield
    store_mod._reset()


def login(net, account, password=None, **kwargs):
    kwargs.setdefault("service", net.pds_url)
    return atnb.login(account.handle, password or account.app_password, **kwargs)


def behind(seconds: float):
    """A clock that runs ``seconds`` behind: the client thinks tokens are fresh."""
    return lambda: time.time() - seconds


def give_expired_access(net, s, scope="com.atproto.appPass"):
    expired = net.mint_access_jwt(s.did, exp=time.time() - 60, scope=scope)
    s._set_tokens(expired, s._refresh_jwt)


def server_refuses(net, refresh_jwt, *, direct=True) -> str:
    """The error name the server answers for ``refresh_jwt`` ('' if it takes it)."""
    try:
        net.xrpc("POST", REFRESH, jwt=refresh_jwt, direct=direct)
    except RuntimeError as exc:
        return json.loads(str(exc).split(": ", 1)[1])["error"]
    return ""


# -- login ---------------------------------------------------------------------


def test_login_app_password_and_session_data(devnet, front, account):
    s = login(devnet, account)
    assert (s.did, s.handle) == (account.did, account.handle)
    assert s.email == account.email and s.email_confirmed is False
    assert s.active is True and s.status is None
    assert s.pds_url == devnet.pds_url  # from the didDoc: the front
    assert s.auth_kind == "app_password"
    assert s.access_expires_at > dt.datetime.now(dt.timezone.utc)
    assert s.query(GET_SESSION)["did"] == account.did
    assert front.count(CREATE) == 1 and atnb.current_session() is s


def test_main_password_kind_and_advice(devnet, front, make_account, caplog):
    account = make_account()
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        s = login(devnet, account, account.password)
    assert s.auth_kind == "password"
    assert "app password" in caplog.text


def test_login_by_did_discovers_the_pds_through_plc(devnet, front, account):
    s = atnb.login(account.did, account.app_password)
    assert s.pds_url == devnet.pds_url and front.count(CREATE) == 1


def test_login_again_and_resume_send_no_create_session_c07(devnet, front, account):
    first = login(devnet, account)
    again = login(devnet, account)
    resumed = atnb.resume(account.handle)
    assert first.did == again.did == resumed.did
    resumed.query(GET_SESSION)
    assert front.count(CREATE) == 1


def test_http_service_refused_before_a_byte_c07(devnet, front, account):
    insecure = devnet.pds_url.replace("localhost", "pds.invalid").replace(
        "127.0.0.1", "pds.invalid"
    )
    with pytest.raises(errors.InsecureServiceError):
        atnb.login(account.handle, account.app_password, service=insecure)
    assert front.counts() == {}


# -- XRPC -----------------------------------------------------------------------


def test_procedures_blobs_bytes_lists_and_booleans(devnet, front, account):
    s = login(devnet, account)
    record = {
        "$type": "app.bsky.feed.post",
        "text": "hello",
        "createdAt": "2026-12-04T12:00:00Z",
    }
    made = s.procedure(
        "com.atproto.repo.createRecord",
        {"repo": s.did, "collection": "app.bsky.feed.post", "record": record},
    )
    assert made["uri"].startswith(f"at://{s.did}/app.bsky.feed.post/")

    blob = s.procedure(
        "com.atproto.repo.uploadBlob",
        b"\x89PNG\r\n\x1a\n" + b"0" * 64,
        headers={"Content-Type": "image/png"},
    )
    assert blob["blob"]["mimeType"] == "image/png"

    car = s.query("com.atproto.sync.getRepo", did=s.did)
    assert isinstance(car, bytes) and len(car) > 100

    listed = s.query(
        "com.atproto.repo.listRecords",
        repo=s.did,
        collection="app.bsky.feed.post",
        reverse=True,
        cursor=None,
    )
    assert len(listed["records"]) == 1

    devnet.wait_for_indexing()
    other = devnet.create_account()
    devnet.wait_for_indexing()
    profiles = s.query("app.bsky.actor.getProfiles", actors=[s.did, other.did])
    assert {p["did"] for p in profiles["profiles"]} == {s.did, other.did}


def test_html_error_page_is_a_server_error_naming_the_status(devnet, front, account):
    s = login(devnet, account)
    front.fault(GET_SESSION, "html", status=503)
    with pytest.raises(errors.ServerError) as info:
        s.query(GET_SESSION)
    assert "HTTP 503" in str(info.value)
    assert s.query(GET_SESSION)["did"] == s.did


def test_rate_limit_error_fields_from_the_front_c07(devnet, front, account):
    s = login(devnet, account)
    front.fault(GET_SESSION, "ratelimit", reset=1726684000, limit=100, window=86400)
    with pytest.raises(errors.RateLimitError) as info:
        s.query(GET_SESSION)
    exc = info.value
    assert exc.reset_at == dt.datetime(2024, 9, 18, 18, 26, 40, tzinfo=dt.timezone.utc)
    assert (exc.limit, exc.remaining, exc.window) == (100, 0, 86400)
    assert (exc.status, exc.error, exc.nsid) == (429, "RateLimitExceeded", GET_SESSION)


def test_create_session_429_is_never_retried_c07(devnet, front, account):
    front.fault(CREATE, "ratelimit", reset_in=5)
    with pytest.raises(errors.RateLimitError):
        login(devnet, account)
    assert front.count(CREATE) == 1 and atnb.current_session() is None


def test_custom_transport(devnet, front, account):
    seen = []

    class Counting:
        def __init__(self):
            self.inner = xrpc.HTTPTransport()

        def send(self, request):
            seen.append(request.nsid)
            return self.inner.send(request)

    s = login(devnet, account, transport=Counting())
    s.query(GET_SESSION)
    assert seen == [CREATE, GET_SESSION]


# -- refresh ---------------------------------------------------------------------


def test_manual_refresh_rotates_and_persists(devnet, front, account):
    s = login(devnet, account)
    old = s._refresh_jwt
    s.refresh()
    assert s._refresh_jwt != old and front.count(REFRESH) == 1
    assert store_mod.MemoryStore().load(s.did)["refresh_jwt"] == s._refresh_jwt
    assert s.query(GET_SESSION)["did"] == s.did


def test_proactive_refresh_by_skew(devnet, front, account, monkeypatch):
    s = login(devnet, account)
    monkeypatch.setattr(atnb.settings, "refresh_skew", 3 * 3600.0)  # exp is +2 h
    s.query(GET_SESSION)
    assert front.count(REFRESH) == 1 and front.count(GET_SESSION) == 1


def test_reactive_refresh_on_400_expired_token_c02(devnet, front, account):
    s = login(devnet, account, clock=behind(3 * 3600))
    give_expired_access(devnet, s)
    assert s.query(GET_SESSION)["did"] == s.did
    assert front.count(REFRESH) == 1 and front.count(GET_SESSION) == 2


def test_400_invalid_request_does_not_refresh_c02(devnet, front, account):
    s = login(devnet, account)
    with pytest.raises(errors.XRPCError) as info:
        s.query("com.atproto.repo.getRecord", repo=s.did, collection="x.y.z", rkey="no")
    assert info.value.status == 400 and front.count(REFRESH) == 0


@pytest.mark.parametrize(
    ("error", "refreshes"),
    [("AuthMissing", 1), ("ExpiredToken", 1), ("AccountTakedown", 0)],
)
def test_401_handling(devnet, front, account, error, refreshes):
    s = login(devnet, account)
    front.fault(GET_SESSION, "error", status=401, error=error, message="injected")
    if refreshes:
        assert s.query(GET_SESSION)["did"] == s.did
    else:
        with pytest.raises(errors.AccountTakedownError):
            s.query(GET_SESSION)
    assert front.count(REFRESH) == refreshes


def test_expired_again_after_the_retry_raises_never_loops_c02(devnet, front, account):
    s = login(devnet, account)
    front.fault(GET_SESSION, "error", times=3, status=400, error="ExpiredToken")
    with pytest.raises(errors.XRPCError) as info:
        s.query(GET_SESSION)
    assert info.value.error == "ExpiredToken"
    assert front.count(REFRESH) == 1 and front.count(GET_SESSION) == 2


@pytest.mark.parametrize("reactive", [False, True], ids=["proactive", "reactive"])
def test_32_threads_one_refresh(devnet, front, account, reactive):
    s = login(devnet, account, clock=behind(3 * 3600) if reactive else None)
    give_expired_access(devnet, s)
    barrier, failures = threading.Barrier(32), []

    def work():
        barrier.wait()
        try:
            s.query(GET_SESSION)
        except Exception as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert front.count(REFRESH) == 1


@pytest.mark.parametrize(
    ("kind", "options", "raised"),
    [
        ("drop", {}, errors.NetworkError),
        ("html", {"status": 502}, errors.ServerError),
        ("html", {"status": 503}, errors.ServerError),
        ("delay", {"delay_ms": 3000}, errors.NetworkError),
        ("ratelimit", {"reset_in": 30}, errors.RateLimitError),
    ],
    ids=["drop", "502", "503", "timeout", "429"],
)
def test_network_failure_on_refresh_keeps_the_session_c03(
    devnet, front, account, monkeypatch, kind, options, raised
):
    monkeypatch.setattr(atnb.settings, "request_timeout", 1.0)
    s = login(devnet, account)
    events = []
    for name in session_mod.EVENTS:
        s.on(name, lambda event, _s: events.append(event))
    refresh_1 = s._refresh_jwt
    give_expired_access(devnet, s)
    front.fault(REFRESH, kind, **options)

    with pytest.raises(raised) as info:
        s.query(GET_SESSION)
    assert not isinstance(info.value, errors.SessionExpiredError)
    assert events == ["network-error"] and s._refresh_jwt == refresh_1
    assert store_mod.MemoryStore().load(s.did)["refresh_jwt"] == refresh_1

    monkeypatch.setattr(atnb.settings, "request_timeout", 30.0)
    assert s.query(GET_SESSION)["did"] == s.did  # back: refreshes with REFRESH-1
    assert events == ["network-error", "update"] and front.count(CREATE) == 1


def test_revoked_refresh_jwt_expires_the_session_c03(devnet, front, account):
    s = login(devnet, account)
    events = []
    s.on("expired", lambda event, _s: events.append(event))
    devnet.xrpc("POST", DELETE, jwt=s._refresh_jwt)  # revoked elsewhere
    give_expired_access(devnet, s)
    with pytest.raises(errors.SessionExpiredError) as info:
        s.query(GET_SESSION)
    assert "log in again" in str(info.value).lower()
    assert events == ["expired"] and store_mod.MemoryStore().load(s.did) is None
    assert atnb.current_session() is None
    with pytest.raises(errors.NotLoggedInError):
        s.query(GET_SESSION)
    assert front.count(GET_SESSION) == 0


def test_rotated_refresh_rejected_at_once_then_the_stored_one_works(
    devnet, front, account
):
    front.configure(reject_rotated=True)
    s = login(devnet, account)
    refresh_1 = s._refresh_jwt
    s.refresh()
    assert server_refuses(devnet, refresh_1, direct=False) == "ExpiredToken"
    restarted = atnb.resume(account.handle)  # "a new kernel"
    give_expired_access(devnet, restarted)
    assert restarted.query(GET_SESSION)["did"] == s.did
    assert front.count(CREATE) == 1


# -- logout (C10) and inactivity ---------------------------------------------------


def test_logout_revokes_on_the_server_c10(devnet, front, account):
    s = login(devnet, account)
    refresh_jwt = s._refresh_jwt
    assert s.logout() is True
    assert front.count(DELETE) == 1
    assert server_refuses(devnet, refresh_jwt) == "ExpiredToken"
    assert store_mod.MemoryStore().load(account.did) is None
    assert atnb.current_session() is None
    with pytest.raises(errors.NotLoggedInError):
        s.query(GET_SESSION)
    assert front.count(GET_SESSION) == 0


def test_logout_offline_clears_locally_and_says_so_c10(devnet, front, account, caplog):
    s = login(devnet, account)
    front.fault(DELETE, "drop")
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        assert s.logout() is False
    assert "not confirmed" in caplog.text
    assert store_mod.MemoryStore().load(account.did) is None and not s.logged_in


def test_inactive_session_is_revoked_at_next_use(devnet, front, account, monkeypatch):
    s = login(devnet, account)
    refresh_jwt = s._refresh_jwt
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 0.5)
    time.sleep(0.7)
    with pytest.raises(errors.SessionExpiredError) as info:
        s.query(GET_SESSION)
    assert "log in again" in str(info.value).lower()
    assert front.count(DELETE) == 1 and front.count(GET_SESSION) == 0
    assert server_refuses(devnet, refresh_jwt) == "ExpiredToken"


# -- 2FA (C04) --------------------------------------------------------------------


def test_email_2fa_through_the_gate_c04(devnet, front, make_account):
    account = make_account()
    devnet.enable_email_2fa(account)
    with pytest.raises(errors.AuthFactorTokenRequired) as info:
        login(devnet, account, account.password)
    assert "sign in code" in str(info.value) and "email" in str(info.value)
    code = devnet.latest_code(account.email)

    s = login(devnet, account, account.password, auth_factor_token=code.lower())
    assert s.did == account.did and s.email_auth_factor is True
    assert front.count(CREATE) == 2


def test_wrong_code_keeps_the_working_session_c04(devnet, front, make_account, account):
    working = login(devnet, account)
    gated = make_account()
    devnet.enable_email_2fa(gated)
    with pytest.raises(errors.AuthFactorTokenRequired):
        login(devnet, gated, gated.password)
    with pytest.raises(errors.AuthFactorTokenRequired) as info:
        login(devnet, gated, gated.password, auth_factor_token="WRONG-CODE1")
    assert "Invalid sign in code" in str(info.value)
    assert atnb.current_session() is working
    assert working.query(GET_SESSION)["did"] == account.did


def test_wrong_password_is_authentication_error(devnet, front, account):
    with pytest.raises(errors.AuthenticationError) as info:
        login(devnet, account, "not-the-password")
    assert not isinstance(info.value, errors.AuthFactorTokenRequired)
    assert front.count(CREATE) == 1


# -- scope (C11) and account status (C12) ------------------------------------------


def test_app_password_on_a_full_access_route_is_scope_error_c11(devnet, front, account):
    s = login(devnet, account)
    with pytest.raises(errors.ScopeError) as info:
        s.procedure("com.atproto.server.createAppPassword", {"name": "nope"})
    assert "privileged app password or the main password" in str(info.value)
    assert front.count(REFRESH) == 0 and s.logged_in
    assert s.query(GET_SESSION)["did"] == s.did


def test_deactivated_account_logs_in_with_status_c12(
    devnet, front, make_account, caplog
):
    account = make_account()
    devnet.xrpc(
        "POST", "com.atproto.server.deactivateAccount", {}, jwt=account.access_jwt
    )
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        s = login(devnet, account, account.password)
    assert s.active is False and s.status == "deactivated"
    assert sum("is deactivated" in r.getMessage() for r in caplog.records) == 1


def _takedown(net, did):
    import base64

    auth = base64.b64encode(f"admin:{net.info['admin_password']}".encode()).decode()
    body = {
        "subject": {"$type": "com.atproto.admin.defs#repoRef", "did": did},
        "takedown": {"applied": True, "ref": "atnb-test"},
    }
    request = urllib.request.Request(
        f"{net.pds_direct_url}/xrpc/com.atproto.admin.updateSubjectStatus",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Basic {auth}"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).read()


def test_takedown_on_refresh_and_login_c12(devnet, front, account):
    s = login(devnet, account)
    _takedown(devnet, account.did)
    give_expired_access(devnet, s)
    with pytest.raises(errors.AccountTakedownError):
        s.query(GET_SESSION)
    assert not s.logged_in and store_mod.MemoryStore().load(account.did) is None
    assert front.count(REFRESH) == 1

    with pytest.raises(errors.AccountTakedownError):  # main password: the PDS says so
        login(devnet, account, account.password)
    assert front.count(CREATE) == 2


# -- secrets ---------------------------------------------------------------------


def test_no_secret_in_logs_repr_or_errors(devnet, front, make_account, caplog):
    caplog.set_level(logging.DEBUG, logger="atnb")
    account = make_account(app_password=True)
    failures = []
    s = login(devnet, account)
    s.refresh()
    s.query(GET_SESSION)
    front.fault(REFRESH, "html", status=502)
    give_expired_access(devnet, s)
    try:
        s.query(GET_SESSION)
    except errors.AtnbError as exc:
        failures.append(exc)
    try:
        atnb.login("nobody-here.test", account.password, service=devnet.pds_url)
    except errors.AtnbError as exc:
        failures.append(exc)
    secrets = [account.password, account.app_password, s._access_jwt, s._refresh_jwt]
    texts = [caplog.text, repr(s), str(s), *map(str, failures)]
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "GET com.atproto.server.getSession" in caplog.text
    assert "authenticated yes" in caplog.text
    s.logout()


def test_create_account_opens_a_session(devnet, front):
    import secrets

    handle = f"New{secrets.token_hex(4)}.test"
    s = atnb.create_account(
        handle, f"{handle}@mail.test", secrets.token_urlsafe(12), service=devnet.pds_url
    )
    assert s.handle == handle.lower() and s.did.startswith("did:plc:")
    assert s.auth_kind == "password" and atnb.current_session() is s
    assert s.query(GET_SESSION)["handle"] == handle.lower()
    assert store_mod.MemoryStore().load(s.did)["refresh_jwt"] == s._refresh_jwt
    assert front.count("com.atproto.server.createAccount") == 1


def test_events_in_order_on_the_devnet(devnet, front, account):
    seen = []
    for name in session_mod.EVENTS:
        session_mod.on(name, lambda event, obj: seen.append(event))
    with pytest.raises(errors.AuthenticationError):
        login(devnet, account, "wrong password")
    s = login(devnet, account)
    s.refresh()
    front.fault(REFRESH, "drop")
    with pytest.raises(errors.NetworkError):
        s.refresh()
    s.logout()
    assert seen == ["create-failed", "create", "update", "network-error", "expired"]


def test_nsid_checked_locally_and_proxy_header(devnet, front, account):
    s = login(devnet, account)
    with pytest.raises(errors.InvalidNSIDError):
        s.query("app.bsky..getProfile", actor=s.did)
    devnet.wait_for_indexing()
    profile = s.query(
        "app.bsky.actor.getProfile",
        actor=s.did,
        proxy=f"{devnet.appview_did}#bsky_appview",
    )
    assert profile["did"] == s.did
    assert front.counts() == {CREATE: 1, "app.bsky.actor.getProfile": 1}
