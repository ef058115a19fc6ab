"""CSV and TSV readers (``.csv``, ``.tsv``): the csv module, every value a string.

The first row is the header (a leading BOM dropped); empty rows are not records; a row with
more fields than the header is ``malformed_row``; ``row_too_large`` sums the values' lengths.
"""
from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from pathlib import Path

from curate.ingest.formats import RowError
from curate.ingest.quarantine import RAW_CHARS
from curate.ingest.readers.base import Record, check_text_file, head


def read_csv(p: Path, max_row_bytes: int) -> Iterator[Record]:
    """The rows of a comma-separated file (see the module docstring)."""
    return _read_delimited(p, max_row_bytes, ",")


def read_tsv(p: Path, max_row_bytes: int) -> Iterator[Record]:
    """The rows of a tab-separated file (see the module docstring)."""
    return _read_delimited(p, max_row_bytes, "\t")


def _read_delimited(p: Path, max_row_bytes: int, delim: str) -> Iterator[Record]:
    check_text_file(head(p), "CSV")
    csv.field_size_limit(2**31 - 1)
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rt", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh, delimiter=delim)
        header = next(reader, None)
        if header is None:
            return
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        last = reader.line_num
        for values in reader:
            line, last = last + 1, reader.line_num
            if not values:
                continue
            raw = delim.join(values)[:RAW_CHARS]
            if len(values) > len(header):
                yield Record(line, RowError("malformed_row", f"row has {len(values)} fields, header has {len(header)}"), raw)
                continue
            rec = dict(zip(header, values))
            size = sum(len(v) for v in values)
            if size > max_row_bytes:
                yield Record(line, RowError("row_too_large", f"row is ~{size} bytes > max_row_bytes={max_row_bytes}"), raw)
                continue
            try:
                "".join(values).encode("utf-8")
            except UnicodeEncodeError as e:
                yield Record(line, RowError("invalid_utf8", f"invalid UTF-8 in row (character {e.start})"),
                             raw.encode("utf-8", "backslashreplace").decode("utf-8"))
                continue
            yield Record(line, rec, None)
