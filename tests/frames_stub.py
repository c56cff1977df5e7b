"""Stub XRPC servers for frames tests: a transport and a session, no network.

``StubTransport`` answers ``atnb.xrpc`` requests from a function of
``(nsid, params)``, so tests see the exact query string frames sent.
``StubSession`` plays a logged-in session's ``query_with_headers``.
:func:`server` installs either, for tests parametrized over both ways in.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from atnb import xrpc
from atnb.errors import error_from_response
from atnb.xrpc import Reply, Request

Answer = tuple[int, Any, dict[str, str]]

SERVICE = "http://127.0.0.1:9"
FEED = "app.bsky.feed.getAuthorFeed"


def ok(data: Any, **headers: str) -> Answer:
    return 200, data, {"Content-Type": "application/json; charset=utf-8", **headers}


def pages(*bodies: dict) -> Callable[[str, dict], Answer]:
    """Serve ``bodies`` in order: the first without a cursor, then by cursor."""
    by_cursor = {None: bodies[0]}
    for body, following in itertools.pairwise(bodies):
        by_cursor[body["cursor"]] = following
    return lambda nsid, params: ok(by_cursor[params.get("cursor")])


class StubTransport:
    """An :class:`atnb.xrpc.Transport` answering from ``handler(nsid, params)``."""

    def __init__(self, handler: Callable[[str, dict], Answer]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    def send(self, request: Request) -> Reply:
        self.requests.append(request)
        status, data, headers = self.handler(request.nsid, dict(request.params))
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return Reply(status, headers, body)

    def query_strings(self) -> list[list[tuple[str, str]]]:
        return [list(r.params) for r in self.requests]


class StubSession:
    """A logged-in session whose reads are answered by ``handler``."""

    def __init__(self, handler: Callable[[str, dict], Answer]) -> None:
        self.handler = handler
        self.calls: list[tuple[str, dict]] = []

    def query_with_headers(self, nsid: str, params: Any = None, **kwargs: Any):
        params = dict(params or {})
        self.calls.append((nsid, params))
        status, data, headers = self.handler(nsid, params)
        if status >= 400:
            raise error_from_response(status, data, nsid=nsid, headers=headers)
        return data, headers


def post(n: int, **extra: Any) -> dict:
    """A post view like the AppView's, numbered ``n``."""
    view = {
        "uri": f"at://did:plc:aaaa/app.bsky.feed.post/{n:04d}",
        "cid": f"bafy{n}",
        "author": {"did": "did:plc:aaaa", "handle": "alice.test"},
        "record": {
            "$type": "app.bsky.feed.post",
            "text": f"post {n}",
            "createdAt": "2024-05-01T12:00:00.000Z",
        },
        "likeCount": n,
        "indexedAt": "2024-05-01T12:00:01.000Z",
    }
    view.update(extra)
    return view


def numbered_pages(nsid, params):
    n = int(params.get("cursor") or 0)
    items = [{"post": post(n * 10 + i)} for i in range(10)]
    return ok({"feed": items, "cursor": str(n + 1)})


VIA = ["session", "public"]


def server(via: str, monkeypatch: Any) -> Callable:
    """``serve(handler) -> (kwargs for frame(), recorder)`` for one way in.

    ``public`` goes through atnb.xrpc (frames gets raw JSON pages);
    ``session`` hands frames parsed dicts, as a logged-in session does.
    Test modules wrap it in a ``serve`` fixture parametrized over :data:`VIA`.
    """

    def install(handler):
        if via == "session":
            stub = StubSession(handler)
            return {"session": stub}, stub
        stub = StubTransport(handler)
        monkeypatch.setattr(xrpc, "HTTPTransport", lambda http=None: stub)
        return {"service": SERVICE}, stub

    return install


def requests_made(stub) -> int:
    return len(stub.calls if isinstance(stub, StubSession) else stub.requests)
