"""XRPC query responses as pandas DataFrames: every page, the right dtypes.

    df = atnb.frame("app.bsky.feed.getAuthorFeed", actor="alice.test", all_pages=True)
    for page in atnb.iter_frames("com.atproto.repo.listRecords", repo=did,
                                 collection="app.bsky.feed.post", service=pds):
        ...

Where a call goes: ``service=`` sends an unauthenticated read there; else
the given session, or the current one (the last login or ``%atlogin``);
with no session, ``app.bsky.*`` reads go to ``settings.public_appview``.
``direct=True`` (or ``settings.direct_public_reads``) sends public
``app.bsky.*`` reads straight to the public AppView even with a session:
faster, but viewer-specific fields are then absent.

What a frame looks like: one row per item of the response's list field
(``feed``, ``followers``, ``records``, ...), or one row for a response with
no list; nested objects as dotted columns (``post.author.handle``), union
members with their ``$type`` column, arrays as Arrow-backed list columns
(each cell a Python list), ``...At`` datetimes as UTC timestamps
(malformed ones NaT), integers as nullable ``Int64``. ``getPostThread``
gives one row per post with ``depth`` and ``parent_uri``.

Paging stops when the server gives no cursor, at ``max_items`` or
``max_pages``, or when a cursor repeats (with a warning). Rows already
seen (same item, same ``reason``) are dropped. A 429 whose reset is at most
:data:`MAX_RATE_LIMIT_WAIT` seconds away is waited out, at most
:data:`MAX_RATE_LIMIT_WAITS` times in one pull; any other error mid-pull is
raised with ``err.frame`` (the rows so far) and ``err.cursor`` (pass it as
``cursor=`` to resume).

Large pulls: ``to_parquet=folder`` writes a Parquet dataset as pages arrive
(one file per batch, one schema across files: a column missing from a batch
is null there, a value whose type varies is JSON text), so memory stays
bounded; :func:`iter_frames` yields one DataFrame per page instead.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from atnb import _flatten, _schema
from atnb._pull import (
    MAX_RATE_LIMIT_WAIT,
    MAX_RATE_LIMIT_WAITS,
    Fetch,
    Pull,
)
from atnb.config import settings
from atnb.errors import ArgumentError, AtnbError, NotLoggedInError

__all__ = [
    "MAX_RATE_LIMIT_WAIT",
    "MAX_RATE_LIMIT_WAITS",
    "frame",
    "is_public_read",
    "iter_frames",
]

logger = logging.getLogger(__name__)

# app.bsky reads the public AppView answers only for a signed-in viewer.
_VIEWER_ONLY = frozenset(
    {
        "app.bsky.actor.getPreferences",
        "app.bsky.feed.getActorLikes",
        "app.bsky.feed.getTimeline",
        "app.bsky.graph.getBlocks",
        "app.bsky.graph.getListBlocks",
        "app.bsky.graph.getListMutes",
        "app.bsky.graph.getMutes",
        "app.bsky.notification.getUnreadCount",
        "app.bsky.notification.listNotifications",
    }
)


def is_public_read(nsid: str) -> bool:
    """Tell whether the public AppView answers ``nsid`` without a login.

    >>> is_public_read("app.bsky.feed.getAuthorFeed")
    True
    >>> is_public_read("app.bsky.feed.getTimeline")
    False
    """
    return nsid.startswith("app.bsky.") and nsid not in _VIEWER_ONLY


_DATETIME_NAME = re.compile(r"(^|\.)[a-z][A-Za-z0-9]*[a-z]At$")


def frame(
    nsid: str,
    params: Mapping[str, Any] | None = None,
    *,
    session: Any = None,
    service: str | None = None,
    all_pages: bool = False,
    max_items: int | None = None,
    max_pages: int | None = None,
    field: str | None = None,
    progress: bool = True,
    explode: str | list[str] | None = None,
    to_parquet: str | Path | None = None,
    direct: bool = False,
    **kw_params: Any,
) -> Any:
    """Call an XRPC query and return its results as a DataFrame.

    Args:
        nsid: the query, e.g. ``app.bsky.feed.getAuthorFeed``.
        params: the query parameters (or pass them as keywords).
        session: the session to read with; default the current one.
        service: read from this URL without authentication instead.
        all_pages: follow ``cursor`` until the last page.
        max_items: stop after this many rows (implies paging).
        max_pages: stop after this many requests (implies paging).
        field: the response's list to tabulate; found by itself if None.
        progress: show a progress bar for multi-page pulls.
        explode: list column(s) to turn into one row per element (objects
            in them become dotted columns); not with ``to_parquet``.
        to_parquet: a folder to write a Parquet dataset into, page by page,
            instead of holding every row in memory.
        direct: send public ``app.bsky.*`` reads straight to the AppView.

    Returns:
        The DataFrame; with ``to_parquet``, the folder's :class:`~pathlib.Path`
        (read it back with ``pandas.read_parquet(path)``).

    Raises:
        AtnbError: the matching error; raised mid-pull it carries ``frame``
            (rows so far, None with ``to_parquet``) and ``cursor``.
    """
    if to_parquet is not None and explode is not None:
        raise ArgumentError(
            "explode= and to_parquet= do not go together",
            hint="Write the dataset, then explode the frame you read back.",
        )
    fetch = _fetcher(nsid, session, service, direct)
    paging = all_pages or max_items is not None or max_pages is not None
    pull = Pull(
        fetch,
        nsid,
        _merge(params, kw_params),
        paging=paging,
        max_items=max_items,
        max_pages=max_pages if paging else 1,
        field=field,
        progress=progress,
        batch=True,
    )
    if to_parquet is not None:
        return _pull_to_parquet(pull, Path(to_parquet))

    tables: list[Any] = []
    try:
        for table in pull:
            tables.append(table)
    except AtnbError as err:
        if isinstance(err, ArgumentError):
            raise
        tables.append(pull.drain())
        err.frame = to_frame(_schema.concat(tables))
        err.cursor = pull.cursor
        rows = f"{len(err.frame)} rows fetched before the error are on err.frame"
        _note(err, rows, pull.cursor)
        raise
    return _exploded(to_frame(_schema.concat(tables)), explode)


def iter_frames(
    nsid: str,
    params: Mapping[str, Any] | None = None,
    *,
    session: Any = None,
    service: str | None = None,
    max_items: int | None = None,
    max_pages: int | None = None,
    field: str | None = None,
    progress: bool = True,
    explode: str | list[str] | None = None,
    direct: bool = False,
    **kw_params: Any,
) -> Iterator[Any]:
    """Yield one DataFrame per page, following ``cursor`` to the last page.

    Takes the arguments of :func:`frame`. An error mid-pull is raised with
    ``err.cursor`` set (the pages before it were already yielded).
    """
    fetch = _fetcher(nsid, session, service, direct)
    pull = Pull(
        fetch,
        nsid,
        _merge(params, kw_params),
        paging=True,
        max_items=max_items,
        max_pages=max_pages,
        field=field,
        progress=progress,
    )
    try:
        for table in pull:
            yield _exploded(to_frame(table), explode)
    except AtnbError as err:
        if isinstance(err, ArgumentError):
            raise
        err.cursor = pull.cursor
        _note(err, "the pages before the error were yielded", pull.cursor)
        raise


def _note(err: AtnbError, text: str, cursor: str | None) -> None:
    resume = f"; resume with cursor={cursor!r}" if cursor else ""
    if hasattr(err, "add_note"):
        err.add_note(f"{text}{resume}.")


def _merge(params: Mapping[str, Any] | None, kw_params: dict) -> dict[str, Any]:
    merged = {**(params or {}), **kw_params}
    return {k: v for k, v in merged.items() if v is not None}


# -- Where the requests go ----------------------------------------------------


def _fetcher(nsid: str, session: Any, service: str | None, direct: bool) -> Fetch:
    if service is not None:
        return _unauthenticated(service, nsid)
    if session is None:
        from atnb.session import current_session

        session = current_session()

    public = is_public_read(nsid)
    go_direct = direct or settings.direct_public_reads
    if session is not None and not (public and go_direct):
        from atnb.session import Session

        if isinstance(session, Session):
            # Pages arrive unparsed: Arrow's JSON reader builds the columns.
            return lambda params: session.query_with_headers(
                nsid, params, raw_json=True
            )
        return lambda params: session.query_with_headers(nsid, params)
    if nsid.startswith("app.bsky."):
        return _unauthenticated(settings.public_appview, nsid)
    raise NotLoggedInError(
        f"{nsid} needs a session or a service",
        hint="Log in with %atlogin or atnb.login(), or pass service= with the "
        "server's URL.",
    )


def _unauthenticated(service: str, nsid: str) -> Fetch:
    from atnb import xrpc

    return _PublicFetch(service, nsid, xrpc.HTTPTransport())


class _PublicFetch:
    """Unauthenticated reads on one connection pool, closed when the pull ends."""

    def __init__(self, service: str, nsid: str, transport: Any) -> None:
        self.service, self.nsid, self.transport = service, nsid, transport

    def __call__(self, params: Mapping[str, Any]) -> tuple[Any, Mapping[str, str]]:
        from atnb import xrpc

        return xrpc.query(
            self.service, self.nsid, params, transport=self.transport, raw_json=True
        )

    def close(self) -> None:
        http = getattr(self.transport, "http", None)
        if http is not None and hasattr(http, "close"):
            http.close()


# -- Arrow to pandas ------------------------------------------------------------


def to_frame(table: Any, explode: str | list[str] | None = None) -> Any:
    """The DataFrame of a flattened table, with atnb's dtypes."""
    import pandas as pd

    table = _schema.drop_shadowed(typed(table))
    df = table.to_pandas(types_mapper=_types_mapper(), split_blocks=True)
    if df.columns.empty:
        return pd.DataFrame()
    return _exploded(df, explode)


def _exploded(df: Any, explode: str | list[str] | None) -> Any:
    names = [explode] if isinstance(explode, str) else explode or []
    if df.empty and not len(df.columns):
        return df
    try:
        for name in names:
            df = _explode(df, name)
    except ArgumentError as err:
        err.frame = df  # the pull is not lost to a misspelt column
        raise
    return df


def typed(table: Any) -> Any:
    """Parse ``...At`` string columns as UTC timestamps (malformed -> null).

    A column kept as JSON text (a number among the dates) parses its strings;
    every other value is null.
    """
    import pyarrow as pa

    for i, field in enumerate(table.schema):
        if not pa.types.is_string(field.type) or not _DATETIME_NAME.search(field.name):
            continue
        column = table.column(i)
        if _flatten.is_json(field):
            column = pa.chunked_array([pa.array(_json_strings(column), pa.string())])
        array = _timestamps(column)
        table = table.set_column(i, pa.field(field.name, array.type), array)
    return table


def _json_strings(column: Any) -> list[str | None]:
    import json

    values = (json.loads(v) if v is not None else None for v in column.to_pylist())
    return [v if isinstance(v, str) else None for v in values]


def _timestamps(text: Any) -> Any:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    stamp = pa.timestamp("us", tz="UTC")
    try:
        parsed = text.cast(stamp)  # fast when every value is ISO 8601 with a zone
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        series = pd.to_datetime(
            text.to_pandas(), utc=True, format="ISO8601", errors="coerce"
        )
        parsed = pa.chunked_array([pa.array(series.astype("datetime64[us, UTC]"))])
    # Year 0 parses but has no Python datetime: treat it as out of range.
    first = pa.scalar(_dt.datetime(1, 1, 1, tzinfo=_dt.timezone.utc), stamp)
    early = pc.less(parsed, first)
    if pc.any(early).as_py():
        parsed = pc.if_else(early, pa.scalar(None, stamp), parsed)
    return parsed


def _types_mapper() -> Callable[[Any], Any]:
    import pandas as pd
    import pyarrow as pa

    def mapper(arrow_type: Any) -> Any:
        if pa.types.is_integer(arrow_type):
            return pd.Int64Dtype()
        if pa.types.is_boolean(arrow_type):
            return pd.BooleanDtype()
        if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
            return pd.ArrowDtype(arrow_type)
        if pa.types.is_struct(arrow_type):
            return pd.ArrowDtype(arrow_type)
        return None

    return mapper


def _explode(df: Any, name: str) -> Any:
    import pandas as pd
    import pyarrow as pa

    if name not in df.columns:
        lists = [c for c, t in df.dtypes.items() if "list<" in str(t)]
        raise ArgumentError(
            f"cannot explode {name!r}: no such column (list columns: "
            f"{', '.join(lists) or 'none'})",
            hint="Pick one of them; the rows are on err.frame.",
        )
    df = df.explode(name, ignore_index=True)
    dtype = df[name].dtype
    if not (
        isinstance(dtype, pd.ArrowDtype) and pa.types.is_struct(dtype.pyarrow_dtype)
    ):
        return df
    inner = to_frame(_flatten.table_from_array(pa.array(df[name].array)))
    inner.columns = [f"{name}.{c}" for c in inner.columns]
    at = df.columns.get_loc(name)
    return pd.concat([df.iloc[:, :at], inner, df.iloc[:, at + 1 :]], axis=1)


def _pull_to_parquet(pull: Pull, path: Path) -> Path:
    from atnb._parquet import DatasetWriter

    writer = DatasetWriter(path)
    try:
        for table in pull:
            writer.add(typed(table))
    except AtnbError as err:
        writer.add(typed(pull.drain()))
        writer.close()
        err.frame = None
        err.cursor = pull.cursor
        _note(
            err, f"{pull.rows} rows fetched before the error are in {path}", pull.cursor
        )
        raise
    writer.close()
    return path
