"""Write a pull into a Parquet dataset folder as its pages arrive.

Each batch of rows becomes one file (``part-00000.parquet``, ...), so
memory holds one batch at a time. Pages can disagree: a column may be
missing from a batch, or hold numbers in one and objects in another. When
the pull ends, :meth:`DatasetWriter.close` gives every file one unified
schema (missing columns null, type-varying values as JSON text) by
rewriting, one at a time, the files that differ; pandas, Dask, DuckDB and
pyarrow then read the folder whole.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from atnb import _schema

logger = logging.getLogger(__name__)

BATCH_ROWS = 10_000
"""Rows gathered before a file is written."""


class DatasetWriter:
    """Collects page tables and writes them as files of a dataset folder."""

    def __init__(self, path: str | Path, batch_rows: int | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if any(self.path.iterdir()):
            # Files of another pull (or anything else) would be read back as
            # part of this dataset, or break reading it altogether.
            raise FileExistsError(
                f"{self.path} is not empty; give to_parquet= a new or empty "
                "folder (or delete this one's files first)"
            )
        self.batch_rows = batch_rows or BATCH_ROWS
        self.files: list[Path] = []
        self._schemas: list[Any] = []
        self._pending: list[Any] = []
        self._rows = 0

    def add(self, table: Any) -> None:
        """Queue one page's table; writes a file when the batch is full."""
        if not table.num_columns:
            return
        self._pending.append(table)
        self._rows += table.num_rows
        if self._rows >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write the queued pages as one file."""
        import pyarrow.parquet as pq

        if not self._pending:
            return
        table = _schema.drop_shadowed(_schema.concat(self._pending))
        table = table.replace_schema_metadata(None)
        target = self.path / f"part-{len(self.files):05d}.parquet"
        pq.write_table(table, target)
        logger.debug("wrote %d rows to %s", table.num_rows, target)
        self.files.append(target)
        self._schemas.append(table.schema)
        self._pending, self._rows = [], 0

    def close(self) -> None:
        """Flush, then give every file the dataset's unified schema."""
        import pyarrow.parquet as pq

        self.flush()
        if not self.files:
            return
        schema = _unified(self._schemas)
        for target, own in zip(self.files, self._schemas, strict=True):
            if own.equals(schema, check_metadata=True):
                continue
            table = _schema.conform(pq.read_table(target), schema)
            partial = target.with_suffix(".partial")
            pq.write_table(table, partial)
            os.replace(partial, target)
        pq.write_metadata(schema, self.path / "_common_metadata")


def _unified(schemas: list[Any]) -> Any:
    import pyarrow as pa

    schema = _schema.unify(schemas)
    prefixes = set()
    for name in schema.names:
        parts = name.split(".")
        prefixes.update(".".join(parts[:i]) for i in range(1, len(parts)))

    fields = []
    for field in schema:
        if pa.types.is_null(field.type):
            if field.name in prefixes:
                continue  # post.embed, null where post.embed.* exists
            # A column null in every file still needs a type readers accept.
            field = pa.field(field.name, pa.string(), metadata=field.metadata)
        fields.append(field)
    return pa.schema(fields)
