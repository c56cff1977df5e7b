"""Turn XRPC list items into flat Arrow tables with dotted column names.

Everything here works on Arrow tables; :mod:`atnb.frames` turns the final
table into a DataFrame. Two readers feed the same flattening:

* :func:`table_from_items` takes parsed JSON (a list of dicts);
* :func:`read_pages` takes raw page bytes and parses them with Arrow's own
  JSON reader, which skips building Python objects altogether.

When Arrow cannot infer one type for a field (a number in one item, an
object in another), the items go through a plain Python flattener and the
field's values are kept as JSON text, marked in the field's metadata so
that later pages and files agree.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

JSON_KEY = b"atnb.json"
_STRING = rb'"((?:[^"\\]|\\.)*)"'
_HEAD_CURSOR = re.compile(rb'\s*\{\s*"cursor"\s*:\s*' + _STRING + rb"\s*[,}]")
_TAIL_CURSOR = re.compile(rb',\s*"cursor"\s*:\s*' + _STRING + rb"\s*\}\s*$")
# Lists that decorate a single object (a profile's ``labels``): the list to
# tabulate only when the response holds nothing else but a cursor.
_DECORATIONS = frozenset({"labels"})


class NoSuchList(LookupError):
    """The response has no list under the ``field=`` name; ``lists`` it has."""

    def __init__(self, field: str, lists: Sequence[str]) -> None:
        self.field, self.lists = field, list(lists)
        super().__init__(field)


def _pa() -> Any:
    import pyarrow as pa

    return pa


def _inference_errors() -> tuple[type[BaseException], ...]:
    pa = _pa()
    return (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError)


def table_from_items(items: Sequence[Any]) -> Any:
    """Flatten JSON items into a table: nested objects become dotted columns.

    Lists stay whole (one list cell per item); a null or missing object gives
    nulls in all its columns.
    """
    pa = _pa()
    if not items:
        return pa.table({})
    try:
        array = pa.array(items)
    except (*_inference_errors(), OverflowError):
        logger.debug("mixed value types in %d items; flattening in Python", len(items))
        return _table_from_python(items)
    return table_from_array(array)


def table_from_array(array: Any) -> Any:
    """Flatten one Arrow array (of structs, usually) into a table."""
    pa = _pa()
    if not len(array):
        return pa.table({})
    if not pa.types.is_struct(array.type):
        return pa.table({"value": array})
    columns: dict[str, Any] = {}
    _flatten(array, "", columns)
    return pa.table(columns)


def _flatten(array: Any, prefix: str, out: dict[str, Any]) -> None:
    pa = _pa()
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    for field, child in zip(array.type, array.flatten(), strict=True):
        name = f"{prefix}{field.name}"
        if pa.types.is_struct(field.type):
            _flatten(child, f"{name}.", out)
        elif pa.types.is_timestamp(field.type):
            out[name] = _timestamp_text(child)
        else:
            out[name] = child


def _timestamp_text(array: Any) -> Any:
    # Arrow's JSON reader turns some ISO strings into timestamps; give the
    # text back so every page holds strings and pandas parses them once.
    import pyarrow.compute as pc

    return pc.strftime(array, format="%Y-%m-%dT%H:%M:%SZ")


def _walk(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _walk(child, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix or "value"] = value


def _table_from_python(items: Sequence[Any]) -> Any:
    pa = _pa()
    columns: dict[str, list[Any]] = {}
    for row, item in enumerate(items):
        flat: dict[str, Any] = {}
        _walk(item, "", flat)
        for name, value in flat.items():
            column = columns.get(name)
            if column is None:
                column = columns[name] = [None] * row
            column.append(value)
        for column in columns.values():
            if len(column) <= row:
                column.append(None)

    arrays, fields = [], []
    for name, values in columns.items():
        try:
            array = pa.array(values)
            field = pa.field(name, array.type)
        except (*_inference_errors(), OverflowError):
            array = pa.array(json_text(values), pa.string())
            field = pa.field(name, pa.string(), metadata={JSON_KEY: b"1"})
        arrays.append(array)
        fields.append(field)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def json_text(values: Iterable[Any]) -> list[str | None]:
    """Each value as JSON text (None stays None)."""
    return [
        None if v is None else json.dumps(v, ensure_ascii=False, default=str)
        for v in values
    ]


def is_json(field: Any) -> bool:
    """Whether a field's values are JSON text because their type varied."""
    return bool(field.metadata and field.metadata.get(JSON_KEY))


def read_page(body: bytes, field: str | None = None) -> tuple[Any, str, str | None]:
    """Parse one raw page body with Arrow's JSON reader and flatten its list.

    Returns ``(table, list field used or "", cursor)``. A body Arrow cannot
    read with one schema is parsed with :mod:`json` instead.

    Raises:
        ValueError: the body is not JSON.
    """
    import pyarrow.compute as pc
    import pyarrow.json as pj

    pa = _pa()
    line = body if b"\n" not in body.strip() else _one_line(body)
    options = pj.ReadOptions(block_size=max(len(line) + 1, 1 << 20), use_threads=False)
    try:
        page = pj.read_json(pa.BufferReader(line), read_options=options)
    except _inference_errors():
        return _read_with_json(body, field)
    if page.num_rows != 1:
        return _read_with_json(body, field)

    cursor = None
    if "cursor" in page.column_names and pa.types.is_string(
        page.schema.field("cursor").type
    ):
        cursor = page.column("cursor")[0].as_py()
    name = field or _list_column(page.schema)
    if not name:
        return table_from_array(page.to_struct_array()), "", cursor
    if name not in page.column_names:
        lists = [f.name for f in page.schema if pa.types.is_list(f.type)]
        raise NoSuchList(name, lists)
    column = page.column(name)
    if not pa.types.is_list(column.type):
        return _read_with_json(body, field)
    return table_from_array(pc.list_flatten(column)), name, cursor


def edge_cursor(body: bytes) -> tuple[bool, str | None]:
    """Read a top-level ``cursor`` at the very start or end of a raw page.

    Servers write it first or last; there it cannot belong to a nested
    object. Returns ``(found, cursor)``.

    >>> edge_cursor(b'{"feed":[{"cursor":"no"}],"cursor":"c1"}')
    (True, 'c1')
    >>> edge_cursor(b'{"feed":[{"cursor":"no"}]}')
    (False, None)
    """
    match = _HEAD_CURSOR.match(body) or _TAIL_CURSOR.search(
        body, max(0, len(body) - 2048)
    )
    if not match:
        return False, None
    return True, json.loads(b'"' + match.group(1) + b'"')


def scan_page(body: bytes, field: str) -> tuple[bool, str | None]:
    """Read a raw page's ``cursor`` without building its items.

    Returns ``(ok, cursor)``; not ok when the page has another shape (then
    parse it whole).
    """
    import pyarrow.json as pj

    pa = _pa()
    if b"\n" in body.strip():
        return False, None
    schema = pa.schema([("cursor", pa.string()), (field, pa.list_(pa.struct([])))])
    parse = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    read = pj.ReadOptions(block_size=max(len(body) + 1, 1 << 16), use_threads=False)
    try:
        page = pj.read_json(
            pa.BufferReader(body), read_options=read, parse_options=parse
        )
    except _inference_errors():
        return False, None
    if page.num_rows != 1:
        return False, None
    return True, page.column("cursor")[0].as_py()


def read_pages(bodies: Sequence[bytes], field: str) -> Any:
    """Parse many raw pages in one go and flatten their ``field`` lists."""
    import pyarrow.compute as pc
    import pyarrow.json as pj

    pa = _pa()
    data = b"\n".join(bodies)
    block = max(len(data) // 2 + 1, 1 << 20)  # two blocks: both cores parse
    options = pj.ReadOptions(block_size=block, use_threads=True)
    try:
        pages = pj.read_json(pa.BufferReader(data), read_options=options)
        column = pages.column(field)
    except (*_inference_errors(), KeyError):
        column = None
    if column is None or not pa.types.is_list(column.type):
        from atnb._schema import concat

        return concat([_page_or_nothing(body, field) for body in bodies])
    return table_from_array(pc.list_flatten(column))


def _page_or_nothing(body: bytes, field: str) -> Any:
    try:
        return read_page(body, field)[0]
    except NoSuchList:
        return _pa().table({})  # a later page without the list: no rows


def _read_with_json(body: bytes, field: str | None) -> tuple[Any, str, str | None]:
    data = json.loads(body)
    if not isinstance(data, dict):
        return table_from_items(data if isinstance(data, list) else [data]), "", None
    cursor = data.get("cursor") if isinstance(data.get("cursor"), str) else None
    name = field or list_field(data)
    return table_from_items(list_items(data, name)), name or "", cursor


def list_items(data: dict[str, Any], name: str | None) -> list[Any]:
    """The items of ``data[name]`` (``[data]`` for no name; [] for null).

    Raises:
        NoSuchList: ``data[name]`` is missing or not a list.
    """
    if not name:
        return [data]
    items = data.get(name)
    if items is None and name in data:
        return []
    if not isinstance(items, list):
        raise NoSuchList(name, [k for k, v in data.items() if isinstance(v, list)])
    return items


def _one_line(body: bytes) -> bytes:
    return json.dumps(json.loads(body), separators=(",", ":")).encode()


def _list_column(schema: Any) -> str | None:
    pa = _pa()
    lists = [f for f in schema if pa.types.is_list(f.type)]
    if len(lists) < len(schema.names) - ("cursor" in schema.names):
        lists = [f for f in lists if f.name not in _DECORATIONS]
    structs = [f for f in lists if pa.types.is_struct(f.type.value_type)]
    chosen = structs or lists
    return chosen[0].name if chosen else None


def list_field(data: dict[str, Any]) -> str | None:
    """The response's array field to tabulate (``feed``, ``followers``, ...).

    Prefers a list of objects; None when the response holds no list.

    >>> list_field({"cursor": "c1", "subject": {}, "followers": []})
    'followers'
    >>> list_field({"did": "did:plc:aaaa"}) is None
    True
    >>> list_field({"did": "did:plc:aaaa", "labels": []}) is None
    True
    >>> list_field({"cursor": "c1", "labels": []})
    'labels'
    """
    lists = [k for k, v in data.items() if isinstance(v, list)]
    if len(lists) < len(data) - ("cursor" in data):
        lists = [k for k in lists if k not in _DECORATIONS]
    objects = [k for k in lists if any(isinstance(x, dict) for x in data[k])]
    chosen = objects or lists
    return chosen[0] if chosen else None
