"""Parquet reader (``.parquet``): the whole file through pyarrow, then row by row."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from curate.ingest.readers.base import FileError, Record
from curate.ingest.readers.table import iter_table


def read_parquet(p: Path, max_row_bytes: int) -> Iterator[Record]:
    """The rows of a Parquet file (``row_too_large``: string values summed, see :func:`iter_table`).

    Raises:
        FileError: not a Parquet file.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise FileError(f"not a Parquet file ({str(e).splitlines()[0]})") from None
    yield from iter_table(table, max_row_bytes)
