"""Identity against the devnet's real PLC directory and PDS (C05, C06).

Handles are published through the loopback DNS server and web server of
``identity_net``; DID documents come from the devnet's PLC, whose
``#atproto_pds`` endpoint is the devnet front (``devnet.pds_url``), so every
call a client makes after discovery is counted there. A did:web account lives
on the devnet PDS with its did.json served by the loopback web server
(tests/did_web_account.py).
"""

from __future__ import annotations

import pytest
from http_fixtures import did_doc

import atnb
from atnb import identity, xrpc
from atnb.errors import InvalidHandleError, ResolutionError

pytestmark = pytest.mark.devnet

CREATE = "com.atproto.server.createSession"


@pytest.fixture
def net(devnet, front, identity_net, monkeypatch):
    """The devnet (counters cleared), DIDs resolved through its PLC directory.

    Handles resolve only through the loopback DNS and web servers of
    ``identity_net``; the entryway stays a dead loopback port.
    """
    monkeypatch.setattr(atnb.settings, "plc_url", devnet.plc_url)
    monkeypatch.setattr(atnb.settings, "entryway", "http://127.0.0.1:9")
    monkeypatch.setattr(atnb.settings, "resolve_timeout", 3.0)
    return devnet


def test_handle_to_did_to_pds_through_dns(net, identity_net, account):
    identity_net.dns.publish(account.handle, account.did)

    found = identity.resolve(account.handle.upper())
    assert found.did == account.did
    assert found.handle == account.handle
    assert found.handle_verified
    assert found.pds_url == net.pds_url
    assert identity.pds_for(f"@{account.handle} ") == net.pds_url
    assert identity_net.web.count(account.handle) == 1  # .well-known had nothing


def test_handle_published_only_through_well_known(net, identity_net, account):
    # The PDS itself answers /.well-known/atproto-did for its handles.
    atnb.settings.host_map = {**atnb.settings.host_map, account.handle: net.pds_url}
    assert identity.pds_for(account.handle) == net.pds_url
    assert identity_net.dns.queries == [f"_atproto.{account.handle}"]
    assert net.front.count("/.well-known/atproto-did") == 1


def test_resolve_handle_on_the_pds(net, identity_net, account):
    did = identity.resolve_handle(account.handle, service=net.pds_url)
    assert did == account.did
    assert net.front.count("com.atproto.identity.resolveHandle") == 1


@pytest.mark.parametrize("kind", ["drop", "html"])
def test_failing_pds_does_not_hide_dns(net, identity_net, account, kind):
    net.front.fault("com.atproto.identity.resolveHandle", kind)
    identity_net.dns.publish(account.handle, account.did)
    did = identity.resolve_handle(account.handle, service=net.pds_url)
    assert did == account.did
    assert net.front.count("com.atproto.identity.resolveHandle") == 1


def test_dns_and_pds_disagreeing(net, identity_net, account, make_account):
    other = make_account()
    identity_net.dns.publish(account.handle, other.did)
    with pytest.raises(ResolutionError) as caught:
        identity.resolve_handle(account.handle, service=net.pds_url)
    text = str(caught.value)
    assert f"DNS TXT _atproto.{account.handle} says {other.did}" in text
    assert f"resolveHandle on {net.pds_url} says {account.did}" in text


def test_did_web_account_never_asks_the_plc(net, identity_net, account):
    did = "did:web:carol.example.com"
    doc = did_doc(did, account.handle, net.pds_url)
    identity_net.web.did_json("carol.example.com", doc)
    atnb.settings.plc_url = f"{identity_net.web.url}/plc"

    found = identity.resolve_did(did)
    pds_url = identity.pds_for(did)
    assert found["id"] == did
    assert pds_url == net.pds_url
    assert identity_net.plc_requests() == 0

    # The discovered URL is a working PDS (the front counts the call).
    data, _ = xrpc.query(pds_url, "com.atproto.server.describeServer")
    assert "availableUserDomains" in data
    assert net.front.count("com.atproto.server.describeServer") == 1


def test_did_plc_through_the_devnet_plc(net, identity_net, account):
    doc = identity.resolve_did(account.did)
    assert identity.handle_from_doc(doc) == account.handle
    assert identity.pds_endpoint(doc) == net.pds_url
    assert identity.pds_for(account.did) == net.pds_url


@pytest.mark.parametrize(
    "typed", ["alice", "alice..test", "al ice.test", "-alice.test"]
)
def test_c05_invalid_handles_make_no_request(net, identity_net, typed):
    before = net.front.counts()
    for call in (identity.pds_for, identity.resolve_handle, identity.resolve):
        with pytest.raises(InvalidHandleError):
            call(typed)
    with pytest.raises(InvalidHandleError):
        atnb.login(typed, "not-sent", store="memory")
    assert net.front.counts() == before
    assert identity_net.dns.queries == []
    assert identity_net.web.requests == []


def test_c06_login_without_service_reaches_the_pds(net, identity_net, account):
    identity_net.dns.publish(account.handle, account.did)
    typed = f" @{account.handle.upper()}\n"

    session = atnb.login(typed, account.app_password, store="memory")
    assert session.did == account.did
    assert session.pds_url == net.pds_url
    assert net.front.count(CREATE) == 1

    session.query("com.atproto.server.getSession")
    assert net.front.count("com.atproto.server.getSession") == 1


def test_c06_login_by_did_without_service(net, identity_net, account):
    session = atnb.login(account.did, account.app_password, store="memory")
    assert session.did == account.did
    assert session.pds_url == net.pds_url
    assert net.front.count(CREATE) == 1


def test_c06_login_by_email_goes_to_the_entryway(net, identity_net, account):
    atnb.settings.entryway = net.pds_url
    session = atnb.login(f" {account.email} ", account.app_password, store="memory")
    assert session.did == account.did
    assert net.front.count(CREATE) == 1
    assert identity_net.dns.queries == []


def test_handle_not_claimed_by_the_did_document(
    net, identity_net, account, make_account, caplog
):
    other = make_account()
    identity_net.dns.publish(other.handle, account.did)  # points at someone else

    found = identity.resolve(other.handle)
    assert found.did == account.did
    assert not found.handle_verified
    assert f"names at://{account.handle}" in found.mismatch
    assert "handle not verified" in caplog.text


def test_c06_did_doc_from_the_session_decides_pds_url(net, identity_net, account):
    # Logged in through the PDS's own port, the session moves to the URL that
    # the didDoc of createSession names (the front), and later calls go there.
    session = atnb.login(
        account.handle, account.app_password, service=net.pds_direct_url
    )
    assert session.pds_url == net.pds_url
    assert net.front.count(CREATE) == 0

    session.query("com.atproto.server.getSession")
    assert net.front.count("com.atproto.server.getSession") == 1


def test_c06_did_web_account_logs_in_without_service(net, identity_net):
    from did_web_account import create_did_web_account

    carol = create_did_web_account(net, identity_net.web)
    atnb.settings.plc_url = f"{identity_net.web.url}/plc"  # must stay unused
    identity_net.dns.publish(carol.handle, carol.did)
    net.front.reset(two_factor=True)

    found = identity.resolve(carol.did)
    assert found.handle == carol.handle and found.handle_verified
    assert found.pds_url == net.pds_url

    for typed in (carol.did, f"@{carol.handle}"):
        session = atnb.login(typed, carol.password, store="memory")
        assert session.did == carol.did
        assert session.pds_url == net.pds_url
        session.logout()
    assert net.front.count(CREATE) == 2
    assert identity_net.plc_requests() == 0
