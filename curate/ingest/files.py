"""File readers for ingest: each yields ``(line, record_or_RowError, raw)`` per row.

``raw`` is a str snippet, or None (then it is rendered from the record only if the row turns
out bad). Whole-file problems raise ``FileError`` (turned into a warning or an
:class:`InputError` by :func:`curate.ingest.read.read_input`). See :mod:`curate.ingest.read` for the rules.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute in canonical_passthrough)

from curate.core import schema
from curate.core.errors import InputError, LedgerError
from curate.ingest.formats import (
    FIELD_KEYS,
    INPUT_KEYS,
    INSTRUCTION_KEYS,
    OUTPUT_KEYS,
    RowError,
)

SUPPORTED_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv",
                      ".jsonl.gz", ".ndjson.gz", ".json.gz", ".jsonl.zst", ".ndjson.zst", ".json.zst")
# Errors a damaged compressed stream raises while being read (gzip: EOFError/BadGzipFile/zlib,
# zstd through pyarrow: ArrowException/OSError).
_STREAM_ERRORS = (EOFError, OSError, zlib.error, pa.ArrowException)
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
RAW_CHARS = 500
_RECORD_KEYS = {None, *FIELD_KEYS, *INSTRUCTION_KEYS, *INPUT_KEYS, *OUTPUT_KEYS}


class FileError(Exception):
    """A whole file cannot be read as what it claims to be."""


def suffix_of(p: Path) -> str:
    name = p.name.lower()
    return next((s for s in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True) if name.endswith(s)), p.suffix.lower())


def is_hf_dir(p: Path) -> bool:
    return p.is_dir() and any((p / m).is_file() for m in _HF_MARKERS)


# ---------------------------------------------------------------- readers
# Each reader yields (line, record_or_RowError, raw) where raw is a str snippet or None (then it
# is rendered from the record only if the row turns out bad).

class _ArrowRaw(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (so it can be buffered and iterated by line)."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.stream.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def _open_bytes(p: Path):
    name = p.name.lower()
    if name.endswith(".gz"):
        return gzip.open(p, "rb")
    if name.endswith(".zst"):  # Zstandard through pyarrow's codec (no extra dependency)
        return io.BufferedReader(_ArrowRaw(pa.CompressedInputStream(pa.OSFile(str(p)), "zstd")), 1 << 20)
    return open(p, "rb")


def _head(p: Path, n: int = 8192) -> bytes:
    try:
        with _open_bytes(p) as fh:
            return fh.read(n)
    except _STREAM_ERRORS as e:  # BadGzipFile is an OSError
        raise FileError(f"cannot read ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None


def _check_text_file(p: Path, head: bytes, what: str) -> None:
    # A text file may hold a stray NUL on one bad line (that line is quarantined); a binary file
    # (or UTF-16 text) is full of them.
    if head.count(b"\0") > max(1, len(head) // 100):
        raise FileError(f"not a {what} file (binary content)")


def _parse_line(b: bytes, max_row_bytes: int):
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


def _read_jsonl(p: Path, max_row_bytes: int) -> Iterator[tuple]:
    head = _head(p)
    _check_text_file(p, head, "JSON Lines")
    lineno = 0
    with _open_bytes(p) as fh:
        try:
            for lineno, b in enumerate(fh, 1):
                if lineno == 1 and b.startswith(b"\xef\xbb\xbf"):
                    b = b[3:]
                if not b.strip():
                    continue
                rec, raw = _parse_line(b, max_row_bytes)
                yield lineno, rec, raw
        except _STREAM_ERRORS as e:  # a truncated or corrupt compressed stream: keep what was read
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            yield lineno + 1, RowError("truncated_file", f"the file cannot be read past line {lineno} ({msg}); "
                                       "the rest of it is this one record"), ""


def _read_json(p: Path, max_row_bytes: int) -> Iterator[tuple]:
    head = _head(p).lstrip(b"\xef\xbb\xbf \t\r\n")
    _check_text_file(p, head, "JSON")
    if not head:
        return
    if head[:1] not in (b"[", b"{"):
        raise FileError(f"not a JSON file (starts with {head[:20]!r})")
    try:
        with _open_bytes(p) as fh:
            data = fh.read()
    except _STREAM_ERRORS as e:
        raise FileError(f"cannot read ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})") from None
    # surrogateescape keeps invalid bytes as lone surrogates so each element can be checked.
    text = data.decode("utf-8", "surrogateescape").lstrip("\ufeff \t\r\n")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:  # "Extra data": JSON Lines content in a .json file
            yield from _read_jsonl(p, max_row_bytes)
            return
        except RecursionError:
            yield 1, RowError("malformed_json", "JSON nested too deeply to parse (Python's recursion limit)"), text[:RAW_CHARS]
            return
        (key, val), = obj.items() if isinstance(obj, dict) and len(obj) == 1 else ((None, None),)
        if key not in _RECORD_KEYS and isinstance(val, list) and val and all(isinstance(v, dict) for v in val):
            obj = val  # {"data": [...]} wrapper (a one-key record such as {"messages": [...]} is not one)
            text = json.dumps(obj, ensure_ascii=False)
        else:
            yield 1, obj, None
            return
    yield from _iter_json_array(text, max_row_bytes)


def _iter_json_array(text: str, max_row_bytes: int) -> Iterator[tuple]:
    dec = json.JSONDecoder()
    ws = re.compile(r"\s*")
    pos = ws.match(text, 1).end()
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
            nxt = ws.match(text, end).end()
            if text[nxt:nxt + 1] not in (",", "]"):
                err = json.JSONDecodeError("expected ',' or ']' after an element", text, nxt)
        if err is not None:
            yield row, RowError("malformed_json", f"malformed JSON array at line {err.lineno} column {err.colno}: "
                                f"{err.msg}; rows from {row} on cannot be split and are quarantined as one record"), \
                text[pos:pos + RAW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
            return
        span = text[pos:end]
        try:
            nbytes = len(span.encode("utf-8"))
            bad = None
        except UnicodeEncodeError as e:
            nbytes, bad = len(span), e
        if nbytes > max_row_bytes:
            yield row, RowError("row_too_large", f"row is {nbytes} bytes > max_row_bytes={max_row_bytes}"), span[:RAW_CHARS]
        elif bad is not None:
            yield row, RowError("invalid_utf8", f"invalid UTF-8 at character {bad.start} of the element"), \
                span[:RAW_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
        else:
            yield row, obj, None
        if text[nxt] == "]":
            return
        pos = ws.match(text, nxt + 1).end()


def _read_csv(p: Path, max_row_bytes: int) -> Iterator[tuple]:
    _check_text_file(p, _head(p), "CSV")
    csv.field_size_limit(2**31 - 1)
    delim = "\t" if suffix_of(p) == ".tsv" else ","
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
                yield line, RowError("malformed_row", f"row has {len(values)} fields, header has {len(header)}"), raw
                continue
            rec = dict(zip(header, values))
            size = sum(len(v) for v in values)
            if size > max_row_bytes:
                yield line, RowError("row_too_large", f"row is ~{size} bytes > max_row_bytes={max_row_bytes}"), raw
                continue
            try:
                "".join(values).encode("utf-8")
            except UnicodeEncodeError as e:
                yield line, RowError("invalid_utf8", f"invalid UTF-8 in row (character {e.start})"), \
                    raw.encode("utf-8", "backslashreplace").decode("utf-8")
                continue
            yield line, rec, None


def iter_table(table: pa.Table, max_row_bytes: int) -> Iterator[tuple]:
    row = 0
    for batch in table.to_batches(max_chunksize=8192):
        for rec in batch.to_pylist():
            row += 1
            size = sum(len(v) for v in rec.values() if isinstance(v, str))
            if size > max_row_bytes:
                yield row, RowError("row_too_large", f"row is ~{size} bytes > max_row_bytes={max_row_bytes}"), None, rec
                continue
            yield row, rec, None


def _read_parquet(p: Path, max_row_bytes: int) -> Iterator[tuple]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise FileError(f"not a Parquet file ({str(e).splitlines()[0]})") from None
    yield from iter_table(table, max_row_bytes)


def dataset_table(ds, split: str, name: str) -> pa.Table:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{name}: no split {split!r} (have {sorted(ds)})")
        ds = ds[split]
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return ds.data.table


def _read_hf_dir(p: Path, max_row_bytes: int, split: str) -> Iterator[tuple]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # datasets raises many types for a damaged dir
        raise FileError(f"not a readable datasets.save_to_disk directory ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    yield from iter_table(dataset_table(ds, split, str(p)), max_row_bytes)


def _load_hub(entry: str, split: str) -> pa.Table:
    import datasets

    name = entry.removeprefix("hf://")
    hint = "" if entry.startswith("hf://") else f" ({entry!r} is not a local path either)"
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, missing, gated: all surface as one line
        msg = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"hf://{name}: could not load from the Hugging Face hub{hint}; is it reachable? offline runs "
                         f"need a local path - {type(e).__name__}: {msg[:200]}") from None
    return dataset_table(ds, split, name)


def records_for(entry: Path | str, max_row_bytes: int, split: str) -> Iterator[tuple]:
    if isinstance(entry, str):
        return iter_table(_load_hub(entry, split), max_row_bytes)
    if entry.is_dir():
        return _read_hf_dir(entry, max_row_bytes, split)
    suf = suffix_of(entry)
    if suf in (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".jsonl.zst", ".ndjson.zst"):
        return _read_jsonl(entry, max_row_bytes)
    if suf in (".json", ".json.gz", ".json.zst"):
        return _read_json(entry, max_row_bytes)
    if suf in (".csv", ".tsv"):
        return _read_csv(entry, max_row_bytes)
    if suf == ".parquet":
        return _read_parquet(entry, max_row_bytes)
    raise InputError(f"{entry}: unsupported file type {suf!r} (supported: {', '.join(SUPPORTED_SUFFIXES)})")


# ---------------------------------------------------------------- counting (the ledger's n_input)

class Counted:
    """Iterator wrapper counting the records a reader yields (the independent ingest count)."""

    def __init__(self, records: Iterator[tuple]):
        self.it, self.n = iter(records), 0

    def __iter__(self) -> "Counted":
        return self

    def __next__(self) -> tuple:
        item = next(self.it)
        self.n += 1
        return item


def check_file_count(name: str, counted: int, kept: int, quarantined: int) -> None:
    if counted != kept + quarantined:
        raise LedgerError(f"{name}: provenance invariant broken at ingest: {counted} records read, but "
                          f"{kept} kept + {quarantined} quarantined = {kept + quarantined}")


def canonical_passthrough(data: pa.Table, source: str) -> pa.Table:
    n = data.num_rows
    if n == 0:
        raise InputError(f"{source}: input is empty")
    ids = data.column(schema.ID)
    if ids.null_count or not pa.types.is_string(ids.type):
        ids = pa.chunked_array([pa.array([None if v is None else str(v) for v in ids.to_pylist()], pa.string())])
    if ids.null_count:
        raise InputError(f"{source}: the id column has {ids.null_count} nulls")
    if pa.compute.count_distinct(ids).as_py() != n:
        raise InputError(f"{source}: the id column has duplicates")
    cols, names = [], []
    for f in schema.CANONICAL_SCHEMA:
        if f.name == schema.ID:
            col = ids
        elif f.name in data.column_names:
            col = data.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise InputError(f"{source}: column {f.name!r} is {col.type}, expected {f.type} ({e})") from None
        elif f.name == schema.SOURCE:
            col = pa.array([source] * n, pa.string())
        else:
            col = pa.nulls(n, f.type)
        cols.append(col)
        names.append(f.name)
    rest = [c for c in data.column_names if c not in schema.CANONICAL_COLUMNS]
    return pa.Table.from_arrays(cols + [data.column(c) for c in rest], names=names + rest)
