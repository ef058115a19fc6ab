"""Ingest: read files into one canonical ``pa.Table``, quarantining rows that cannot be used.

Inputs (:func:`read_input`): a file, a directory (recursive; supported suffixes only; sorted;
hidden entries skipped), a glob, a list of those, a ``datasets.save_to_disk`` directory, or a
Hugging Face hub name (``hf://owner/name`` or a bare ``owner/name`` that is not a path; needs a
reachable hub). Readers (one module each in :mod:`curate.ingest.readers`, picked by suffix):

* ``.jsonl`` / ``.ndjson`` (and ``.gz``, ``.zst``): streamed as bytes, decoded and parsed per line, so one
  bad line (invalid UTF-8, broken JSON) is quarantined and the rest is read. Blank lines are not
  rows.
* ``.json`` (and ``.gz``, ``.zst``): a JSON array of objects (parsed element by element, so rows before a
  syntax error are kept and the rest of the file becomes ONE ``malformed_json`` quarantine record
  plus a warning), a single object, ``{"data": [...]}``, or JSON Lines content in a ``.json``.
* ``.parquet`` (pyarrow), ``.csv`` / ``.tsv`` (csv module; every value is a string; a row with
  more fields than the header is ``malformed_row``).
* a ``save_to_disk`` directory (``dataset_info.json``/``state.json``/``dataset_dict.json``;
  ``split`` picks from a DatasetDict), loaded with ``datasets.load_from_disk``.

Formats and the canonical ``text``: see :mod:`curate.ingest.formats` (auto-detected per file);
each format's adapters are one class in :mod:`curate.ingest.records`. One JSON/JSONL file or a
list of dicts in a format with a column adapter takes the vectorised path
(:mod:`curate.ingest.fast`), with the same output; everything else is adapted row by row
(:class:`curate.ingest.collect.Collector`). Both return :class:`Ingested`.

Row ids: ``id_field`` if given (a row lacking it is ``missing_field``), else a non-null ``id``
column, else ``<file>:<line>``: file relative to the input root (the file name for a single
file; for a list, relative to the common folder), line 1-based (JSONL/CSV: the physical line
where the record starts; JSON arrays, Parquet, datasets: the row number); in-memory data
(:func:`from_records`): the 0-based row index. Ids become strings.
A repeated id quarantines the later row (``duplicate_id``) naming both places; the run goes on.

Quarantine records are ``{"file", "line", "id", "reason", "error", "raw"}`` (raw <= 500
characters). ``row_too_large`` uses the raw bytes for JSON inputs and the summed string lengths
for Parquet/CSV/datasets rows. File-level problems: an empty file among others is a warning; a
file that is not what its suffix claims (binary, not Parquet, not JSON) is a warning plus one
``unreadable_file`` quarantine record when other files have rows, else an :class:`InputError`.
If the whole input yields zero rows the result is an :class:`InputError` naming the file(s).
``source`` is the ``source`` argument, else the file's relative name (the dataset name for hub
inputs); an original ``source`` column is kept as ``orig_source``.
"""
from __future__ import annotations

import glob as globlib
import logging
import os
import re
from pathlib import Path

import pyarrow as pa
import xxhash
from tqdm.auto import tqdm

from curate.core import schema
from curate.core.errors import InputError
from curate.core.paths import expand_path
from curate.ingest.build import canonical_passthrough
from curate.ingest.collect import Collector
from curate.ingest.fast import read_fast, records_fast
from curate.ingest.formats import RowError, check_fields
from curate.ingest.quarantine import RAW_CHARS, quarantine_record, summary
from curate.ingest.readers import SUPPORTED_SUFFIXES, read_records, suffix_of
from curate.ingest.readers.base import FileError, Record
from curate.ingest.readers.hf import dataset_table, is_hf_dir
from curate.ingest.readers.table import iter_table
from curate.ingest.result import Counted, Ingested, check_file_count

__all__ = ["expand_paths", "expand_with_names", "from_records", "input_fingerprint", "is_path_spec", "read_input"]

log = logging.getLogger(__name__)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _expand_one(path: str | Path) -> tuple[list[Path | str], Path | None]:
    """Return (entries, root) for one input spec; hub names come back as strings, paths as Path."""
    s = expand_path(str(path), "input") if isinstance(path, str) else str(path)
    p = Path(s).expanduser()
    if p.is_file():
        return [p], p.parent
    if p.is_dir():
        if is_hf_dir(p):
            return [p], p.parent
        out, hf_dirs = [], []
        for dirpath, dirnames, filenames in os.walk(p):
            d = Path(dirpath)
            if is_hf_dir(d) and d != p:
                hf_dirs.append(d)
                dirnames[:] = []
                continue
            dirnames[:] = [n for n in dirnames if not n.startswith(".")]
            out += [d / f for f in filenames if not f.startswith(".") and suffix_of(Path(f)) in SUPPORTED_SUFFIXES]
        entries = sorted(out + hf_dirs)
        if not entries:
            raise InputError(f"{s}: no supported files in directory (supported: {', '.join(SUPPORTED_SUFFIXES)})")
        return entries, p
    if any(c in s for c in "*?["):
        hits = [Path(h) for h in sorted(globlib.glob(s, recursive=True))]
        hits = [h for h in hits if (h.is_file() and suffix_of(h) in SUPPORTED_SUFFIXES) or is_hf_dir(h)]
        if not hits:
            raise InputError(f"{s}: no supported files match this pattern")
        prefix = re.split(r"[*?\[]", s, maxsplit=1)[0]
        root = Path(prefix) if prefix.endswith(os.sep) else Path(prefix).parent
        return hits, root
    if s.startswith("hf://") or (_HUB_NAME.match(s) and suffix_of(p) not in SUPPORTED_SUFFIXES):
        return [s], None  # a hub name; bare names keep no prefix so errors can say "not a local path"
    raise InputError(f"{s}: no such file or directory")


def expand_paths(path: str | Path | list) -> list[Path]:
    """Expand a file, directory (recursive, supported suffixes, sorted), glob or list of them.

    ``save_to_disk`` directories are returned as one entry. Raises :class:`InputError` if
    nothing matches. Hub names are not paths and are left out (see :func:`read_input`).
    """
    specs = path if isinstance(path, (list, tuple)) else [path]
    out: list[Path] = []
    for spec in specs:
        out += [e for e in _expand_one(spec)[0] if isinstance(e, Path)]
    if not out:
        raise InputError(f"{path}: no files match")
    return out


def expand_with_names(path) -> list[tuple[Path | str, str]]:
    """``[(entry, relative name)]`` of an input spec: the names ids and ``source`` use (a file's
    path relative to the inputs' common folder; a hub dataset's name)."""
    specs = path if isinstance(path, (list, tuple)) else [path]
    if not specs:
        raise InputError("input: empty list of paths")
    expanded = [_expand_one(s) for s in specs]
    roots = [r.resolve() for _, r in expanded if r is not None]
    root = Path(os.path.commonpath(roots)) if roots else None
    out = []
    for entries, _ in expanded:
        for e in entries:
            if isinstance(e, str):
                out.append((e, e.removeprefix("hf://")))
            else:
                out.append((e, Path(os.path.relpath(e.resolve(), root)).as_posix()))
    return out


def input_fingerprint(path: str | Path | list) -> str:
    """xxh64 hex digest over every input file's relative name, size and bytes (streamed).

    Directories and globs expand to their files (a ``save_to_disk`` dir to the files inside it);
    entries are sorted by relative name. A hub dataset is identified by its name only.
    """
    files: list[tuple[str, Path | None]] = []
    for entry, name in expand_with_names(path):
        if isinstance(entry, str):
            files.append((name, None))
        elif entry.is_dir():
            files += [(f"{name}/{f.relative_to(entry).as_posix()}", f) for f in entry.rglob("*") if f.is_file()]
        else:
            files.append((name, entry))
    h = xxhash.xxh64()
    for name, f in sorted(files, key=lambda t: t[0]):
        h.update(name.encode() + b"\0")
        if f is None:
            h.update(b"hub\0")
            continue
        h.update(str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- reading

def read_input(path: str | Path | list, format: str | None = None, id_field: str | None = None,
               text_field: str | None = None, fields: dict[str, str] | None = None,
               max_row_bytes: int = 1_000_000, source: str | None = None, split: str = "train",
               extract_timeout: float | None = 1.0, show_progress: bool = False) -> Ingested:
    """Read files (or a hub dataset) into the canonical table, quarantining bad rows.

    Args:
        path: file, directory, glob, ``save_to_disk`` dir, ``hf://name``, or a list of them.
        format: ``auto`` (None) or one of ``alpaca``, ``sharegpt``, ``messages``, ``text``;
            ``auto`` detects per file (see :mod:`curate.ingest.formats`).
        id_field: field holding row ids (default: ``id`` if present, else ``<file>:<line>``).
        text_field: shorthand for ``fields={"text": text_field}``; with ``format`` auto it
            also forces the ``text`` format.
        fields: canonical name -> source field overrides, e.g. ``{"instruction": "question"}``.
        max_row_bytes: rows larger than this are quarantined as ``row_too_large`` (default 1 MB).
        source: value of the ``source`` column (default: each file's relative name).
        split: split for hub datasets and ``save_to_disk`` DatasetDicts (default ``train``).
        extract_timeout: seconds of text extraction per HTML page or WARC record before it is
            quarantined as ``extraction_timeout`` (default 1.0, FineWeb's; None: no limit).
        show_progress: draw a per-file tqdm bar (default False; ingest reads ~40k rows/s).

    Returns:
        :class:`Ingested` (table, quarantine, files, warnings).

    Raises:
        InputError: nothing matches, unknown format, or the input yields zero rows.
    """
    if not isinstance(max_row_bytes, int) or max_row_bytes <= 0:
        raise ValueError(f"max_row_bytes must be a positive int, got {max_row_bytes!r}")
    fields = check_fields(fields)
    if text_field:
        fields["text"] = text_field
        format = format if format not in (None, "auto") else "text"
    col = Collector(format, id_field, fields, source)
    entries = expand_with_names(path)
    # The vectorised path for one JSON/JSONL file; None = per row.
    if (fast := read_fast(entries, format=format, fields=fields, id_field=id_field, source=source,
                          max_row_bytes=max_row_bytes)) is not None:
        return fast
    files, warnings, empty, unreadable = [], [], [], []
    counts: dict[str, int] = {}
    for entry, name in tqdm(entries, desc="ingest", unit="file", disable=not show_progress or len(entries) < 2):
        files.append(str(entry))
        n0, q0 = len(col.builder), len(col.quarantine)
        records = Counted(read_records(entry, max_row_bytes, split, extract_timeout))
        try:
            n_ok, n_bad = col.add_file(name, records)
            warnings += getattr(records.it, "warnings", [])  # e.g. WARC records that are not HTML pages
        except FileError as e:
            unreadable.append(f"{name}: {e}")
            col.quarantine.append(quarantine_record(name, None, None, RowError("unreadable_file", str(e)),
                                                    _head_repr(entry)))
            counts[name] = records.n + 1  # the file itself is one quarantine record
            check_file_count(name, counts[name], len(col.builder) - n0, len(col.quarantine) - q0)
            continue
        counts[name] = records.n
        check_file_count(name, records.n, n_ok, n_bad)
        log.info("read %s: %d rows, %d quarantined", name, n_ok, n_bad)
        if n_ok + n_bad == 0:
            empty.append(name)
    table = col.builder.build()
    if table.num_rows == 0:
        if unreadable:
            raise InputError(unreadable[0])
        if col.quarantine:
            q = col.quarantine[0]
            raise InputError(f"{', '.join(sorted({q['file'] for q in col.quarantine}))}: no valid rows; "
                             f"{len(col.quarantine)} quarantined ({summary(col.quarantine)}); first at line "
                             f"{q['line']}: {q['error']}")
        raise InputError(f"{empty[0]}: file is empty" if len(empty) == 1 else f"{path}: all {len(empty)} files are empty")
    warnings += [f"{n}: file is empty" for n in empty]
    warnings += [f"{u} (quarantined as one unreadable_file record)" for u in unreadable]
    warnings += [f"{q['file']}: malformed JSON array; the rest of the file from row {q['line']} was quarantined as one record"
                 for q in col.quarantine if q["reason"] == "malformed_json" and "cannot be split" in q["error"]]
    for w in warnings:
        log.warning(w)
    if col.quarantine:
        log.warning("quarantined %d rows (%s)", len(col.quarantine), summary(col.quarantine))
    return Ingested(table=table, quarantine=col.quarantine, files=files, warnings=warnings, record_counts=counts)


def _head_repr(entry: Path) -> str:
    """The first 200 bytes of an unreadable file, as its quarantine record's ``raw``."""
    try:
        with open(entry, "rb") as fh:
            return repr(fh.read(200))[:RAW_CHARS]
    except OSError:
        return ""


def is_path_spec(data) -> bool:
    """True for what :func:`read_input` reads (a path, or a list of paths), not in-memory rows."""
    return isinstance(data, (str, Path)) or (isinstance(data, list) and bool(data) and isinstance(data[0], (str, Path)))


def _some_rows_lack_ids(data: list | pa.Table) -> bool:
    """Whether some rows of ``data`` have a non-null ``id`` and others none (then positional ids name the source)."""
    if isinstance(data, pa.Table):
        if "id" not in data.column_names:
            return False
        nulls = data.column("id").null_count
        return 0 < nulls < data.num_rows
    has = [isinstance(r, dict) and r.get("id") is not None for r in data]
    return any(has) and not all(has)


def from_records(data, format: str | None = None, id_field: str | None = None, source: str = "memory") -> Ingested:
    """Ingest in-memory data: a list of dicts, ``pa.Table``, pandas DataFrame, ``datasets.Dataset``, or a path.

    A table (or DataFrame/Dataset) that already has ``id`` and ``text`` columns (e.g. the output
    of a previous ingest) passes through: its text is used as is, missing canonical columns are
    added as nulls (``source`` as the ``source`` argument), canonical columns are moved first.
    Otherwise rows go through the format adapters; ids default to the row's 0-based index as a
    string (``"0"``, ``"1"``, ...: the positions ``ds.select`` takes), and a quarantine record's
    ``line`` is that index. When some rows carry an ``id`` and others do not, the others get
    ``<source>:<index>`` ids (``"memory:7"``, like a file's ``<file>:<line>``), so a bare index
    cannot collide with another row's own id (``{"id": 1}`` beside the row at index 1).

    Args:
        data: the records.
        format: as in :func:`read_input`.
        id_field: as in :func:`read_input`.
        source: name used for the ``source`` column and in ids (default ``memory``).
    """
    if is_path_spec(data):
        return read_input(data, format=format, id_field=id_field)
    if isinstance(data, list):
        # The vectorised path for alpaca/text/messages; None = per row.
        if (fast := records_fast(data, format=format, id_field=id_field, source=source)) is not None:
            return fast
        records = (Record(i, rec, None) for i, rec in enumerate(data))
    else:
        if not isinstance(data, pa.Table):
            if type(data).__module__.startswith("pandas"):
                data = pa.Table.from_pandas(data, preserve_index=False)
            elif type(data).__module__.startswith("datasets"):
                data = dataset_table(data, "train", source)
            else:
                raise TypeError(f"data must be a list of dicts, pa.Table, DataFrame, datasets.Dataset or path, "
                                f"got {type(data).__name__}")
        if {schema.ID, schema.TEXT} <= set(data.column_names) and id_field is None and format in (None, "auto"):
            return Ingested(table=canonical_passthrough(data, source), files=[source],
                            record_counts={source: data.num_rows})
        records = iter_table(data, 2**62, start=0)
    col = Collector(format, id_field, None, source, bare_ids=not (id_field is None and _some_rows_lack_ids(data)))
    counted = Counted(records)
    n_ok, n_bad = col.add_file(source, counted)
    check_file_count(source, counted.n, n_ok, n_bad)
    if n_ok == 0:
        if n_bad:
            raise InputError(f"{source}: no valid rows; {n_bad} quarantined ({summary(col.quarantine)})")
        raise InputError(f"{source}: input is empty")
    return Ingested(table=col.builder.build(), quarantine=col.quarantine, files=[source],
                    record_counts={source: counted.n})
