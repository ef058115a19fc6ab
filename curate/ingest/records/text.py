"""The ``text`` format: a plain ``text`` field (pretraining pools), kept unchanged.

Structured fields stay null; ``fields={"text": ...}`` renames the field.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.ingest.formats import RowError, check_utf8, field_keys, missing_field_error
from curate.ingest.kernels import as_numpy, column_array, join_parts, replace_rows
from curate.ingest.records.base import Check, Columns, RecordFormat, require_str


def empty_error(key: str) -> RowError:
    """The error of a row whose text field ``key`` is blank."""
    return RowError("empty_text", f"field {key!r} is blank")


class Text(RecordFormat):
    """Plain-text rows (see the module docstring)."""

    name = "text"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields)
        self.key = field_keys("text", fields)[0]

    def adapt(self, rec: dict):
        kt, text = require_str(rec, (self.key,), False)
        if text is None:
            raise missing_field_error((self.key,))
        if not text.strip():
            raise empty_error(kt)
        check_utf8(text)
        return (None, None, None, None, text), {kt}

    def adapt_columns(self, records: list[dict], keys: set[str], ok: np.ndarray) -> Columns:
        kt = self.key
        col = column_array(records, kt, pa.string()) if kt in keys else pa.nulls(len(records), pa.string())
        missing = as_numpy(col.is_null())
        text, unsafe = join_parts([col])
        todo = np.flatnonzero(unsafe & ok & ~missing)
        if len(todo):  # str.strip decides blankness for non-ASCII or space edges
            text = replace_rows(text, todo, [t if (t := records[i][kt]).strip() else "" for i in todo])
        checks = [Check(missing, missing_field_error((kt,))), Check(as_numpy(pc.equal(text, "")), empty_error(kt))]
        return Columns(text=text, canon={}, checks=checks, consumed={kt}, strings={kt: col})
