"""Identity on loopback: handle syntax (C05), DNS and .well-known, DID documents.

Every test runs against the loopback DNS and web servers of ``identity_net``
(see conftest_identity.py); nothing reaches the system resolver or a public
host.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from http_fixtures import did_doc

import atnb
from atnb import _lookup, identity
from atnb.errors import InsecureServiceError, InvalidHandleError, ResolutionError

pytestmark = pytest.mark.usefixtures("identity_net")

ALICE = "did:plc:alice2345alice2345alice23"
MALLORY = "did:plc:mallory2345mallory2345ma"
PDS = "https://pds.example.com"


# -- C05: what people type ------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("@Alice.Test ", "alice.test"),
        ("alice.test\n", "alice.test"),
        ("\tALICE.bsky.social", "alice.bsky.social"),
        ("did:plc:aaaa", "did:plc:aaaa"),
        ("did:web:Example.COM", "did:web:Example.COM"),
        (" Alice@Example.com ", "Alice@Example.com"),
    ],
)
def test_normalize_identifier(typed, expected):
    assert identity.normalize_identifier(typed) == expected


INVALID = ["alice", "alice..test", "al ice.test", "-alice.test", "@@alice.test", ""]


@pytest.mark.parametrize("typed", INVALID)
def test_invalid_handles_raise_with_zero_requests(identity_net, typed):
    for call in (
        identity.normalize_identifier,
        identity.resolve_handle,
        identity.resolve,
        identity.pds_for,
    ):
        with pytest.raises(InvalidHandleError) as caught:
            call(typed)
        assert "not a valid handle" in str(caught.value)
        assert "a handle looks like alice.bsky.social" in str(caught.value)

    assert identity_net.dns.queries == []
    assert identity_net.web.requests == []


@pytest.mark.parametrize("tld", sorted(identity.DISALLOWED_TLDS))
def test_disallowed_tlds(tld):
    assert not identity.is_valid_handle(f"alice.{tld}")
    with pytest.raises(InvalidHandleError, match=f"cannot end in .{tld}"):
        identity.normalize_handle(f"alice.{tld}")


@pytest.mark.parametrize(
    ("handle", "valid"),
    [
        ("alice.test", True),
        ("xn--ls8h.test", True),
        ("a.b.c.d.e.example.com", True),
        (f"{'a' * 63}.test", True),
        (f"{'a' * 64}.test", False),
        (".".join(["a" * 62] * 4) + ".test", False),  # 256 > 253 characters
        (".".join(["a" * 61] * 4) + ".test", True),  # 252
        ("alice.1com", False),
        ("alice-.test", False),
        ("alïce.test", False),
        ("alice_x.test", False),
        ("alice.test.", False),
    ],
)
def test_handle_syntax(handle, valid):
    assert identity.is_valid_handle(handle) is valid


def test_invalid_did_is_refused_locally(identity_net):
    with pytest.raises(InvalidHandleError, match="not a valid DID"):
        identity.normalize_identifier("did:plc:")
    with pytest.raises(InvalidHandleError):
        identity.resolve_did("did:plc:aaaa ")
    assert identity_net.web.requests == []


# -- handle -> DID ----------------------------------------------------------------


def test_dns_only(identity_net):
    identity_net.dns.publish("alice.example.com", ALICE)
    assert identity.resolve_handle("@Alice.Example.com") == ALICE
    assert identity_net.dns.queries == ["_atproto.alice.example.com"]
    assert identity_net.web.requests == [
        ("alice.example.com", "/.well-known/atproto-did")
    ]


def test_well_known_only(identity_net):
    identity_net.web.atproto_did("alice.example.com", f"{ALICE}\n")
    assert identity.resolve_handle("alice.example.com") == ALICE
    assert identity_net.dns.queries == ["_atproto.alice.example.com"]


def test_methods_agreeing(identity_net):
    identity_net.dns.publish("alice.example.com", ALICE)
    identity_net.web.atproto_did("alice.example.com", ALICE)
    assert identity.resolve_handle("alice.example.com") == ALICE


def test_methods_disagreeing_say_who_said_what(identity_net):
    identity_net.dns.publish("alice.example.com", ALICE)
    identity_net.web.atproto_did("alice.example.com", MALLORY)
    with pytest.raises(ResolutionError) as caught:
        identity.resolve_handle("alice.example.com")
    text = str(caught.value)
    assert "different DIDs" in text
    assert f"DNS TXT _atproto.alice.example.com says {ALICE}" in text
    assert f"atproto-did says {MALLORY}" in text
    assert "\n" not in text


def test_nothing_found_names_each_method(identity_net):
    identity_net.web.atproto_did("alice.example.com", "<html>oops</html>")
    with pytest.raises(ResolutionError) as caught:
        identity.resolve_handle("alice.example.com")
    text = str(caught.value)
    assert "could not resolve alice.example.com" in text
    assert "no TXT record" in text
    assert "the answer is not a DID" in text
    assert text.endswith("pass service= with the PDS URL.")


@pytest.mark.parametrize("mode", ["servfail", "drop"])
def test_dns_failure_does_not_hide_well_known(identity_net, mode):
    identity_net.dns.mode = mode
    identity_net.web.atproto_did("alice.example.com", ALICE)
    started = time.monotonic()
    assert identity.resolve_handle("alice.example.com") == ALICE
    assert time.monotonic() - started < atnb.settings.resolve_timeout + 1.0


def test_slow_web_does_not_hide_dns(identity_net):
    atnb.settings.resolve_timeout = 0.3
    identity_net.web.delay = 1.0
    identity_net.dns.publish("alice.example.com", ALICE)
    started = time.monotonic()
    assert identity.resolve_handle("alice.example.com") == ALICE
    assert time.monotonic() - started < 0.9


def test_dns_txt_records_other_than_did_are_ignored(identity_net):
    identity_net.dns.records["_atproto.alice.example.com"] = ["v=spf1", f"did={ALICE}"]
    assert identity.resolve_handle("alice.example.com") == ALICE


def test_several_did_records_are_not_trusted(identity_net):
    identity_net.dns.records["_atproto.alice.example.com"] = [
        f"did={ALICE}",
        f"did={MALLORY}",
    ]
    with pytest.raises(ResolutionError, match="several different did= records"):
        identity.resolve_handle("alice.example.com")


def test_well_known_redirect_is_followed_through_the_host_map(identity_net):
    identity_net.web.route(
        "alice.example.com",
        "/.well-known/atproto-did",
        status=302,
        headers={"Location": "https://ids.example.net/alice"},
    )
    identity_net.web.route("ids.example.net", "/alice", ALICE)
    assert identity.resolve_handle("alice.example.com") == ALICE


def test_well_known_redirect_to_plain_http_is_refused(identity_net):
    identity_net.web.route(
        "alice.example.com",
        "/.well-known/atproto-did",
        status=301,
        headers={"Location": "http://ids.example.net/alice"},
    )
    identity_net.web.route("ids.example.net", "/alice", ALICE)
    with pytest.raises(ResolutionError, match="refused http://ids"):
        identity.resolve_handle("alice.example.com")
    assert identity_net.web.count("ids.example.net") == 0


def test_service_resolve_handle(identity_net):
    nsid = "com.atproto.identity.resolveHandle"
    path = f"/xrpc/{nsid}?handle=alice.example.com"
    body = json.dumps({"did": ALICE})
    identity_net.web.route("127.0.0.1", path, body, headers=_json_type())
    did = identity.resolve_handle("alice.example.com", service=identity_net.web.url)
    assert did == ALICE


def test_service_error_does_not_hide_dns(identity_net):
    nsid = "com.atproto.identity.resolveHandle"
    path = f"/xrpc/{nsid}?handle=alice.example.com"
    body = json.dumps({"error": "InvalidRequest", "message": "Unable to resolve"})
    identity_net.web.route("127.0.0.1", path, body, status=400, headers=_json_type())
    identity_net.dns.publish("alice.example.com", ALICE)
    did = identity.resolve_handle("alice.example.com", service=identity_net.web.url)
    assert did == ALICE


def test_insecure_service_is_refused_before_any_request(identity_net):
    with pytest.raises(InsecureServiceError):
        identity.resolve_handle("alice.example.com", service="http://pds.example.com")
    assert identity_net.dns.queries == []
    assert identity_net.web.requests == []


def _json_type() -> dict[str, str]:
    return {"Content-Type": "application/json"}


# -- cache ------------------------------------------------------------------------


def test_cache_serves_repeats_until_the_ttl(identity_net, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(identity, "_clock", lambda: now[0])
    atnb.settings.resolve_cache_ttl = 60
    identity_net.dns.publish("alice.example.com", ALICE)

    for _ in range(3):
        assert identity.resolve_handle("alice.example.com") == ALICE
    assert len(identity_net.dns.queries) == 1

    now[0] += 61
    identity.resolve_handle("alice.example.com")
    assert len(identity_net.dns.queries) == 2

    identity.clear_cache()
    identity.resolve_handle("alice.example.com")
    assert len(identity_net.dns.queries) == 3


def test_failures_are_not_cached(identity_net):
    with pytest.raises(ResolutionError):
        identity.resolve_handle("alice.example.com")
    identity_net.dns.publish("alice.example.com", ALICE)
    assert identity.resolve_handle("alice.example.com") == ALICE


def test_changing_settings_bypasses_the_cache(identity_net):
    identity_net.dns.publish("alice.example.com", ALICE)
    identity.resolve_handle("alice.example.com")
    atnb.settings.host_map = {**atnb.settings.host_map, "other.test": "http://[::1]"}
    identity.resolve_handle("alice.example.com")
    assert len(identity_net.dns.queries) == 2


def test_cached_documents_cannot_be_changed_by_callers(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", PDS))
    identity.resolve_did(ALICE)["service"].clear()
    assert identity.pds_endpoint(identity.resolve_did(ALICE)) == PDS


# -- DID -> document -> PDS -------------------------------------------------------


def test_did_plc(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", PDS))
    doc = identity.resolve_did(ALICE)
    assert doc["id"] == ALICE
    assert identity.pds_for(ALICE) == PDS


def test_did_plc_unknown(identity_net):
    identity_net.plc(ALICE, None, status=404)
    with pytest.raises(ResolutionError, match="is not in the PLC directory"):
        identity.resolve_did(ALICE)


def test_plc_unreachable(identity_net):
    atnb.settings.plc_url = "http://127.0.0.1:9"
    with pytest.raises(ResolutionError, match="could not reach the PLC directory"):
        identity.resolve_did(ALICE)


def test_did_web_never_asks_the_plc(identity_net):
    did = "did:web:alice.example.com"
    identity_net.web.did_json("alice.example.com", did_doc(did, "alice.test", PDS))
    assert identity.pds_for(did) == PDS
    assert identity_net.plc_requests() == 0


def test_did_web_on_localhost_uses_http(identity_net):
    atnb.settings.host_map = {}
    port = identity_net.web.url.rsplit(":", 1)[1]
    did = f"did:web:localhost%3A{port}"
    identity_net.web.did_json("localhost", did_doc(did, None, "http://localhost:1"))
    assert identity.pds_for(did) == "http://localhost:1"


def test_did_web_with_a_path_is_refused(identity_net):
    with pytest.raises(ResolutionError, match="with a path"):
        identity.resolve_did("did:web:example.com:users:alice")
    assert identity_net.web.requests == []


def test_document_for_another_did_is_refused(identity_net):
    identity_net.plc(ALICE, did_doc(MALLORY, "alice.example.com", PDS))
    with pytest.raises(ResolutionError, match="is for 'did:plc:mallory"):
        identity.resolve_did(ALICE)


def test_unsupported_did_method(identity_net):
    with pytest.raises(ResolutionError, match="did:plc and did:web only"):
        identity.resolve_did("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")


def test_document_without_pds(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", None))
    with pytest.raises(ResolutionError, match="names no PDS"):
        identity.pds_for(ALICE)


def test_http_pds_on_a_public_host_is_refused(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, None, "http://pds.example.com"))
    with pytest.raises(InsecureServiceError):
        identity.pds_for(ALICE)


def test_http_loopback_pds_needs_a_loopback_source(monkeypatch):
    monkeypatch.setattr(atnb.settings, "plc_url", "https://plc.example.com")
    assert not _lookup.source_is_loopback(ALICE)
    monkeypatch.setattr(atnb.settings, "plc_url", "http://localhost:2582")
    assert _lookup.source_is_loopback(ALICE)


def test_email_goes_to_the_entryway_without_requests(identity_net):
    atnb.settings.entryway = "https://entryway.example.com/"
    assert identity.pds_for(" alice@example.com ") == "https://entryway.example.com"
    assert identity_net.dns.queries == []
    assert identity_net.web.requests == []


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"id": "#atproto_pds"}, PDS),
        ({"id": f"{ALICE}#atproto_pds"}, PDS),
        ({"id": "#atproto_labeler"}, None),
        ({"id": "#atproto_pds", "type": "Other"}, None),
        ({"id": "#atproto_pds", "serviceEndpoint": "pds.example.com"}, None),
        ({"id": "#atproto_pds", "serviceEndpoint": ["https://x.example"]}, None),
    ],
)
def test_pds_endpoint(service, expected):
    entry = {"type": "AtprotoPersonalDataServer", "serviceEndpoint": PDS, **service}
    doc = {"id": ALICE, "service": ["junk", entry]}
    assert identity.pds_endpoint(doc) == expected


def test_handle_from_doc_takes_the_first_at_alias():
    doc = {"alsoKnownAs": ["https://x.example", "at://Alice.Test", "at://b.test"]}
    assert identity.handle_from_doc(doc) == "alice.test"
    assert identity.handle_from_doc({}) is None


# -- both ways ----------------------------------------------------------------------


def test_resolve_handle_verified(identity_net):
    identity_net.dns.publish("alice.example.com", ALICE)
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", PDS))
    found = identity.resolve("@alice.example.com")
    assert (found.did, found.handle, found.pds_url) == (ALICE, "alice.example.com", PDS)
    assert found.handle_verified and found.mismatch is None
    assert "did_doc" not in repr(found)


def test_resolve_handle_not_claimed_by_the_document(identity_net, caplog):
    identity_net.dns.publish("alice.example.com", ALICE)
    identity_net.plc(ALICE, did_doc(ALICE, "someone.else.test", PDS))
    with caplog.at_level(logging.WARNING, logger="atnb.identity"):
        found = identity.resolve("alice.example.com")
    assert not found.handle_verified
    assert "names at://someone.else.test" in found.mismatch
    assert "handle not verified" in caplog.text
    # The PDS is still the DID's: logging in there is safe, the handle is not.
    assert identity.pds_for("alice.example.com") == PDS


def test_resolve_did_checks_the_handle_back(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", PDS))
    identity_net.dns.publish("alice.example.com", ALICE)
    assert identity.resolve(ALICE).handle_verified

    identity.clear_cache()
    identity_net.dns.publish("alice.example.com", MALLORY)
    found = identity.resolve(ALICE)
    assert found.handle == "alice.example.com"
    assert not found.handle_verified
    assert f"resolves to {MALLORY}" in found.mismatch


def test_pds_for_a_did_skips_the_handle_check(identity_net):
    identity_net.plc(ALICE, did_doc(ALICE, "alice.example.com", PDS))
    assert identity.pds_for(ALICE) == PDS
    assert identity_net.dns.queries == []


# -- guards -------------------------------------------------------------------------


def test_lookups_send_no_credentials(identity_net, monkeypatch):
    import requests

    sent: list[dict] = []
    real = requests.get

    def spy(url, **kwargs):
        sent.append(dict(kwargs.get("headers") or {}))
        return real(url, **kwargs)

    monkeypatch.setattr(requests, "get", spy)
    identity_net.web.atproto_did("alice.example.com", ALICE)
    identity.resolve_handle("alice.example.com")
    assert sent
    assert all("authorization" not in {k.lower() for k in h} for h in sent)


def test_failed_discovery_leaks_no_password(identity_net, caplog):
    password = "hunter2-secret-pw"
    debug = caplog.at_level(logging.DEBUG, logger="atnb")
    with debug, pytest.raises(ResolutionError) as caught:
        atnb.login("nobody.example.com", password, store="memory")
    assert identity_net.dns.queries == ["_atproto.nobody.example.com"]
    assert password not in str(caught.value)
    assert password not in repr(caught.value)
    assert password not in caplog.text


def test_public_names_export_from_atnb():
    assert atnb.resolve_handle is identity.resolve_handle
    assert atnb.resolve_did is identity.resolve_did
    assert atnb.pds_for is identity.pds_for


def test_import_is_light():
    code = (
        "import sys, atnb.identity, atnb._lookup; "
        "print(sorted(m for m in ('requests', 'dns', 'dns.resolver') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
