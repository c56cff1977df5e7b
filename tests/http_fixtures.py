"""Loopback HTTP servers standing in for the web hosts of handles and did:web.

atnb reaches ``https://<name>/...`` through ``atnb.settings.host_map``; the
original name arrives in the ``Host`` header, so one server can play many
hosts::

    with WebServer() as web:
        web.atproto_did("alice.example.com", "did:plc:aaaa")
        atnb.settings.host_map = {"*": web.url}
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        web = self.server.web
        host = (self.headers.get("Host") or "").lower()
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        with web.lock:
            web.requests.append((name, self.path))
            route = web.routes.get((name, self.path))
            delay = web.delay
        if delay:
            time.sleep(delay)

        status, body, headers = route or (404, b"not found", {})
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    web: WebServer


class WebServer:
    """A threaded HTTP server on 127.0.0.1 that routes by Host and path.

    Attributes:
        routes: ``(host, path)`` -> ``(status, body, headers)``.
        requests: every ``(host, path)`` asked, in order.
        delay: seconds to wait before each answer (for timeout tests).
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], tuple[int, bytes, dict[str, str]]] = {}
        self.requests: list[tuple[str, str]] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.web = self
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(
        self,
        host: str,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``GET <path>`` for ``Host: <host>``."""
        data = body.encode() if isinstance(body, str) else body
        with self.lock:
            self.routes[(host.lower(), path)] = (status, data, dict(headers or {}))

    def atproto_did(self, handle: str, did: str, *, status: int = 200) -> None:
        """Serve ``did`` at ``https://<handle>/.well-known/atproto-did``."""
        headers = {"Content-Type": "text/plain"}
        self.route(
            handle, "/.well-known/atproto-did", did, status=status, headers=headers
        )

    def did_json(self, host: str, doc: dict) -> None:
        """Serve ``doc`` at ``https://<host>/.well-known/did.json``."""
        headers = {"Content-Type": "application/json"}
        self.route(host, "/.well-known/did.json", json.dumps(doc), headers=headers)

    def count(self, host: str | None = None) -> int:
        """How many requests arrived (for ``host`` only, when given)."""
        with self.lock:
            return sum(1 for name, _ in self.requests if host in (None, name))

    def start(self) -> WebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def did_doc(did: str, handle: str | None, pds_url: str | None) -> dict:
    """A minimal AT Protocol DID document."""
    doc: dict = {
        "@context": ["https://www.w3.org/ns/did/v1"],
        "id": did,
        "alsoKnownAs": [f"at://{handle}"] if handle else [],
        "service": [],
    }
    if pds_url:
        doc["service"].append(
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": pds_url,
            }
        )
    return doc
