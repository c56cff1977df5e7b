"""atnb.bsky: at:// URIs, facets by UTF-8 byte offsets (C09), thread rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import atnb
from atnb.bsky import AtUri, thread_rows


def tag(start: int, end: int, name: str) -> dict:
    return {
        "index": {"byteStart": start, "byteEnd": end},
        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": name}],
    }


def link(start: int, end: int, uri: str) -> dict:
    return {
        "index": {"byteStart": start, "byteEnd": end},
        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": uri}],
    }


def test_split_uri_string():
    uri = "at://did:plc:aaaa/app.bsky.feed.post/3kabc"
    assert atnb.split_uri(uri) == AtUri("did:plc:aaaa", "app.bsky.feed.post", "3kabc")
    assert atnb.split_uri("at://alice.test") == AtUri("alice.test", None, None)
    with pytest.raises(ValueError, match="at://"):
        atnb.split_uri("https://bsky.app/profile/alice.test")


def test_split_uri_series():
    uris = pd.Series(["at://did:plc:aaaa/app.bsky.feed.post/1", "nonsense", None])
    parts = atnb.split_uri(uris)
    assert list(parts.columns) == ["did", "collection", "rkey"]
    assert parts.loc[0].tolist() == ["did:plc:aaaa", "app.bsky.feed.post", "1"]
    assert parts.loc[1].isna().all() and parts.loc[2].isna().all()


def test_c09_emoji_then_tag():
    rows = atnb.facets("😀 #abcdef", [tag(5, 12, "abcdef")])
    assert rows["text"].tolist() == ["#abcdef"]
    assert rows["kind"].tolist() == ["tag"]
    assert rows["value"].tolist() == ["abcdef"]


def test_c09_accents_emoji_tag_and_link():
    text = "héllo 😀 #tag https://example.org/x"
    found = [tag(12, 16, "tag"), link(17, 38, "https://example.org/x")]
    rows = atnb.facets({"text": text, "facets": found})
    assert rows["text"].tolist() == ["#tag", "https://example.org/x"]
    assert rows["kind"].tolist() == ["tag", "link"]
    assert rows["byteStart"].tolist() == [12, 17]
    assert rows["problem"].isna().all()


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [
        (5, 99, "out of range"),
        (-1, 3, "out of range"),
        (7, 7, "out of range"),
        (1, 12, "multi-byte"),
        (5, 3, "out of range"),
        (None, 3, "missing"),
    ],
)
def test_c09_bad_offsets_are_flagged_never_raised(start, end, problem):
    rows = atnb.facets("😀 #abcdef", [tag(start, end, "abcdef")])
    assert len(rows) == 1
    assert pd.isna(rows["text"][0])
    assert problem in rows["problem"][0]


def test_facets_from_a_frame_and_from_post_views():
    text = "héllo 😀 #tag https://example.org/x"
    found = [tag(12, 16, "tag"), link(17, 38, "https://example.org/x")]
    mention = {
        "index": {"byteStart": 0, "byteEnd": 6},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:b"}],
    }
    views = [
        {"post": {"uri": "at://a/p/1", "record": {"text": text, "facets": found}}},
        {"post": {"uri": "at://a/p/2", "record": {"text": "no facets"}}},
        {
            "post": {
                "uri": "at://a/p/3",
                "record": {"text": "@bob.t", "facets": [mention]},
            }
        },
    ]
    from atnb._flatten import table_from_items
    from atnb.frames import to_frame

    df = to_frame(table_from_items(views))
    rows = atnb.facets(df)
    assert rows["uri"].tolist() == ["at://a/p/1", "at://a/p/1", "at://a/p/3"]
    assert rows["row"].tolist() == [0, 0, 2]
    assert rows["text"].tolist() == ["#tag", "https://example.org/x", "@bob.t"]
    assert rows["value"].tolist()[2] == "did:plc:b"

    assert atnb.facets(views)["text"].tolist() == rows["text"].tolist()
    as_numpy = df.astype({"post.record.facets": object})
    as_numpy["post.record.facets"] = [
        None if v is None or v is pd.NA else np.array(v, dtype=object)
        for v in df["post.record.facets"]
    ]
    assert atnb.facets(as_numpy)["text"].tolist() == rows["text"].tolist()


def test_no_facets_is_an_empty_frame():
    assert atnb.facets("plain", None).empty
    assert atnb.facets(pd.DataFrame({"x": [1]})).empty


def test_thread_rows_keep_blocked_and_missing_members():
    thread = {
        "$type": "app.bsky.feed.defs#threadViewPost",
        "post": {"uri": "at://a/p/1"},
        "parent": {
            "$type": "app.bsky.feed.defs#blockedPost",
            "uri": "at://b/p/0",
            "blocked": True,
        },
        "replies": [
            {
                "$type": "app.bsky.feed.defs#notFoundPost",
                "uri": "at://c/p/2",
                "notFound": True,
            }
        ],
    }
    rows = thread_rows(thread)
    assert [(r["depth"], r["uri"], r["parent_uri"]) for r in rows] == [
        (-1, "at://b/p/0", None),
        (0, "at://a/p/1", "at://b/p/0"),
        (1, "at://c/p/2", "at://a/p/1"),
    ]
    assert rows[0]["blocked"] and rows[2]["notFound"]
    assert thread_rows(None) == []
