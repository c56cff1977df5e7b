"""Attempts to break atnb.frame: odd arguments, odd responses, odd folders.

Stub servers first (both ways in: a session's parsed dicts and raw public
pages), then the same cases against the devnet's seeded data.
"""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pyarrow.dataset as ds
import pytest

import atnb
from atnb import xrpc
from atnb.errors import (
    ArgumentError,
    AtnbError,
    NetworkError,
    RateLimitError,
    ServerError,
)
from tests.frames_stub import (
    FEED,
    SERVICE,
    VIA,
    StubSession,
    StubTransport,
    numbered_pages,
    ok,
    pages,
    post,
    requests_made,
    server,
)


@pytest.fixture(params=VIA)
def serve(request, monkeypatch):
    return server(request.param, monkeypatch)


def finite(count: int, per: int = 10):
    """A feed of ``count`` pages of ``per`` posts."""

    def handler(nsid, params):
        n = int(params.get("cursor") or 0)
        body = {"feed": [{"post": post(n * per + i)} for i in range(per)]}
        if n + 1 < count:
            body["cursor"] = str(n + 1)
        return ok(body)

    return handler


# -- Arguments that cannot work --------------------------------------------


@pytest.mark.parametrize("name", ["max_pages", "max_items"])
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_limits_below_one_are_a_clear_error_before_any_request(serve, name, value):
    kwargs, stub = serve(numbered_pages)  # endless: a limit ignored would hang
    with pytest.raises(ArgumentError, match=f"{name} must be .* at least 1") as caught:
        atnb.frame(FEED, progress=False, **{name: value}, **kwargs)
    assert isinstance(caught.value, AtnbError) and isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)
    assert requests_made(stub) == 0

    with pytest.raises(ArgumentError):
        next(atnb.iter_frames(FEED, progress=False, **{name: value}, **kwargs))


@pytest.mark.parametrize("field", ["feeed", "cursor"])
def test_wrong_field_names_the_lists_there_are(serve, field):
    kwargs, stub = serve(finite(3))
    with pytest.raises(ArgumentError) as caught:
        atnb.frame(FEED, field=field, all_pages=True, progress=False, **kwargs)
    text = str(caught.value)
    assert "\n" not in text
    assert repr(field) in text and "its lists: feed" in text
    assert caught.value.frame is None  # nothing to keep: a usage mistake
    assert requests_made(stub) == 1


def test_a_later_page_without_the_list_ends_quietly(serve):
    kwargs, _ = serve(pages({"feed": [{"post": post(1)}], "cursor": "a"}, {}))
    df = atnb.frame(FEED, field="feed", all_pages=True, progress=False, **kwargs)
    assert df["post.uri"].tolist() == [post(1)["uri"]]


def test_explode_mistakes_are_usage_errors_that_keep_the_rows(serve, tmp_path):
    kwargs, stub = serve(finite(2))
    with pytest.raises(ArgumentError, match="do not go together"):
        atnb.frame(FEED, explode="x", to_parquet=tmp_path / "d", **kwargs)
    assert requests_made(stub) == 0

    with pytest.raises(ArgumentError, match="cannot explode 'nope'") as caught:
        atnb.frame(FEED, explode="nope", all_pages=True, progress=False, **kwargs)
    assert len(caught.value.frame) == 20

    empty, _ = serve(lambda nsid, params: ok({"feed": []}))
    assert atnb.frame(FEED, explode="nope", **empty).empty


# -- Response shapes -----------------------------------------------------------

PROFILE = {
    "did": "did:plc:aaaa",
    "handle": "alice.test",
    "followersCount": 3,
    "createdAt": "2024-01-01T00:00:00.000Z",
    "labels": [],
    "associated": {"lists": 0},
}


def test_a_profile_with_labels_is_one_row(serve):
    kwargs, _ = serve(lambda nsid, params: ok(PROFILE))
    df = atnb.frame("app.bsky.actor.getProfile", actor="alice.test", **kwargs)
    assert len(df) == 1
    assert df["handle"].tolist() == ["alice.test"]
    assert df["followersCount"].dtype == "Int64"
    assert str(df["createdAt"].dtype) == "datetime64[us, UTC]"


def test_labels_alone_are_the_list(serve):
    label = {"src": "did:plc:l", "uri": "at://did:plc:aaaa", "val": "spam"}
    body = {"cursor": "c9", "labels": [label, {**label, "val": "porn"}]}
    kwargs, _ = serve(lambda nsid, params: ok(body))
    df = atnb.frame("com.atproto.label.queryLabels", uriPatterns="*", **kwargs)
    assert df["val"].tolist() == ["spam", "porn"]


def test_empty_results_look_the_same_both_ways_in(serve):
    kwargs, _ = serve(pages({"feed": [], "cursor": "a"}, {"feed": []}))
    df = atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    assert df.empty and list(df.columns) == []


def test_duplicates_are_found_after_an_empty_first_page(serve):
    kwargs, _ = serve(
        pages(
            {"feed": [], "cursor": "a"},
            {"feed": [{"post": post(1)}], "cursor": "b"},
            {"feed": [{"post": post(1)}, {"post": post(2)}]},
        )
    )
    df = atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
    assert df["post.uri"].tolist() == [post(1)["uri"], post(2)["uri"]]


def test_datetimes_among_other_types_still_parse(serve):
    stamps = [
        "not a date",
        "2024-05-01T12:00:00+02:00",
        None,
        12345,
        "0000-01-01T00:00:00Z",
    ]
    feed = [{"post": post(n, indexedAt=s)} for n, s in enumerate(stamps)]
    kwargs, _ = serve(lambda nsid, params: ok({"feed": feed}))
    column = atnb.frame(FEED, **kwargs)["post.indexedAt"]
    assert str(column.dtype) == "datetime64[us, UTC]"
    assert column.isna().tolist() == [True, False, True, True, True]
    assert column[1] == pd.Timestamp("2024-05-01T10:00:00Z")


def test_a_reply_chain_deeper_than_the_recursion_limit():
    # Parsed dicts (a session's way in): JSON this deep is beyond json's own limit.
    root = node = {"$type": "app.bsky.feed.defs#threadViewPost", "post": post(0)}
    for n in range(1, 1500):
        node["replies"] = [{"$type": node["$type"], "post": post(n)}]
        node = node["replies"][0]
    session = StubSession(lambda nsid, params: ok({"thread": root}))
    thread = atnb.frame("app.bsky.feed.getPostThread", uri="at://x", session=session)
    assert thread["depth"].tolist() == list(range(1500))
    assert thread["parent_uri"].tolist()[1:] == thread["uri"].tolist()[:-1]


def test_raw_thread_json_too_deep_is_a_server_error(monkeypatch):
    body = b'{"thread":' + b'{"replies":[' * 2000 + b"]}" * 2000 + b"}"
    kwargs, _ = server("public", monkeypatch)(lambda nsid, params: ok(body))
    with pytest.raises(ServerError, match=r"nested too deeply.*depth="):
        atnb.frame("app.bsky.feed.getPostThread", uri="at://x", **kwargs)


# -- Parquet folders -----------------------------------------------------------


@pytest.mark.parametrize("other", ["notes.txt", "other.parquet"])
def test_to_parquet_refuses_a_folder_that_is_not_empty(serve, tmp_path, other):
    (tmp_path / other).write_text("someone else's file")
    kwargs, stub = serve(finite(2))
    with pytest.raises(FileExistsError, match="not empty"):
        atnb.frame(FEED, all_pages=True, to_parquet=tmp_path, progress=False, **kwargs)
    assert requests_made(stub) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [other]


def test_parquet_reads_back_with_pandas_and_pyarrow_dataset(serve, tmp_path):
    kwargs, _ = serve(finite(3))
    path = atnb.frame(
        FEED, all_pages=True, to_parquet=tmp_path / "new", progress=False, **kwargs
    )
    table = ds.dataset(path, format="parquet").to_table()
    assert table.num_rows == 30
    assert str(table.schema.field("post.indexedAt").type) == "timestamp[us, tz=UTC]"
    assert pd.read_parquet(path)["post.uri"].is_unique


# -- bsky helpers ----------------------------------------------------------------


def test_split_uri_takes_lists_and_ignores_query_and_fragment():
    parts = atnb.split_uri(["at://did:plc:a/c/r?x=1", None, "at://h.test/"])
    assert parts["did"].tolist()[::2] == ["did:plc:a", "h.test"]
    assert parts["rkey"].isna().tolist() == [False, True, True]
    assert atnb.split_uri("at://did:plc:a/c/r#frag").rkey == "r"
    with pytest.raises(ValueError, match="not an at:// URI"):
        atnb.split_uri(None)


def test_facets_with_a_broken_index_or_no_text():
    tag = {"$type": "app.bsky.richtext.facet#tag", "tag": "x"}
    broken = [{"index": [1, 2], "features": [tag]}]
    rows = atnb.facets("abc", broken)
    assert rows["problem"].tolist() == ["offsets missing or not integers"]
    no_text = {"facets": [{"index": {"byteStart": 0, "byteEnd": 2}, "features": [tag]}]}
    assert atnb.facets({"record": no_text})["problem"].tolist() == [
        "the post has no text"
    ]


# -- Connections and speed -----------------------------------------------------


class ClosingTransport(StubTransport):
    closed = 0

    @property
    def http(self):
        return self

    def close(self):
        ClosingTransport.closed += 1


def test_public_pulls_close_their_connections(monkeypatch):
    ClosingTransport.closed = 0
    stub = ClosingTransport(numbered_pages)
    monkeypatch.setattr(xrpc, "HTTPTransport", lambda http=None: stub)

    for n, _page in enumerate(atnb.iter_frames(FEED, service=SERVICE, progress=False)):
        if n == 2:
            break
    assert ClosingTransport.closed == 1
    atnb.frame(FEED, service=SERVICE, max_pages=3, progress=False)
    assert ClosingTransport.closed == 2


def _seconds_for(count: int, kwargs_for) -> float:
    best = float("inf")
    for _ in range(3):
        kwargs = kwargs_for(count)
        started = time.perf_counter()
        df = atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
        best = min(best, time.perf_counter() - started)
    assert len(df) == count * 100
    return best


@pytest.mark.parametrize("via", VIA)
def test_time_grows_linearly_with_pages(via, monkeypatch):
    def kwargs_for(count):
        bodies = {}
        for n in range(count):
            body = {"feed": [{"post": post(n * 100 + i)} for i in range(100)]}
            if n + 1 < count:
                body["cursor"] = str(n + 1)
            bodies[str(n) if n else None] = body
        raw = {k: json.dumps(v).encode() for k, v in bodies.items()}
        if via == "session":
            kwargs, _ = server(via, monkeypatch)(
                lambda nsid, params: ok(bodies[params.get("cursor")])
            )
        else:
            kwargs, _ = server(via, monkeypatch)(
                lambda nsid, params: ok(raw[params.get("cursor")])
            )
        return kwargs

    small, large = _seconds_for(50, kwargs_for), _seconds_for(200, kwargs_for)
    # Linear would be 4x; quadratic 16x. Allow noise on a busy machine.
    assert large < 8 * small + 0.05, (small, large)


# -- Against the devnet --------------------------------------------------------


@pytest.fixture
def alice(seeded, devnet, devnet_settings):
    account = seeded["accounts"]["alice"]
    return atnb.login("alice.test", account.app_password, service=devnet.pds_url)


def _sockets() -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(
        1
        for fd in fds
        if os.path.exists(f"/proc/self/fd/{fd}")
        and os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    )


@pytest.mark.devnet
def test_devnet_single_objects_and_lists_of_named_things(alice, seeded):
    profile = alice.frame("app.bsky.actor.getProfile", actor="bob.test")
    assert profile["handle"].tolist() == ["bob.test"]
    assert profile["postsCount"].dtype == "Int64"

    handles = ["alice.test", "bob.test", "carol.test"]
    profiles = alice.frame("app.bsky.actor.getProfiles", actors=handles)
    assert sorted(profiles["handle"]) == handles

    feed = alice.frame(FEED, actor="bob.test", limit=5)
    uris = feed["post.uri"].tolist()
    posts = alice.frame("app.bsky.feed.getPosts", uris=uris)
    assert sorted(posts["uri"]) == sorted(uris)
    assert str(posts["indexedAt"].dtype) == "datetime64[us, UTC]"


@pytest.mark.devnet
def test_devnet_wrong_field_and_bad_limits(alice, front):
    with pytest.raises(ArgumentError, match="its lists: feed"):
        alice.frame(FEED, actor="alice.test", field="posts")
    with pytest.raises(ArgumentError, match="max_pages"):
        alice.frame(FEED, actor="alice.test", max_pages=0)
    assert front.count(FEED) == 1  # the field= check needs one page, max_pages none


@pytest.mark.devnet
def test_devnet_follows_likes_and_search(alice, devnet, seeded):
    follows = alice.frame(
        "app.bsky.graph.getFollows", actor="alice.test", limit=2, all_pages=True
    )
    assert len(follows) == 4 and follows["did"].is_unique  # alice follows everyone

    for collection in ("app.bsky.feed.like", "app.bsky.graph.follow"):
        rows = atnb.frame(
            "com.atproto.repo.listRecords",
            repo=alice.did,
            collection=collection,
            limit=7,
            all_pages=True,
            progress=False,
            service=devnet.pds_url,
        )
        assert rows["uri"].is_unique
        assert str(rows["value.createdAt"].dtype) == "datetime64[us, UTC]"
    assert len(rows) == 4

    found = alice.frame(
        "app.bsky.feed.searchPosts", q="#climate", limit=10, all_pages=True
    )
    assert len(found) > 10 and found["uri"].is_unique
    tags = atnb.facets(found)
    assert "#climate" in set(tags["text"])


@pytest.mark.devnet
def test_devnet_deep_thread(devnet, devnet_settings, make_account):
    account = make_account(app_password=True)
    me = atnb.login(account.handle, account.app_password, service=devnet.pds_url)
    chain = []
    for n in range(8):
        record = {
            "$type": "app.bsky.feed.post",
            "text": f"level {n}",
            "createdAt": "2026-12-04T12:00:00.000Z",
        }
        if chain:
            parent = {"uri": chain[-1]["uri"], "cid": chain[-1]["cid"]}
            record["reply"] = {"root": dict(chain[0]), "parent": parent}
        chain.append(
            me.procedure(
                "com.atproto.repo.createRecord",
                {"repo": me.did, "collection": "app.bsky.feed.post", "record": record},
            )
        )
    devnet.wait_for_indexing()

    middle = chain[4]["uri"]
    thread = me.frame("app.bsky.feed.getPostThread", uri=middle, depth=10)
    assert thread["depth"].tolist() == [-4, -3, -2, -1, 0, 1, 2, 3]
    assert thread["uri"].tolist() == [c["uri"] for c in chain]
    assert thread["parent_uri"].tolist()[1:] == [c["uri"] for c in chain[:-1]]
    assert thread["post.record.text"].tolist() == [f"level {n}" for n in range(8)]


@pytest.mark.devnet
def test_devnet_dropped_connection_mid_pull_keeps_rows(alice, front):
    full = alice.frame(FEED, actor="alice.test", limit=100, all_pages=True)

    calls = []

    def query(nsid, params=None, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            front.fault(FEED, "drop")
        return alice.query_with_headers(nsid, params, **kwargs)

    class Dropping:
        query_with_headers = staticmethod(query)

    with pytest.raises(NetworkError) as caught:
        atnb.frame(
            FEED,
            actor="alice.test",
            limit=30,
            all_pages=True,
            session=Dropping(),
            progress=False,
        )
    err = caught.value
    assert len(err.frame) == 30 and err.cursor
    rest = alice.frame(
        FEED, actor="alice.test", limit=100, cursor=err.cursor, all_pages=True
    )
    joined = pd.concat([err.frame, rest], ignore_index=True)
    assert joined["post.uri"].tolist() == full["post.uri"].tolist()


@pytest.mark.devnet
def test_devnet_public_rate_limit_resume_is_exact(alice, devnet, front, monkeypatch):
    from atnb import frames

    nsid = "com.atproto.repo.listRecords"
    real = frames._PublicFetch.__call__
    calls = []

    def call(self, params):
        calls.append(1)
        if len(calls) == 2:
            front.fault(nsid, "ratelimit", reset_in=3600)
        return real(self, params)

    monkeypatch.setattr(frames._PublicFetch, "__call__", call)
    pull = {
        "repo": alice.did,
        "collection": "app.bsky.feed.post",
        "service": devnet.pds_url,
        "progress": False,
    }
    with pytest.raises(RateLimitError) as caught:
        atnb.frame(nsid, limit=40, all_pages=True, **pull)
    err = caught.value
    assert len(err.frame) == 40 and err.cursor and err.reset_at is not None
    assert "resume with cursor=" in "".join(getattr(err, "__notes__", []))

    monkeypatch.setattr(frames._PublicFetch, "__call__", real)
    rest = atnb.frame(nsid, limit=100, cursor=err.cursor, all_pages=True, **pull)
    full = atnb.frame(nsid, limit=100, all_pages=True, **pull)
    joined = pd.concat([err.frame, rest], ignore_index=True)
    assert joined["uri"].tolist() == full["uri"].tolist()
    assert joined["uri"].is_unique


@pytest.mark.devnet
def test_devnet_iter_frames_break_leaves_no_socket(devnet, seeded, devnet_settings):
    appview = devnet.appview_url
    atnb.frame(FEED, actor="alice.test", limit=5, service=appview)
    before = _sockets()
    for n, _page in enumerate(
        atnb.iter_frames(
            FEED, actor="alice.test", limit=10, service=appview, progress=False
        )
    ):
        if n == 1:
            break
    assert _sockets() <= before


@pytest.mark.devnet
def test_devnet_parquet_folder_rules(alice, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "part-00000.parquet").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        alice.frame(
            FEED, actor="alice.test", all_pages=True, to_parquet=tmp_path / "old"
        )

    path = alice.frame(
        FEED,
        actor="alice.test",
        limit=50,
        all_pages=True,
        progress=False,
        to_parquet=tmp_path / "new",
    )
    table = ds.dataset(path, format="parquet").to_table()
    back = pd.read_parquet(path)
    assert table.num_rows == len(back) > 100
    assert back["post.uri"].notna().all()
    assert str(back["post.indexedAt"].dtype) == "datetime64[us, UTC]"


@pytest.mark.devnet
def test_devnet_no_secret_in_attrs_errors_or_notes(alice, seeded, front, capsys):
    account = seeded["accounts"]["alice"]
    secrets = [account.app_password, account.password]
    secrets += [alice._access_jwt, alice._refresh_jwt]  # this login's JWTs

    df = alice.frame(FEED, actor="alice.test", limit=30, max_pages=2)
    front.fault(FEED, "html", status=502)
    with pytest.raises(AtnbError) as caught:
        alice.frame(FEED, actor="alice.test", limit=30, all_pages=True)
    with pytest.raises(ArgumentError) as usage:
        alice.frame(FEED, actor="alice.test", field="nope")

    shown = [repr(df.attrs), capsys.readouterr().err]
    for err in (caught.value, usage.value):
        shown += [str(err), repr(err), *getattr(err, "__notes__", [])]
    for secret in filter(None, secrets):
        assert all(secret not in text for text in shown)
