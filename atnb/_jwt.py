"""Read the claims of a JWT locally, without checking its signature.

The session needs three facts from its tokens: when they expire (``exp``),
whose they are (``sub``) and, for an access JWT, what kind of password made
them (``scope``). The server checks signatures; atnb only reads.

Nothing here puts a token into an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
from typing import Any

__all__ = ["AUTH_KINDS", "auth_kind", "decode_claims", "expires_at"]

AUTH_KINDS = {
    "com.atproto.access": "password",
    "com.atproto.appPass": "app_password",
    "com.atproto.appPassPrivileged": "app_password_privileged",
}
"""Access JWT ``scope`` claim -> the session's ``auth_kind``."""


def decode_claims(jwt: str) -> dict[str, Any]:
    """Return the payload of ``jwt`` as a dict (no signature check).

    Raises:
        ValueError: ``jwt`` is not three dot-separated base64url parts with
            a JSON object in the middle. The message never holds the token.

    >>> decode_claims("e30.eyJzdWIiOiJkaWQ6cGxjOmFhYWEifQ.c2ln")
    {'sub': 'did:plc:aaaa'}
    """
    parts = jwt.split(".") if isinstance(jwt, str) else []
    if len(parts) != 3:
        raise ValueError("not a JWT: expected three dot-separated parts")

    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (binascii.Error, UnicodeError, ValueError):
        raise ValueError("not a JWT: the payload is not base64url JSON") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: the payload is not a JSON object")
    return claims


def expires_at(claims: dict[str, Any]) -> _dt.datetime | None:
    """The ``exp`` claim as an aware UTC datetime, or None when absent.

    >>> expires_at({"exp": 1726684000}).isoformat()
    '2024-09-18T18:26:40+00:00'
    """
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    return _dt.datetime.fromtimestamp(exp, tz=_dt.timezone.utc)


def auth_kind(claims: dict[str, Any]) -> str | None:
    """Which kind of password made an access JWT, from its ``scope`` claim.

    >>> auth_kind({"scope": "com.atproto.appPass"})
    'app_password'
    >>> auth_kind({"scope": "com.atproto.access"})
    'password'
    >>> auth_kind({}) is None
    True
    """
    scope = claims.get("scope")
    if not isinstance(scope, str):
        return None
    for word in scope.split():
        if word in AUTH_KINDS:
            return AUTH_KINDS[word]
    return None
