"""Sample accounts and months of realistic Bluesky data for the devnet.

``seed(net)`` makes alice.test, bob.test, carol.test, dan.test and erin.test
(and frank.test, whose email sign-in codes are on) with profiles, a few hundred
posts over six months (replies, quotes, images, mentions, links and tags as
facets with UTF-8 byte offsets, some after emoji and accented text), reposts,
likes and follows. Everything is written through the PDS with
``com.atproto.repo.applyWrites`` in batches, then indexed by the AppView.

The passwords are throwaway devnet logins, not secrets: ``<name>-devnet-pass``.
"""

from __future__ import annotations

import datetime as dt
import random
import struct
import zlib
from typing import Any

from atnb.devnet import Account, Devnet

NAMES = ["alice", "bob", "carol", "dan", "erin"]
TWO_FACTOR_NAME = "frank"
POSTS_PER_ACCOUNT = {"alice": 120, "bob": 60, "carol": 45, "dan": 30, "erin": 25}
BATCH = 200
DAYS = 180

TOPICS = [
    ("the lake at dawn", "nature"),
    ("a new paper on climate policy", "climate"),
    ("sourdough, attempt three", "baking"),
    ("our reading group", "books"),
    ("the city council vote", "localnews"),
    ("a long train ride", "travel"),
    ("notebooks for data journalism", "datajournalism"),
    ("the protocol spec", "atproto"),
]
OPENERS = [
    "",
    "😀 ",
    "Café au lait ☕ and ",
    "Über-short note: ",
    "🌍🌱 ",
    "Hélène says: ",
]
LINKS = [
    "https://example.org/report",
    "https://example.com/posts/42?ref=atnb",
    "https://example.net/données/été",
]


def password_for(name: str) -> str:
    """The devnet's throwaway password for a sample account."""
    return f"{name}-devnet-pass"


class _Text:
    """Builds post text and its facets, counting UTF-8 bytes as it goes."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.facets: list[dict] = []

    def add(self, text: str, feature: dict | None = None) -> _Text:
        start = sum(len(p) for p in self.parts)
        data = text.encode()
        self.parts.append(data)
        if feature is not None:
            self.facets.append(
                {
                    "index": {"byteStart": start, "byteEnd": start + len(data)},
                    "features": [feature],
                }
            )
        return self

    @property
    def text(self) -> str:
        return b"".join(self.parts).decode()


def _png(seed: int, size: int = 48) -> bytes:
    """A small gradient PNG, made without any imaging library."""
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row += bytes(((x * 5 + seed) % 256, (y * 5) % 256, (seed * 37) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def _tid(when: dt.datetime, counter: int) -> str:
    """A record key in TID form for a time (keeps rkeys unique and ordered)."""
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    value = (int(when.timestamp() * 1_000_000) << 10) | (counter & 0x3FF)
    out = ""
    for _ in range(13):
        out = alphabet[value & 31] + out
        value >>= 5
    return out


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class _Writer:
    def __init__(self, net: Devnet, account: Account) -> None:
        self.net = net
        self.account = account
        self.pending: list[dict] = []
        self.counter = 0

    def create(self, collection: str, record: dict, when: dt.datetime) -> str:
        self.counter += 1
        rkey = _tid(when, self.counter)
        self.pending.append(
            {
                "$type": "com.atproto.repo.applyWrites#create",
                "collection": collection,
                "rkey": rkey,
                "value": record,
            }
        )
        return f"at://{self.account.did}/{collection}/{rkey}"

    def flush(self) -> dict[str, str]:
        """Write what is pending; return uri -> cid."""
        cids: dict[str, str] = {}
        while self.pending:
            batch, self.pending = self.pending[:BATCH], self.pending[BATCH:]
            answer = self.net.xrpc(
                "POST",
                "com.atproto.repo.applyWrites",
                {"repo": self.account.did, "writes": batch},
                jwt=self.account.access_jwt,
            )
            for result in answer.get("results", []):
                cids[result["uri"]] = result["cid"]
        return cids


def _upload(net: Devnet, account: Account, data: bytes) -> dict:
    import urllib.request

    request = urllib.request.Request(
        f"{net.pds_direct_url}/xrpc/com.atproto.repo.uploadBlob",
        data=data,
        method="POST",
        headers={
            "content-type": "image/png",
            "authorization": f"Bearer {account.access_jwt}",
        },
    )
    import json

    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["blob"]


def _post_text(rng: random.Random, people: dict[str, Account], me: str) -> _Text:
    topic, tag = rng.choice(TOPICS)
    text = _Text().add(rng.choice(OPENERS)).add(f"Thinking about {topic} ")
    if rng.random() < 0.35:
        other = rng.choice([n for n in people if n != me])
        text.add("with ").add(
            f"@{people[other].handle}",
            {"$type": "app.bsky.richtext.facet#mention", "did": people[other].did},
        )
        text.add(" ")
    if rng.random() < 0.3:
        link = rng.choice(LINKS)
        text.add("→ ").add(link, {"$type": "app.bsky.richtext.facet#link", "uri": link})
        text.add(" ")
    text.add(f"#{tag}", {"$type": "app.bsky.richtext.facet#tag", "tag": tag})
    return text


def seed(net: Devnet, *, rng_seed: int = 7) -> dict[str, Any]:
    """Write the sample data; returns ``{"accounts": {name: Account}, ...}``."""
    try:
        net.xrpc("GET", f"com.atproto.identity.resolveHandle?handle={NAMES[0]}.test")
    except RuntimeError:
        pass  # not there yet: seed
    else:
        raise RuntimeError(f"this devnet is already seeded ({NAMES[0]}.test exists)")

    rng = random.Random(rng_seed)
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    people: dict[str, Account] = {}
    for name in [*NAMES, TWO_FACTOR_NAME]:
        people[name] = net.create_account(
            handle=f"{name}.test",
            email=f"{name}@mail.test",
            password=password_for(name),
            app_password=True,
        )
    net.enable_email_2fa(people[TWO_FACTOR_NAME])

    # Profiles and posts, oldest first, spread over six months.
    posts: list[tuple[str, str, str]] = []  # (uri, cid, author)
    for name in NAMES:
        account, writer = people[name], _Writer(net, people[name])
        avatar = _upload(net, account, _png(len(posts) + 1))
        writer.create(
            "app.bsky.actor.profile",
            {
                "$type": "app.bsky.actor.profile",
                "displayName": name.capitalize(),
                "description": f"{name.capitalize()} posts about data and the world 🌍",
                "avatar": avatar,
            },
            now,
        )
        writer.pending[-1]["rkey"] = "self"
        image = _upload(net, account, _png(len(name) * 31))
        count = POSTS_PER_ACCOUNT[name]
        for i in range(count):
            when = now - dt.timedelta(
                days=DAYS * (count - i) / count, minutes=rng.randint(0, 600)
            )
            text = _post_text(rng, people, name)
            record: dict[str, Any] = {
                "$type": "app.bsky.feed.post",
                "text": text.text,
                "createdAt": _stamp(when),
                "langs": ["en"],
            }
            if text.facets:
                record["facets"] = text.facets
            if i % 9 == 4:
                record["embed"] = {
                    "$type": "app.bsky.embed.images",
                    "images": [{"image": image, "alt": f"a picture by {name}"}],
                }
            writer.create("app.bsky.feed.post", record, when)
        cids = writer.flush()
        posts.extend(
            (uri, cid, name)
            for uri, cid in cids.items()
            if "/app.bsky.feed.post/" in uri
        )

    # Replies, quotes, reposts, likes and follows, written by each account.
    for name in NAMES:
        writer = _Writer(net, people[name])
        others = [p for p in posts if p[2] != name]
        for uri, cid, author in rng.sample(others, 12):
            when = now - dt.timedelta(
                days=rng.randint(0, 20), minutes=rng.randint(1, 500)
            )
            ref = {"uri": uri, "cid": cid}
            writer.create(
                "app.bsky.feed.post",
                {
                    "$type": "app.bsky.feed.post",
                    "text": f"Replying to {author}: agreed, très bien 👍",
                    "reply": {"root": ref, "parent": ref},
                    "createdAt": _stamp(when),
                },
                when,
            )
        for uri, cid, _author in rng.sample(others, 4):
            when = now - dt.timedelta(days=rng.randint(0, 10))
            writer.create(
                "app.bsky.feed.post",
                {
                    "$type": "app.bsky.feed.post",
                    "text": "Worth reading 👇",
                    "embed": {
                        "$type": "app.bsky.embed.record",
                        "record": {"uri": uri, "cid": cid},
                    },
                    "createdAt": _stamp(when),
                },
                when,
            )
        for collection, sample in (
            ("app.bsky.feed.repost", rng.sample(others, 10)),
            ("app.bsky.feed.like", rng.sample(others, 40)),
        ):
            for uri, cid, _author in sample:
                when = now - dt.timedelta(days=rng.randint(0, 30))
                writer.create(
                    collection,
                    {
                        "$type": collection,
                        "subject": {"uri": uri, "cid": cid},
                        "createdAt": _stamp(when),
                    },
                    when,
                )
        for other in NAMES:
            if other != name and (name == "alice" or rng.random() < 0.7):
                writer.create(
                    "app.bsky.graph.follow",
                    {
                        "$type": "app.bsky.graph.follow",
                        "subject": people[other].did,
                        "createdAt": _stamp(now - dt.timedelta(days=DAYS)),
                    },
                    now,
                )
        writer.flush()

    net.wait_for_indexing(timeout=120)
    return {
        "accounts": people,
        "posts": len(posts),
        "two_factor": TWO_FACTOR_NAME,
    }
