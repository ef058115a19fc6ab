"""The per-row ingest path: records of successive files, adapted one by one into one table."""
from __future__ import annotations

from collections.abc import Iterable

from curate.core.errors import InputError
from curate.ingest.build import TableBuilder
from curate.ingest.formats import (
    DETECT_N,
    FORMATS,
    RowError,
    check_fields,
    detect_format,
)
from curate.ingest.ids import duplicate_id_error, row_id
from curate.ingest.quarantine import RAW_CHARS, quarantine_record, raw_of
from curate.ingest.readers.base import Record
from curate.ingest.records import record_format


class Collector:
    """Adapts records of successive files into one :class:`TableBuilder`, tracking ids and quarantine.

    Args:
        format (str | None): ``auto`` (None) or a format name; ``auto`` detects per file.
        id_field (str | None): as in :func:`curate.ingest.read.read_input`.
        fields (dict | None): name overrides (:func:`curate.ingest.formats.check_fields`).
        source (str | None): the ``source`` column's value; None uses each file's name.
        bare_ids (bool): positional ids are the bare record number (in-memory rows, numbered
            from 0; default False: ``<file>:<line>``).

    Raises:
        ValueError: an unknown ``format`` or a bad ``fields``.
    """

    def __init__(self, format: str | None, id_field: str | None, fields: dict | None, source: str | None,
                 bare_ids: bool = False):
        self.format = format or "auto"
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        self.fields = check_fields(fields)
        self.id_field = id_field
        self.bare_ids = bare_ids
        self.source = source
        self.builder = TableBuilder()
        self.quarantine: list[dict] = []
        self.seen: dict[str, str] = {}  # id -> "file:line" where it was first used

    def add_file(self, name: str, records: Iterable[Record]) -> tuple[int, int]:
        """Consume one file's records; return (rows kept, rows quarantined).

        Args:
            name (str): the file's relative name (ids, quarantine records, default ``source``).
            records (Iterable[Record]): the file's records, as a reader yields them.

        Raises:
            InputError: ``auto`` format and the first records match no format.
            FileError: from the reader, for a file that is not what its suffix claims.
        """
        buffered, fmt = [], self.format
        n0, q0 = len(self.builder), len(self.quarantine)
        source = self.source or name
        it = iter(records)
        for item in it:
            buffered.append(item)
            if fmt != "auto" or sum(isinstance(r.value, dict) for r in buffered) >= DETECT_N:
                break
        if fmt == "auto":
            fmt = detect_format([r.value for r in buffered if isinstance(r.value, dict)], self.fields)
            if fmt is None and any(isinstance(r.value, dict) for r in buffered):
                keys = sorted({k for r in buffered if isinstance(r.value, dict) for k in r.value})[:12]
                raise InputError(f"{name}: cannot detect the format from keys {keys}; pass format= one of "
                                 f"{FORMATS[1:]} and/or fields=")
        # No format only when no record is a dict: every row is quarantined before adapting.
        adapt = record_format(fmt, self.fields).adapt if fmt else None
        for line, rec, raw in (x for src in (buffered, it) for x in src):
            if isinstance(rec, RowError):
                self._bad(name, line, None, rec, raw)  # readers give the raw text of a row they cannot parse
                continue
            rid = None
            try:
                if not isinstance(rec, dict):
                    raise RowError("wrong_type", f"row must be a JSON object, got {type(rec).__name__}")
                rid, id_key = row_id(rec, self.id_field, name, line, self.bare_ids)
                canon, consumed = adapt(rec)
            except RowError as e:
                self._bad(name, line, rid, e, raw[:RAW_CHARS] if raw is not None else raw_of(rec))
                continue
            place = f"{name}:{line}"
            first = self.seen.get(rid)
            if first is not None:
                self._bad(name, line, rid, duplicate_id_error(rid, place, first),
                          raw[:RAW_CHARS] if raw is not None else raw_of(rec))
                continue
            self.seen[rid] = place
            consumed.add(id_key)
            consumed.discard(None)
            extras = {k: v for k, v in rec.items() if k not in consumed} if len(rec) > len(consumed) else None
            self.builder.add(rid, canon, source, extras)
        return len(self.builder) - n0, len(self.quarantine) - q0

    def _bad(self, name: str, line: int, rid: str | None, err: RowError, raw: str) -> None:
        self.quarantine.append(quarantine_record(name, line, rid, err, raw))
