"""Vectorised ingest: the alpaca and text adapters as Arrow compute over whole columns.

Same output and same quarantine as the per-row path (:func:`curate.ingest.formats.make_adapter` fed
record by record by ``curate.ingest.read._Collector``), ~3-5x faster: the per-row path spends most of its
time in Python calls per field of every row. Here the records' fields become Arrow columns in
one pass, and null checks, the canonical ``text`` (strip, skip blanks, join with a blank line),
``empty_text`` and ids run as column operations; Python touches only the rows that need
exactly Python's semantics (parts whose first or last character is not printable ASCII, where
``str.strip`` and Arrow's trim could disagree) and the quarantined rows (to render ``raw``).

The fast path covers one JSON array file, one JSON Lines file, or one in-memory list of dicts,
in the ``alpaca`` or ``text`` format (given or auto-detected). Anything it does not reproduce
exactly returns ``None`` and the caller takes the per-row path: several files, other formats
(sharegpt, messages), non-object rows, bad JSON or UTF-8, a field of another type than string,
mixed-type extra columns, several aliases of one field in one file, non-string/int ids, and
rows over ``max_row_bytes`` (each JSON array element's byte span is measured with numpy). ``tests/test_adapters_arrow.py`` compares both paths.
"""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core import schema
from curate.ingest.formats import (
    FORMATS,
    check_fields,
    detect_format,
    field_keys,
    render_text,
    storable_type,
    unique_column_name,
)
from curate.ingest.kernels import Fallback, as_numpy, column_array, edge_safe

log = logging.getLogger(__name__)

_DETECT_N = 50
_RAW_CHARS = 500


def _raw_of(rec) -> str:
    try:
        return json.dumps(rec, ensure_ascii=False, default=str)[:_RAW_CHARS]
    except (TypeError, ValueError):
        return repr(rec)[:_RAW_CHARS]


def _one_alias(present: set, kind: str, fields: dict) -> str | None:
    hits = [k for k in field_keys(kind, fields) if k in present]
    if len(hits) > 1:
        raise Fallback(f"several aliases of {kind}: {hits}")
    return hits[0] if hits else None


def _render(parts: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """Canonical text (parts joined, blanks skipped) and the (n,) mask of rows Python must render.

    A non-empty part is Arrow-safe when its first and last characters are printable non-space
    ASCII: ``str.strip`` leaves it unchanged. Rows with any other non-empty part are flagged.
    """
    unsafe = np.zeros(len(parts[0]), bool)
    for p in parts:
        unsafe |= ~edge_safe(p)
    if len(parts) == 1:  # the text format keeps its text unchanged
        return pc.fill_null(parts[0], ""), unsafe
    cleaned = [pc.if_else(pc.fill_null(pc.equal(p, ""), True), pa.scalar(None, pa.string()), p) for p in parts]
    # Joined pairwise with coalesce: pyarrow 26's null_handling="skip" drops the rows whose parts
    # are all null from its result (it returns fewer rows than it was given).
    acc = cleaned[0]
    for p in cleaned[1:]:
        acc = pc.coalesce(pc.binary_join_element_wise(acc, p, "\n\n"), acc, p)
    return pc.fill_null(acc, ""), unsafe


def adapt_table(records: list, fmt: str, fields: dict, *, name: str, source: str, id_field: str | None,
                seen: dict | None, lines: np.ndarray, raws: list | None = None,
                span_check: tuple[bytes, int] | None = None) -> tuple[pa.Table, list[dict]] | None:
    """Vectorised adapt of one input's records, or None when the per-row path must be used.

    Args:
        records: parsed rows (must all be dicts).
        fmt: "auto", "alpaca" or "text" (others return None).
        fields: validated name overrides.
        name: file name for ids and quarantine records; source: the ``source`` column value.
        id_field: as in :func:`curate.ingest.read.read_input`.
        seen: ids already used (id -> "file:line"), updated with this input's ids on success; None
            when this is the whole input (ids are then only checked against each other).
        lines: (n,) line numbers of the rows (1-based).
        raws: per-row raw strings (JSON Lines) for quarantine records, else None (rendered).
        span_check: (file bytes after the BOM, max_row_bytes) for a JSON array, to measure every
            element's raw span as the per-row reader does; None when there is nothing to check.

    Returns:
        (table with the canonical columns then extras, quarantine records) or None.
    """
    try:
        return _adapt(records, fmt, fields, name, source, id_field, seen, lines, raws, span_check)
    except Fallback as e:
        log.debug("vectorised ingest not used for %s: %s", name, e)
        return None


def _adapt(records, fmt, fields, name, source, id_field, seen, lines, raws, span_check):
    n = len(records)
    if n == 0 or not all(type(r) is dict for r in records):
        raise Fallback("empty input or non-object rows")
    if fmt == "auto":
        fmt = detect_format(records[:_DETECT_N], fields)
    if fmt not in ("alpaca", "text", "messages"):
        raise Fallback(f"format {fmt!r}")
    keys = set().union(*records)
    # Errors in the per-row path's order: id, then the fields; the first one found wins.
    reason = np.zeros(n, np.int8)  # 0 ok, 1 missing id, 2 missing instruction/text, 3 missing output, 4 empty
    # ---- ids
    id_key = id_field or ("id" if "id" in keys else None)
    if id_key is None:
        ids = pc.binary_join_element_wise(pa.scalar(f"{name}:"), pa.array(lines, pa.int64()).cast(pa.string()), "")
    else:
        col = column_array(records, id_key)
        if not (pa.types.is_string(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
            raise Fallback(f"id field {id_key!r} is {col.type}")
        if id_field is None and col.null_count:
            raise Fallback("some rows lack an id")  # they would get <file>:<line> ids and an orig_id column
        ids = col.cast(pa.string())
        reason[as_numpy(ids.is_null())] = 1
    consumed = {id_key} if id_key else set()
    # ---- fields
    if fmt == "alpaca":
        ki, ko = _one_alias(keys, "instruction", fields), _one_alias(keys, "output", fields)
        kx = _one_alias(keys, "input", fields)
        cols = [column_array(records, k, pa.string()) if k else pa.nulls(n, pa.string()) for k in (ki, kx, ko)]
        consumed |= {k for k in (ki, ko, kx) if k}
        msgs = {2: f"missing field {' or '.join(repr(k) for k in field_keys('instruction', fields))}",
                3: f"missing field {' or '.join(repr(k) for k in field_keys('output', fields))}",
                4: "instruction, input and output are all blank"}
        missing = [(2, cols[0]), (3, cols[2])]
    elif fmt == "text":
        kt = field_keys("text", fields)[0]
        cols = [column_array(records, kt, pa.string()) if kt in keys else pa.nulls(n, pa.string())]
        consumed.add(kt)
        msgs = {2: f"missing field {kt!r}", 4: f"field {kt!r} is blank"}
        missing = [(2, cols[0])]
    else:
        km = field_keys("messages", fields)[0]
        consumed.add(km)
        msgs = {2: f"missing field {km!r}", 4: f"conversation in {km!r} has no non-blank turn",
                6: "conversation has no user turn", 7: "conversation has no assistant turn after the first user turn"}
        from curate.ingest.fast_messages import adapt_messages

        text, ins_c, out_c, msg_c, row_msgs = adapt_messages(records, km, reason)
    if fmt != "messages":
        for code, c in missing:
            reason[(reason == 0) & as_numpy(c.is_null())] = code
        text, unsafe = _render(cols)
    todo = np.flatnonzero(unsafe & (reason == 0)) if fmt != "messages" else []
    if len(todo):  # Python's exact strip/join for the few rows with non-ASCII or space edges
        py = [[records[i].get(k) for k in ((ki, kx, ko) if fmt == "alpaca" else (kt,))] for i in todo]
        fixed = [render_text(*v) if fmt == "alpaca" else (v[0] if v[0].strip() else "") for v in py]
        mask = np.zeros(n, bool)
        mask[todo] = True
        text = pc.replace_with_mask(text, pa.array(mask), pa.array(fixed, pa.string()))
    if fmt != "messages":
        reason[(reason == 0) & as_numpy(pc.equal(text, ""))] = 4
        row_msgs = {}
    if span_check is not None:
        fcols = dict(zip((ki, kx, ko), cols)) if fmt == "alpaca" else {kt: cols[0]} if fmt == "text" else {}
        _check_spans(records, *span_check, {k: v for k, v in fcols.items() if k})
    # ---- duplicate ids: a dict pass only when some id repeats or ids were seen before
    new_seen: dict[str, str] = {}  # merged into ``seen`` only on success (a fallback re-reads the input)
    dup_of: dict[int, str] = {}
    ok = np.flatnonzero(reason == 0)
    # <file>:<line> ids are unique by construction; others need a dict pass only if some repeat
    ok_ids = ids.take(pa.array(ok, pa.int64())) if (seen is not None or id_key is not None) else None
    if seen is not None or (id_key is not None and pc.count_distinct(ok_ids).as_py() != len(ok)):
        for i, rid in zip(ok.tolist(), ok_ids.to_pylist()):
            first = (seen or {}).get(rid) or new_seen.get(rid)
            if first is not None:
                dup_of[i] = first
            else:
                new_seen[rid] = f"{name}:{int(lines[i])}"
    # ---- quarantine records (row order), then the kept rows
    quarantine = []
    bad = np.flatnonzero(reason != 0).tolist()
    for i in sorted(bad + list(dup_of)):
        rid = ids[i].as_py()
        place = f"{name}:{int(lines[i])}"
        if i in dup_of:
            err = ("duplicate_id", f"id {rid!r} at {place} repeats the id of {dup_of[i]}")
        elif reason[i] == 1:
            err, rid = ("missing_field", f"missing id field {id_key!r}"), None
        else:
            err = ("empty_text" if reason[i] == 4 else "missing_field", row_msgs.get(i) or msgs[int(reason[i])])
        raw = raws[i][:_RAW_CHARS] if raws is not None else _raw_of(records[i])
        quarantine.append({"file": name, "line": int(lines[i]), "id": rid, "reason": err[0], "error": err[1], "raw": raw})
    keep = reason == 0
    keep[list(dup_of)] = False
    idx = np.flatnonzero(keep)
    k = len(idx)

    def kept(a: pa.Array) -> pa.Array:
        return a if k == n else a.take(pa.array(idx, pa.int64()))

    canon = {schema.ID: kept(ids), schema.TEXT: kept(text), schema.SOURCE: pa.array([source] * k, pa.string())}
    if fmt == "alpaca":
        canon.update({schema.INSTRUCTION: kept(cols[0]), schema.INPUT: kept(cols[1]), schema.OUTPUT: kept(cols[2])})
    elif fmt == "messages":
        canon.update({schema.INSTRUCTION: kept(ins_c), schema.OUTPUT: kept(out_c), schema.MESSAGES: kept(msg_c)})
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
    if seen is not None:
        seen.update(new_seen)
    return pa.Table.from_arrays(arrays, names=names), quarantine


def _extra_order(kept: list[dict], consumed: set) -> list[str]:
    """Extra keys in the per-row path's order: first seen over the kept rows, row by row."""
    order: dict[str, None] = {}
    for r in kept:
        if len(r) > len(consumed & r.keys()):
            for key in r:
                if key not in consumed and key not in order:
                    order[key] = None
    return list(order)


def _object_spans(data: bytes) -> np.ndarray | None:
    """Byte length of every top-level object of a JSON array, found with numpy, or None.

    The per-row reader measures each element's raw span; this finds the same spans without a
    Python loop: unescaped quotes (an even run of backslashes before them) delimit strings,
    the structural characters outside strings give the nesting depth, and each element is
    from a ``{`` opened at depth 1 to the ``}`` that closes it. None when the array holds
    anything but objects (the per-row path decides then).
    """
    b = np.frombuffer(data, np.uint8)
    pos = np.flatnonzero((b == 123) | (b == 125) | (b == 91) | (b == 93) | (b == 34) | (b == 92))
    c = b[pos]
    q, bs = pos[c == 34], pos[c == 92]
    if len(bs) and len(q):
        k = np.searchsorted(bs, q)  # backslashes before each quote
        run_start = np.flatnonzero(np.r_[True, np.diff(bs) != 1])  # index in bs where each run starts
        start_of = run_start[np.searchsorted(run_start, np.arange(len(bs)), side="right") - 1]
        adj = (k > 0) & (bs[np.maximum(k - 1, 0)] == q - 1)
        run = np.where(adj, (k - 1) - start_of[np.maximum(k - 1, 0)] + 1, 0)
        q = q[run % 2 == 0]
    s = pos[(c == 123) | (c == 125) | (c == 91) | (c == 93)]
    s = s[np.searchsorted(q, s) % 2 == 0]  # an even number of quotes before: outside strings
    ch = b[s]
    delta = np.where((ch == 123) | (ch == 91), 1, -1)
    after = np.cumsum(delta)
    before = after - delta
    if len(s) == 0 or ch[0] != 91:
        return None
    opens = s[(ch == 123) & (before == 1)]
    closes = s[(ch == 125) & (after == 1)]
    if len(opens) != len(closes) or ((ch == 91) & (before == 1)).any():
        return None
    return closes - opens + 1


def _check_spans(records: list[dict], data: bytes, limit: int, cols: dict[str, pa.Array]) -> None:
    """Fall back unless every JSON array element is provably within ``limit`` bytes.

    First a free bound: c_i = quoted keys and string values of the columns already built (a
    lower bound of element i's raw span, escapes and other fields left out); spans and
    separators add up to at most the file size F, so span_i <= c_i + (F - (n + 1) - sum_j c_j).
    When that does not settle it, every element is measured (:func:`_object_spans`).
    """
    n = len(records)
    c = np.full(n, 2, np.int64)
    for key, col in cols.items():
        if col is None or not pa.types.is_string(col.type):
            continue
        present = ~as_numpy(col.is_null())
        blen = np.asarray(pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False), np.int64)
        c += present * (len(json.dumps(key, ensure_ascii=False).encode()) + 3) + blen
    slack = len(data) - (n + 1) - int(c.sum())
    if slack >= 0 and int(c.max()) + slack <= limit:
        return
    spans = _object_spans(data)
    if spans is None or len(spans) != n:
        raise Fallback("JSON array elements could not be measured")
    if int(spans.max()) > limit:
        raise Fallback("a row exceeds max_row_bytes")  # the per-row path quarantines it with its raw text


# ---------------------------------------------------------------- inputs

def _ingested(got, name: str, files: list[str]):
    from curate.ingest.result import Ingested

    if got is None or got[0].num_rows == 0:
        return None  # the per-row path raises the right InputError for an input with no row
    table, quarantine = got
    log.info("read %s: %d rows, %d quarantined (vectorised)", name, table.num_rows, len(quarantine))
    if quarantine:
        from collections import Counter

        counts = Counter(q["reason"] for q in quarantine)
        log.warning("quarantined %d rows (%s)", len(quarantine), ", ".join(f"{c} {r}" for r, c in counts.most_common()))
    return Ingested(table=table, quarantine=quarantine, files=files)


def read_fast(entries: list, *, format: str | None, fields: dict | None, id_field: str | None,
              source: str | None, max_row_bytes: int):
    """Vectorised :func:`curate.ingest.read.read_input` of one ``.json`` array or JSON Lines file.

    Args:
        entries: ``[(path, name)]`` as expanded by ``curate.ingest.read``; anything but one file -> None.
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
    return _ingested(got, name, [str(path)])


def records_fast(records: list, *, format: str | None, id_field: str | None, source: str):
    """Vectorised :func:`curate.ingest.read.from_records` of a list of dicts, or None (use the per-row path)."""
    fmt = format or "auto"
    if fmt not in FORMATS:
        return None
    got = adapt_table(records, fmt, {}, name=source, source=source, id_field=id_field, seen=None,
                      lines=np.arange(1, len(records) + 1))
    return _ingested(got, source, [source])
