"""The review's breakage cases end to end on the devnet (front faults, real PDS).

The unit versions, and the helpers shared here, are in test_breakage.py.
"""

from __future__ import annotations

import logging
import time

import pytest

import atnb
from atnb import errors
from atnb import store as store_mod
from tests import test_session as base
from tests.test_breakage import (
    DELETE,
    REFRESH,
    FlakyKeyring,
    one_line_with_next_step,
    texts_of,
)

pytestmark = pytest.mark.devnet

fresh_state = base.fresh_state  # autouse: clean stores, listeners, settings

CREATE = "com.atproto.server.createSession"
GET_SESSION = "com.atproto.server.getSession"


@pytest.fixture
def loopback_only(monkeypatch):
    """Record every non-loopback name looked up and address connected to."""
    import ipaddress
    import socket

    seen: list = []

    def loopback(host) -> bool:
        name = (host.decode() if isinstance(host, bytes) else str(host)).strip("[]")
        if name.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect

    def lookup(host, *args, **kwargs):
        if host is not None and not loopback(host):
            seen.append(("getaddrinfo", host))
        return real_lookup(host, *args, **kwargs)

    def connect(sock, address):
        if isinstance(address, tuple) and not loopback(address[0]):
            seen.append(("connect", address))
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


def devnet_login(net, account, password=None, **kwargs):
    kwargs.setdefault("service", net.pds_url)
    return atnb.login(account.handle, password or account.app_password, **kwargs)


def give_expired_access(net, s):

    expired = net.mint_access_jwt(
        s.did, exp=time.time() - 60, scope="com.atproto.appPass"
    )
    s._set_tokens(expired, s._refresh_jwt)


def test_session_traffic_stays_on_loopback(devnet, front, account, loopback_only):
    """Login, resume, refresh, data calls and logout touch loopback only."""
    s = devnet_login(devnet, account)
    s.refresh()
    resumed = atnb.resume(account.handle)
    give_expired_access(devnet, resumed)
    assert resumed.query(GET_SESSION)["did"] == account.did
    assert resumed.logout() is True
    assert loopback_only == []


def test_identity_under_the_test_settings_stays_on_loopback(loopback_only):
    with pytest.raises(errors.ResolutionError):
        atnb.pds_for("alice.test")
    assert loopback_only == []


def test_no_secret_in_any_log_or_error_chain(devnet, front, make_account, caplog):
    """Every logger at DEBUG (urllib3's too) and every exception in each chain."""
    caplog.set_level(logging.DEBUG)  # the root logger: atnb, urllib3, filelock
    failures: list[BaseException] = []

    def attempt(call):
        try:
            call()
        except errors.AtnbError as exc:
            failures.append(exc)

    account = make_account(app_password=True)
    gated = make_account()
    devnet.enable_email_2fa(gated)
    attempt(lambda: devnet_login(devnet, gated, gated.password))
    code = devnet.latest_code(gated.email)
    attempt(lambda: devnet_login(devnet, gated, gated.password, auth_factor_token="X"))
    two_fa = devnet_login(devnet, gated, gated.password, auth_factor_token=code)
    attempt(lambda: devnet_login(devnet, account, "not-the-password"))
    attempt(lambda: atnb.login(account.password, account.handle))  # swapped

    s = devnet_login(devnet, account)
    secrets = [gated.password, code, account.password, account.app_password]
    secrets += [two_fa._access_jwt, two_fa._refresh_jwt, s._access_jwt]
    secrets.append(s._refresh_jwt)
    for kind, options in (("html", {"status": 502}), ("drop", {})):
        front.fault(REFRESH, kind, **options)
        give_expired_access(devnet, s)
        attempt(lambda: s.query(GET_SESSION))
    front.fault(GET_SESSION, "drop")
    attempt(lambda: s.query(GET_SESSION))
    s.refresh()
    secrets += [s._access_jwt, s._refresh_jwt]
    store = store_mod.get_store()
    shown = [
        repr(s),
        str(s),
        repr(store),
        repr(store.load(s.did)),
        str(atnb.accounts()),
    ]
    s.logout()
    two_fa.logout()
    attempt(lambda: s.query(GET_SESSION))

    # mail.log is the devnet's SMTP sink in this process: it reads the code.
    lines = caplog.text.splitlines()  # formatted: messages and tracebacks
    logged = "\n".join(line for line in lines if "mail.log:" not in line)
    assert len(failures) == 8 and "urllib3.connectionpool" in logged
    texts = [logged, *shown, *(texts_of(exc) for exc in failures)]
    for text in texts:
        for secret in secrets:
            assert secret not in text


@pytest.mark.parametrize(
    ("kind", "options", "raised"),
    [
        ("drop", {}, errors.NetworkError),
        ("html", {"status": 502}, errors.ServerError),
        ("delay", {"delay_ms": 2500}, errors.NetworkError),
    ],
    ids=["drop", "502", "timeout"],
)
def test_failed_data_call_keeps_the_session(
    devnet, front, account, monkeypatch, kind, options, raised
):
    monkeypatch.setattr(atnb.settings, "request_timeout", 1.0)
    s = devnet_login(devnet, account)
    refresh_1 = s._refresh_jwt
    front.fault(GET_SESSION, kind, **options)
    with pytest.raises(raised) as info:
        s.query(GET_SESSION)
    one_line_with_next_step(info.value)
    assert "session was kept" in str(info.value)
    assert s.logged_in and s._refresh_jwt == refresh_1
    assert store_mod.get_store().load(s.did)["refresh_jwt"] == refresh_1
    assert s.query(GET_SESSION)["did"] == account.did
    assert front.count(REFRESH) == 0 and front.count(CREATE) == 1


def test_bad_input_gets_one_line_with_the_next_step(devnet, front, account):
    """Wrong password, malformed handle, bad NSID, http:// URL: one line each."""
    calls = [
        lambda: devnet_login(devnet, account, "not-the-password"),
        lambda: atnb.login("al ice.test", "x", service=devnet.pds_url),
        lambda: atnb.login(account.handle, "x", service="http://pds.example.com"),
        lambda: devnet_login(devnet, account).query("app.bsky"),
    ]
    for call in calls:
        with pytest.raises(errors.AtnbError) as info:
            call()
        one_line_with_next_step(info.value)
    assert front.count(CREATE) == 2


def test_corrupt_stored_session_then_password_login(devnet, front, account, caplog):
    s = devnet_login(devnet, account)
    store_mod.MemoryStore._data[s.did] = '{"v": 1, "did": "' + s.did + '", "handle'
    with pytest.raises(errors.NotLoggedInError) as info:
        atnb.resume(s.did)
    one_line_with_next_step(info.value)
    assert "log in" in str(info.value).lower()
    with caplog.at_level(logging.WARNING):
        again = devnet_login(devnet, account)
    assert "not valid JSON" in caplog.text
    assert again.query(GET_SESSION)["did"] == account.did
    assert front.count(CREATE) == 2


def test_forget_stops_the_live_session_on_the_devnet(devnet, front, account):
    s = devnet_login(devnet, account)
    atnb.forget(account.handle)
    give_expired_access(devnet, s)
    with pytest.raises(errors.NotLoggedInError):
        s.query(GET_SESSION)
    assert front.count(REFRESH) == 0 and front.count(GET_SESSION) == 0
    assert store_mod.get_store().load(s.did) is None and atnb.accounts() == []


def test_logout_revokes_what_the_other_kernel_rotated(devnet, front, account):
    front.configure(reject_rotated=True)
    a = devnet_login(devnet, account)
    b = atnb.resume(account.handle)  # "the other kernel"
    b.refresh()
    assert a.logout() is True
    give_expired_access(devnet, b)
    with pytest.raises(errors.SessionExpiredError):
        b.query(GET_SESSION)  # revoked on the server, not only here
    assert front.count(DELETE) == 2  # the live JWT, then (best effort) a's own


def test_keyring_error_mid_run_on_the_devnet(devnet, front, account, store_dirs):
    keyring = FlakyKeyring()
    s = devnet_login(devnet, account, store=store_mod.KeyringStore(keyring))
    keyring.broken = True
    give_expired_access(devnet, s)
    with pytest.warns(store_mod.NoKeyringWarning):
        assert s.query(GET_SESSION)["did"] == account.did
    assert front.count(REFRESH) == 1 and s.store.name == "memory"
    assert s.store.load(s.did)["refresh_jwt"] == s._refresh_jwt
