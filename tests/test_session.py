"""atnb.session against a stub transport (a small fake PDS) and a fixed clock.

The real behaviour is proven on the devnet in test_session_devnet.py; these
tests pin every rule of the contract without a network, fast.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import logging
import threading

import pytest

import atnb
from atnb import errors, xrpc
from atnb import session as session_mod
from atnb import store as store_mod

NOW = 1_796_000_000.0  # 2026-11-30, the fixed clock's start
DID = "did:plc:aaaa"
PASSWORD = "pw-Secret-1"
_serial = itertools.count(1)


def mint(exp: float, scope: str = "com.atproto.access", typ: str = "at+jwt") -> str:
    def part(value: dict) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {"scope": scope, "sub": DID, "exp": int(exp), "jti": next(_serial)}
    return f"{part({'typ': typ, 'alg': 'HS256'})}.{part(claims)}.SIGNATURE"


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reply(status: int, body=None, headers=None) -> xrpc.Reply:
    raw = b"" if body is None else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return xrpc.Reply(status, hdrs, raw)


class FakePDS:
    """A transport that behaves like the reference PDS for sessions.

    ``script[nsid]`` is a list of replies (or exceptions) used before the
    default behaviour; ``calls`` records (nsid, bearer) for every request.
    """

    def __init__(self, clock: Clock, scope: str = "com.atproto.access") -> None:
        self.clock = clock
        self.scope = scope
        self.calls: list[tuple[str, str | None]] = []
        self.bodies: list[dict] = []
        self.script: dict[str, list] = {}
        self.valid_refresh: set[str] = set()
        self.extra: dict = {}
        self.lock = threading.Lock()

    def count(self, nsid: str) -> int:
        return sum(1 for n, _ in self.calls if n == nsid)

    def tokens(self, access_exp: float | None = None) -> dict:
        access = mint(access_exp or self.clock() + 7200, self.scope)
        refresh = mint(self.clock() + 90 * 86400, "com.atproto.refresh", "refresh+jwt")
        self.valid_refresh.add(refresh)
        return {"accessJwt": access, "refreshJwt": refresh}

    def send(self, request: xrpc.Request) -> xrpc.Reply:
        auth = dict(request.headers).get("Authorization")
        bearer = auth.split(" ", 1)[1] if auth else None
        with self.lock:
            self.calls.append((request.nsid, bearer))
            if dict(request.headers).get("Content-Type") == "application/json":
                self.bodies.append(json.loads(request.body))
            queued = self.script.get(request.nsid)
            step = queued.pop(0) if queued else None
        if isinstance(step, Exception):
            raise step
        if step is not None:
            return step
        return self.default(request, bearer)

    def default(self, request, bearer):
        nsid = request.nsid
        if nsid == "com.atproto.server.createSession":
            body = json.loads(request.body)
            if body["password"] != PASSWORD:
                return reply(
                    401,
                    {
                        "error": "AuthenticationRequired",
                        "message": "Invalid identifier or password",
                    },
                )
            return reply(
                200,
                {
                    **self.tokens(),
                    "did": DID,
                    "handle": "alice.test",
                    "email": "alice@mail.test",
                    **self.extra,
                },
            )
        if nsid == "com.atproto.server.refreshSession":
            with self.lock:
                if bearer not in self.valid_refresh:
                    return reply(
                        400,
                        {"error": "ExpiredToken", "message": "Token has been revoked"},
                    )
                self.valid_refresh.discard(bearer)
            return reply(200, {**self.tokens(), "did": DID, "handle": "alice.test"})
        if nsid == "com.atproto.server.deleteSession":
            self.valid_refresh.discard(bearer)
            return reply(200)
        claims = atnb._jwt.decode_claims(bearer)
        if claims["exp"] <= self.clock():
            return reply(400, {"error": "ExpiredToken", "message": "Token has expired"})
        return reply(200, {"ok": True, "params": request.params})


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    store_mod._reset()
    monkeypatch.setattr(session_mod, "_current", None)
    fresh = {event: [] for event in session_mod.EVENTS}
    monkeypatch.setattr(session_mod, "_listeners", fresh)
    monkeypatch.setattr(atnb.settings, "store", "memory")
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 14 * 86400.0)
    monkeypatch.setattr(atnb.settings, "refresh_skew", 120.0)
    yield
    store_mod._reset()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def pds(clock):
    return FakePDS(clock)


def login(pds, clock, **kwargs):
    kwargs.setdefault("service", "https://pds.example.com")
    return atnb.login("alice.test", PASSWORD, transport=pds, clock=clock, **kwargs)


def expire_access(s, clock):
    """Give the session an access JWT that the fake PDS calls expired."""
    s._set_tokens(mint(clock() - 10), s._refresh_jwt)


# -- login and session data ----------------------------------------------------


def test_login_exposes_session_data(pds, clock):
    pds.extra = {"emailConfirmed": True, "emailAuthFactor": False, "futureField": [1]}
    s = login(pds, clock)
    assert (s.did, s.handle, s.email) == (DID, "alice.test", "alice@mail.test")
    assert s.email_confirmed is True and s.email_auth_factor is False
    assert s.active is True and s.status is None
    assert s.pds_url == "https://pds.example.com"
    assert s.auth_kind == "password"
    assert s.access_expires_at == dt.datetime.fromtimestamp(NOW + 7200, dt.timezone.utc)
    assert atnb.current_session() is s


@pytest.mark.parametrize(
    ("scope", "kind"),
    [
        ("com.atproto.appPass", "app_password"),
        ("com.atproto.appPassPrivileged", "app_password_privileged"),
    ],
)
def test_auth_kind_read_locally_c11(clock, scope, kind):
    pds = FakePDS(clock, scope)
    s = login(pds, clock)
    assert s.auth_kind == kind
    assert pds.count("com.atproto.server.createSession") == 1 and len(pds.calls) == 1


def test_deactivated_account_logs_in_and_warns_once_c12(pds, clock, caplog):
    pds.extra = {
        "active": False,
        "status": "deactivated",
        "emailAuthFactor": True,
        "futureField": {"x": 1},
    }
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        s = login(pds, clock, store="memory")
        s.query("app.bsky.actor.getProfile", actor="alice.test")
    assert s.active is False and s.status == "deactivated"
    assert sum("is deactivated" in r.getMessage() for r in caplog.records) == 1


def test_no_deactivation_warning_when_active(pds, clock, caplog):
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        login(pds, clock)
    assert "deactivated" not in caplog.text


def test_main_password_gets_app_password_advice(clock, caplog):
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        login(FakePDS(clock), clock)
    assert "app password" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        login(
            FakePDS(clock, "com.atproto.appPass"), clock, store=store_mod.MemoryStore()
        )
    assert "app password" not in caplog.text


def test_did_doc_pds_wins_and_http_only_from_loopback(pds, clock):
    doc = {
        "id": DID,
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds2.example.com",
            }
        ],
    }
    pds.extra = {"didDoc": doc}
    s = login(pds, clock)
    assert s.pds_url == "https://pds2.example.com"
    s.query("com.atproto.server.getSession")

    doc["service"][0]["serviceEndpoint"] = "http://127.0.0.1:9"
    store_mod._reset()
    s = login(pds, clock)
    assert s.pds_url == "https://pds.example.com"  # http from a DID doc refused


def test_invalid_handle_sends_nothing_c05(pds, clock):
    with pytest.raises(errors.InvalidHandleError):
        atnb.login(
            "al ice.test", PASSWORD, service="https://pds.example.com", transport=pds
        )
    assert pds.calls == []


def test_http_service_refused_before_sending(pds):
    with pytest.raises(errors.InsecureServiceError):
        atnb.login(
            "alice.test", PASSWORD, service="http://pds.example.com", transport=pds
        )
    assert pds.calls == []


# -- 2FA (C04) -------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 400])
def test_auth_factor_token_required_c04(pds, clock, status):
    needed = {
        "error": "AuthFactorTokenRequired",
        "message": "A sign in code has been sent",
    }
    pds.script["com.atproto.server.createSession"] = [reply(status, needed)]
    with pytest.raises(errors.AuthFactorTokenRequired) as info:
        login(pds, clock)
    assert "A sign in code has been sent" in str(info.value)
    assert "email" in str(info.value)
    assert "authFactorToken" not in pds.bodies[0]

    s = login(pds, clock, auth_factor_token=" 12345-ABCDE ")
    assert pds.bodies[1]["authFactorToken"] == "12345-ABCDE"
    assert s.logged_in


def test_wrong_password_is_authentication_error_c04(pds, clock):
    with pytest.raises(errors.AuthenticationError) as info:
        atnb.login(
            "alice.test", "wrong", service="https://pds.example.com", transport=pds
        )
    assert not isinstance(info.value, errors.AuthFactorTokenRequired)
    assert pds.count("com.atproto.server.createSession") == 1  # never re-sent


def test_failed_login_keeps_the_working_session(pds, clock):
    events = []
    good = login(pds, clock)
    other = FakePDS(clock)
    other.script["com.atproto.server.createSession"] = [
        reply(401, {"error": "AuthFactorTokenRequired", "message": "code"})
    ]
    with pytest.raises(errors.AuthFactorTokenRequired):
        atnb.login(
            "bob.test",
            PASSWORD,
            service="https://pds.example.com",
            auth_factor_token="WRONG",
            transport=other,
            clock=clock,
        )
    assert atnb.current_session() is good
    assert good.query("com.atproto.server.getSession")["ok"]
    assert events == []


# -- reuse (C07) -----------------------------------------------------------------


def test_login_again_resumes_without_password_c07(pds, clock):
    login(pds, clock)
    again = login(pds, clock)
    restarted = atnb.resume(transport=pds, clock=clock)
    assert again.did == restarted.did == DID
    assert pds.count("com.atproto.server.createSession") == 1
    assert len(pds.calls) == 1
    assert restarted.query("com.atproto.server.getSession")["ok"]


def test_resume_with_nothing_stored_raises():
    with pytest.raises(errors.NotLoggedInError):
        atnb.resume()
    with pytest.raises(errors.NotLoggedInError):
        atnb.resume("nobody.test")


def test_create_session_is_never_retried_on_429_c07(pds, clock):
    headers = {
        "ratelimit-limit": "100",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "1726684000",
        "ratelimit-policy": "100;w=86400",
    }
    pds.script["com.atproto.server.createSession"] = [
        reply(
            429,
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            headers,
        )
    ]
    with pytest.raises(errors.RateLimitError) as info:
        login(pds, clock)
    exc = info.value
    assert exc.reset_at == dt.datetime(2024, 9, 18, 18, 26, 40, tzinfo=dt.timezone.utc)
    assert (exc.limit, exc.remaining, exc.window) == (100, 0, 86400)
    assert pds.count("com.atproto.server.createSession") == 1


# -- XRPC calls ------------------------------------------------------------------


def test_query_params_proxy_and_local_nsid_check(pds, clock):
    s = login(pds, clock)
    data = s.query(
        "app.bsky.actor.getProfiles",
        {"actors": ["a.test", "b.test"]},
        proxy="did:web:api.test#bsky_appview",
        flag=False,
        none=None,
    )
    assert data["params"] == [
        ["actors", "a.test"],
        ["actors", "b.test"],
        ["flag", "false"],
    ]
    with pytest.raises(errors.InvalidNSIDError):
        s.query("not an nsid")
    assert len(pds.calls) == 2


def test_proxy_header_and_blob_procedure(pds, clock):
    seen = []
    s = login(pds, clock)
    original = pds.default

    def spy(request, bearer):
        seen.append(dict(request.headers))
        if request.nsid == "com.atproto.repo.uploadBlob":
            return reply(200, {"blob": {"size": len(request.body)}})
        return original(request, bearer)

    pds.default = spy
    s.query("app.bsky.feed.getTimeline", proxy="did:web:api.test#bsky_appview")
    assert seen[0]["atproto-proxy"] == "did:web:api.test#bsky_appview"
    out = s.procedure(
        "com.atproto.repo.uploadBlob",
        b"\x89PNG12",
        headers={"Content-Type": "image/png"},
    )
    assert out == {"blob": {"size": 6}} and seen[1]["Content-Type"] == "image/png"


def test_query_with_headers_returns_response_headers(pds, clock):
    s = login(pds, clock)
    pds.script["app.bsky.feed.getAuthorFeed"] = [
        reply(200, {"feed": []}, {"RateLimit-Remaining": "99"})
    ]
    data, headers = s.query_with_headers("app.bsky.feed.getAuthorFeed", {"actor": DID})
    assert data == {"feed": []} and headers["ratelimit-remaining"] == "99"


# -- refresh (C02, C03) ---------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401])
def test_expired_token_refreshes_and_retries_once_c02(pds, clock, status):
    s = login(pds, clock)
    pds.script["app.bsky.actor.getProfile"] = [
        reply(status, {"error": "ExpiredToken", "message": "Token has expired"})
    ]
    assert s.query("app.bsky.actor.getProfile", actor="alice.test")["ok"]
    assert pds.count("com.atproto.server.refreshSession") == 1
    assert pds.count("app.bsky.actor.getProfile") == 2


def test_invalid_request_raises_without_refresh_c02(pds, clock):
    s = login(pds, clock)
    pds.script["app.bsky.actor.getProfile"] = [
        reply(400, {"error": "InvalidRequest", "message": "bad"})
    ]
    with pytest.raises(errors.XRPCError) as info:
        s.query("app.bsky.actor.getProfile", actor="x.test")
    assert info.value.error == "InvalidRequest"
    assert pds.count("com.atproto.server.refreshSession") == 0


def test_expired_again_after_retry_raises_never_loops_c02(pds, clock):
    s = login(pds, clock)
    expired = reply(400, {"error": "ExpiredToken", "message": "Token has expired"})
    pds.script["app.bsky.actor.getProfile"] = [expired, expired, expired]
    with pytest.raises(errors.XRPCError) as info:
        s.query("app.bsky.actor.getProfile", actor="x.test")
    assert info.value.error == "ExpiredToken"
    assert pds.count("com.atproto.server.refreshSession") == 1
    assert pds.count("app.bsky.actor.getProfile") == 2


@pytest.mark.parametrize(
    ("error", "refreshes"),
    [("AuthMissing", 1), ("AccountTakedown", 0), ("AccountDeactivated", 0)],
)
def test_401_refreshes_unless_account_state(pds, clock, error, refreshes):
    s = login(pds, clock)
    pds.script["a.b.c"] = [reply(401, {"error": error, "message": "m"})]
    if refreshes:
        assert s.query("a.b.c")["ok"]
    else:
        with pytest.raises(errors.XRPCError):
            s.query("a.b.c")
    assert pds.count("com.atproto.server.refreshSession") == refreshes


def test_proactive_refresh_within_skew(pds, clock):
    s = login(pds, clock)
    clock.now += 7200 - 100  # inside the 120 s skew, still valid
    s.query("a.b.c")
    assert pds.count("com.atproto.server.refreshSession") == 1
    assert s.access_expires_at > dt.datetime.fromtimestamp(
        clock() + 3600, dt.timezone.utc
    )


def test_store_follows_every_refresh_c01(pds, clock):
    s = login(pds, clock)
    stored = store_mod.MemoryStore().load(DID)
    assert stored["refresh_jwt"] == s._refresh_jwt
    s.refresh()
    stored = store_mod.MemoryStore().load(DID)
    assert (
        stored["refresh_jwt"] == s._refresh_jwt
        and stored["access_jwt"] == s._access_jwt
    )


def test_refresh_adopts_tokens_another_kernel_stored(pds, clock):
    s = login(pds, clock)
    other = atnb.resume(transport=pds, clock=clock)
    other.refresh()  # "the other kernel" rotates the tokens
    expire_access(s, clock)
    s.query("a.b.c")
    assert pds.count("com.atproto.server.refreshSession") == 1
    assert s._refresh_jwt == other._refresh_jwt


@pytest.mark.parametrize(
    "failure",
    [
        xrpc.Reply(502, {"Content-Type": "text/html"}, b"<html>Bad Gateway</html>"),
        xrpc.Reply(503, {"Content-Type": "text/html"}, b"<html>busy</html>"),
        errors.NetworkError("com.atproto.server.refreshSession: could not reach x"),
        reply(429, {"error": "RateLimitExceeded"}, {"ratelimit-reset": "1726684000"}),
    ],
    ids=["502-html", "503-html", "connection", "429"],
)
def test_network_failure_on_refresh_keeps_the_session_c03(pds, clock, failure):
    s = login(pds, clock)
    events = []
    for name in session_mod.EVENTS:
        s.on(name, lambda event, _s: events.append(event))
    refresh_1 = s._refresh_jwt
    expire_access(s, clock)
    pds.script["com.atproto.server.refreshSession"] = [failure]

    with pytest.raises((errors.NetworkError, errors.RateLimitError)) as info:
        s.query("a.b.c")
    assert not isinstance(info.value, errors.SessionExpiredError)
    assert events == ["network-error"]
    assert s._refresh_jwt == refresh_1
    assert store_mod.MemoryStore().load(DID)["refresh_jwt"] == refresh_1

    assert s.query("a.b.c")["ok"]  # the network is back
    assert pds.calls[-3][1] == refresh_1 or pds.calls[-2][1] == refresh_1
    assert events == ["network-error", "update"]
    assert pds.count("com.atproto.server.createSession") == 1


def test_timeout_on_refresh_is_network_error_c03(pds, clock):
    import requests

    s = login(pds, clock)
    expire_access(s, clock)
    cause = requests.ReadTimeout("slow")
    try:
        raise errors.NetworkError("no answer within 30 s") from cause
    except errors.NetworkError as exc:
        pds.script["com.atproto.server.refreshSession"] = [exc]
    with pytest.raises(errors.NetworkError):
        s.query("a.b.c")
    assert s.logged_in


@pytest.mark.parametrize(
    ("body", "status", "raised"),
    [
        (
            {"error": "ExpiredToken", "message": "Token has been revoked"},
            400,
            errors.SessionExpiredError,
        ),
        ({"error": "InvalidToken", "message": "bad"}, 400, errors.SessionExpiredError),
        (
            {"error": "AccountTakedown", "message": "gone"},
            401,
            errors.AccountTakedownError,
        ),
        ({"error": "AuthRequired"}, 401, errors.SessionExpiredError),
    ],
)
def test_auth_rejection_of_refresh_clears_the_session_c03_c12(
    pds, clock, body, status, raised
):
    s = login(pds, clock)
    events = []
    s.on("expired", lambda event, _s: events.append(event))
    expire_access(s, clock)
    pds.script["com.atproto.server.refreshSession"] = [reply(status, body)]
    with pytest.raises(raised):
        s.query("a.b.c")
    assert events == ["expired"]
    assert not s.logged_in and store_mod.MemoryStore().load(DID) is None
    assert atnb.current_session() is None
    before = len(pds.calls)
    with pytest.raises(errors.NotLoggedInError):
        s.query("a.b.c")
    assert len(pds.calls) == before
    assert pds.count("com.atproto.server.refreshSession") == 1


def test_takedown_on_create_session_c12(pds, clock):
    pds.script["com.atproto.server.createSession"] = [
        reply(
            401, {"error": "AccountTakedown", "message": "Account has been taken down"}
        )
    ]
    with pytest.raises(errors.AccountTakedownError):
        login(pds, clock)
    assert pds.count("com.atproto.server.createSession") == 1
    assert store_mod.MemoryStore().load(DID) is None


def storm(call, n: int = 32) -> tuple[list, list]:
    """Run ``call`` in ``n`` threads released at once: (results, failures)."""
    barrier = threading.Barrier(n)
    results, failures = [], []

    def work():
        barrier.wait()
        try:
            results.append(call())
        except Exception as exc:  # pragma: no cover - reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, failures


def test_refresh_storm_from_32_threads_is_one_refresh(pds, clock):
    s = login(pds, clock)
    expire_access(s, clock)
    results, failures = storm(lambda: s.query("a.b.c")["ok"])
    assert failures == [] and len(results) == 32
    assert pds.count("com.atproto.server.refreshSession") == 1


# -- scope (C11) -----------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 401])
@pytest.mark.parametrize("message", ["Bad token scope", "something else entirely"])
def test_app_password_refused_is_scope_error_c11(clock, status, message):
    pds = FakePDS(clock, "com.atproto.appPass")
    s = login(pds, clock)
    pds.script["chat.bsky.convo.listConvos"] = [
        reply(status, {"error": "InvalidToken", "message": message})
    ]
    with pytest.raises(errors.ScopeError) as info:
        s.query("chat.bsky.convo.listConvos")
    assert "privileged app password or the main password" in str(info.value)
    assert pds.count("com.atproto.server.refreshSession") == 0
    assert s.logged_in and s.query("a.b.c")["ok"]


# -- logout (C10) ----------------------------------------------------------------


def test_logout_sends_refresh_jwt_and_clears_c10(pds, clock):
    s = login(pds, clock)
    refresh_jwt = s._refresh_jwt
    events = []
    s.on("expired", lambda event, _s: events.append(event))
    assert s.logout() is True
    deletes = [c for c in pds.calls if c[0] == "com.atproto.server.deleteSession"]
    assert deletes == [("com.atproto.server.deleteSession", refresh_jwt)]
    assert store_mod.MemoryStore().load(DID) is None and atnb.current_session() is None
    assert events == ["expired"]
    before = len(pds.calls)
    with pytest.raises(errors.NotLoggedInError):
        s.query("a.b.c")
    assert len(pds.calls) == before


def test_logout_offline_still_clears_and_says_so_c10(pds, clock, caplog):
    s = login(pds, clock)
    pds.script["com.atproto.server.deleteSession"] = [errors.NetworkError("offline")]
    with caplog.at_level(logging.WARNING, logger="atnb.session"):
        assert s.logout() is False
    assert "not confirmed" in caplog.text
    assert not s.logged_in and store_mod.MemoryStore().load(DID) is None


# -- inactivity ------------------------------------------------------------------


def test_inactive_session_is_revoked_and_cleared(pds, clock):
    s = login(pds, clock)
    clock.now += 15 * 86400
    with pytest.raises(errors.SessionExpiredError) as info:
        s.query("a.b.c")
    assert "14 days" in str(info.value) and "log in again" in str(info.value).lower()
    assert pds.count("com.atproto.server.deleteSession") == 1
    assert pds.count("a.b.c") == 0
    assert store_mod.MemoryStore().load(DID) is None


def test_resume_of_an_inactive_session_is_refused(pds, clock):
    login(pds, clock)
    clock.now += 15 * 86400
    with pytest.raises(errors.SessionExpiredError):
        atnb.resume(transport=pds, clock=clock)
    assert pds.count("com.atproto.server.deleteSession") == 1
    assert store_mod.MemoryStore().load(DID) is None
    with pytest.raises(errors.NotLoggedInError):
        atnb.resume(transport=pds, clock=clock)


def test_use_from_another_kernel_counts(pds, clock):
    s = login(pds, clock)
    clock.now += 10 * 86400
    other = atnb.resume(transport=pds, clock=clock)
    other.query("a.b.c")  # writes last_used to the store
    clock.now += 10 * 86400
    assert s.query("a.b.c")["ok"]


def test_inactivity_zero_disables(pds, clock, monkeypatch):
    monkeypatch.setattr(atnb.settings, "inactivity_timeout", 0)
    s = login(pds, clock)
    clock.now += 60 * 86400
    assert s.query("a.b.c")["ok"]


def test_last_used_written_at_most_once_a_minute(pds, clock):
    s = login(pds, clock)
    saved = []
    original = s.store.save
    s.store.save = lambda did, entry: (
        saved.append(entry["last_used"]),
        original(did, entry),
    )
    for _ in range(6):
        clock.now += 20
        s.query("a.b.c")
    assert saved == [NOW + 60, NOW + 120]
    assert store_mod.MemoryStore().load(DID)["last_used"] == NOW + 120


# -- events ----------------------------------------------------------------------


def test_create_and_create_failed_events(pds, clock):
    seen = []
    s = session_mod.Session("https://pds.example.com", transport=pds, clock=clock)
    for name in session_mod.EVENTS:
        s.on(name, lambda event, obj: seen.append((event, obj.logged_in)))
    with pytest.raises(errors.AuthenticationError):
        s._create(
            "com.atproto.server.createSession",
            {"identifier": "alice.test", "password": "nope"},
        )
    s._create(
        "com.atproto.server.createSession",
        {"identifier": "alice.test", "password": PASSWORD},
    )
    assert seen == [("create-failed", False), ("create", True)]
    with pytest.raises(ValueError):
        s.on("refresh", print)


def test_update_listener_runs_before_the_next_request(pds, clock):
    s = login(pds, clock)
    order = []
    s.on("update", lambda event, obj: order.append(("update", obj._access_jwt)))
    original = pds.send
    pds.send = lambda request: (
        order.append(("send", request.nsid)),
        original(request),
    )[1]
    expire_access(s, clock)
    s.query("a.b.c")
    names = [item[0] if item[0] == "update" else item[1] for item in order]
    assert names == ["com.atproto.server.refreshSession", "update", "a.b.c"]


def test_a_failing_listener_does_not_break_the_session(pds, clock):
    s = login(pds, clock)
    s.on("update", lambda event, obj: 1 / 0)
    s.refresh()
    assert s.query("a.b.c")["ok"]


# -- secrets never leak ----------------------------------------------------------


def test_no_secret_in_repr_str_logs_or_errors(pds, clock, caplog):
    caplog.set_level(logging.DEBUG, logger="atnb")
    failures = []
    pds.script["com.atproto.server.createSession"] = [
        reply(401, {"error": "AuthFactorTokenRequired", "message": "code sent"})
    ]
    try:
        login(pds, clock, auth_factor_token="CODE-12345")
    except errors.AtnbError as exc:
        failures.append(exc)
    s = login(pds, clock, auth_factor_token="CODE-12345")
    expire_access(s, clock)
    s.query("a.b.c")
    pds.script["com.atproto.server.refreshSession"] = [reply(502, None)]
    expire_access(s, clock)
    try:
        s.query("a.b.c")
    except errors.AtnbError as exc:
        failures.append(exc)
    secrets = [PASSWORD, "CODE-12345", s._access_jwt, s._refresh_jwt, "SIGNATURE"]
    texts = [repr(s), str(s), caplog.text, *map(str, failures), *map(repr, failures)]
    assert "alice.test" in repr(s) and DID in str(s) and "password" in str(s)
    for text in texts:
        for secret in secrets:
            assert secret not in text
    s.logout()
    assert repr(s) == "<Session logged out>"


# -- odds and ends ----------------------------------------------------------------


def test_early_refresh_failing_offline_still_uses_the_valid_token(pds, clock):
    s = login(pds, clock)
    events = []
    s.on("network-error", lambda event, _s: events.append(event))
    clock.now += 7200 - 60  # within the skew, not yet expired
    pds.script["com.atproto.server.refreshSession"] = [errors.NetworkError("offline")]
    assert s.query("a.b.c")["ok"]
    assert events == ["network-error"] and s.logged_in


def test_session_is_a_session_manager(pds, clock):
    s = login(pds, clock)
    assert isinstance(s, session_mod.SessionManager)


def test_importing_the_session_module_stays_cheap():
    import subprocess
    import sys

    code = (
        "import sys, atnb, atnb.session, atnb.xrpc, atnb._jwt; "
        "heavy = {'requests', 'pandas', 'keyring', 'IPython', 'ipywidgets', "
        "'filelock', 'dns'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_resume_by_handle_and_did(pds, clock):
    login(pds, clock)
    assert atnb.resume("@Alice.Test", transport=pds, clock=clock).did == DID
    assert atnb.resume(DID, transport=pds, clock=clock).handle == "alice.test"
    assert len(pds.calls) == 1


def test_login_by_email_resumes_the_stored_account(pds, clock):
    login(pds, clock)
    again = atnb.login(
        " alice@mail.test ",
        "not sent",
        service="https://pds.example.com",
        transport=pds,
        clock=clock,
    )
    assert again.did == DID and pds.count("com.atproto.server.createSession") == 1


def test_login_with_expired_access_refreshes_instead_of_sending_the_password(
    pds, clock
):
    s = login(pds, clock)
    clock.now += 3 * 3600
    again = login(pds, clock)
    assert again.did == s.did
    assert pds.count("com.atproto.server.refreshSession") == 1
    assert pds.count("com.atproto.server.createSession") == 1


def test_login_after_revoked_stored_session_sends_the_password(pds, clock):
    s = login(pds, clock)
    pds.valid_refresh.clear()  # revoked on the server
    clock.now += 3 * 3600
    again = login(pds, clock)
    assert again is not s and again.logged_in
    assert pds.count("com.atproto.server.createSession") == 2


def test_login_over_an_inactive_stored_session_revokes_it(pds, clock):
    s = login(pds, clock)
    old_refresh = s._refresh_jwt
    clock.now += 15 * 86400
    again = login(pds, clock)
    assert again.logged_in and again._refresh_jwt != old_refresh
    assert ("com.atproto.server.deleteSession", old_refresh) in pds.calls
    assert pds.count("com.atproto.server.createSession") == 2


def test_module_listeners_see_create_and_create_failed(pds, clock):
    seen = []
    for name in session_mod.EVENTS:
        session_mod.on(name, lambda event, obj: seen.append(event))
    with pytest.raises(errors.AuthenticationError):
        atnb.login(
            "alice.test",
            "nope",
            service="https://pds.example.com",
            transport=pds,
            clock=clock,
        )
    s = login(pds, clock)
    s.refresh()
    s.logout()
    assert seen == ["create-failed", "create", "update", "expired"]
    with pytest.raises(ValueError):
        session_mod.on("login", print)
