"""atnb.frame against the devnet's seeded data: real PDS, AppView and faults."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

import atnb
from atnb.errors import RateLimitError, ServerError

pytestmark = pytest.mark.devnet

FEED = "app.bsky.feed.getAuthorFeed"


@pytest.fixture
def alice(seeded, devnet, devnet_settings):
    account = seeded["accounts"]["alice"]
    return atnb.login("alice.test", account.app_password, service=devnet.pds_url)


def records(devnet, did, collection):
    df = atnb.frame(
        "com.atproto.repo.listRecords",
        repo=did,
        collection=collection,
        limit=100,
        all_pages=True,
        progress=False,
        service=devnet.pds_url,
    )
    return df


class FaultAfter:
    """A session whose reads call ``inject()`` after the first page."""

    def __init__(self, session, inject):
        self.session, self.inject, self.calls = session, inject, 0

    def query_with_headers(self, nsid, params=None, **kwargs):
        self.calls += 1
        if self.calls == 2:
            self.inject()
        return self.session.query_with_headers(nsid, params, **kwargs)


def test_author_feed_all_pages_through_the_pds(alice, devnet, front):
    df = alice.frame(FEED, actor="alice.test", limit=25, all_pages=True, progress=False)

    posts = records(devnet, alice.did, "app.bsky.feed.post")
    reposts = records(devnet, alice.did, "app.bsky.feed.repost")
    assert len(df) == len(posts) + len(reposts)
    assert front.count(FEED) == -(-len(df) // 25) or front.count(FEED) > 1
    assert not df.duplicated(["post.uri", "reason.by.did"]).any()

    assert str(df["post.indexedAt"].dtype) == "datetime64[us, UTC]"
    assert str(df["post.record.createdAt"].dtype) == "datetime64[us, UTC]"
    assert df["post.likeCount"].dtype == "Int64"
    is_repost = df["reason.$type"].eq("app.bsky.feed.defs#reasonRepost").fillna(False)
    assert is_repost.sum() == len(reposts)
    assert (df.loc[is_repost, "reason.by.handle"] == "alice.test").all()
    assert (df.loc[~is_repost, "post.author.handle"] == "alice.test").all()
    kinds = set(df["post.embed.$type"].dropna())
    assert {"app.bsky.embed.images#view", "app.bsky.embed.record#view"} <= kinds
    assert "post.viewer.like" in df.columns or "post.viewer.threadMuted" in df.columns


def test_c14_on_real_feed(alice):
    df = alice.frame(
        FEED, actor="alice.test", limit=100, all_pages=True, progress=False
    )
    for column in (
        "post.uri",
        "post.record.text",
        "reply.parent.author.handle",
        "reason.by.handle",
    ):
        assert column in df.columns
    no_reply = df["post.record.reply.parent.uri"].isna()
    assert df.loc[no_reply, "reply.parent.author.handle"].isna().all()
    assert df.loc[~no_reply, "reply.parent.author.handle"].notna().all()

    # Same columns in the same order whatever the page size.
    small = alice.frame(
        FEED, actor="alice.test", limit=7, all_pages=True, progress=False
    )
    assert list(small.columns) == list(df.columns)


def test_lists_stay_lists_unless_exploded(alice):
    df = alice.frame(
        FEED, actor="alice.test", limit=100, all_pages=True, progress=False
    )
    assert df["post.record.langs"].dropna().iloc[0] == ["en"]
    with_images = df["post.embed.images"].notna().sum()
    assert with_images > 0

    exploded = alice.frame(
        FEED,
        actor="alice.test",
        limit=100,
        all_pages=True,
        progress=False,
        explode="post.embed.images",
    )
    assert exploded["post.embed.images.alt"].notna().sum() >= with_images
    assert exploded["post.embed.images.thumb"].dropna().str.startswith("http").all()


def test_followers_and_likes(alice, seeded):
    followers = alice.frame(
        "app.bsky.graph.getFollowers",
        actor="alice.test",
        all_pages=True,
        progress=False,
    )
    names = {f"{n}.test" for n in seeded["accounts"]}
    assert len(followers) >= 1
    assert set(followers["handle"]) <= names
    assert followers["did"].is_unique

    feed = alice.frame(
        FEED, actor="bob.test", limit=100, all_pages=True, progress=False
    )
    liked = feed[feed["post.likeCount"] > 0].iloc[0]
    likes = alice.frame(
        "app.bsky.feed.getLikes",
        uri=liked["post.uri"],
        limit=1,
        all_pages=True,
        progress=False,
    )
    assert len(likes) == liked["post.likeCount"]
    assert likes["actor.did"].is_unique
    assert str(likes["createdAt"].dtype) == "datetime64[us, UTC]"


def test_post_thread_rows(alice):
    feed = alice.frame(
        FEED, actor="alice.test", limit=100, all_pages=True, progress=False
    )
    root = feed[feed["post.replyCount"] > 0].iloc[0]["post.uri"]
    thread = alice.frame("app.bsky.feed.getPostThread", uri=root)

    top = thread[thread["depth"] == 0]
    assert top["uri"].tolist() == [root]
    replies = thread[thread["depth"] == 1]
    assert len(replies) >= 1
    assert (replies["parent_uri"] == root).all()
    assert "post.record.text" in thread.columns


def test_search_posts_pages(alice):
    df = alice.frame(
        "app.bsky.feed.searchPosts", q="climate", limit=5, max_items=12, progress=False
    )
    assert 1 <= len(df) <= 12
    assert df["record.text"].str.lower().str.contains("climate").all()
    assert df["uri"].is_unique


def test_list_records_on_the_pds(alice, devnet):
    public = records(devnet, alice.did, "app.bsky.feed.post")
    mine = alice.frame(
        "com.atproto.repo.listRecords",
        repo=alice.did,
        collection="app.bsky.feed.post",
        limit=100,
        all_pages=True,
        progress=False,
    )
    assert len(public) == len(mine) >= 120
    assert public["uri"].tolist() == mine["uri"].tolist()
    assert list(public.columns[:3]) == ["uri", "cid", "value.$type"] or "uri" in public
    assert str(public["value.createdAt"].dtype) == "datetime64[us, UTC]"


def test_c09_facets_on_seeded_posts(alice, devnet):
    posts = records(devnet, alice.did, "app.bsky.feed.post")
    found = atnb.facets(posts)
    assert len(found) > 10
    assert found["problem"].isna().all()
    tags = found[found["kind"] == "tag"]
    assert (tags["text"] == "#" + tags["value"]).all()
    links = found[found["kind"] == "link"]
    assert (links["text"] == links["value"]).all()
    assert found[found["kind"] == "mention"]["text"].str.startswith("@").all()


def test_direct_public_reads_skip_the_pds(alice, front):
    through = alice.frame(
        FEED, actor="bob.test", limit=100, all_pages=True, progress=False
    )
    front.reset()
    direct = alice.frame(
        FEED, actor="bob.test", limit=100, all_pages=True, progress=False, direct=True
    )
    assert front.count(FEED) == 0
    assert direct["post.uri"].tolist() == through["post.uri"].tolist()


def test_rate_limit_mid_pull_waits_when_reset_is_near(alice, front):
    session = FaultAfter(alice, lambda: front.fault(FEED, "ratelimit", reset_in=2))
    df = atnb.frame(
        FEED,
        actor="alice.test",
        limit=50,
        all_pages=True,
        session=session,
        progress=False,
    )
    full = alice.frame(
        FEED, actor="alice.test", limit=100, all_pages=True, progress=False
    )
    assert len(df) == len(full)


def test_rate_limit_mid_pull_raises_with_rows_and_cursor(alice, front):
    session = FaultAfter(alice, lambda: front.fault(FEED, "ratelimit", reset_in=3600))
    with pytest.raises(RateLimitError) as caught:
        atnb.frame(
            FEED,
            actor="alice.test",
            limit=50,
            all_pages=True,
            session=session,
            progress=False,
        )
    err = caught.value
    assert len(err.frame) == 50
    assert err.reset_at is not None and err.cursor

    rest = alice.frame(
        FEED,
        actor="alice.test",
        limit=100,
        cursor=err.cursor,
        all_pages=True,
        progress=False,
    )
    full = alice.frame(
        FEED, actor="alice.test", limit=100, all_pages=True, progress=False
    )
    joined = pd.concat([err.frame, rest], ignore_index=True)
    assert joined["post.uri"].tolist() == full["post.uri"].tolist()


@pytest.mark.parametrize("kind", ["html", "error"])
def test_server_error_mid_pull_keeps_rows(alice, front, kind):
    def inject():
        front.fault(
            FEED,
            kind,
            status=502 if kind == "html" else 500,
            error="InternalServerError",
        )

    with pytest.raises(ServerError) as caught:
        atnb.frame(
            FEED,
            actor="alice.test",
            limit=40,
            all_pages=True,
            session=FaultAfter(alice, inject),
            progress=False,
        )
    assert len(caught.value.frame) == 40
    assert caught.value.cursor


def test_to_parquet_and_iter_frames(alice, devnet, tmp_path, monkeypatch):
    monkeypatch.setattr("atnb._parquet.BATCH_ROWS", 30)
    monkeypatch.setattr("atnb._pull.BATCH_BYTES", 20_000)  # raw pages, small batches
    path = alice.frame(
        FEED,
        actor="alice.test",
        limit=25,
        all_pages=True,
        progress=False,
        to_parquet=tmp_path / "feed",
    )
    back = pd.read_parquet(path)
    pages = list(
        atnb.iter_frames(
            FEED, actor="alice.test", limit=25, session=alice, progress=False
        )
    )
    assert len(pages) > 2
    assert back["post.uri"].tolist() == pd.concat(pages)["post.uri"].tolist()
    assert len(list(path.glob("part-*.parquet"))) > 1


def test_progress_bar_and_no_secrets_in_output(alice, seeded, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    alice.frame(FEED, actor="alice.test", limit=50, all_pages=True)
    err = capsys.readouterr().err
    assert "pages=" in err
    account = seeded["accounts"]["alice"]
    for secret in (
        account.app_password,
        account.password,
        account.access_jwt,
        account.refresh_jwt,
    ):
        assert secret not in caplog.text
        assert secret not in err


def _post(session, text, reply_to=None):
    record = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-12-04T12:00:00.000Z",
    }
    if reply_to:
        record["reply"] = {"root": reply_to, "parent": reply_to}
    made = session.procedure(
        "com.atproto.repo.createRecord",
        {"repo": session.did, "collection": "app.bsky.feed.post", "record": record},
    )
    return {"uri": made["uri"], "cid": made["cid"]}


def test_thread_with_deleted_and_blocked_members(devnet, devnet_settings, make_account):
    x_account, y_account = (
        make_account(app_password=True),
        make_account(app_password=True),
    )
    x = atnb.login(x_account.handle, x_account.app_password, service=devnet.pds_url)
    y = atnb.login(y_account.handle, y_account.app_password, service=devnet.pds_url)

    # A reply whose parent was deleted: the parent is a notFound row.
    gone = _post(x, "this post will be deleted")
    orphan = _post(y, "a reply that outlives its parent", reply_to=gone)
    rkey = gone["uri"].rsplit("/", 1)[1]
    x.procedure(
        "com.atproto.repo.deleteRecord",
        {"repo": x.did, "collection": "app.bsky.feed.post", "rkey": rkey},
    )
    devnet.wait_for_indexing()
    deleted = x.frame("app.bsky.feed.getPostThread", uri=orphan["uri"])
    assert deleted["depth"].tolist() == [-1, 0]
    assert deleted["uri"].tolist() == [gone["uri"], orphan["uri"]]
    assert deleted["notFound"].tolist()[0] is True
    assert deleted["post.record.text"][1] == "a reply that outlives its parent"

    # y blocks x: y's posts are blocked rows in x's threads, x's own post stays.
    theirs = _post(y, "y's post")
    mine = _post(x, "x replies to y", reply_to=theirs)
    block = {
        "$type": "app.bsky.graph.block",
        "subject": x.did,
        "createdAt": "2026-12-04T12:00:00.000Z",
    }
    y.procedure(
        "com.atproto.repo.createRecord",
        {"repo": y.did, "collection": "app.bsky.graph.block", "record": block},
    )
    devnet.wait_for_indexing()
    blocked = x.frame("app.bsky.feed.getPostThread", uri=mine["uri"])
    assert blocked["depth"].tolist() == [-1, 0]
    assert blocked["blocked"].tolist()[0] is True
    assert blocked["uri"][0] == theirs["uri"]
    assert blocked["parent_uri"][1] == theirs["uri"]
    assert blocked["post.record.text"][1] == "x replies to y"

    alone = x.frame("app.bsky.feed.getPostThread", uri=orphan["uri"])
    assert alone["uri"].tolist() == [orphan["uri"]]
    assert alone["blocked"].tolist() == [True]


def test_c08_cursor_that_does_not_advance_on_the_devnet(alice, front):
    # The front answers the first page from the PDS, then replays it, cursor
    # and all, as a list endpoint stuck on one cursor would.
    front.fault(FEED, "replay", times=10)
    with pytest.warns(UserWarning, match="again"):
        df = alice.frame(
            FEED, actor="alice.test", limit=25, all_pages=True, progress=False
        )
    assert front.count(FEED) == 2
    assert len(df) == 25
    assert df["post.uri"].is_unique

    front.reset()
    front.fault(FEED, "replay", times=10)
    capped = alice.frame(FEED, actor="alice.test", limit=25, max_pages=1)
    assert len(capped) == 25
    assert front.count(FEED) == 1
