"""Fixtures for identity tests: a loopback DNS server, web hosts, a guard.

``identity_net`` points every identity look-up at loopback: the DNS server
answers ``_atproto`` TXT records, the web server plays every ``https://`` host
(``host_map = {"*": ...}``) and a fake PLC directory, and a guard refuses any
name lookup of a non-loopback host (the test fails if one was tried).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from dns_server import TxtServer
from http_fixtures import WebServer

import atnb
from atnb import identity

_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@pytest.fixture
def dns_txt() -> Iterator[TxtServer]:
    """A DNS server on 127.0.0.1 that answers nothing until told."""
    with TxtServer() as server:
        yield server


@pytest.fixture
def web() -> Iterator[WebServer]:
    """A loopback HTTP server standing in for any web host."""
    with WebServer() as server:
        yield server


@pytest.fixture
def no_public_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Refuse getaddrinfo for non-loopback names; fail if any was tried."""
    real = socket.getaddrinfo
    refused: list[str] = []

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in _LOOPBACK_NAMES and not name.startswith("127."):
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"test guard refused {name}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield refused
    assert not refused, f"tried to look up non-loopback hosts: {refused}"


@pytest.fixture
def identity_net(
    monkeypatch: pytest.MonkeyPatch,
    dns_txt: TxtServer,
    web: WebServer,
    no_public_lookups: list[str],
) -> Iterator[IdentityNet]:
    """Point atnb's resolvers at loopback servers; restore settings after."""
    monkeypatch.setattr(atnb.settings, "nameservers", [dns_txt.address])
    monkeypatch.setattr(atnb.settings, "host_map", {"*": web.url})
    monkeypatch.setattr(atnb.settings, "plc_url", f"{web.url}/plc")
    monkeypatch.setattr(atnb.settings, "entryway", "http://127.0.0.1:9")
    monkeypatch.setattr(atnb.settings, "resolve_timeout", 1.0)
    identity.clear_cache()
    yield IdentityNet(dns_txt, web)
    identity.clear_cache()


class IdentityNet:
    """The loopback DNS and web servers of one test, with small helpers."""

    def __init__(self, dns: TxtServer, web: WebServer) -> None:
        self.dns = dns
        self.web = web

    def plc(self, did: str, doc: dict | None, *, status: int = 200) -> None:
        """Serve ``doc`` for ``did`` from the fake PLC directory."""
        body = json.dumps(doc) if doc is not None else '{"message": "not found"}'
        self.web.route("127.0.0.1", f"/plc/{did}", body, status=status)

    def plc_requests(self) -> int:
        return sum(1 for _, path in self.web.requests if path.startswith("/plc/"))
