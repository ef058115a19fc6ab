"""JSON reader (``.json``, also ``.gz``/``.zst``).

A JSON array of objects is parsed element by element, so rows before a syntax error are kept
and the rest of the file becomes ONE ``malformed_json`` record. Also read: a single object (one
record), ``{"data": [...]}`` (any one-key wrapper of a list of objects), and JSON Lines content
in a ``.json`` file.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from curate.ingest.formats import (
    FIELD_KEYS,
    INPUT_KEYS,
    INSTRUCTION_KEYS,
    OUTPUT_KEYS,
    RowError,
)
from curate.ingest.quarantine import RAW_CHARS
from curate.ingest.readers.base import (
    STREAM_ERRORS,
    FileError,
    Record,
    check_text_file,
    error_line,
    head,
    open_bytes,
)
from curate.ingest.readers.jsonl import read_jsonl

# Keys a one-key record may have without being taken for a {"data": [...]} wrapper.
_RECORD_KEYS = {None, *FIELD_KEYS, *INSTRUCTION_KEYS, *INPUT_KEYS, *OUTPUT_KEYS}
_WS = re.compile(r"\s*")


def read_json(p: Path, max_row_bytes: int) -> Iterator[Record]:
    """The records of a JSON file (see the module docstring).

    Args:
        p (Path): the file.
        max_row_bytes (int): larger array elements are ``row_too_large`` records.

    Raises:
        FileError: binary content, not JSON, or an unreadable compressed stream.
    """
    start = head(p).lstrip(b"\xef\xbb\xbf \t\r\n")
    check_text_file(start, "JSON")
    if not start:
        return
    if start[:1] not in (b"[", b"{"):
        raise FileError(f"not a JSON file (starts with {start[:20]!r})")
    try:
        with open_bytes(p) as fh:
            data = fh.read()
    except STREAM_ERRORS as e:
        raise FileError(f"cannot read ({error_line(e)})") from None
    # surrogateescape keeps invalid bytes as lone surrogates so each element can be checked.
    text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:  # "Extra data": JSON Lines content in a .json file
            yield from read_jsonl(p, max_row_bytes)
            return
        except RecursionError:
            yield Record(1, RowError("malformed_json", "JSON nested too deeply to parse (Python's recursion limit)"),
                         text[:RAW_CHARS])
            return
        (key, val), = obj.items() if isinstance(obj, dict) and len(obj) == 1 else ((None, None),)
        if key not in _RECORD_KEYS and isinstance(val, list) and val and all(isinstance(v, dict) for v in val):
            obj = val  # {"data": [...]} wrapper (a one-key record such as {"messages": [...]} is not one)
            text = json.dumps(obj, ensure_ascii=False)
        else:
            yield Record(1, obj, None)
            return
    yield from _iter_array(text, max_row_bytes)


def _iter_array(text: str, max_row_bytes: int) -> Iterator[Record]:
    """The elements of the JSON array ``text``, one by one (``raw_decode`` from each start)."""
    dec = json.JSONDecoder()
    pos = _WS.match(text, 1).end()
    if text[pos:pos + 1] == "]":
        return
    row = 0
    while True:
        row += 1
        try:
            obj, end = dec.raw_decode(text, pos)
            err = None
        except json.JSONDecodeError as e:
            obj, end, err = None, pos, e
        except RecursionError:
            obj, end, err = None, pos, json.JSONDecodeError("nested too deeply to parse", text, pos)
        if err is None:
            nxt = _WS.match(text, end).end()
            if text[nxt:nxt + 1] not in (",", "]"):
                err = json.JSONDecodeError("expected ',' or ']' after an element", text, nxt)
        if err is not None:
            yield Record(row, RowError("malformed_json", f"malformed JSON array at line {err.lineno} column {err.colno}: "
                                       f"{err.msg}; rows from {row} on cannot be split and are quarantined as one record"),
                         text[pos:pos + RAW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8"))
            return
        span = text[pos:end]
        try:
            nbytes = len(span.encode("utf-8"))
            bad = None
        except UnicodeEncodeError as e:
            nbytes, bad = len(span), e
        if nbytes > max_row_bytes:
            yield Record(row, RowError("row_too_large", f"row is {nbytes} bytes > max_row_bytes={max_row_bytes}"),
                         span[:RAW_CHARS])
        elif bad is not None:
            yield Record(row, RowError("invalid_utf8", f"invalid UTF-8 at character {bad.start} of the element"),
                         span[:RAW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8"))
        else:
            yield Record(row, obj, None)
        if text[nxt] == "]":
            return
        pos = _WS.match(text, nxt + 1).end()
