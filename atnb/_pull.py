"""The paging loop behind :mod:`atnb.frames`: one :class:`Pull` per call.

A pull sends one request per page through a ``fetch(params) -> (data,
headers)`` callable, so it runs the same over a session, a public read or a
stub. It follows ``cursor``, drops rows already seen, waits out short rate
limits and drives the progress bar; it yields one Arrow table per page.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from atnb import _flatten
from atnb.errors import ArgumentError, RateLimitError, ServerError

logger = logging.getLogger(__name__)

MAX_RATE_LIMIT_WAIT = 60.0
"""Longest wait (seconds) for a rate limit to reset before raising instead."""
MAX_RATE_LIMIT_WAITS = 3
"""Most rate-limit waits in one pull."""
BATCH_BYTES = 16 << 20
"""Raw page bytes held back before they are parsed together."""

_IDENTITY = ("post.uri", "uri", "actor.did", "did", "subject.uri", "subject.did")
# What else tells two rows about one item apart: the reason (two reposts of
# one post), or a label's source, value and negation (labels on one URI).
_DISTINCT = ("reason.$type", "reason.by.did", "reason.uri", "src", "val", "neg")

Fetch = Callable[[Mapping[str, Any]], tuple[Any, Mapping[str, str]]]


# Seams for tests: how the pull waits and reads the clock.
_sleep = time.sleep


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


class Pull:
    """One paginated pull: cursors, duplicates, rate-limit waits, progress.

    Iterating yields one Arrow table per page (with ``batch``, raw pages are
    parsed together, one table per :data:`BATCH_BYTES`; :meth:`drain` gives
    those still held back). ``cursor`` is the cursor of the request in
    flight (the place to resume after an error).
    """

    def __init__(
        self,
        fetch: Fetch,
        nsid: str,
        params: dict[str, Any],
        *,
        paging: bool,
        max_items: int | None,
        max_pages: int | None,
        field: str | None,
        progress: bool,
        batch: bool = False,
    ) -> None:
        _check_limit("max_items", max_items)
        _check_limit("max_pages", max_pages)
        self.fetch = fetch
        self.nsid = nsid
        self.params = params
        self.paging = paging
        self.max_items = max_items
        self.max_pages = max_pages
        self.field = field
        self.progress = progress
        self.cursor: str | None = params.get("cursor")
        self.rows = self.pages = self.waits = 0
        self._used = {self.cursor} if self.cursor else set()
        self._seen: set[str | None] = set()
        self._identity: str | None = None
        self._bar: Any = None
        self.batch = batch and max_items is None
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def __iter__(self) -> Iterator[Any]:
        try:
            yield from self._pages()
        finally:
            if self._bar is not None:
                self._bar.close()
            close = getattr(self.fetch, "close", None)
            if close is not None:
                close()  # the pull's own connection pool

    def _pages(self) -> Iterator[Any]:
        while self.max_items is None or self.rows < self.max_items:
            params = dict(self.params)
            if self.cursor:
                params["cursor"] = self.cursor
            data = self._request(params)

            held, cursor = self._hold_back(data)
            if held:
                self._pending.append(data)
                self._pending_bytes += len(data)
                self._count(0)
                if self._pending_bytes >= BATCH_BYTES:
                    yield self.drain()
            else:
                table, cursor = self._parse(data)
                table = self._dedupe(table)
                if self.max_items is not None:
                    table = table.slice(0, self.max_items - self.rows)
                self._count(table.num_rows)
                yield table
            if not self._advance(cursor):
                break
        if self._pending:
            yield self.drain()

    def drain(self) -> Any:
        """The table of raw pages held back for parsing in one go."""
        bodies, self._pending, self._pending_bytes = self._pending, [], 0
        if not bodies:
            return _flatten.table_from_items([])
        table = self._dedupe(_flatten.read_pages(bodies, self.field))
        self.rows += table.num_rows
        self._show(table.num_rows)
        return table

    def _hold_back(self, data: Any) -> tuple[bool, str | None]:
        # Raw pages of a known list field are held back and parsed together
        # (Arrow is much faster on one large buffer than on many small ones);
        # only the cursor is read now, and rows are counted when parsed.
        if not self.batch or not self.field or not isinstance(data, bytes):
            return False, None
        if self.pages == 0:
            return False, None  # parsed whole: checks field= and its shape
        found, cursor = _flatten.edge_cursor(data)
        if found:
            return True, cursor
        return _flatten.scan_page(data, self.field)

    def _count(self, rows: int) -> None:
        self.pages += 1
        self.rows += rows
        self._show(rows)

    def _advance(self, cursor: str | None) -> bool:
        if not cursor or (self.max_pages and self.pages >= self.max_pages):
            return False
        if cursor in self._used:
            warnings.warn(
                f"{self.nsid}: the server sent cursor {cursor!r} again; stopped "
                f"after {self.pages} pages to avoid repeating rows.",
                stacklevel=5,
            )
            return False
        self._used.add(cursor)
        self.cursor = cursor
        self._open_bar()
        return True

    def _request(self, params: dict[str, Any]) -> Any:
        while True:
            try:
                return self.fetch(params)[0]
            except RateLimitError as err:
                delay = self._rate_limit_delay(err)
                if delay is None:
                    raise
                self.waits += 1
                until = err.reset_at.strftime("%H:%M:%S UTC")
                logger.warning(
                    "%s: rate limited; waiting %.0f s until %s (%d/%d)",
                    self.nsid,
                    delay,
                    until,
                    self.waits,
                    MAX_RATE_LIMIT_WAITS,
                )
                if self._bar is not None:
                    self._bar.set_postfix_str(f"rate limited, waiting until {until}")
                _sleep(delay)
                if self._bar is not None:
                    self._bar.set_postfix_str("")

    def _rate_limit_delay(self, err: RateLimitError) -> float | None:
        if err.reset_at is None or self.waits >= MAX_RATE_LIMIT_WAITS:
            return None
        seconds = (err.reset_at - _now()).total_seconds()
        if seconds > MAX_RATE_LIMIT_WAIT:
            return None
        return max(seconds, 1.0)

    def _parse(self, data: Any) -> tuple[Any, str | None]:
        try:
            return self._parse_page(data)
        except _flatten.NoSuchList as missing:
            if self.pages:
                return _flatten.table_from_items([]), None  # a later page: no rows
            lists = ", ".join(missing.lists) or "none"
            raise ArgumentError(
                f"{self.nsid} has no list named {missing.field!r} in its response "
                f"(its lists: {lists})",
                hint="Pass one of them as field=, or leave field= out.",
            ) from None

    def _parse_page(self, data: Any) -> tuple[Any, str | None]:
        if isinstance(data, (bytes, bytearray)) and self.nsid.endswith(
            ".getPostThread"
        ):
            data = _json_or_error(bytes(data), self.nsid)
        if isinstance(data, (bytes, bytearray)):
            try:
                table, name, cursor = _flatten.read_page(bytes(data), self.field)
            except ValueError as exc:
                raise ServerError(
                    "the server sent a body that is not valid JSON", nsid=self.nsid
                ) from exc
            self.field = self.field or name or None
            return table, cursor
        if not isinstance(data, dict):
            return _flatten.table_from_items([] if data is None else [data]), None

        cursor = data.get("cursor") if isinstance(data.get("cursor"), str) else None
        if self.field is None and _is_thread(self.nsid, data):
            from atnb.bsky import thread_rows

            return _flatten.table_from_items(thread_rows(data["thread"])), None
        self.field = self.field or _flatten.list_field(data)
        return _flatten.table_from_items(_flatten.list_items(data, self.field)), cursor

    def _dedupe(self, table: Any) -> Any:
        # A row repeats when its item and its reason both repeat: two people
        # reposting one post are two rows.
        if self._identity is None and table.num_columns:
            names = table.column_names
            self._identity = next((n for n in _IDENTITY if n in names), "")
        if not self._identity or self._identity not in table.column_names:
            return table

        import pyarrow as pa
        import pyarrow.compute as pc

        parts = [table.column(self._identity).cast(pa.string())]
        for name in _DISTINCT:
            if name in table.column_names:
                parts.append(pc.fill_null(table.column(name).cast(pa.string()), ""))
            else:
                parts.append(pa.scalar(""))
        keys = pc.binary_join_element_wise(*parts, "\x1f").to_pylist()
        keep, seen = [], self._seen
        for key in keys:
            keep.append(key is None or key not in seen)
            seen.add(key)
        return table if all(keep) else table.filter(pa.array(keep))

    def _show(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.update(rows)
            self._bar.set_postfix(pages=self.pages, refresh=False)

    def _open_bar(self) -> None:
        # Only a pull that goes on to a second page gets a progress bar.
        if self._bar is not None or not self.progress or not self.paging:
            return
        from tqdm.auto import tqdm

        name = self.nsid.rpartition(".")[2]
        self._bar = tqdm(
            total=self.max_items, initial=self.rows, desc=name, unit=" rows"
        )
        self._bar.set_postfix(pages=self.pages, refresh=False)


def _check_limit(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(
            f"{name} must be a whole number of at least 1, not {value!r}",
            hint="Leave it out for no limit.",
        )


def _json_or_error(body: bytes, nsid: str) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ServerError(
            "the server sent a body that is not valid JSON", nsid=nsid
        ) from exc
    except RecursionError:
        raise ServerError(
            "the thread is nested too deeply to read",
            nsid=nsid,
            hint="Ask for fewer levels with depth= (and parentHeight=).",
        ) from None


def _is_thread(nsid: str, data: dict[str, Any]) -> bool:
    thread = data.get("thread")
    return isinstance(thread, dict) and (
        nsid.endswith(".getPostThread") or "thread" in str(thread.get("$type", ""))
    )
