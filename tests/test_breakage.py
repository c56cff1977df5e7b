"""Trying to break the core: leaks, races, bad input and failing stores.

Each test pins a fault found by review (its docstring names it) against the
fake PDS of test_session.py; test_session_breakage_devnet.py proves the same
behaviours end to end through the devnet's front.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

import atnb
from atnb import errors, xrpc
from atnb import store as store_mod
from tests import test_session as base
from tests.test_session import (
    DID,
    PASSWORD,
    Clock,
    expire_access,
    login,
    mint,
    storm,
)
from tests.test_xrpc import JSON, stub_http

REFRESH = "com.atproto.server.refreshSession"
DELETE = "com.atproto.server.deleteSession"


fresh_state = base.fresh_state  # autouse: clean stores, listeners, settings
clock = base.clock
pds = base.pds


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception behind it (``__cause__``/``__context__``)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def texts_of(exc: BaseException) -> str:
    return "\n".join(f"{e!s} {e!r} {e.args!r}" for e in chain(exc))


def one_line_with_next_step(exc: errors.AtnbError) -> None:
    text = str(exc)
    assert "\n" not in text, text
    assert exc.hint and text.endswith(exc.hint), text


# -- leaks through repr and exception text ---------------------------------------


def test_reply_repr_hides_the_body_that_holds_the_jwts():
    """Found: ``repr(Reply)`` printed a createSession body with both JWTs."""
    body = json.dumps({"accessJwt": "ACCESS.JWT.X", "refreshJwt": "REFRESH.JWT.Y"})
    shown = repr(xrpc.Reply(200, {"Content-Type": "application/json"}, body.encode()))
    assert "JWT" not in shown and "status=200" in shown


def test_store_entry_repr_hides_the_jwts(pds, clock):
    """Found: ``repr(store.load(did))`` (a notebook cell's output) showed tokens."""
    s = login(pds, clock)
    entry = store_mod.get_store("memory").load(DID)
    assert entry["refresh_jwt"] == s._refresh_jwt  # still a plain mapping
    for text in (repr(entry), str(entry), f"{entry}"):
        assert s._access_jwt not in text and s._refresh_jwt not in text
        assert "alice.test" in text


@pytest.mark.parametrize(
    "call",
    [
        lambda pds, c: atnb.login("Hunter2-Secret", "alice.test", transport=pds),
        lambda pds, c: atnb.login("did:bad Hunter2-Secret", "x", transport=pds),
        lambda pds, c: atnb.create_account(
            "Hunter2-Secret", "a@mail.test", "alice.test", service=c, transport=pds
        ),
    ],
    ids=["swapped", "bad-did", "create-swapped"],
)
def test_invalid_identifier_error_never_repeats_what_was_typed(pds, call):
    """Found: swapped arguments put the password into InvalidHandleError's text."""
    with pytest.raises(errors.InvalidHandleError) as info:
        call(pds, "https://pds.example.com")
    assert "hunter2" not in texts_of(info.value).lower()
    assert pds.calls == []
    one_line_with_next_step(info.value)


def test_swapped_arguments_are_named(pds):
    with pytest.raises(errors.InvalidHandleError, match="look swapped"):
        atnb.login("Hunter2", "@alice.test", transport=pds)
    with pytest.raises(errors.InvalidHandleError) as info:
        atnb.login("alice", "P@ssw0rd", transport=pds)  # a typo, not a swap
    assert "swapped" not in str(info.value)
    with pytest.raises(errors.InvalidHandleError):
        atnb.login(None, PASSWORD, transport=pds)


def test_service_url_with_credentials_is_refused_without_echo(pds):
    """Found: ``https://user:pw@host`` was accepted, and error and repr texts
    (``could not reach user:pw@host``) would have carried the password."""
    with pytest.raises(errors.InsecureServiceError) as info:
        login(pds, Clock(), service="https://alice:Hunter2@pds.example.com")
    assert "Hunter2" not in texts_of(info.value) and pds.calls == []
    one_line_with_next_step(info.value)


def test_network_error_chain_holds_no_secret():
    import requests

    def refuse(request):
        raise requests.ConnectionError(f"refused {request.url}")

    http, _ = stub_http(refuse)
    headers = {"Authorization": "Bearer ACCESS-SECRET", **JSON}
    request = xrpc.Request(
        "POST", "https://pds.example.com", "a.b.c", [], b'{"password":"PW"}', headers
    )
    with pytest.raises(errors.NetworkError) as info:
        xrpc.call(request, xrpc.HTTPTransport(http))
    text = texts_of(info.value)
    assert "ACCESS-SECRET" not in text and '"PW"' not in text
    one_line_with_next_step(info.value)


# -- input checked locally -----------------------------------------------------


@pytest.mark.parametrize(
    "nsid", ["app.bsky.feed.getAuthorFeed\n", "a.b.c\n", "app.bsky.feed.get\nx"]
)
def test_nsid_with_a_newline_is_refused_locally(pds, clock, nsid):
    """Found: ``$`` in the NSID pattern let a trailing newline through."""
    s = login(pds, clock)
    before = len(pds.calls)
    with pytest.raises(errors.InvalidNSIDError) as info:
        s.query(nsid)
    assert len(pds.calls) == before
    one_line_with_next_step(info.value)


def test_handle_and_did_with_a_newline_are_not_valid():
    from atnb import identity

    assert not identity.is_valid_handle("alice.test\n")
    assert not identity.is_did("did:plc:aaaa\n")
    assert identity.handle_from_doc({"alsoKnownAs": ["at://alice.test\n"]}) is None


def test_procedure_redirect_is_not_followed_with_its_body():
    """Found: a 307/308 on a POST re-sent the body (a password) to the new URL."""

    def answer(request):
        if request.url.startswith("https://pds.example.com/"):
            return 307, {"Location": "https://evil.example.net/xrpc/a.b.c"}, b""
        return 200, JSON, {"got": request.body.decode()}

    http, adapter = stub_http(answer)
    request = xrpc.Request(
        "POST", "https://pds.example.com", "a.b.c", [], b'{"password":"PW"}', JSON
    )
    with pytest.raises(errors.XRPCError) as info:
        xrpc.call(request, xrpc.HTTPTransport(http))
    assert [r.url for r in adapter.requests] == ["https://pds.example.com/xrpc/a.b.c"]
    assert info.value.status == 307 and "service=" in str(info.value)
    one_line_with_next_step(info.value)


# -- races -------------------------------------------------------------------------


def test_refresh_landing_between_the_expiry_and_token_reads_is_not_repeated(pds, clock):
    """Found: ``_refresh_if_due`` read ``exp`` and then the token; a refresh
    by another thread in between made it refresh again (two refreshSession)."""
    s = login(pds, clock)
    expire_access(s, clock)
    landed = []

    class Racing(dict):
        def get(self, key, default=None):
            value = super().get(key, default)
            if key == "exp" and not landed:
                landed.append(True)
                s.refresh()  # another thread's refresh completes right now
            return value

    s._access = Racing(s._access)
    assert s.query("a.b.c")["ok"]
    assert landed and pds.count(REFRESH) == 1


def test_refresh_storm_with_store_and_touch_is_one_refresh(pds, clock):
    """32 threads, an expired token, ``last_used`` due: 1 refresh, 1 entry."""
    s = login(pds, clock)
    clock.now += 2 * 3600  # access expired, last_used due for a write
    results, failures = storm(lambda: s.query("a.b.c")["ok"])
    assert failures == [] and len(results) == 32 and pds.count(REFRESH) == 1
    stored = store_mod.get_store("memory").load(DID)
    assert stored["refresh_jwt"] == s._refresh_jwt
    assert stored["last_used"] == clock.now


def test_inactive_session_hit_by_many_threads_is_revoked_once(pds, clock):
    """Found: threads that all saw the session inactive each cleared it again
    (``expired`` fired per thread) and sent deleteSession with no token."""
    s = login(pds, clock)
    events = []
    s.on("expired", lambda event, _s: events.append(event))
    clock.now += 15 * 86400
    real_load = s.store.load

    def slow_load(did):  # every thread sees the session still open
        time.sleep(0.02)
        return real_load(did)

    s.store.load = slow_load
    results, failures = storm(lambda: s.query("a.b.c"))
    assert results == [] and len(failures) == 32
    assert all(
        isinstance(f, errors.NotLoggedInError | errors.SessionExpiredError)
        for f in failures
    )
    assert events == ["expired"]
    deletes = [bearer for nsid, bearer in pds.calls if nsid == DELETE]
    assert len(deletes) == 1 and deletes[0] is not None


def test_procedure_body_sends_datetimes_as_iso_text(pds, clock):
    import datetime as dt

    s = login(pds, clock)
    when = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
    s.procedure("com.atproto.repo.createRecord", {"record": {"createdAt": when}})
    assert pds.bodies[-1] == {"record": {"createdAt": "2026-12-04T12:00:00Z"}}


# -- forget, logout and clear ---------------------------------------------------------


def test_forget_stops_the_live_session_in_this_process(pds, clock):
    """Found: after ``atnb.forget``, the live session's next refresh saved the
    entry again, and ``current_session()`` still returned it."""
    s = login(pds, clock)
    events = []
    s.on("expired", lambda event, _s: events.append(event))
    atnb.forget("alice.test")

    assert not s.logged_in and atnb.current_session() is None
    assert events == ["expired"] and atnb.accounts() == []
    before = len(pds.calls)
    with pytest.raises(errors.NotLoggedInError):
        s.query("a.b.c")
    with pytest.raises(errors.NotLoggedInError):
        s.refresh()
    assert len(pds.calls) == before and store_mod.MemoryStore().load(DID) is None
    assert pds.count(DELETE) == 0  # forget does not revoke; logout does


def test_forget_during_a_refresh_leaves_nothing_stored(pds, clock):
    s = login(pds, clock)
    expire_access(s, clock)
    started, release = threading.Event(), threading.Event()
    real_send = pds.send

    def slow_send(request):
        if request.nsid == REFRESH:
            started.set()
            release.wait(5)
        return real_send(request)

    pds.send = slow_send
    worker = threading.Thread(target=lambda: s.query("a.b.c"))
    worker.start()
    assert started.wait(5)
    forgetting = threading.Thread(target=atnb.forget, args=(DID,))
    forgetting.start()
    release.set()
    worker.join(5)
    forgetting.join(5)
    assert store_mod.MemoryStore().load(DID) is None and not s.logged_in


def test_forget_leaves_other_accounts_alone(pds, clock):
    s = login(pds, clock)
    atnb.forget("did:plc:bbbb")
    assert s.logged_in and s.query("a.b.c")["ok"]


def test_logout_revokes_the_refresh_jwt_another_kernel_rotated(pds, clock):
    """Found: logout sent its own, already rotated refresh JWT; the live one
    (stored by the other kernel) stayed valid on the server."""
    a = login(pds, clock)
    b = atnb.resume(transport=pds, clock=clock)
    b.refresh()  # "the other kernel" rotates
    assert a.logout() is True
    assert (DELETE, b._refresh_jwt) in pds.calls
    assert store_mod.MemoryStore().load(DID) is None
    expire_access(b, clock)
    with pytest.raises(errors.SessionExpiredError):
        b.query("a.b.c")


def test_rejected_refresh_keeps_an_entry_a_newer_login_wrote(pds, clock):
    """An auth rejection clears this session, not another kernel's newer one."""
    s = login(pds, clock)
    pds.valid_refresh.discard(s._refresh_jwt)  # revoked on the server
    newer = pds.tokens()
    real_clear = s._clear

    def clear():  # another kernel's fresh login lands just before the clear
        entry = {**s._entry(), "access_jwt": newer["accessJwt"]}
        store_mod.MemoryStore().save(DID, {**entry, "refresh_jwt": newer["refreshJwt"]})
        real_clear()

    s._clear = clear
    expire_access(s, clock)
    with pytest.raises(errors.SessionExpiredError):
        s.query("a.b.c")
    assert store_mod.MemoryStore().load(DID)["refresh_jwt"] == newer["refreshJwt"]


# -- stores that fail ---------------------------------------------------------------


class FlakyKeyring:
    """A keyring backend that works until ``broken`` is set."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], str] = {}
        self.broken = False

    def _check(self) -> None:
        if self.broken:
            raise ConnectionError("the D-Bus connection dropped")

    def get_password(self, service, username):
        self._check()
        return self.items.get((service, username))

    def set_password(self, service, username, password):
        self._check()
        self.items[(service, username)] = password

    def delete_password(self, service, username):
        self._check()
        self.items.pop((service, username), None)


def test_keyring_error_mid_run_keeps_the_session(pds, clock, store_dirs, recwarn):
    keyring = FlakyKeyring()
    s = login(pds, clock, store=store_mod.KeyringStore(keyring))
    keyring.broken = True
    expire_access(s, clock)
    assert s.query("a.b.c")["ok"]  # refreshes, saves to memory, warns
    assert s.logged_in and pds.count(REFRESH) == 1
    assert s.store.load(DID)["refresh_jwt"] == s._refresh_jwt
    assert any(issubclass(w.category, store_mod.NoKeyringWarning) for w in recwarn)


def test_unwritable_file_store_keeps_login_refresh_and_results(
    pds, clock, tmp_path, caplog
):
    """Found: an OSError from the file store (read-only or full disk) escaped
    ``_safe`` and failed login after createSession, and every refresh."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = store_mod.FileStore(blocker / "sessions")
    with caplog.at_level(logging.WARNING):
        s = login(pds, clock, store=store)
        expire_access(s, clock)
        clock.now += 120
        assert s.query("a.b.c")["ok"]
    assert s.logged_in and pds.count(REFRESH) == 1
    assert "session store" in caplog.text or "lock" in caplog.text


def test_no_lock_folder_keeps_refresh_working(pds, clock, tmp_path, monkeypatch):
    """Found: with no writable lock folder (``HOME`` read-only on a server and
    no keyring), every refresh raised OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker / "state"))
    keyring = FlakyKeyring()
    s = login(pds, clock, store=store_mod.KeyringStore(keyring))
    expire_access(s, clock)
    clock.now += 120
    assert s.query("a.b.c")["ok"] and pds.count(REFRESH) == 1
    assert json.loads(keyring.items[("atnb", DID)])["refresh_jwt"] == s._refresh_jwt


def test_keyring_fallback_store_locks_threads_only(store_dirs, tmp_path):
    import keyring.backends.fail

    with pytest.warns(store_mod.NoKeyringWarning):
        store = store_mod.KeyringStore(keyring.backends.fail.Keyring())
        with store.lock(DID):
            pass
    assert not list((tmp_path / "runtime").glob("**/*.lock"))


def test_failing_use_record_keeps_the_result(pds, clock, caplog):
    s = login(pds, clock)

    def broken(did):
        raise OSError("read-only file system")

    s.store.lock = broken
    clock.now += 120  # last_used due
    with caplog.at_level(logging.WARNING):
        assert s.query("a.b.c")["ok"]
    assert "could not record the use" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        {"pds_url": "http://evil.example.net"},
        {"service": "http://evil.example.net"},
        {"service": 42},
    ],
    ids=["http-pds", "http-service", "number"],
)
def test_unusable_stored_entry_is_ignored_at_login_and_clear_at_resume(
    pds, clock, damage, caplog
):
    """Found: a stored entry with an ``http://`` URL made login (with the right
    password) and resume raise InsecureServiceError instead of moving on."""
    s = login(pds, clock)
    store = store_mod.MemoryStore()
    store.save(DID, {**store.load(DID), **damage})
    with pytest.raises(errors.NotLoggedInError) as info:
        atnb.resume("alice.test", transport=pds, clock=clock)
    one_line_with_next_step(info.value)
    assert "log in again" in str(info.value).lower()

    with caplog.at_level(logging.WARNING):
        again = login(pds, clock)
    assert again is not s and again.logged_in
    assert pds.count("com.atproto.server.createSession") == 2
    assert "cannot be used" in caplog.text


def test_accounts_are_sorted_by_last_use_as_numbers(pds, clock):
    store = store_mod.MemoryStore()
    for did, used in (("did:plc:aaaa", 999.0), ("did:plc:bbbb", 1_000_000_000.0)):
        store.save(did, {**_entry(did), "last_used": used})
    assert [row["did"] for row in atnb.accounts()] == ["did:plc:bbbb", "did:plc:aaaa"]


def _entry(did: str) -> dict:
    return {
        "did": did,
        "handle": did.rsplit(":", 1)[1] + ".test",
        "pds_url": "https://pds.example.com",
        "access_jwt": mint(2e9),
        "refresh_jwt": mint(2e9, "com.atproto.refresh"),
    }


def test_malformed_header_is_not_called_a_network_error(pds, clock):
    """Found: a line break in ``proxy=`` said "could not reach the host"."""
    s = login(pds, clock)
    http, adapter = stub_http(lambda r: (200, JSON, {}))
    s._transport = xrpc.HTTPTransport(http)
    with pytest.raises(errors.AtnbError) as info:
        s.query("a.b.c", proxy="did:web:x\r\nInjected: 1")
    assert not isinstance(info.value, errors.NetworkError)
    assert "Injected" not in texts_of(info.value) and adapter.requests == []
    one_line_with_next_step(info.value)


def test_server_message_with_line_breaks_is_one_line():
    http, _ = stub_http(lambda r: (400, JSON, {"error": "X", "message": "a\nb\n"}))
    with pytest.raises(errors.XRPCError) as info:
        xrpc.query("https://pds.example.com", "a.b.c", http=http)
    assert info.value.server_message == "a\nb\n"
    one_line_with_next_step(info.value)


def test_a_misspelt_nsid_is_not_called_an_outage():
    err = errors.error_from_response(
        501,
        {"error": "MethodNotImplemented", "message": "Method Not Implemented"},
        nsid="app.bsky.feed.searchPost",
    )
    assert not isinstance(err, errors.ServerError)
    assert "spelling" in str(err) and "try again later" not in str(err)
    assert str(err).count("\n") == 0
