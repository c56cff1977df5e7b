"""A small DNS server on 127.0.0.1 for tests, built on dnslib.

It answers TXT queries from a dict and NXDOMAIN for every other name, so
identity tests never reach the system resolver::

    with TxtServer({"_atproto.alice.test": "did=did:plc:aaaa"}) as dns:
        atnb.settings.nameservers = [dns.address]

``mode`` makes it misbehave: ``"servfail"`` answers SERVFAIL, ``"drop"``
never answers (the client times out).
"""

from __future__ import annotations

import threading

from dnslib import QTYPE, RCODE, RR, TXT, DNSError
from dnslib.server import BaseResolver, DNSLogger, DNSServer


class _Resolver(BaseResolver):
    def __init__(self, server: TxtServer) -> None:
        self.server = server

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".").lower()
        with self.server.lock:
            self.server.queries.append(name)
            mode = self.server.mode
            records = self.server.records.get(name)
        if mode == "drop":
            raise DNSError("dropped on purpose")

        reply = request.reply()
        if mode == "servfail":
            reply.header.rcode = RCODE.SERVFAIL
        elif records is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for text in [records] if isinstance(records, str) else records:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(text)))
        return reply


class TxtServer:
    """A UDP DNS server on 127.0.0.1 answering TXT records from ``records``.

    Attributes:
        records: name (no trailing dot) -> a TXT string or a list of them.
        mode: ``"answer"``, ``"servfail"`` or ``"drop"``.
        queries: every name asked, in order.
    """

    def __init__(self, records: dict[str, str | list[str]] | None = None) -> None:
        self.records = dict(records or {})
        self.mode = "answer"
        self.queries: list[str] = []
        self.lock = threading.Lock()
        quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data")
        self._server = DNSServer(
            _Resolver(self), address="127.0.0.1", port=0, logger=quiet
        )

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the form ``atnb.settings.nameservers`` takes."""
        host, port = self._server.server.server_address[:2]
        return f"{host}:{port}"

    def publish(self, handle: str, did: str) -> None:
        """Publish ``did=<did>`` at ``_atproto.<handle>``."""
        with self.lock:
            self.records[f"_atproto.{handle}"] = f"did={did}"

    def start(self) -> TxtServer:
        serve = self._server.server.serve_forever
        self._thread = threading.Thread(target=serve, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server.server.server_close()

    def __enter__(self) -> TxtServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
