"""Helpers for Bluesky data: ``at://`` URIs, post facets and thread rows.

They work on single values and on the DataFrames that :func:`atnb.frame`
returns::

    posts = atnb.frame("app.bsky.feed.searchPosts", q="#climate", all_pages=True)
    parts = atnb.split_uri(posts["uri"])         # did, collection, rkey
    links = atnb.facets(posts)                   # one row per facet
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

__all__ = ["AtUri", "facets", "split_uri", "thread_rows"]

_AT_URI = re.compile(
    r"^at://(?P<did>[^/?#\s]+)(?:/(?P<collection>[^/?#\s]+))?(?:/(?P<rkey>[^/?#\s]+))?/?"
    r"(?:\?[^#\s]*)?(?:#\S*)?$"
)

# Prefixes under which a frame holds a post record's text and facets.
_RECORD_PREFIXES = ("post.record.", "record.", "value.", "")
_URI_FOR_PREFIX = {"post.record.": "post.uri", "record.": "uri", "value.": "uri"}


class AtUri(NamedTuple):
    """The parts of an ``at://`` URI; ``did`` may be a handle."""

    did: str
    collection: str | None
    rkey: str | None


def split_uri(uri: Any) -> Any:
    """Split ``at://`` URIs into did, collection and rkey.

    Args:
        uri: one URI string, or a pandas Series of them.

    Returns:
        An :class:`AtUri` for a string; for a Series, a DataFrame with columns
        ``did``, ``collection`` and ``rkey`` (missing where a URI is malformed).

    Raises:
        ValueError: a single string that is not an ``at://`` URI.

    >>> split_uri("at://did:plc:aaaa/app.bsky.feed.post/3kabc")
    AtUri(did='did:plc:aaaa', collection='app.bsky.feed.post', rkey='3kabc')
    >>> split_uri("at://did:plc:aaaa").collection is None
    True
    """
    if isinstance(uri, str):
        match = _AT_URI.match(uri.strip())
        if not match:
            raise ValueError(
                f"not an at:// URI: {uri!r}; one looks like at://did/collection/rkey"
            )
        return AtUri(match["did"], match["collection"], match["rkey"])

    import pandas as pd

    if uri is None:
        raise ValueError(
            "not an at:// URI: None; one looks like at://did/collection/rkey"
        )
    if not isinstance(uri, (pd.Series, pd.Index)):
        uri = pd.Series(list(uri), dtype=object)
    return uri.astype("str").str.strip().str.extract(_AT_URI)


def facets(data: Any, facet_list: list[dict] | None = None) -> Any:
    """Post facets (links, mentions, tags), one row per facet feature.

    Facet offsets count UTF-8 bytes, not characters; the span text is cut
    from the encoded text. An offset out of range or inside a multi-byte
    character gives a row with ``text`` missing and ``problem`` saying why,
    never an exception.

    Args:
        data: a frame from :func:`atnb.frame` (posts, feeds, listRecords of
            posts), a post record or post view dict, a list of those, or the
            post text itself.
        facet_list: the facets, when ``data`` is the text.

    Returns:
        A DataFrame with ``row`` (the source row label), ``uri`` when known,
        ``kind`` (``link``, ``mention``, ``tag``), ``value`` (URL, DID or
        tag), ``text``, ``byteStart``, ``byteEnd``, ``$type`` and ``problem``.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    if isinstance(data, str):
        rows.extend(_facet_rows(data, facet_list, row=0, uri=None))
    elif isinstance(data, pd.DataFrame):
        for label, text, found, uri in _frame_posts(data):
            rows.extend(_facet_rows(text, found, row=label, uri=uri))
    else:
        for n, item in enumerate(data if isinstance(data, list) else [data]):
            text, found, uri = _dict_post(item)
            rows.extend(_facet_rows(text, found, row=n, uri=uri))

    columns = [
        "row",
        "uri",
        "kind",
        "value",
        "text",
        "byteStart",
        "byteEnd",
        "$type",
        "problem",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({"byteStart": "Int64", "byteEnd": "Int64"})


def _frame_posts(df: Any) -> Any:
    for prefix in _RECORD_PREFIXES:
        text_col, facet_col = f"{prefix}text", f"{prefix}facets"
        if text_col in df.columns and facet_col in df.columns:
            uri_col = _URI_FOR_PREFIX.get(prefix, "uri")
            uris = df[uri_col] if uri_col in df.columns else [None] * len(df)
            return zip(df.index, df[text_col], df[facet_col], uris, strict=True)
    return iter(())


def _dict_post(item: Any) -> tuple[Any, Any, Any]:
    if not isinstance(item, dict):
        return None, None, None
    uri = item.get("uri")
    post = item.get("post") if isinstance(item.get("post"), dict) else item
    uri = post.get("uri", uri)
    record = post.get("record") or post.get("value") or post
    if not isinstance(record, dict):
        return None, None, uri
    return record.get("text"), record.get("facets"), uri


def _facet_rows(text: Any, found: Any, *, row: Any, uri: Any) -> list[dict[str, Any]]:
    if hasattr(found, "tolist"):  # a NumPy array, as read back from Parquet
        found = found.tolist()
    if not isinstance(found, (list, tuple)) or not found:
        return []
    encoded = text.encode("utf-8") if isinstance(text, str) else b""

    rows = []
    for facet in found:
        if not isinstance(facet, dict):
            continue
        index = facet.get("index")
        index = index if isinstance(index, dict) else {}
        start, end = index.get("byteStart"), index.get("byteEnd")
        span, problem = _span(encoded, start, end)
        for feature in facet.get("features") or [{}]:
            feature = feature if isinstance(feature, dict) else {}
            kind = str(feature.get("$type") or "").rpartition("#")[2] or None
            value = next(
                (
                    feature[k]
                    for k in ("uri", "did", "tag")
                    if feature.get(k) is not None
                ),
                None,
            )
            rows.append(
                {
                    "row": row,
                    "uri": uri,
                    "kind": kind,
                    "value": value,
                    "text": span,
                    "byteStart": start,
                    "byteEnd": end,
                    "$type": feature.get("$type"),
                    "problem": problem,
                }
            )
    return rows


def _span(encoded: bytes, start: Any, end: Any) -> tuple[str | None, str | None]:
    """Cut ``encoded[start:end]`` as text, or say why it cannot be cut.

    >>> _span("😀 #abcdef".encode(), 5, 12)
    ('#abcdef', None)
    >>> _span("😀 #abcdef".encode(), 1, 12)
    (None, 'offsets inside a multi-byte character')
    """
    if (
        not isinstance(start, int)
        or not isinstance(end, int)
        or isinstance(start, bool)
    ):
        return None, "offsets missing or not integers"
    if not encoded:
        return None, "the post has no text"
    if not 0 <= start < end <= len(encoded):
        return None, "offsets out of range"
    try:
        return encoded[start:end].decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "offsets inside a multi-byte character"


def thread_rows(thread: Any) -> list[dict[str, Any]]:
    """Rows of a ``getPostThread`` response's ``thread``, one per post.

    Each row holds ``depth`` (0 for the requested post, negative for its
    parents, positive for replies), ``parent_uri``, ``uri``, ``$type`` and
    the member's own fields (``post``, or ``notFound``/``blocked``). Blocked
    and not-found members are rows too; nothing around them is dropped.
    """
    if not isinstance(thread, dict):
        return []
    ancestors = []
    node = thread.get("parent")
    while isinstance(node, dict):
        ancestors.append(node)
        node = node.get("parent")

    rows = []
    for depth, member in zip(
        range(-len(ancestors), 0), reversed(ancestors), strict=True
    ):
        rows.append(_thread_row(member, depth, _uri(member.get("parent"))))
    root_parent = _uri(thread.get("parent"))
    _replies(thread, 0, root_parent, rows)
    return rows


def _replies(node: dict, depth: int, parent_uri: str | None, rows: list) -> None:
    # Depth first, parents before their replies; a loop, not recursion: a
    # reply chain can be deeper than Python's recursion limit.
    stack = [(node, depth, parent_uri)]
    while stack:
        node, depth, parent_uri = stack.pop()
        rows.append(_thread_row(node, depth, parent_uri))
        replies = [r for r in node.get("replies") or [] if isinstance(r, dict)]
        stack.extend((r, depth + 1, _uri(node)) for r in reversed(replies))


def _thread_row(node: dict, depth: int, parent_uri: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"depth": depth, "parent_uri": parent_uri, "uri": _uri(node)}
    row.update((k, v) for k, v in node.items() if k not in ("parent", "replies"))
    return row


def _uri(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    post = node.get("post")
    if isinstance(post, dict) and post.get("uri"):
        return post["uri"]
    return node.get("uri")
