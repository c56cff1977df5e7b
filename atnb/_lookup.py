"""The network side of identity look-ups: HTTP GETs, the host map, DNS servers.

Private to :mod:`atnb.identity`. Every function here either answers or raises
:class:`Miss` with a short reason; the caller decides whether a miss is fatal.
requests and dnspython are imported inside the functions.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

from atnb.config import settings
from atnb.errors import AtnbError, InsecureServiceError, ResolutionError
from atnb.xrpc import check_service_url, is_loopback, query

logger = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
"""Largest answer read from a ``.well-known`` file, DID document or PLC."""

MAX_REDIRECTS = 3


class Miss(Exception):
    """One look-up method found nothing; the message says why, in a few words."""


def check_url(url: str) -> str:
    """``url`` without a trailing slash: HTTPS, or HTTP to a loopback host.

    For URLs the user configured or typed (settings, ``service=``, a DID).
    """
    return check_service_url(url, allow_loopback_http=True)


def nameservers(entries: list[str]) -> list[Any]:
    """dnspython nameservers for ``host`` or ``host:port`` entries."""
    import dns.nameserver

    servers = []
    for entry in entries:
        host, port = entry.strip(), 53
        if host.startswith("["):
            host, _, rest = host[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else 53
        elif host.count(":") == 1:
            host, _, text = host.partition(":")
            port = int(text)
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            address = socket.gethostbyname(host)
        servers.append(dns.nameserver.Do53Nameserver(address, port))
    return servers


def get(url: str, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url`` (no redirects) within ``settings.resolve_timeout``.

    Returns the status and at most :data:`MAX_BODY` bytes of body, plus the
    ``Location`` header for redirects (as the body).
    """
    import requests

    started = time.perf_counter()
    try:
        with requests.get(
            url,
            headers=dict(headers or {}),
            timeout=settings.resolve_timeout,
            allow_redirects=False,
            stream=True,
        ) as response:
            if response.is_redirect:
                body = (response.headers.get("location") or "").encode()
            else:
                body = response.raw.read(MAX_BODY, decode_content=True)
            status = response.status_code
    except requests.Timeout:
        raise Miss(f"no answer within {settings.resolve_timeout:g} s") from None
    except requests.RequestException as exc:
        raise Miss(f"could not connect ({type(exc).__name__})") from None

    ms = (time.perf_counter() - started) * 1000
    logger.debug("GET %s -> %d (%.0f ms)", url, status, ms)
    return status, body


def _physical(logical: str) -> tuple[str, dict[str, str]]:
    """Where to send a request for ``logical`` (an ``https://name/...`` URL)."""
    parts = urlsplit(logical)
    name = (parts.hostname or "").lower()
    netloc = parts.netloc.lower()
    base = settings.host_map.get(netloc) or settings.host_map.get(name)
    base = base or settings.host_map.get("*")
    if base is None:
        if is_loopback(name):
            logical = logical.replace("https://", "http://", 1)
        return check_url(logical), {}

    base = check_url(base)
    target = base + parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Host": netloc} if is_loopback(urlsplit(base).hostname) else {}
    return target, headers


def source_is_loopback(did: str) -> bool:
    """Tell whether the DID document of ``did`` comes from a loopback host.

    Only then may the document's PDS URL be ``http://`` (the session's rule).
    """
    if did.startswith("did:web:"):
        host = unquote(did[len("did:web:") :]).lower()
        try:
            url, _ = _physical(f"https://{host}/")
        except InsecureServiceError:
            return False
    else:
        url = settings.plc_url
    return is_loopback(urlsplit(url).hostname)


def fetch(name: str, path: str) -> tuple[int, bytes]:
    """GET ``https://<name><path>`` through the host map, following redirects.

    Each redirect hop is mapped and checked again, at most
    :data:`MAX_REDIRECTS` times.
    """
    logical = f"https://{name}{path}"
    for _ in range(MAX_REDIRECTS + 1):
        try:
            check_url(logical)  # a redirect may name http:// or another scheme
            url, headers = _physical(logical)
        except InsecureServiceError:
            raise Miss(f"refused {logical} (not HTTPS, not loopback)") from None
        status, body = get(url, headers)
        if status not in (301, 302, 303, 307, 308):
            return status, body
        logical = urljoin(logical, body.decode("latin-1"))
    raise Miss(f"more than {MAX_REDIRECTS} redirects")


def run_all(
    methods: Mapping[str, Callable[[], str]],
) -> tuple[dict[str, str], dict[str, str]]:
    """Run every method at once; return ``(found, failed)`` keyed by name."""
    found: dict[str, str] = {}
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(methods)) as pool:
        futures = {name: pool.submit(method) for name, method in methods.items()}

    for name, future in futures.items():
        try:
            found[name] = future.result()
        except Miss as exc:
            failed[name] = str(exc)
        except Exception as exc:  # one broken method must not hide the others
            logger.debug("%s failed", name, exc_info=True)
            failed[name] = f"{type(exc).__name__}: {exc}"
    for name, reason in failed.items():
        logger.debug("%s: %s", name, reason)
    return found, failed


# -- the methods ----------------------------------------------------------------


def dns_txt_did(handle: str) -> str:
    """The DNS method: the one ``did=...`` TXT record at ``_atproto.<handle>``."""
    if [entry.lower() for entry in settings.nameservers] == ["none"]:
        raise Miss("DNS look-ups are off (ATNB_NAMESERVERS=none)")

    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not settings.nameservers)
    if settings.nameservers:
        resolver.nameservers = nameservers(settings.nameservers)
    resolver.timeout = resolver.lifetime = settings.resolve_timeout

    try:
        answer = resolver.resolve(f"_atproto.{handle}.", "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        raise Miss("no TXT record") from None
    except dns.exception.Timeout:
        raise Miss(f"no answer within {settings.resolve_timeout:g} s") from None
    except dns.exception.DNSException as exc:
        raise Miss(f"DNS failed ({type(exc).__name__})") from None

    texts = [b"".join(record.strings).decode("utf-8", "replace") for record in answer]
    dids = {text[4:].strip() for text in texts if text.startswith("did=")}
    if len(dids) > 1:
        raise Miss(f"several different did= records ({', '.join(sorted(dids))})")
    if not dids:
        raise Miss("no did= TXT record")
    return dids.pop()


def well_known_did(handle: str) -> str:
    """The HTTPS method: the DID as text at ``/.well-known/atproto-did``."""
    status, body = fetch(handle, "/.well-known/atproto-did")
    if status != 200:
        raise Miss(f"HTTP {status}")
    lines = body.decode("utf-8", "replace").strip().splitlines()
    return lines[0].strip() if lines else ""


def service_did(handle: str, service: str) -> Any:
    """``com.atproto.identity.resolveHandle`` on ``service``."""
    nsid = "com.atproto.identity.resolveHandle"
    try:
        data, _ = query(
            service, nsid, {"handle": handle}, timeout=settings.resolve_timeout
        )
    except AtnbError as exc:
        raise Miss(str(exc.message or exc)[:200]) from None
    return data.get("did") if isinstance(data, dict) else None


def plc_document(did: str) -> Any:
    """The DID document of a ``did:plc`` from ``settings.plc_url``."""
    plc = check_url(settings.plc_url)
    where = f"the PLC directory {plc}"
    try:
        status, body = get(f"{plc}/{quote(did, safe=':')}")
    except Miss as exc:
        raise ResolutionError(
            f"could not reach {where} for {did} ({exc})",
            hint="Check the connection, or atnb.settings.plc_url.",
        ) from None

    if status == 404:
        raise ResolutionError(
            f"{did} is not in {where}",
            hint="Check the DID, or set atnb.settings.plc_url to its directory.",
        )
    if status == 410:
        raise ResolutionError(
            f"{did} is deactivated in {where}", hint="The account cannot log in."
        )
    if status != 200:
        raise ResolutionError(f"{where} answered HTTP {status} for {did}")
    return _json(body, did, where)


def web_document(did: str) -> Any:
    """The DID document of a ``did:web`` from its host's ``did.json``."""
    rest = did[len("did:web:") :]
    if ":" in rest:
        raise ResolutionError(
            f"{did}: did:web with a path is not used by the AT Protocol",
            hint="Use a did:web naming a host only, or pass service=.",
        )
    host = unquote(rest).lower()
    where = f"https://{host}/.well-known/did.json"
    try:
        status, body = fetch(host, "/.well-known/did.json")
    except Miss as exc:
        raise ResolutionError(f"could not fetch {where} ({exc})") from None

    if status != 200:
        raise ResolutionError(f"{where} answered HTTP {status}")
    return _json(body, did, where)


def _json(body: bytes, did: str, where: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise ResolutionError(
            f"{where} did not answer JSON for {did}", hint="Pass service=."
        ) from None
