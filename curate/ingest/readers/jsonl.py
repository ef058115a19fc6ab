"""JSON Lines reader (``.jsonl``, ``.ndjson``, also ``.gz``/``.zst``): bytes per line.

Each line is decoded and parsed on its own, so one bad line (invalid UTF-8, broken JSON, too
large) is one bad record and the rest is read. Blank lines are not records; a leading BOM is
dropped. A compressed file that breaks off keeps the lines before the damage; the rest is one
``truncated_file`` record.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from curate.ingest.formats import RowError
from curate.ingest.quarantine import RAW_CHARS
from curate.ingest.readers.base import (
    STREAM_ERRORS,
    Record,
    check_text_file,
    error_line,
    head,
    open_bytes,
)


def parse_line(b: bytes, max_row_bytes: int) -> tuple[object, str]:
    """One JSON line as (parsed value or RowError, raw text for quarantine).

    Args:
        b (bytes): the line, with or without its line ending.
        max_row_bytes (int): longer lines are ``row_too_large``.
    """
    b = b.rstrip(b"\r\n")
    if len(b) > max_row_bytes:
        return RowError("row_too_large", f"row is {len(b)} bytes > max_row_bytes={max_row_bytes}"), b[:RAW_CHARS].decode("utf-8", "replace")
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError as e:
        return RowError("invalid_utf8", f"invalid UTF-8 at byte {e.start}: {e.reason}"), b.decode("utf-8", "backslashreplace")[:RAW_CHARS]
    try:
        return json.loads(s), s
    except json.JSONDecodeError as e:
        return RowError("malformed_json", f"malformed JSON: {e.msg} at column {e.colno}"), s[:RAW_CHARS]
    except RecursionError:
        return RowError("malformed_json", "JSON nested too deeply to parse (Python's recursion limit)"), s[:RAW_CHARS]


def read_jsonl(p: Path, max_row_bytes: int) -> Iterator[Record]:
    """The records of a JSON Lines file (see the module docstring).

    Args:
        p (Path): the file.
        max_row_bytes (int): longer lines are ``row_too_large`` records.

    Raises:
        FileError: binary content or an unreadable compressed stream.
    """
    check_text_file(head(p), "JSON Lines")
    lineno = 0
    with open_bytes(p) as fh:
        try:
            for lineno, b in enumerate(fh, 1):
                if lineno == 1 and b.startswith(b"\xef\xbb\xbf"):
                    b = b[3:]
                if not b.strip():
                    continue
                rec, raw = parse_line(b, max_row_bytes)
                yield Record(lineno, rec, raw)
        except STREAM_ERRORS as e:  # a truncated or corrupt compressed stream: keep what was read
            yield Record(lineno + 1, RowError("truncated_file", f"the file cannot be read past line {lineno} "
                                              f"({error_line(e)}); the rest of it is this one record"), "")
