"""File readers: one small module per file format, picked by suffix (:data:`READERS`).

A reader yields a file's records (:class:`~curate.ingest.readers.base.Record`: line or row
number, parsed value or RowError, raw text) and nothing else; see
:mod:`curate.ingest.readers.base`. Folders written by ``datasets.save_to_disk`` and hub
datasets are read by :mod:`curate.ingest.readers.hf`. Web pages (``.html``/``.htm`` files and
``.warc``/``.warc.gz`` responses, :data:`WEB_READERS`) have their main text extracted as they
are read, with a per-page ``extract_timeout``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from curate.core.errors import InputError
from curate.ingest.readers.base import Record
from curate.ingest.readers.delimited import read_csv, read_tsv
from curate.ingest.readers.hf import read_hf_dir, read_hub
from curate.ingest.readers.html import read_html
from curate.ingest.readers.json_array import read_json
from curate.ingest.readers.jsonl import read_jsonl
from curate.ingest.readers.parquet import read_parquet
from curate.ingest.readers.warc import read_warc
from curate.ingest.web.pool import DEFAULT_TIMEOUT

# suffix -> reader(path, max_row_bytes); the order is the one error messages list.
READERS: dict[str, Callable[[Path, int], Iterator[Record]]] = {
    ".jsonl": read_jsonl, ".ndjson": read_jsonl, ".json": read_json, ".parquet": read_parquet,
    ".csv": read_csv, ".tsv": read_tsv,
    ".jsonl.gz": read_jsonl, ".ndjson.gz": read_jsonl, ".json.gz": read_json,
    ".jsonl.zst": read_jsonl, ".ndjson.zst": read_jsonl, ".json.zst": read_json,
    ".html": read_html, ".htm": read_html, ".warc": read_warc, ".warc.gz": read_warc,
}
# the readers above that extract web pages: they also take ``timeout=`` (seconds per page)
WEB_READERS = {".html", ".htm", ".warc", ".warc.gz"}
SUPPORTED_SUFFIXES = tuple(READERS)
_LONGEST_FIRST = sorted(SUPPORTED_SUFFIXES, key=len, reverse=True)


def suffix_of(p: Path) -> str:
    """``p``'s supported suffix (``.jsonl.gz`` before ``.gz``), else its last suffix, lower-cased."""
    name = p.name.lower()
    return next((s for s in _LONGEST_FIRST if name.endswith(s)), p.suffix.lower())


def read_records(entry: Path | str, max_row_bytes: int, split: str,
                 extract_timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[Record]:
    """The records of one input entry: a file, a ``save_to_disk`` folder, or a hub name (str).

    Args:
        entry (Path | str): as expanded by :mod:`curate.ingest.read`.
        max_row_bytes (int): larger rows are ``row_too_large`` records.
        split (str): the split of a DatasetDict or hub dataset.
        extract_timeout (float | None): seconds one web page's text extraction may take
            (HTML and WARC inputs; default 1, as FineWeb); None = no limit.

    Raises:
        InputError: an unsupported suffix, or a hub dataset that cannot be loaded (both at
            once); a reader's :class:`~curate.ingest.readers.base.FileError` comes while iterating.
        ValueError: ``extract_timeout`` is not a positive number or None (for a web page input).
    """
    if isinstance(entry, str):
        return read_hub(entry, max_row_bytes, split)
    if entry.is_dir():
        return read_hf_dir(entry, max_row_bytes, split)
    suf = suffix_of(entry)
    reader = READERS.get(suf)
    if reader is None:
        raise InputError(f"{entry}: unsupported file type {suf!r} (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    if suf in WEB_READERS:
        if extract_timeout is not None and not extract_timeout > 0:
            raise ValueError(f"extract_timeout must be a positive number of seconds or None, got {extract_timeout!r}")
        return reader(entry, max_row_bytes, timeout=extract_timeout)
    return reader(entry, max_row_bytes)
