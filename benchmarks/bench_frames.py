"""Frames benchmarks: P2 (pulls on the devnet) and P3 (page bytes to DataFrame).

    python benchmarks/bench_frames.py p3              # no network needed
    python benchmarks/bench_frames.py p2              # starts a devnet (~15 s)
    python benchmarks/bench_frames.py p2 --attach     # `python -m atnb.devnet up`
    python benchmarks/bench_frames.py all             # P2, then P3 on captured items

P2: records/s of ``atnb.frame(..., all_pages=True)`` from the first request
to the finished DataFrame, against a hand-written ``requests`` loop +
``pandas.json_normalize`` and the ``atproto`` SDK's client loop + dict
conversion + ``json_normalize``, over the same pages (limit=100) of an author
feed and of listRecords for one account with a few thousand posts (written
with ``applyWrites`` in batches of 200). Contenders alternate; the table shows
the median of ``--runs`` runs.

P3: the step from page bodies to DataFrame for ``--items`` feed items
(100 per page, made from realistic feed items, or from items captured on the
devnet with ``all``), against ``json.loads`` + ``pandas.json_normalize``.
Each run is a fresh process; time and peak memory (max RSS above the RSS
with the pages loaded) are medians.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FEED = "app.bsky.feed.getAuthorFeed"
LIST = "com.atproto.repo.listRecords"
HAND = "requests+json_normalize"
SDK = "atproto SDK"


# -- P3 input -------------------------------------------------------------------


def synthetic_items() -> list[dict]:
    """A few feed items shaped like the AppView's (images, links, reposts, replies)."""
    did, handle = "did:plc:ewvi7nxzyoun6zhxrhs64oiz", "alice.test"
    author = {
        "did": did,
        "handle": handle,
        "displayName": "Alice",
        "avatar": f"https://cdn.test/img/avatar/plain/{did}/bafkreia@jpeg",
        "associated": {"chat": {"allowIncoming": "following"}},
        "viewer": {"muted": False, "blockedBy": False},
        "labels": [],
        "createdAt": "2024-01-02T03:04:05.678Z",
    }
    text = "😀 Café au lait ☕ and a new paper on climate policy #climate https://example.org/report"
    record = {
        "$type": "app.bsky.feed.post",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "langs": ["en"],
        "text": text,
        "facets": [
            {
                "index": {"byteStart": 60, "byteEnd": 68},
                "features": [
                    {"$type": "app.bsky.richtext.facet#tag", "tag": "climate"}
                ],
            },
            {
                "index": {"byteStart": 69, "byteEnd": 95},
                "features": [
                    {
                        "$type": "app.bsky.richtext.facet#link",
                        "uri": "https://example.org/report",
                    }
                ],
            },
        ],
    }
    post = {
        "uri": f"at://{did}/app.bsky.feed.post/3l0000000000",
        "cid": "bafyreib2rxk3rybk3aobmv5cjuql3bm2twh4jo5uxgf5gqo3zcsbt6ckle",
        "author": author,
        "record": record,
        "replyCount": 2,
        "repostCount": 1,
        "likeCount": 14,
        "quoteCount": 0,
        "indexedAt": "2024-05-01T12:00:01.123Z",
        "viewer": {"threadMuted": False, "embeddingDisabled": False},
        "labels": [],
    }
    images = copy.deepcopy(post)
    images["embed"] = {
        "$type": "app.bsky.embed.images#view",
        "images": [
            {
                "thumb": "https://cdn.test/t",
                "fullsize": "https://cdn.test/f",
                "alt": "a picture",
                "aspectRatio": {"height": 48, "width": 48},
            }
        ],
    }
    images["record"]["embed"] = {
        "$type": "app.bsky.embed.images",
        "images": [
            {
                "alt": "a picture",
                "aspectRatio": {"height": 48, "width": 48},
                "image": {
                    "$type": "blob",
                    "ref": {"$link": "bafkreih"},
                    "mimeType": "image/png",
                    "size": 1234,
                },
            }
        ],
    }
    repost = {
        "$type": "app.bsky.feed.defs#reasonRepost",
        "by": {**author, "handle": "bob.test", "did": "did:plc:bob"},
        "indexedAt": "2024-05-03T00:00:00.000Z",
    }
    reply = copy.deepcopy(post)
    reply["record"]["reply"] = {
        "root": {"uri": post["uri"], "cid": post["cid"]},
        "parent": {"uri": post["uri"], "cid": post["cid"]},
    }
    parent = {"$type": "app.bsky.feed.defs#postView", **post}
    return [
        {"post": post},
        {"post": images},
        {"post": post, "reason": repost},
        {
            "post": reply,
            "reply": {"root": parent, "parent": parent, "grandparentAuthor": author},
        },
    ]


def make_pages(templates: list[dict], items: int, per_page: int = 100) -> list[bytes]:
    """Page bodies of ``items`` feed items, each a varied copy of a template."""
    rng = random.Random(6)
    pages, n = [], 0
    while n < items:
        feed = []
        for _ in range(min(per_page, items - n)):
            item = copy.deepcopy(templates[n % len(templates)])
            post = item["post"]
            post["uri"] = post["uri"].rsplit("/", 1)[0] + f"/3l{n:010d}"
            post["likeCount"] = rng.randint(0, 500)
            post["indexedAt"] = (
                f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}T12:00:00.{n % 1000:03d}Z"
            )
            post["record"]["text"] = post["record"].get("text", "") + f" #{n}"
            feed.append(item)
            n += 1
        body = {"feed": feed}
        if n < items:
            body["cursor"] = str(len(pages) + 1)
        pages.append(json.dumps(body, ensure_ascii=False).encode())
    return pages


P3_CHILD = r"""
import json, pickle, resource, sys, time
import pandas as pd, pyarrow, requests
sys.path.insert(0, {root!r})
pages = pickle.load(open({path!r}, "rb"))

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

contender = {contender!r}
if contender != "baseline":
    import atnb, atnb.frames, atnb._flatten, atnb._pull
    from atnb import xrpc

    class Memory:
        def send(self, request):
            index = int(dict(request.params).get("cursor") or 0)
            return xrpc.Reply(200, {{"Content-Type": "application/json"}}, pages[index])

    class Session:
        def query_with_headers(self, nsid, params=None, **kwargs):
            index = int((params or {{}}).get("cursor") or 0)
            return json.loads(pages[index]), {{}}

    xrpc.HTTPTransport = lambda http=None: Memory()
base = rss()
started = time.perf_counter()
if contender == "baseline":
    items = []
    for body in pages:
        items.extend(json.loads(body)["feed"])
    df = pd.json_normalize(items)
elif contender == "atnb-raw":
    df = atnb.frame("app.bsky.feed.getAuthorFeed", service="http://127.0.0.1:9",
                    all_pages=True, progress=False)
else:
    df = atnb.frame("app.bsky.feed.getAuthorFeed", session=Session(),
                    all_pages=True, progress=False)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
result = {{"s": elapsed, "mb": peak / 1e6, "rows": len(df), "cols": df.shape[1]}}
print(json.dumps(result))
"""


def p3(items: int, runs: int, templates: list[dict] | None) -> None:
    pages = make_pages(templates or synthetic_items(), items)
    size = sum(map(len, pages)) / 1e6
    print(
        f"\nP3: {items:,} feed items in {len(pages)} pages ({size:.0f} MB of JSON), "
        f"{'captured' if templates else 'synthetic'} templates, {runs} runs each"
    )
    import pickle

    contenders = ["baseline", "atnb-raw", "atnb-dict"]
    results: dict[str, list[dict]] = {c: [] for c in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pages.pickle"
        path.write_bytes(pickle.dumps(pages))
        del pages
        for _ in range(runs):
            for contender in contenders:
                code = P3_CHILD.format(
                    root=str(ROOT), path=str(path), contender=contender
                )
                out = subprocess.run(
                    [sys.executable, "-c", code],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                results[contender].append(
                    json.loads(out.stdout.strip().splitlines()[-1])
                )

    base_s = statistics.median(r["s"] for r in results["baseline"])
    base_mb = statistics.median(r["mb"] for r in results["baseline"])
    print(
        f"{'contender':<12}{'median s':>10}{'speed-up':>10}{'peak MB':>10}"
        f"{'mem ratio':>11}{'rows':>9}{'cols':>6}"
    )
    for contender, rows in results.items():
        s = statistics.median(r["s"] for r in rows)
        mb = statistics.median(r["mb"] for r in rows)
        print(
            f"{contender:<12}{s:>10.2f}{base_s / s:>9.2f}x{mb:>10.0f}"
            f"{mb / base_mb:>10.2f}x{rows[0]['rows']:>9}{rows[0]['cols']:>6}"
        )
    print(
        "atnb-raw: page bytes to Arrow (public, service= and atnb.Session reads); "
        "atnb-dict: a custom SessionManager that hands over parsed pages."
    )


# -- P2 on the devnet --------------------------------------------------------------


def seed_posts(net, account, count: int) -> None:
    """Write ``count`` posts for ``account`` with applyWrites, 200 per call."""
    import datetime as dt

    from atnb.devnet.seed import _stamp  # the seed's createdAt format

    now = dt.datetime.now(dt.timezone.utc)
    done = 0
    while done < count:
        writes = []
        for i in range(done, min(count, done + 200)):
            when = now - dt.timedelta(minutes=count - i)
            text = f"benchmark post {i} 😀 about #data and https://example.org/{i}"
            writes.append(
                {
                    "$type": "com.atproto.repo.applyWrites#create",
                    "collection": "app.bsky.feed.post",
                    "value": {
                        "$type": "app.bsky.feed.post",
                        "text": text,
                        "createdAt": _stamp(when),
                        "langs": ["en"],
                    },
                }
            )
        net.xrpc(
            "POST",
            "com.atproto.repo.applyWrites",
            {"repo": account.did, "writes": writes},
            jwt=account.access_jwt,
        )
        done += len(writes)
    net.wait_for_indexing(timeout=300)


def app_password_jwt(pds: str, account) -> str:
    """The access JWT of a hand-made ``createSession`` with the app password."""
    import requests

    answer = requests.post(
        f"{pds}/xrpc/com.atproto.server.createSession",
        json={"identifier": account.handle, "password": account.app_password},
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()["accessJwt"]


def requests_loop(pds: str, access_jwt: str, nsid: str, params: dict, field: str):
    import pandas as pd
    import requests

    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {access_jwt}"
    items, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get(f"{pds}/xrpc/{nsid}", params=query, timeout=60)
        response.raise_for_status()
        data = response.json()
        items.extend(data[field])
        cursor = data.get("cursor")
        if not cursor or not data[field]:
            break
    return pd.json_normalize(items)


def sdk_loop(client, nsid: str, params: dict, field: str):
    import pandas as pd
    from atproto_client.models.utils import get_model_as_dict

    method = {
        FEED: client.app.bsky.feed.get_author_feed,
        LIST: client.com.atproto.repo.list_records,
    }[nsid]
    items, cursor = [], None
    while True:
        answer = method({**params, **({"cursor": cursor} if cursor else {})})
        page = getattr(answer, field)
        items.extend(get_model_as_dict(item) for item in page)
        cursor = answer.cursor
        if not cursor or not page:
            break
    return pd.json_normalize(items)


def p2(args) -> list[dict]:
    import atnb
    from atnb.devnet import Devnet

    net = Devnet.attach() if args.attach else Devnet().start()
    try:
        atnb.settings.store = "memory"
        atnb.settings.plc_url = net.plc_url
        atnb.settings.public_appview = net.appview_url
        account = net.create_account(app_password=True)
        started = time.perf_counter()
        seed_posts(net, account, args.posts)
        print(
            f"\nP2: wrote {args.posts} posts for {account.handle} and waited for "
            f"indexing in {time.perf_counter() - started:.1f} s; {args.runs} runs each"
        )
        session = atnb.login(account.handle, account.app_password, service=net.pds_url)
        from atproto import Client

        client = Client(base_url=net.pds_url)
        client.login(account.handle, account.app_password, fetch_bsky_profile=False)

        # Every contender reads with an app-password session (the PDS treats
        # app-password and main-password tokens differently).
        pds, jwt = net.pds_url, app_password_jwt(net.pds_url, account)
        feed = {"actor": account.did, "limit": 100}
        records = {
            "repo": account.did,
            "collection": "app.bsky.feed.post",
            "limit": 100,
        }
        cases = {
            FEED: (
                feed,
                "feed",
                {
                    "atnb": lambda: session.frame(
                        FEED, feed, all_pages=True, progress=False
                    ),
                    "requests+json_normalize": lambda: requests_loop(
                        pds, jwt, FEED, feed, "feed"
                    ),
                    "atproto SDK": lambda: sdk_loop(client, FEED, feed, "feed"),
                    "atnb direct=True": lambda: session.frame(
                        FEED, feed, all_pages=True, progress=False, direct=True
                    ),
                },
            ),
            LIST: (
                records,
                "records",
                {
                    "atnb": lambda: session.frame(
                        LIST, records, all_pages=True, progress=False
                    ),
                    "atnb service= (raw)": lambda: atnb.frame(
                        LIST, records, service=pds, all_pages=True, progress=False
                    ),
                    "requests+json_normalize": lambda: requests_loop(
                        pds, jwt, LIST, records, "records"
                    ),
                    "atproto SDK": lambda: sdk_loop(client, LIST, records, "records"),
                },
            ),
        }
        for nsid, (_params, _field, contenders) in cases.items():
            times: dict[str, list[float]] = {name: [] for name in contenders}
            rows: dict[str, int] = {}
            for name, run in contenders.items():
                rows[name] = len(run())  # warm-up, and the row count
            names = list(contenders)
            for round_ in range(args.runs):
                # Alternate, and rotate who goes first, so drift hits all alike.
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    t0 = time.perf_counter()
                    contenders[name]()
                    times[name].append(time.perf_counter() - t0)
            print(f"\n{nsid}")
            print(
                f"{'contender':<26}{'rows':>7}{'median s':>10}{'rows/s':>10}"
                f"{'vs requests':>13}{'vs SDK':>9}"
            )
            rate = {n: rows[n] / statistics.median(t) for n, t in times.items()}
            for name in contenders:
                print(
                    f"{name:<26}{rows[name]:>7}{statistics.median(times[name]):>10.3f}"
                    f"{rate[name]:>10.0f}{rate[name] / rate[HAND]:>12.2f}x"
                    f"{rate[name] / rate[SDK]:>8.2f}x"
                )
        # Real feed items (replies, quotes, images, reposts) for P3's input.
        if not args.attach:
            from atnb.devnet.seed import seed

            seed(net)
        captured = []
        for name in ("alice", "bob", "carol", "dan", "erin"):
            with contextlib.suppress(atnb.AtnbError):
                captured.extend(
                    session.query(FEED, actor=f"{name}.test", limit=100)["feed"]
                )
        print(f"captured {len(captured)} feed items for P3")
        return captured
    finally:
        if not args.attach:
            net.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["p2", "p3", "all"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--attach", action="store_true")
    args = parser.parse_args()
    templates = None
    if args.what in ("p2", "all"):
        templates = p2(args) or None
    if args.what in ("p3", "all"):
        p3(args.items, args.runs, templates if args.what == "all" else None)


if __name__ == "__main__":
    main()
