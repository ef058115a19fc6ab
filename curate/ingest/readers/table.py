"""Rows of an Arrow table as records (Parquet files, ``datasets`` folders, hub datasets, tables in memory)."""
from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from curate.ingest.formats import RowError
from curate.ingest.quarantine import raw_of
from curate.ingest.readers.base import Record


def iter_table(table: pa.Table, max_row_bytes: int, start: int = 1) -> Iterator[Record]:
    """One record per row of ``table``, numbered from ``start``.

    Args:
        table (pa.Table): the rows.
        max_row_bytes (int): a row whose string values sum to more characters is
            ``row_too_large`` (its raw text is the row as JSON).
        start (int): number of the first row (default 1, a file's row number; in-memory
            tables use 0, the row index).
    """
    row = start - 1
    for batch in table.to_batches(max_chunksize=8192):
        for rec in batch.to_pylist():
            row += 1
            size = sum(len(v) for v in rec.values() if isinstance(v, str))
            if size > max_row_bytes:
                yield Record(row, RowError("row_too_large", f"row is ~{size} bytes > max_row_bytes={max_row_bytes}"),
                             raw_of(rec))
                continue
            yield Record(row, rec, None)
