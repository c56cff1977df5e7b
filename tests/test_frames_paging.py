"""atnb.frames paging with stub servers: cursors, rate limits, errors, Parquet."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow.parquet as pq
import pytest

import atnb
from atnb import _pull, xrpc
from atnb.errors import NotLoggedInError, RateLimitError, ServerError
from tests.frames_stub import (
    FEED,
    VIA,
    StubSession,
    StubTransport,
    ok,
    pages,
    post,
    requests_made,
    server,
)
from tests.frames_stub import numbered_pages as _numbered_pages


@pytest.fixture(params=VIA)
def serve(request, monkeypatch):
    return server(request.param, monkeypatch)


# -- C08: a cursor that does not advance ---------------------------------------


def test_c08_repeated_cursor_stops_with_a_warning(serve):
    page = {"feed": [{"post": post(1)}, {"post": post(2)}], "cursor": "c1"}
    kwargs, stub = serve(lambda nsid, params: ok(page))

    with pytest.warns(UserWarning, match="cursor 'c1' again"):
        df = atnb.frame(
            FEED, actor="alice.test", all_pages=True, progress=False, **kwargs
        )

    assert requests_made(stub) == 2
    assert len(df) == 2
    assert df["post.uri"].is_unique
    if isinstance(stub, StubTransport):
        first, second = stub.query_strings()
        assert first == [("actor", "alice.test")]
        assert second == [("actor", "alice.test"), ("cursor", "c1")]
    else:
        assert stub.calls[1][1]["cursor"] == "c1"


def test_max_items_and_max_pages_are_honoured(serve):
    kwargs, stub = serve(_numbered_pages)
    df = atnb.frame(FEED, max_items=25, progress=False, **kwargs)
    assert len(df) == 25
    assert requests_made(stub) == 3

    kwargs, stub = serve(_numbered_pages)
    df = atnb.frame(FEED, max_pages=2, progress=False, **kwargs)
    assert len(df) == 20
    assert requests_made(stub) == 2


def test_one_page_unless_asked_for_more(serve):
    kwargs, stub = serve(_numbered_pages)
    assert len(atnb.frame(FEED, **kwargs)) == 10
    assert requests_made(stub) == 1


def test_duplicates_are_same_item_and_same_reason(serve):
    def repost(did):
        return {"$type": "app.bsky.feed.defs#reasonRepost", "by": {"did": did}}

    first = {
        "feed": [
            {"post": post(1), "reason": repost("did:plc:b")},
            {"post": post(1), "reason": repost("did:plc:c")},
            {"post": post(2)},
        ],
        "cursor": "c1",
    }
    second = {
        "feed": [{"post": post(1), "reason": repost("did:plc:b")}, {"post": post(2)}]
    }
    kwargs, _ = serve(pages(first, second))
    df = atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    assert df["post.uri"].tolist() == [post(1)["uri"], post(1)["uri"], post(2)["uri"]]
    assert df["reason.by.did"].tolist()[:2] == ["did:plc:b", "did:plc:c"]


# -- C07: rate limits on reads -------------------------------------------------------


NOW = dt.datetime(2024, 9, 18, 18, 26, 0, tzinfo=dt.timezone.utc)
C07_HEADERS = {
    "ratelimit-limit": "100",
    "ratelimit-remaining": "0",
    "ratelimit-reset": "1726684000",
    "ratelimit-policy": "100;w=86400",
}


@pytest.fixture
def clock(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(_pull, "_now", lambda: NOW)
    monkeypatch.setattr(_pull, "_sleep", slept.append)
    return slept


def _limited(limit_on: set[int]):
    seen = []

    def handler(nsid, params):
        seen.append(params.get("cursor"))
        if len(seen) in limit_on:
            body = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
            return 429, body, {"Content-Type": "application/json", **C07_HEADERS}
        return _numbered_pages(nsid, params)

    return handler


def test_c07_rate_limit_error_fields(serve, clock, monkeypatch):
    monkeypatch.setattr(_pull, "_now", lambda: NOW - dt.timedelta(hours=1))
    kwargs, _ = serve(_limited({1}))
    with pytest.raises(RateLimitError) as caught:
        atnb.frame(FEED, **kwargs)
    err = caught.value
    assert err.reset_at == dt.datetime(2024, 9, 18, 18, 26, 40, tzinfo=dt.timezone.utc)
    assert (err.limit, err.remaining, err.window) == (100, 0, 86400)
    assert "2024-09-18 18:26:40 UTC" in str(err)
    assert clock == []


def test_c07_read_waits_when_reset_is_near(serve, clock, capsys):
    kwargs, stub = serve(_limited({2}))
    df = atnb.frame(FEED, max_pages=3, **kwargs)
    assert len(df) == 30
    assert clock == [40.0]
    assert requests_made(stub) == 4
    assert "rate limited, waiting until 18:26:40 UTC" in capsys.readouterr().err


def test_c07_at_most_three_waits_then_raise_with_rows(serve, clock):
    kwargs, _ = serve(_limited({2, 3, 4, 5, 6}))
    with pytest.raises(RateLimitError) as caught:
        atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    assert clock == [40.0, 40.0, 40.0]
    assert len(caught.value.frame) == 10
    assert caught.value.cursor == "1"


def test_c07_far_reset_raises_at_once(serve, clock, monkeypatch):
    monkeypatch.setattr(_pull, "_now", lambda: NOW - dt.timedelta(seconds=21))
    kwargs, stub = serve(_limited({2}))
    with pytest.raises(RateLimitError) as caught:
        atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    assert clock == []
    assert requests_made(stub) == 2
    assert caught.value.cursor == "1"


# -- Errors mid-pull -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["json-5xx", "html-502"])
def test_error_mid_pull_keeps_rows_and_cursor(serve, kind):
    def handler(nsid, params):
        if params.get("cursor") == "2":
            if kind == "html-502":
                return 502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}
            return (
                500,
                {"error": "InternalServerError"},
                {"Content-Type": "application/json"},
            )
        return _numbered_pages(nsid, params)

    kwargs, _ = serve(handler)
    with pytest.raises(ServerError) as caught:
        atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    err = caught.value
    assert len(err.frame) == 20
    assert err.frame["post.uri"].is_unique
    assert err.cursor == "2"

    resumed = atnb.frame(FEED, cursor="3", max_pages=1, **kwargs)
    assert resumed["post.likeCount"].tolist()[0] == 30


# -- Where reads go ------------------------------------------------------------------


def test_no_session_and_not_app_bsky_needs_service(monkeypatch):
    import atnb.session

    monkeypatch.setattr(atnb.session, "current_session", lambda: None)
    with pytest.raises(NotLoggedInError, match="service="):
        atnb.frame("com.atproto.repo.listRecords", repo="did:plc:a", collection="x.y.z")


def test_public_reads_and_direct(monkeypatch):
    import atnb.session

    stub = StubTransport(lambda nsid, params: ok({"feed": [{"post": post(1)}]}))
    monkeypatch.setattr(xrpc, "HTTPTransport", lambda http=None: stub)
    monkeypatch.setattr(atnb.session, "current_session", lambda: None)
    atnb.settings.public_appview = "http://127.0.0.1:7"
    atnb.frame(FEED, actor="alice.test")
    assert stub.requests[-1].service == "http://127.0.0.1:7"
    assert not stub.requests[-1].authenticated

    session = StubSession(lambda nsid, params: ok({"feed": []}))
    monkeypatch.setattr(atnb.session, "current_session", lambda: session)
    atnb.frame(FEED, actor="alice.test")
    assert len(session.calls) == 1
    atnb.frame(FEED, actor="alice.test", direct=True)
    assert len(session.calls) == 1 and len(stub.requests) == 2
    atnb.frame("app.bsky.feed.getTimeline", direct=True)
    assert len(session.calls) == 2
    atnb.settings.direct_public_reads = True
    atnb.frame(FEED, actor="alice.test")
    assert len(session.calls) == 2 and len(stub.requests) == 3


# -- Streaming, progress, Parquet --------------------------------------------------


def test_iter_frames_yields_pages(serve):
    kwargs, _ = serve(_numbered_pages)
    got = list(atnb.iter_frames(FEED, max_pages=3, progress=False, **kwargs))
    assert [len(f) for f in got] == [10, 10, 10]
    assert got[2]["post.likeCount"].tolist()[0] == 20


def test_progress_bar_only_for_multi_page_pulls(serve, capsys):
    kwargs, _ = serve(_numbered_pages)
    atnb.frame(FEED, max_pages=2, **kwargs)
    assert "pages=2" in capsys.readouterr().err
    atnb.frame(FEED, max_pages=2, progress=False, **kwargs)
    atnb.frame(FEED, **kwargs)
    assert capsys.readouterr().err == ""


def test_to_parquet_unifies_the_dataset(serve, tmp_path, monkeypatch):
    monkeypatch.setattr("atnb._parquet.BATCH_ROWS", 1)
    bodies = [
        {
            "records": [{"uri": "at://a/c/1", "value": {"text": "x", "n": 1}}],
            "cursor": "1",
        },
        {
            "records": [
                {
                    "uri": "at://a/c/2",
                    "value": {"n": "two", "createdAt": "2024-01-01T00:00:00Z"},
                }
            ],
            "cursor": "2",
        },
        {"records": [{"uri": "at://a/c/3", "value": {"tags": ["a"], "n": 3}}]},
    ]
    kwargs, _ = serve(pages(*bodies))
    path = atnb.frame(
        "com.atproto.repo.listRecords",
        repo="a",
        all_pages=True,
        progress=False,
        to_parquet=tmp_path / "ds",
        **kwargs,
    )

    assert len(list(path.glob("part-*.parquet"))) >= 2  # raw pages 2-3 parse together
    df = pd.read_parquet(path)
    assert df["uri"].tolist() == ["at://a/c/1", "at://a/c/2", "at://a/c/3"]
    assert df["value.n"].tolist() == ["1", '"two"', "3"]
    assert df["value.text"].tolist()[0] == "x" and pd.isna(df["value.text"][1])
    assert str(df["value.createdAt"].dtype).startswith("datetime64")
    assert list(df["value.tags"][2]) == ["a"]
    assert pq.read_table(path).num_rows == 3


def test_no_secret_in_errors_warnings_or_logs(caplog, capsys):
    """Guard: what frames prints, logs and raises never holds the session's JWTs."""
    import logging

    caplog.set_level(logging.DEBUG)

    def handler(nsid, params):
        if params.get("cursor") == "2":
            return 502, b"<html>Bad Gateway</html>", {"Content-Type": "text/html"}
        return _numbered_pages(nsid, params)

    session = StubSession(handler)
    session.access_jwt, session.refresh_jwt = "ACCESS-1", "REFRESH-1"
    with pytest.raises(ServerError) as caught:
        atnb.frame(FEED, session=session, all_pages=True)
    err = caught.value
    shown = " ".join([str(err), repr(err), *getattr(err, "__notes__", [])])
    shown += caplog.text + capsys.readouterr().err
    assert "resume with cursor='2'" in shown
    for secret in ("ACCESS-1", "REFRESH-1"):
        assert secret not in shown
