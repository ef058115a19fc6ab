"""Quarantine records, as both ingest paths write them.

A record is ``{"file", "line", "id", "reason", "error", "raw"}``: ``reason`` is one of
:data:`curate.ingest.formats.REASONS`, ``raw`` at most :data:`RAW_CHARS` characters of the row as
read (or the parsed row rendered as JSON when the reader kept no raw text).
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from curate.ingest.formats import RowError

RAW_CHARS = 500  # characters of a bad row kept in its quarantine record


def raw_of(rec: Any) -> str:
    """A parsed row as JSON text (``repr`` if not JSON-encodable), cut to :data:`RAW_CHARS`."""
    try:
        return json.dumps(rec, ensure_ascii=False, default=str)[:RAW_CHARS]
    except (TypeError, ValueError):
        return repr(rec)[:RAW_CHARS]


def quarantine_record(file: str, line: int | None, row_id: str | None, err: RowError, raw: str) -> dict:
    """One quarantine record.

    Args:
        file (str): the input's relative name.
        line (int | None): 1-based line or row number; None for a whole file.
        row_id (str | None): the row's id, None when it has none (yet).
        err (RowError): why the row is quarantined.
        raw (str): the row's raw text, already cut to :data:`RAW_CHARS`.
    """
    return {"file": file, "line": line, "id": row_id, "reason": err.reason, "error": err.message, "raw": raw}


def summary(quarantine: list[dict]) -> str:
    """``"3 missing_field, 1 empty_text"``: the reasons of ``quarantine``, most frequent first."""
    counts = Counter(q["reason"] for q in quarantine)
    return ", ".join(f"{n} {r}" for r, n in counts.most_common())
