"""atnb._jwt: claims read locally, no request, no token in messages."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from atnb import _jwt


def make_jwt(claims: dict, header: dict | None = None) -> str:
    def part(value: dict) -> str:
        raw = json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part(header or {'typ': 'at+jwt', 'alg': 'HS256'})}.{part(claims)}.sig"


@pytest.mark.parametrize(
    ("scope", "kind"),
    [
        ("com.atproto.access", "password"),
        ("com.atproto.appPass", "app_password"),
        ("com.atproto.appPassPrivileged", "app_password_privileged"),
        ("com.atproto.refresh", None),
        (None, None),
    ],
)
def test_auth_kind_from_scope(scope, kind):
    claims = _jwt.decode_claims(make_jwt({"scope": scope, "sub": "did:plc:aaaa"}))
    assert _jwt.auth_kind(claims) == kind


def test_expiry_is_aware_utc():
    claims = _jwt.decode_claims(make_jwt({"exp": 1726684000}))
    assert _jwt.expires_at(claims) == dt.datetime(
        2024, 9, 18, 18, 26, 40, tzinfo=dt.UTC
    )
    assert _jwt.expires_at({}) is None
    assert _jwt.expires_at({"exp": True}) is None


@pytest.mark.parametrize(
    "bad",
    ["", "onepart", "a.b", "a.!!!.c", "a." + "W10" + ".c", 17, None],
)
def test_malformed_raises_without_the_token(bad):
    with pytest.raises(ValueError) as info:
        _jwt.decode_claims(bad)
    if isinstance(bad, str) and bad:
        assert bad not in str(info.value)


def test_unicode_claims_and_padding():
    token = make_jwt({"sub": "did:plc:é", "n": "x" * 7})
    assert _jwt.decode_claims(token) == {"sub": "did:plc:é", "n": "xxxxxxx"}
