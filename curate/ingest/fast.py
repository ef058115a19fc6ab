"""Vectorised ingest: the record formats' column adapters over whole Arrow columns.

Same output and same quarantine as the per-row path (:class:`curate.ingest.collect.Collector`
feeding :meth:`curate.ingest.records.base.RecordFormat.adapt` record by record), ~3-5x faster:
the per-row path spends most of its time in Python calls per field of every row. Here the
records' fields become Arrow columns in one pass, and null checks, the canonical ``text``
(strip, skip blanks, join with a blank line), ``empty_text`` and ids run as column operations;
Python touches only the rows that need exactly Python's semantics (parts whose first or last
character is not printable ASCII, where ``str.strip`` and Arrow's trim could disagree) and the
quarantined rows (to render ``raw``).

The fast path covers one JSON array file, one JSON Lines file, or one in-memory list of dicts,
in a format with a column adapter (``alpaca``, ``text``, ``messages``; given or auto-detected).
Anything it does not reproduce exactly returns ``None`` and the caller takes the per-row path:
several files, ``sharegpt``, non-object rows, bad JSON or UTF-8, a field of another type than
string, mixed-type extra columns, several aliases of one field in one file, non-string/int ids,
and rows over ``max_row_bytes`` (each JSON array element's byte span is measured with numpy,
:mod:`curate.ingest.spans`). ``tests/test_adapters_arrow.py`` compares both paths.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core import schema
from curate.ingest.build import storable_type, unique_column_name
from curate.ingest.formats import DETECT_N, FORMATS, check_fields, detect_format
from curate.ingest.ids import (
    duplicate_id_error,
    find_duplicates,
    id_column,
    missing_id_error,
)
from curate.ingest.kernels import Fallback
from curate.ingest.quarantine import RAW_CHARS, quarantine_record, raw_of, summary
from curate.ingest.records import record_format
from curate.ingest.records.base import Check, Columns
from curate.ingest.result import Ingested, check_file_count
from curate.ingest.spans import check_spans

log = logging.getLogger(__name__)


def adapt_table(records: list, fmt: str, fields: dict, *, name: str, source: str, id_field: str | None,
                seen: dict | None, lines: np.ndarray, raws: list | None = None,
                span_check: tuple[bytes, int] | None = None, bare_ids: bool = False) -> tuple[pa.Table, list[dict]] | None:
    """Vectorised adapt of one input's records, or None when the per-row path must be used.

    Args:
        records (list): n parsed rows (must all be dicts).
        fmt (str): "auto" or a format name; one without a column adapter returns None.
        fields (dict): validated name overrides.
        name (str): file name for ids and quarantine records.
        source (str): the ``source`` column value.
        id_field (str | None): as in :func:`curate.ingest.read.read_input`.
        seen (dict | None): ids already used (id -> "file:line"), updated with this input's ids
            on success; None when this is the whole input (ids are then only checked against
            each other).
        lines (np.ndarray): (n,) int, line numbers of the rows (1-based).
        raws (list | None): n per-row raw strings (JSON Lines) for quarantine records; None
            (default) renders them from the records.
        span_check (tuple[bytes, int] | None): (file bytes after the BOM, max_row_bytes) for a
            JSON array, to measure every element's raw span as the per-row reader does; None
            (default) when there is nothing to check.
        bare_ids (bool): positional ids are the bare line numbers (in-memory rows; default False).

    Returns:
        (table with the canonical columns then extras, quarantine records) or None.
    """
    try:
        return _adapt(records, fmt, fields, name, source, id_field, seen, lines, raws, span_check, bare_ids)
    except Fallback as e:
        log.debug("vectorised ingest not used for %s: %s", name, e)
        return None


def _adapt(records, fmt, fields, name, source, id_field, seen, lines, raws, span_check, bare_ids=False):
    n = len(records)
    if n == 0 or not all(type(r) is dict for r in records):
        raise Fallback("empty input or non-object rows")
    if fmt == "auto":
        fmt = detect_format(records[:DETECT_N], fields)
        if fmt is None:
            raise Fallback("format not detected")
    keys = set().union(*records)
    ids, id_key, no_id = id_column(records, keys, id_field, name, lines, bare_ids)
    cols = record_format(fmt, fields).adapt_columns(records, keys, ~no_id)
    # Errors in the per-row path's order: id, then the format's checks; a row's first failing check wins.
    checks = ([Check(no_id, missing_id_error(id_key))] if id_key else []) + cols.checks
    failed = np.full(n, -1, np.int64)  # (n,) index of the row's first failing check, -1 if none
    for k, check in enumerate(checks):
        failed[(failed < 0) & check.mask] = k
    if span_check is not None:
        check_spans(records, *span_check, cols.strings)
    dup_of, new_seen = find_duplicates(ids, failed < 0, id_key is None, seen, name, lines)
    quarantine = []
    for i in sorted(np.flatnonzero(failed >= 0).tolist() + list(dup_of)):
        rid = ids[i].as_py()  # null where the id is missing
        line = int(lines[i])
        err = duplicate_id_error(rid, f"{name}:{line}", dup_of[i]) if i in dup_of else checks[failed[i]].error_of(i)
        raw = raws[i][:RAW_CHARS] if raws is not None else raw_of(records[i])
        quarantine.append(quarantine_record(name, line, rid, err, raw))
    keep = failed < 0
    keep[list(dup_of)] = False
    table = _assemble(records, np.flatnonzero(keep), ids, cols, keys, cols.consumed | ({id_key} if id_key else set()),
                      source)
    if seen is not None:
        seen.update(new_seen)  # only on success: a fallback re-reads the input
    return table, quarantine


def _assemble(records: list[dict], idx: np.ndarray, ids: pa.Array, cols: Columns, keys: set[str], consumed: set[str],
              source: str) -> pa.Table:
    """The kept rows ``idx`` as a canonical table, extra columns in the per-row path's order."""
    n, k = len(records), len(idx)

    def kept(a: pa.Array) -> pa.Array:
        return a if k == n else a.take(pa.array(idx, pa.int64()))

    canon = {schema.ID: kept(ids), schema.TEXT: kept(cols.text), schema.SOURCE: pa.array([source] * k, pa.string())}
    canon.update({c: kept(a) for c, a in cols.canon.items()})
    arrays = [canon[f.name].cast(f.type) if f.name in canon else pa.nulls(k, f.type) for f in schema.CANONICAL_SCHEMA]
    names = list(schema.CANONICAL_COLUMNS)
    kept_recs = records if k == n else [records[i] for i in idx]
    for key in (_extra_order(kept_recs, consumed) if keys - consumed else []):
        try:
            arr = pa.array([r.get(key) for r in kept_recs])
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, UnicodeEncodeError):
            raise Fallback(f"extra column {key!r} has mixed types") from None
        if not storable_type(arr.type):
            raise Fallback(f"extra column {key!r} holds empty objects or unwritable field names")
        arrays.append(arr)
        names.append(unique_column_name(key, set(names)))
    return pa.Table.from_arrays(arrays, names=names)


def _extra_order(kept: list[dict], consumed: set) -> list[str]:
    """Extra keys in the per-row path's order: first seen over the kept rows, row by row."""
    order: dict[str, None] = {}
    for r in kept:
        if len(r) > len(consumed & r.keys()):
            for key in r:
                if key not in consumed and key not in order:
                    order[key] = None
    return list(order)


# ---------------------------------------------------------------- inputs

def _ingested(got, name: str, files: list[str], n_records: int) -> Ingested | None:
    if got is None or got[0].num_rows == 0:
        return None  # the per-row path raises the right InputError for an input with no row
    table, quarantine = got
    check_file_count(name, n_records, table.num_rows, len(quarantine))
    log.info("read %s: %d rows, %d quarantined (vectorised)", name, table.num_rows, len(quarantine))
    if quarantine:
        log.warning("quarantined %d rows (%s)", len(quarantine), summary(quarantine))
    return Ingested(table=table, quarantine=quarantine, files=files, record_counts={name: n_records})


def read_fast(entries: list, *, format: str | None, fields: dict | None, id_field: str | None,
              source: str | None, max_row_bytes: int) -> Ingested | None:
    """Vectorised :func:`curate.ingest.read.read_input` of one ``.json`` array or JSON Lines file.

    Args:
        entries (list): ``[(path, name)]`` as expanded by ``curate.ingest.read``; anything but
            one file -> None.
        format, fields, id_field, source, max_row_bytes: as in :func:`curate.ingest.read.read_input`.

    Returns:
        :class:`curate.ingest.result.Ingested`, or None when the per-row path must run.
    """
    fmt = format or "auto"
    if len(entries) != 1 or fmt not in FORMATS or not isinstance(entries[0][0], Path) or not entries[0][0].is_file():
        return None
    path, name = entries[0]
    low = path.name.lower()
    kind = "jsonl" if low.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")) else \
        "json" if low.endswith((".json", ".json.gz")) else None
    if kind is None:
        return None
    try:
        with (gzip.open if low.endswith(".gz") else open)(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        if kind == "json":
            text = data.decode("utf-8").lstrip("\ufeff \t\r\n")
            if not text.startswith("["):
                return None
            records = json.loads(text)
            raws, lines = None, np.arange(1, len(records) + 1) if isinstance(records, list) else None
            span = None if len(data) <= max_row_bytes else (data, max_row_bytes)
        else:
            if data.startswith(b"\xef\xbb\xbf"):
                data = data[3:]
            parts = data.split(b"\n")
            lines = np.array([i + 1 for i, b in enumerate(parts) if b.strip()], np.int64)
            body = [parts[i - 1].rstrip(b"\r\n") for i in lines]
            if any(len(b) > max_row_bytes for b in body):
                return None
            raws = [b.decode("utf-8") for b in body]
            records = [json.loads(s) for s in raws]
            span = None
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(records, list):
        return None
    got = adapt_table(records, fmt, check_fields(fields), name=name, source=source or name, id_field=id_field,
                      seen=None, lines=lines, raws=raws, span_check=span)
    return _ingested(got, name, [str(path)], len(records))


def records_fast(records: list, *, format: str | None, id_field: str | None, source: str) -> Ingested | None:
    """Vectorised :func:`curate.ingest.read.from_records` of a list of dicts, or None (use the per-row path).

    Args:
        records (list): the rows.
        format, id_field, source: as in :func:`curate.ingest.read.from_records`.
    """
    fmt = format or "auto"
    if fmt not in FORMATS:
        return None
    got = adapt_table(records, fmt, {}, name=source, source=source, id_field=id_field, seen=None,
                      lines=np.arange(len(records)), bare_ids=True)
    return _ingested(got, source, [source], len(records))
