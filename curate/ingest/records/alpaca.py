"""The ``alpaca`` format: ``instruction`` + ``output`` (required) and ``input`` (optional).

Aliases and overrides: :func:`curate.ingest.formats.field_keys`. ``messages`` stays null.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core import schema
from curate.ingest.formats import (
    RowError,
    check_utf8,
    field_keys,
    missing_field_error,
    render_text,
)
from curate.ingest.kernels import (
    Fallback,
    as_numpy,
    column_array,
    join_parts,
    replace_rows,
)
from curate.ingest.records.base import Check, Columns, RecordFormat, require_str


def empty_error() -> RowError:
    """The error of a row whose instruction, input and output are all blank."""
    return RowError("empty_text", "instruction, input and output are all blank")


class Alpaca(RecordFormat):
    """instruction / input / output rows (see the module docstring)."""

    name = "alpaca"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields)
        self.instruction_keys = field_keys("instruction", fields)
        self.output_keys = field_keys("output", fields)
        self.input_keys = field_keys("input", fields)

    def adapt(self, rec: dict):
        ki, ins = require_str(rec, self.instruction_keys, True)
        ko, out = require_str(rec, self.output_keys, True)
        kx, inp = require_str(rec, self.input_keys, False)
        text = render_text(ins, inp, out)
        if not text:
            raise empty_error()
        check_utf8(text)
        return (ins, inp, out, None, text), {ki, ko, kx}

    def adapt_columns(self, records: list[dict], keys: set[str], ok: np.ndarray) -> Columns:
        n = len(records)
        # The per-row adapter picks an alias per row; one alias per file keeps one column.
        ki, ko = _one_alias(keys, self.instruction_keys), _one_alias(keys, self.output_keys)
        kx = _one_alias(keys, self.input_keys)
        ins, inp, out = (column_array(records, k, pa.string()) if k else pa.nulls(n, pa.string()) for k in (ki, kx, ko))
        no_ins, no_out = as_numpy(ins.is_null()), as_numpy(out.is_null())
        text, unsafe = join_parts([ins, inp, out])
        todo = np.flatnonzero(unsafe & ok & ~no_ins & ~no_out)
        if len(todo):  # Python's exact strip/join for the few rows with non-ASCII or space edges
            text = replace_rows(text, todo, [render_text(*(records[i].get(k) for k in (ki, kx, ko))) for i in todo])
        checks = [Check(no_ins, missing_field_error(self.instruction_keys)),
                  Check(no_out, missing_field_error(self.output_keys)),
                  Check(as_numpy(pc.equal(text, "")), empty_error())]
        return Columns(text=text, canon={schema.INSTRUCTION: ins, schema.INPUT: inp, schema.OUTPUT: out},
                       checks=checks, consumed={k for k in (ki, ko, kx) if k},
                       strings={k: c for k, c in ((ki, ins), (kx, inp), (ko, out)) if k})


def _one_alias(present: set[str], keys: tuple[str, ...]) -> str | None:
    hits = [k for k in keys if k in present]
    if len(hits) > 1:
        raise Fallback(f"several aliases of one field: {hits}")
    return hits[0] if hits else None
