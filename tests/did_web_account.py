"""A real did:web account on the devnet PDS, its did.json served by a test server.

The reference PDS hosts a did:web account when the DID's controller asks for
it: ``createAccount`` with ``did`` and a service-auth JWT signed by the key in
the DID document. The account starts deactivated; once the document names the
PDS's signing key for it, ``activateAccount`` turns it on. Here the DID is
``did:web:localhost%3a<port>`` and ``https://localhost:<port>`` is our loopback
web server (``http://`` for localhost, as the AT Protocol resolvers do).
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field

from http_fixtures import WebServer, did_doc

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass
class WebAccount:
    did: str
    handle: str
    email: str
    password: str = field(repr=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _base58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    text = ""
    while number:
        number, rest = divmod(number, 58)
        text = _B58[rest] + text
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + text


def _multikey(private_key) -> str:
    """The ``publicKeyMultibase`` of a secp256k1 key (multicodec 0xe7)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    point = private_key.public_key().public_bytes(
        Encoding.X962, PublicFormat.CompressedPoint
    )
    return "z" + _base58(b"\xe7\x01" + point)


def _service_jwt(private_key, *, iss: str, aud: str, lxm: str) -> str:
    """An ES256K service-auth JWT (low-S, raw r||s signature)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import (
        decode_dss_signature,
    )

    now = int(time.time())
    header = {"typ": "JWT", "alg": "ES256K"}
    claims = {"iss": iss, "aud": aud, "lxm": lxm, "iat": now, "exp": now + 60}
    claims["jti"] = secrets.token_hex(8)
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode())
        for part in (header, claims)
    )
    der = private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    s = min(s, _SECP256K1_N - s)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input}.{_b64url(signature)}"


def create_did_web_account(net, web: WebServer) -> WebAccount:
    """Create and activate a did:web account whose did.json ``web`` serves."""
    from cryptography.hazmat.primitives.asymmetric import ec

    # The reference PDS lower-cases the identifier of createSession, so a
    # "%3A" would never match; percent-escapes are case-insensitive anyway.
    port = web.url.rsplit(":", 1)[1]
    did = f"did:web:localhost%3a{port}"
    handle = f"w{secrets.token_hex(5)}.test"
    key = ec.generate_private_key(ec.SECP256K1())
    doc = did_doc(did, handle, net.pds_url)
    doc["verificationMethod"] = [_key_entry(did, _multikey(key))]
    web.did_json("localhost", doc)

    nsid = "com.atproto.server.createAccount"
    auth = _service_jwt(key, iss=did, aud=net.pds_did, lxm=nsid)
    password = secrets.token_urlsafe(12)
    email = f"{handle.split('.')[0]}@mail.test"
    body = {"did": did, "handle": handle, "email": email, "password": password}
    made = net.xrpc("POST", nsid, body, jwt=auth)

    # The PDS made a repo signing key; the document must name it.
    wanted = net.xrpc(
        "GET",
        "com.atproto.identity.getRecommendedDidCredentials",
        jwt=made["accessJwt"],
    )
    pds_key = wanted["verificationMethods"]["atproto"]
    doc["verificationMethod"] = [_key_entry(did, pds_key.removeprefix("did:key:"))]
    web.did_json("localhost", doc)
    net.xrpc("POST", "com.atproto.server.activateAccount", jwt=made["accessJwt"])
    return WebAccount(did, handle, email, password)


def _key_entry(did: str, multibase: str) -> dict:
    return {
        "id": f"{did}#atproto",
        "type": "Multikey",
        "controller": did,
        "publicKeyMultibase": multibase,
    }
