"""XRPC over HTTP: checks, parameter encoding, one send, typed errors.

Everything below the session that touches the wire lives here:

- :func:`check_nsid` and :func:`check_service_url` refuse bad input before
  a byte is sent (``http://`` only for a loopback host the caller chose).
- :func:`encode_params` sends lists as repeated keys, booleans as
  ``true``/``false`` and drops ``None``.
- A :class:`Transport` sends one :class:`Request` and returns a
  :class:`Reply`; :class:`HTTPTransport` does it with ``requests`` and never
  lets the Authorization header follow a redirect to another origin.
- :func:`call` sends a request through a transport and returns
  ``(data, headers)``: JSON as Python objects, other bodies as bytes, or
  raises the matching :mod:`atnb.errors` exception.
- :func:`query` is the unauthenticated public read used by frames.

DEBUG logs one line per call (method, NSID, status, authenticated yes/no,
milliseconds); never a header value.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from atnb.config import settings
from atnb.errors import (
    AtnbError,
    InsecureServiceError,
    InvalidNSIDError,
    NetworkError,
    ServerError,
    XRPCError,
    error_from_response,
)

__all__ = [
    "HTTPTransport",
    "Reply",
    "Request",
    "Transport",
    "call",
    "check_nsid",
    "check_service_url",
    "encode_body",
    "encode_params",
    "is_loopback",
    "new_http_session",
    "query",
]

logger = logging.getLogger(__name__)

_NSID = re.compile(
    r"^[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}$"
)


def check_nsid(nsid: str) -> str:
    """Return ``nsid`` unchanged when it is valid NSID syntax.

    Raises:
        InvalidNSIDError: it is not (checked locally, no request is sent).

    >>> check_nsid("app.bsky.feed.getAuthorFeed")
    'app.bsky.feed.getAuthorFeed'
    >>> check_nsid("app.bsky")
    Traceback (most recent call last):
    ...
    atnb.errors.InvalidNSIDError: 'app.bsky' is not a valid NSID. An NSID looks like app.bsky.feed.getAuthorFeed.
    >>> check_nsid("app.bsky.feed.get-author")
    Traceback (most recent call last):
    ...
    atnb.errors.InvalidNSIDError: 'app.bsky.feed.get-author' is not a valid NSID. An NSID looks like app.bsky.feed.getAuthorFeed.
    """  # noqa: E501
    ok = isinstance(nsid, str) and len(nsid) <= 317 and _NSID.fullmatch(nsid)
    if not ok or len(nsid.rpartition(".")[0]) > 253:
        raise InvalidNSIDError(f"{nsid!r} is not a valid NSID")
    return nsid


def is_loopback(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``.

    >>> [is_loopback(h) for h in ("localhost", "127.0.0.2", "[::1]", "10.0.0.1")]
    [True, True, True, False]
    """
    name = (host or "").strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_service_url(url: str, *, allow_loopback_http: bool) -> str:
    """Return ``url`` without a trailing slash when it is safe to send to.

    ``https://`` is always accepted; ``http://`` only when the host is
    loopback and ``allow_loopback_http`` says the caller chose it.

    Raises:
        InsecureServiceError: anything else, before any byte is sent.

    >>> check_service_url("https://pds.example.com/", allow_loopback_http=False)
    'https://pds.example.com'
    >>> check_service_url("http://127.0.0.1:2583", allow_loopback_http=True)
    'http://127.0.0.1:2583'
    >>> check_service_url("http://pds.example.com", allow_loopback_http=True)
    Traceback (most recent call last):
    ...
    atnb.errors.InsecureServiceError: Refusing http://pds.example.com: not HTTPS. Use an https:// URL (http:// is allowed only for localhost).
    """  # noqa: E501
    parts = urllib.parse.urlsplit(str(url).strip())
    scheme = parts.scheme.lower()
    if "@" in parts.netloc:  # never echo the URL: it holds a password
        raise InsecureServiceError(
            "Refusing a service URL with a user name or password in it",
            hint="Pass the URL without 'user:password@'.",
        )
    if scheme == "https" and parts.hostname:
        return urllib.parse.urlunsplit(parts).rstrip("/")

    if scheme == "http" and is_loopback(parts.hostname):
        if allow_loopback_http:
            return urllib.parse.urlunsplit(parts).rstrip("/")
        raise InsecureServiceError(
            f"Refusing {url}: http:// to a loopback host is allowed only for a "
            "service you chose yourself",
            hint="Pass service= with that URL if you meant to use it.",
        )
    raise InsecureServiceError(f"Refusing {url}: not HTTPS")


def encode_params(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Turn query parameters into ``(key, value)`` pairs for the URL.

    >>> encode_params({"actors": ["a.test", "b.test"], "flag": True, "x": None})
    [('actors', 'a.test'), ('actors', 'b.test'), ('flag', 'true')]
    """
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        pairs.extend((key, _param_text(v)) for v in values if v is not None)
    return pairs


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return value.isoformat().replace("+00:00", "Z")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Request:
    """One XRPC call, ready to send.

    ``headers`` may hold ``Authorization`` and ``body`` a password: neither
    is in the ``repr``, and a transport must not log them. ``body`` is bytes
    (already encoded) or a file-like object, or None.
    """

    method: str
    service: str
    nsid: str
    params: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body: Any = dataclasses.field(default=None, repr=False)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict, repr=False)
    timeout: float | None = None

    @property
    def url(self) -> str:
        return f"{self.service}/xrpc/{self.nsid}"

    @property
    def authenticated(self) -> bool:
        return any(k.lower() == "authorization" for k in self.headers)


@dataclasses.dataclass(frozen=True)
class Reply:
    """What came back: HTTP status, headers and the raw body.

    The ``repr`` gives the body's length only: a session response holds JWTs.
    """

    status: int
    headers: Mapping[str, str] = dataclasses.field(repr=False)
    content: bytes = dataclasses.field(default=b"", repr=False)

    def __repr__(self) -> str:
        return f"Reply(status={self.status}, content=<{len(self.content)} bytes>)"


class Transport(Protocol):
    """Sends one :class:`Request`; replace it to change how calls travel.

    ``send`` returns the :class:`Reply` whatever its status, and raises
    :class:`~atnb.errors.NetworkError` when no reply arrived (refused,
    dropped, timed out). It must never log or forward ``Authorization``
    to another origin.
    """

    def send(self, request: Request) -> Reply: ...


POOL_SIZE = 32
"""Connections kept per host: enough for a notebook's threads not to churn."""

_shared: HTTPTransport | None = None


def new_http_session() -> Any:
    """A ``requests.Session`` that drops Authorization on cross-origin redirects.

    "Origin" is scheme, host and port together: a redirect that changes any
    of them loses the header (stricter than requests' own rule).
    """
    import requests

    class _Session(requests.Session):
        def should_strip_auth(self, old_url: str, new_url: str) -> bool:
            return _origin(old_url) != _origin(new_url)

    http = _Session()
    http.headers["User-Agent"] = "atnb"
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
    http.mount("https://", adapter)
    http.mount("http://", adapter)
    return http


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or ""), parts.port or default


class HTTPTransport:
    """The default :class:`Transport`, on a ``requests`` session."""

    def __init__(self, http: Any = None) -> None:
        self.http = http if http is not None else new_http_session()

    def send(self, request: Request) -> Reply:
        import requests

        timeout = request.timeout or settings.request_timeout
        try:
            response = self.http.request(
                request.method,
                request.url,
                params=request.params,
                data=request.body,
                headers=dict(request.headers),
                timeout=timeout,
                # A 307/308 would re-send a body (a password) to the new URL.
                allow_redirects=request.method == "GET",
                # An auth of our own keeps requests from replacing the
                # Authorization header with credentials from ~/.netrc.
                auth=_headers_as_given,
            )
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL):
            response = None  # raised below, out of this block: the value may be secret
        except requests.Timeout as exc:
            raise NetworkError(
                f"{request.nsid}: no answer from {_host(request)} within {timeout:g} s"
            ) from exc
        except requests.RequestException as exc:
            raise NetworkError(
                f"{request.nsid}: could not reach {_host(request)} "
                f"({type(exc).__name__})"
            ) from exc
        if response is None:
            raise AtnbError(
                f"{request.nsid}: a header value or the URL is malformed; nothing "
                "was sent",
                hint="Check headers=, proxy= and the parameters (no line breaks).",
            )
        return Reply(response.status_code, response.headers, response.content)


def _headers_as_given(prepared: Any) -> Any:
    """A requests auth hook that leaves the request's headers as they are."""
    return prepared


def _host(request: Request) -> str:
    return urllib.parse.urlsplit(request.service).netloc


def call(
    request: Request, transport: Transport, *, raw_json: bool = False
) -> tuple[Any, Mapping[str, str]]:
    """Send ``request`` and return ``(data, headers)`` or raise a typed error.

    ``data`` is the parsed JSON body (its bytes, unparsed, with ``raw_json``:
    frames hand pages straight to Arrow's JSON reader), the raw bytes of a
    non-JSON body, or None for an empty one. A failed call raises what
    :func:`atnb.errors.error_from_response` builds for it.
    """
    started = time.perf_counter()
    auth = "yes" if request.authenticated else "no"
    try:
        reply = transport.send(request)
    except NetworkError:
        ms = (time.perf_counter() - started) * 1000
        logger.debug(
            "%s %s -> no reply (authenticated %s, %.0f ms)",
            request.method,
            request.nsid,
            auth,
            ms,
        )
        raise

    ms = (time.perf_counter() - started) * 1000
    logger.debug(
        "%s %s -> %s (authenticated %s, %.0f ms)",
        request.method,
        request.nsid,
        reply.status,
        auth,
        ms,
    )
    return _decode(request, reply, raw_json), _headers(reply.headers)


def _headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    from requests.structures import CaseInsensitiveDict

    if isinstance(headers, CaseInsensitiveDict):
        return headers
    return CaseInsensitiveDict(dict(headers or {}))


def _decode(request: Request, reply: Reply, raw_json: bool = False) -> Any:
    headers = _headers(reply.headers)
    content_type = headers.get("content-type", "") or ""
    is_json = "json" in content_type.lower()

    if 200 <= reply.status < 300:
        if not reply.content:
            return None
        if not is_json or raw_json:
            return reply.content
        try:
            return json.loads(reply.content)
        except ValueError:
            raise ServerError(
                "the server sent a body that is not valid JSON",
                status=reply.status,
                nsid=request.nsid,
                headers=headers,
            ) from None

    if 300 <= reply.status < 400:
        raise XRPCError(
            f"the server redirected this call (HTTP {reply.status})",
            status=reply.status,
            nsid=request.nsid,
            headers=headers,
            hint="atnb follows no redirect that would re-send a request body; "
            "pass the final URL as service=.",
        )

    body: Any = reply.content
    if is_json or reply.content[:1] == b"{":
        try:
            body = json.loads(reply.content)
        except ValueError:
            body = reply.content
    raise error_from_response(
        reply.status,
        body,
        nsid=request.nsid,
        headers=headers,
        content_type=content_type,
    )


def encode_body(
    data: Any, headers: Mapping[str, str] | None = None
) -> tuple[Any, dict[str, str]]:
    """Encode a procedure's input and set its ``Content-Type``.

    A dict or list is sent as JSON (datetimes as ISO 8601 text, UTC as
    ``Z``); bytes or a file-like object are sent as
    they are, with the caller's ``Content-Type`` (default
    ``application/octet-stream``); None sends no body.
    """
    out = dict(headers or {})
    has_type = any(k.lower() == "content-type" for k in out)
    if data is None:
        return None, out
    if isinstance(data, (bytes, bytearray, memoryview)) or hasattr(data, "read"):
        if not has_type:
            out["Content-Type"] = "application/octet-stream"
        return data if hasattr(data, "read") else bytes(data), out
    if not has_type:
        out["Content-Type"] = "application/json"
    return json.dumps(data, default=_json_default).encode("utf-8"), out


def _json_default(value: Any) -> Any:
    """Datetimes in a procedure's input become ISO 8601 text, as in parameters."""
    if hasattr(value, "isoformat"):
        return _param_text(value)
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def query(
    service: str,
    nsid: str,
    params: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
    http: Any = None,
    transport: Transport | None = None,
    raw_json: bool = False,
) -> tuple[Any, Mapping[str, str]]:
    """An unauthenticated XRPC query: ``(data, response headers)``.

    ``service`` is a URL the caller chose (``http://`` allowed for loopback
    only). ``http`` is an optional ``requests.Session`` to reuse, or pass a
    whole ``transport``. ``raw_json`` returns a JSON body's bytes unparsed.
    """
    check_nsid(nsid)
    service = check_service_url(service, allow_loopback_http=True)
    request = Request(
        "GET",
        service,
        nsid,
        encode_params(params),
        headers=dict(headers or {}),
        timeout=timeout,
    )
    if transport is None:
        transport = HTTPTransport(http) if http is not None else _shared_transport()
    return call(request, transport, raw_json=raw_json)


def _shared_transport() -> HTTPTransport:
    """One pooled transport for unauthenticated reads (created on first use)."""
    global _shared
    if _shared is None:
        _shared = HTTPTransport()
    return _shared
