"""atnb.frames with stub servers: flattening, dtypes, column order, threads."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pytest

import atnb
from atnb._flatten import table_from_items
from atnb._schema import merged_order
from tests.frames_stub import (
    FEED,
    VIA,
    ok,
    pages,
    post,
    requests_made,
    server,
)


@pytest.fixture(params=VIA)
def serve(request, monkeypatch):
    return server(request.param, monkeypatch)


C14_FEED = {
    "feed": [
        {
            "post": post(1),
            "reply": {
                "root": post(0),
                "parent": {
                    **post(0),
                    "author": {"did": "did:plc:b", "handle": "bob.test"},
                },
            },
        },
        {"post": post(2)},
        {
            "post": {**post(3), "embed": None},
            "reason": {
                "$type": "app.bsky.feed.defs#reasonRepost",
                "by": {"did": "did:plc:c", "handle": "carol.test"},
                "indexedAt": "2024-05-02T00:00:00.000Z",
            },
        },
    ]
}


# -- C14: missing and null nested fields ------------------------------------


def test_c14_missing_and_null_nested_fields(serve):
    kwargs, _ = serve(lambda nsid, params: ok(C14_FEED))
    df = atnb.frame(FEED, actor="alice.test", **kwargs)

    assert len(df) == 3
    for column in ("post.uri", "post.record.text", "reply.parent.author.handle"):
        assert column in df.columns
    assert "reason.by.handle" in df.columns
    assert df["reply.parent.author.handle"].tolist()[0] == "bob.test"
    assert df["reply.parent.author.handle"].isna().tolist() == [False, True, True]
    assert df["reason.by.handle"].isna().tolist() == [True, True, False]
    assert df.loc[2, "reason.by.handle"] == "carol.test"
    assert df["post.record.text"].tolist() == ["post 1", "post 2", "post 3"]


def test_c14_empty_feed_is_an_empty_frame(serve):
    kwargs, _ = serve(lambda nsid, params: ok({"feed": []}))
    df = atnb.frame(FEED, actor="alice.test", **kwargs)
    assert isinstance(df, pd.DataFrame)
    assert df.empty


# -- Flattening and dtypes -----------------------------------------------------------


def test_dtypes(serve):
    items = [
        {"post": post(1, replyCount=3)},
        {"post": {**post(2), "indexedAt": "not a date", "likeCount": None}},
        {"post": {**post(3), "indexedAt": "2024-02-30T00:00:00Z"}},
        {"post": {**post(4), "indexedAt": "0000-01-01T00:00:00Z"}},
        {"post": {**post(5), "indexedAt": "2024-05-01T14:00:00+02:00"}},
    ]
    kwargs, _ = serve(lambda nsid, params: ok({"feed": items}))
    df = atnb.frame(FEED, **kwargs)

    when = df["post.indexedAt"]
    assert str(when.dtype) == "datetime64[us, UTC]"
    assert when[0] == pd.Timestamp("2024-05-01T12:00:01Z")
    assert when[1:4].isna().all()
    assert when[4] == pd.Timestamp("2024-05-01T12:00:00Z")
    assert str(df["post.record.createdAt"].dtype) == "datetime64[us, UTC]"
    assert df["post.likeCount"].dtype == "Int64"
    assert df["post.likeCount"].isna().tolist() == [False, True, False, False, False]
    assert df["post.replyCount"].dtype == "Int64"
    assert pd.api.types.is_string_dtype(df["post.author.handle"])


def test_union_types_and_lists(serve):
    images = {
        "$type": "app.bsky.embed.images#view",
        "images": [{"thumb": "t1", "alt": "a"}, {"thumb": "t2", "alt": "b"}],
    }
    external = {
        "$type": "app.bsky.embed.external#view",
        "external": {"uri": "https://x"},
    }
    items = [
        {"post": post(1, embed=images)},
        {"post": post(2, embed=external)},
        {"post": post(3, embed={"$type": "app.bsky.embed.future#view", "what": 1})},
    ]
    kwargs, _ = serve(lambda nsid, params: ok({"feed": items}))
    df = atnb.frame(FEED, **kwargs)

    assert df["post.embed.$type"].tolist() == [
        "app.bsky.embed.images#view",
        "app.bsky.embed.external#view",
        "app.bsky.embed.future#view",
    ]
    assert df.loc[1, "post.embed.external.uri"] == "https://x"
    assert [i["thumb"] for i in df.loc[0, "post.embed.images"]] == ["t1", "t2"]

    exploded = atnb.frame(FEED, explode="post.embed.images", **kwargs)
    assert exploded["post.embed.images.thumb"].tolist()[:2] == ["t1", "t2"]
    assert len(exploded) == 4


def test_values_whose_type_varies_are_json_text(serve):
    items = [{"uri": "at://a/c/1", "value": {"subject": "did:plc:b"}}]
    items.append({"uri": "at://a/c/2", "value": {"subject": 7}})
    kwargs, _ = serve(lambda nsid, params: ok({"records": items}))
    df = atnb.frame("com.atproto.repo.listRecords", repo="did:plc:a", **kwargs)
    assert df["value.subject"].tolist() == ['"did:plc:b"', "7"]


def test_types_that_vary_across_pages_and_cursor_anywhere(serve):
    bodies = [
        {"cursor": "1", "records": [{"uri": "at://a/c/1", "value": {"n": 1}}]},
        {
            "records": [{"uri": "at://a/c/2", "value": {"n": {"deep": True}}}],
            "cursor": "2",
        },
        {
            "records": [{"uri": "at://a/c/3", "value": {"n": "x"}}],
            "cursor": "3",
            "extra": {},
        },
        {"records": [{"uri": "at://a/c/4", "value": {}}]},
    ]
    kwargs, stub = serve(pages(*bodies))
    df = atnb.frame(
        "com.atproto.repo.listRecords",
        repo="a",
        all_pages=True,
        progress=False,
        **kwargs,
    )
    assert requests_made(stub) == 4
    assert df["uri"].tolist() == [f"at://a/c/{n}" for n in range(1, 5)]
    n = df["value.n"]
    assert n[0] == "1" and n[2] == '"x"' and n[[1, 3]].isna().all()
    assert df["value.n.deep"][1] and df["value.n.deep"][[0, 2, 3]].isna().all()


def test_column_order_is_stable_and_grouped(serve):
    first = ["post.uri", "post.record.text", "post.likeCount", "reason.by"]
    later = ["post.uri", "post.record.text", "post.embed.$type", "post.likeCount"]
    assert merged_order([first, later]) == [
        "post.uri",
        "post.record.text",
        "post.likeCount",
        "post.embed.$type",
        "reason.by",
    ]

    # The same items give the same columns whatever the page size.
    items = [
        {"post": post(1)},
        {"post": post(2, embed={"$type": "x#view", "images": []}), "reason": {"a": 1}},
        {"post": post(3, embed={"$type": "y#view", "record": {"uri": "u"}})},
        {"post": post(4), "reply": {"parent": {"uri": "p"}}},
    ]

    def paged(size):
        def handler(nsid, params):
            start = int(params.get("cursor") or 0)
            body = {"feed": items[start : start + size]}
            if start + size < len(items):
                body["cursor"] = str(start + size)
            return ok(body)

        return handler

    orders = []
    for size in (1, 2, 4):
        kwargs, _ = serve(paged(size))
        df = atnb.frame(FEED, all_pages=True, progress=False, **kwargs)
        orders.append(list(df.columns))
    assert orders[0] == orders[1] == orders[2]


def test_a_response_without_a_list_is_one_row(serve):
    profile = {"did": "did:plc:aaaa", "handle": "alice.test", "followersCount": 3}
    kwargs, _ = serve(lambda nsid, params: ok(profile))
    df = atnb.frame("app.bsky.actor.getProfile", actor="alice.test", **kwargs)
    assert df.to_dict("records") == [profile]


def test_field_names_the_list(serve):
    body = {"subject": {"did": "x"}, "followers": [{"did": "a"}], "other": [1, 2]}
    kwargs, _ = serve(lambda nsid, params: ok(body))
    df = atnb.frame("app.bsky.graph.getFollowers", actor="x", field="other", **kwargs)
    assert df["value"].tolist() == [1, 2]
    assert (
        atnb.frame("app.bsky.graph.getFollowers", actor="x", **kwargs)["did"][0] == "a"
    )


def test_thread_rows(serve):
    thread = {
        "thread": {
            "$type": "app.bsky.feed.defs#threadViewPost",
            "post": post(2),
            "parent": {
                "$type": "app.bsky.feed.defs#threadViewPost",
                "post": post(1),
                "parent": {
                    "$type": "app.bsky.feed.defs#notFoundPost",
                    "uri": "at://x/p/0",
                    "notFound": True,
                },
            },
            "replies": [
                {
                    "$type": "app.bsky.feed.defs#blockedPost",
                    "uri": "at://x/p/3",
                    "blocked": True,
                    "author": {"did": "did:plc:z"},
                },
                {
                    "$type": "app.bsky.feed.defs#threadViewPost",
                    "post": post(4),
                    "replies": [
                        {"$type": "app.bsky.feed.defs#threadViewPost", "post": post(5)}
                    ],
                },
            ],
        }
    }
    kwargs, _ = serve(lambda nsid, params: ok(thread))
    df = atnb.frame("app.bsky.feed.getPostThread", uri=post(2)["uri"], **kwargs)

    assert df["depth"].tolist() == [-2, -1, 0, 1, 1, 2]
    assert df["uri"].tolist() == [
        "at://x/p/0",
        post(1)["uri"],
        post(2)["uri"],
        "at://x/p/3",
        post(4)["uri"],
        post(5)["uri"],
    ]
    assert pd.isna(df["parent_uri"][0])
    assert df["parent_uri"].tolist()[1:] == [
        "at://x/p/0",
        post(1)["uri"],
        post(2)["uri"],
        post(2)["uri"],
        post(4)["uri"],
    ]
    assert df["notFound"].tolist()[0] is True
    assert df["blocked"].tolist()[3] is True
    assert df["post.record.text"].tolist()[5] == "post 5"


def test_import_stays_lazy():
    code = (
        "import sys, atnb, atnb.frames, atnb.bsky, atnb._parquet, atnb._schema;"
        "heavy = {'pandas', 'pyarrow', 'requests'} & set(sys.modules);"
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_table_from_items_handles_conflicts():
    table = table_from_items([{"a": {"b": 1}}, {"a": "text"}])
    assert table.column_names == ["a.b", "a"]
    assert table.column("a").to_pylist() == [None, "text"]
    assert pa.types.is_integer(table.schema.field("a.b").type)
