"""Identity: from what a person types to the PDS that holds the account.

    text ──normalize_identifier──▶ handle ──resolve_handle──▶ DID
    DID ──resolve_did──▶ DID document ──pds_endpoint──▶ PDS URL

A handle resolves through the DNS TXT record ``_atproto.<handle>`` and through
``https://<handle>/.well-known/atproto-did``, both asked at once, and through
``com.atproto.identity.resolveHandle`` when a service is given. One method
failing never hides another that answers; two methods naming different DIDs is
an error that says which said what. A ``did:plc`` resolves through the PLC
directory, a ``did:web`` through ``https://<host>/.well-known/did.json``.

Every look-up is configured in :data:`atnb.settings`: ``nameservers`` (empty:
the system resolver), ``plc_url``, ``entryway`` (where an email login goes),
``resolve_timeout`` (seconds per method) and ``host_map``. ``host_map`` sends
``https://<name>/...`` to another base URL, for tests: the original name rides
in the ``Host`` header, and a ``"*"`` entry catches every name not listed.
``http://`` is used only for loopback hosts.

:func:`resolve` checks the handle both ways: the DID document's
``alsoKnownAs`` must name ``at://<handle>``, and a handle read from a document
must resolve back to the DID. A mismatch does not raise: the result has
``handle_verified=False``, ``mismatch`` says why, and a WARNING is logged.

Results are cached for ``settings.resolve_cache_ttl`` seconds (failures are
not); :func:`clear_cache` forgets them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from atnb import _lookup
from atnb.config import settings
from atnb.errors import InvalidHandleError, ResolutionError
from atnb.xrpc import check_service_url

__all__ = [
    "DISALLOWED_TLDS",
    "Identity",
    "clear_cache",
    "handle_from_doc",
    "is_did",
    "is_valid_handle",
    "normalize_handle",
    "normalize_identifier",
    "pds_endpoint",
    "pds_for",
    "resolve",
    "resolve_did",
    "resolve_handle",
]

logger = logging.getLogger(__name__)

DISALLOWED_TLDS = frozenset(
    {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}
)
"""Top-level domains the AT Protocol refuses in handles (``.test`` is allowed)."""

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")

_clock: Callable[[], float] = time.monotonic
_cache: dict[tuple, tuple[float, Any]] = {}
_cache_lock = threading.Lock()


# -- syntax -------------------------------------------------------------------


def _handle_problem(handle: str) -> str | None:
    """Say what is wrong with a lower-case handle, or None when it is valid."""
    if not handle:
        return "it is empty"
    if len(handle) > 253:
        return "it is longer than 253 characters"
    labels = handle.split(".")
    if len(labels) < 2:
        return "it needs at least one dot"
    if "" in labels:
        return "it has an empty part between dots"

    for label in labels:
        if len(label) > 63:
            return "a part between dots is longer than 63 characters"
        if label.startswith("-") or label.endswith("-"):
            return "a part between dots starts or ends with '-'"
        if not _LABEL.fullmatch(label):
            return "it may hold only letters, digits, '-' and '.'"

    if labels[-1][0].isdigit():
        return "its last part cannot start with a digit"
    if labels[-1] in DISALLOWED_TLDS:
        return f"handles cannot end in .{labels[-1]}"
    return None


def is_valid_handle(text: str) -> bool:
    """Tell whether ``text`` is a valid handle (case does not matter).

    >>> is_valid_handle("alice.test"), is_valid_handle("Alice.Bsky.Social")
    (True, True)
    >>> is_valid_handle("alice"), is_valid_handle("alice.local")
    (False, False)
    """
    return _handle_problem(text.lower()) is None


def normalize_handle(text: str, *, echo: bool = True) -> str:
    """Turn a typed handle into its normal form, checking its syntax.

    Whitespace around it is trimmed, one leading ``@`` dropped and the rest
    lower-cased. No request is made. With ``echo=False`` the error does not
    repeat the text (at login it may be a password typed in the wrong place).

    >>> normalize_handle("@Alice.Test ")
    'alice.test'
    >>> normalize_handle("alice.test\\n")
    'alice.test'
    >>> normalize_handle("alice..test")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    atnb.errors.InvalidHandleError: 'alice..test' is not a valid handle: it has...

    Raises:
        InvalidHandleError: the result is not a valid handle.
    """
    if not isinstance(text, str):
        raise InvalidHandleError("A handle must be text, such as alice.test")
    handle = text.strip()
    if handle.startswith("@"):
        handle = handle[1:]
    handle = handle.lower()

    problem = _handle_problem(handle)
    if problem:
        shown = repr(handle) if echo else "The identifier"
        raise InvalidHandleError(f"{shown} is not a valid handle: {problem}")
    return handle


def is_did(text: str) -> bool:
    """Tell whether ``text`` has DID syntax.

    >>> is_did("did:plc:ewvi7nxzyoun6zhxrhs64oiz"), is_did("did:web:example.com")
    (True, True)
    >>> is_did("alice.test"), is_did("did:plc:")
    (False, False)
    """
    return len(text) <= 2048 and _DID.fullmatch(text) is not None


def _is_email(text: str) -> bool:
    return "@" in text and not text.startswith("@")


def normalize_identifier(text: str, *, echo: bool = True) -> str:
    """Normalise a login identifier: a handle, a DID or an email address.

    A handle is normalised as by :func:`normalize_handle`. A DID is kept as
    typed (only whitespace around it is dropped: never lower-cased). An email
    is trimmed only. ``echo=False``: errors do not repeat the text.

    >>> normalize_identifier(" @Alice.Test")
    'alice.test'
    >>> normalize_identifier("did:web:Example.com")
    'did:web:Example.com'
    >>> normalize_identifier(" Alice@Example.com ")
    'Alice@Example.com'

    Raises:
        InvalidHandleError: not a valid handle, DID or email address.
    """
    if not isinstance(text, str):
        raise InvalidHandleError(
            "The identifier must be text: a handle, a DID or an email address"
        )
    stripped = text.strip()
    if stripped.startswith("did:"):
        if not is_did(stripped):
            shown = repr(stripped) if echo else "The identifier"
            raise InvalidHandleError(
                f"{shown} is not a valid DID",
                hint="A DID looks like did:plc:... or did:web:example.com.",
            )
        return stripped
    if _is_email(stripped):
        return stripped
    return normalize_handle(stripped, echo=echo)


# -- DID documents (pure) -------------------------------------------------------


def pds_endpoint(did_doc: dict) -> str | None:
    """The PDS URL in a DID document, or None when it names none.

    It is the ``#atproto_pds`` service of type ``AtprotoPersonalDataServer``.

    >>> pds_endpoint({"id": "did:plc:aaaa", "service": [{"id": "#atproto_pds",
    ...     "type": "AtprotoPersonalDataServer",
    ...     "serviceEndpoint": "https://pds.example.com/"}]})
    'https://pds.example.com'
    >>> pds_endpoint({"id": "did:plc:aaaa", "service": []}) is None
    True
    """
    did = did_doc.get("id", "")
    for service in did_doc.get("service") or []:
        if not isinstance(service, dict):
            continue
        if service.get("id") not in ("#atproto_pds", f"{did}#atproto_pds"):
            continue
        if service.get("type") != "AtprotoPersonalDataServer":
            continue

        endpoint = service.get("serviceEndpoint")
        if isinstance(endpoint, str):
            parts = urlsplit(endpoint)
            if parts.scheme in ("http", "https") and parts.hostname:
                return endpoint.rstrip("/")
    return None


def handle_from_doc(did_doc: dict) -> str | None:
    """The handle a DID document claims (its first ``at://`` alias), if valid.

    >>> handle_from_doc({"alsoKnownAs": ["at://Alice.Test"]})
    'alice.test'
    >>> handle_from_doc({"alsoKnownAs": ["at://handle.invalid"]}) is None
    True
    """
    for alias in did_doc.get("alsoKnownAs") or []:
        if isinstance(alias, str) and alias.startswith("at://"):
            handle = alias[len("at://") :].lower()
            return handle if is_valid_handle(handle) else None
    return None


# -- cache ----------------------------------------------------------------------


def clear_cache() -> None:
    """Forget every cached handle and DID resolution."""
    with _cache_lock:
        _cache.clear()


def _cached(key: tuple, compute: Callable[[], Any]) -> Any:
    # Settings are part of the key, so pointing atnb elsewhere never serves
    # an answer that came from the old place.
    key = (
        *key,
        settings.plc_url,
        tuple(settings.nameservers),
        tuple(sorted(settings.host_map.items())),
    )
    now = _clock()
    with _cache_lock:
        hit = _cache.get(key)
    if hit is not None and hit[0] > now:
        return copy.deepcopy(hit[1])

    value = compute()
    if settings.resolve_cache_ttl > 0:
        with _cache_lock:
            if len(_cache) >= 512:
                _cache.clear()
            _cache[key] = (now + settings.resolve_cache_ttl, copy.deepcopy(value))
    return value


# -- handle -> DID --------------------------------------------------------------


def resolve_handle(handle: str, *, service: str | None = None) -> str:
    """Resolve a handle to its DID.

    DNS TXT and ``/.well-known/atproto-did`` are asked at once, and
    ``com.atproto.identity.resolveHandle`` on ``service`` when given. Any
    method that answers is enough; methods naming different DIDs raise.

    Args:
        handle: a handle as typed (normalised first; no request if invalid).
        service: a PDS or AppView URL to ask as well.

    Raises:
        InvalidHandleError: the handle's syntax is wrong.
        ResolutionError: no method found a DID, or methods disagree.
    """
    handle = normalize_handle(handle)
    if service is not None:
        service = _lookup.check_url(service)

    well_known = f"https://{handle}/.well-known/atproto-did"
    methods: dict[str, Callable[[], Any]] = {
        f"DNS TXT _atproto.{handle}": partial(_lookup.dns_txt_did, handle),
        well_known: partial(_lookup.well_known_did, handle),
    }
    if service is not None:
        methods[f"resolveHandle on {service}"] = partial(
            _lookup.service_did, handle, service
        )
    return _cached(("handle", handle, service), lambda: _agree(handle, methods))


def _agree(handle: str, methods: dict[str, Callable[[], Any]]) -> str:
    found, failed = _lookup.run_all(methods)
    for name, value in list(found.items()):
        if not isinstance(value, str) or not is_did(value):
            failed[name] = f"the answer is not a DID ({repr(value)[:60]})"
            del found[name]

    dids = set(found.values())
    if len(dids) > 1:
        said = "; ".join(f"{name} says {did}" for name, did in found.items())
        raise ResolutionError(
            f"{handle} resolves to different DIDs: {said}",
            hint="The handle's owner must fix the records; log in with the DID.",
        )
    if not dids:
        why = "; ".join(f"{name}: {reason}" for name, reason in failed.items())
        raise ResolutionError(f"could not resolve {handle} ({why})")

    did = dids.pop()
    logger.debug("resolved %s to %s via %s", handle, did, ", ".join(found))
    return did


# -- DID -> document ------------------------------------------------------------


def resolve_did(did: str) -> dict:
    """Fetch the DID document of a ``did:plc`` or ``did:web``.

    ``did:plc`` goes to ``settings.plc_url``; ``did:web:<host>`` to
    ``https://<host>/.well-known/did.json`` (never the PLC directory).

    Raises:
        ResolutionError: unknown DID, unsupported method, or the look-up failed.
    """
    if not is_did(did):
        raise InvalidHandleError(
            f"{did!r} is not a valid DID",
            hint="A DID looks like did:plc:... or did:web:example.com.",
        )
    if did.startswith("did:plc:"):
        fetch = _lookup.plc_document
    elif did.startswith("did:web:"):
        fetch = _lookup.web_document
    else:
        raise ResolutionError(
            f"{did}: atnb resolves did:plc and did:web only",
            hint="Pass service= with the account's PDS URL.",
        )
    return _cached(("did", did), lambda: _checked_document(did, fetch(did)))


def _checked_document(did: str, doc: Any) -> dict:
    if not isinstance(doc, dict) or doc.get("id") != did:
        named = doc.get("id") if isinstance(doc, dict) else None
        raise ResolutionError(
            f"the DID document fetched for {did} is for {named!r}",
            hint="The DID's host serves a wrong document; pass service=.",
        )
    return doc


# -- everything together ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who an identifier names and where the account lives.

    ``handle_verified`` is True when the handle and the DID point at each
    other; otherwise ``mismatch`` says what did not match.
    """

    did: str
    handle: str | None
    pds_url: str | None
    did_doc: dict = dataclasses.field(repr=False)
    handle_verified: bool
    mismatch: str | None = None


def resolve(identifier: str, *, service: str | None = None) -> Identity:
    """Resolve a handle or DID to an :class:`Identity`, checking both ways.

    Args:
        identifier: a handle or a DID (an email address cannot be resolved).
        service: also ask this service's ``resolveHandle`` for handles.

    Raises:
        InvalidHandleError: bad syntax (no request was made).
        ResolutionError: the identifier could not be resolved.
    """
    text = normalize_identifier(identifier)
    if _is_email(text):
        raise ResolutionError(
            "an email address cannot be resolved to an account",
            hint="Use the handle, or pass service= with the PDS URL.",
        )

    mismatch = None
    if is_did(text):
        did, doc = text, resolve_did(text)
        handle = handle_from_doc(doc)
        if handle is None:
            mismatch = f"the DID document of {did} names no valid handle"
        else:
            mismatch = _points_back(handle, did, service)
    else:
        handle, did = text, resolve_handle(text, service=service)
        doc = resolve_did(did)
        claimed = handle_from_doc(doc)
        if claimed != handle:
            mismatch = (
                f"{handle} resolves to {did}, but its DID document names "
                f"{'at://' + claimed if claimed else 'no handle'}"
            )

    if mismatch:
        logger.warning("handle not verified: %s", mismatch)
    return Identity(did, handle, pds_endpoint(doc), doc, mismatch is None, mismatch)


def _points_back(handle: str, did: str, service: str | None) -> str | None:
    try:
        back = resolve_handle(handle, service=service)
    except ResolutionError as exc:
        return f"{did} claims {handle}, which does not resolve ({exc.message})"
    if back != did:
        return f"{did} claims {handle}, but {handle} resolves to {back}"
    return None


def pds_for(identifier: str) -> str:
    """The PDS URL to log in with ``identifier`` (handle, DID or email).

    A handle goes handle → DID → DID document → ``#atproto_pds``; a DID
    skips the first step; an email address goes to ``settings.entryway``.

    Raises:
        InvalidHandleError: bad syntax (no request was made).
        ResolutionError: discovery failed, or the document names no PDS.
        InsecureServiceError: the PDS URL is ``http://`` on a non-loopback host.
    """
    text = normalize_identifier(identifier)
    if _is_email(text):
        return _lookup.check_url(settings.entryway)

    if is_did(text):
        did, doc = text, resolve_did(text)
    else:
        identity = resolve(text)
        did, doc = identity.did, identity.did_doc

    pds_url = pds_endpoint(doc)
    if pds_url is None:
        raise ResolutionError(
            f"the DID document of {did} names no PDS (#atproto_pds service)",
            hint="Pass service= with the account's PDS URL.",
        )
    loopback = _lookup.source_is_loopback(did)
    return check_service_url(pds_url, allow_loopback_http=loopback)
