"""One schema for many page tables or files: union of columns, merged types.

Pages of one pull can disagree: a column missing from a page, numbers in
one page and text in another. :func:`unify` decides the dataset's schema,
:func:`conform` gives a table that schema, :func:`concat` does both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from atnb._flatten import JSON_KEY, is_json, json_text


def _pa() -> Any:
    import pyarrow as pa

    return pa


class _Node:
    __slots__ = ("children", "keys", "name")

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.children: dict[str, _Node] = {}
        self.name: str | None = None


def merged_order(name_lists: Iterable[Sequence[str]]) -> list[str]:
    """Union of column names in a stable, readable order.

    Columns stay grouped by their dotted prefix; a column first seen in a
    later page joins the end of its group. That is the order Arrow gives
    one page of the same items, so the order does not depend on page size.

    >>> merged_order([["post.uri", "reason.by"], ["post.uri", "post.cid", "reply.x"]])
    ['post.uri', 'post.cid', 'reason.by', 'reply.x']
    """
    root = _Node()
    for names in name_lists:
        for name in names:
            node = root
            for part in name.split("."):
                if part not in node.children:
                    node.keys.append(part)
                    node.children[part] = _Node()
                node = node.children[part]
            node.name = name

    out: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.name is not None:
            out.append(node.name)
        stack.extend(node.children[key] for key in reversed(node.keys))
    return out


def unify(schemas: Sequence[Any]) -> Any:
    """One schema for tables read page by page or file by file.

    A column missing from some tables is null there; integers and floats
    become floats; lists of objects merge their fields; anything else whose
    type varies becomes JSON text.
    """
    pa = _pa()
    fields: dict[str, list[Any]] = {}
    for schema in schemas:
        for field in schema:
            fields.setdefault(field.name, []).append(field)

    out = []
    for name in merged_order([s.names for s in schemas]):
        out.append(_unify_field(name, fields[name]))
    return pa.schema(out)


def _unify_field(name: str, fields: list[Any]) -> Any:
    pa = _pa()
    json_field = pa.field(name, pa.string(), metadata={JSON_KEY: b"1"})
    if any(is_json(f) for f in fields):
        return json_field
    types = []
    for f in fields:
        if not pa.types.is_null(f.type) and f.type not in types:
            types.append(f.type)
    if not types:
        return pa.field(name, pa.null())
    if len(types) == 1:
        return pa.field(name, types[0])
    if all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in types):
        return pa.field(name, pa.float64())
    try:
        merged = pa.unify_schemas(
            [pa.schema([pa.field(name, t)]) for t in types],
            promote_options="permissive",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return json_field
    return merged.field(name)


def conform(table: Any, schema: Any) -> Any:
    """Give a table exactly ``schema``: missing columns null, types cast."""
    pa = _pa()
    if table.schema.equals(schema, check_metadata=True):
        return table
    source = table.schema
    where = {name: i for i, name in enumerate(source.names)}
    arrays = []
    for field in schema:
        i = where.get(field.name)
        if i is None:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        column = table.column(i)
        if is_json(field) and not is_json(source.field(i)):
            arrays.append(pa.array(json_text(column.to_pylist()), pa.string()))
        elif column.type != field.type:
            arrays.append(column.cast(field.type))
        else:
            arrays.append(column)
    return pa.Table.from_arrays(arrays, schema=schema)


def concat(tables: Sequence[Any]) -> Any:
    """Concatenate page tables under one unified schema."""
    pa = _pa()
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    schema = unify([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])


def drop_shadowed(table: Any) -> Any:
    """Drop all-null columns that are a prefix of other columns.

    ``post.embed`` (null in every item of an early page) goes once
    ``post.embed.$type`` exists.
    """
    pa = _pa()
    prefixes = set()
    for name in table.column_names:
        parts = name.split(".")
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts)))
    drop = [
        f.name
        for f in table.schema
        if f.name in prefixes
        and (pa.types.is_null(f.type) or table.column(f.name).null_count == len(table))
    ]
    return table.drop_columns(drop) if drop else table
