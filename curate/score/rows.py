"""Per-row text fields the scorers need, read from the canonical columns.

A row is *structured* when it has an instruction and an output (from the ``instruction`` /
``input`` / ``output`` columns, or failing those the first user and the first assistant turn of
``messages``); otherwise it is plain text (``text``) and conditioned scores are NaN for it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.core import schema


@dataclass
class RowFields:
    """Text fields of n rows (lists of str, "" where absent) and which rows are structured."""

    instruction: list[str]
    input: list[str]
    output: list[str]
    text: list[str]
    structured: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.text)

    def slice(self, start: int, stop: int) -> "RowFields":
        return RowFields(self.instruction[start:stop], self.input[start:stop], self.output[start:stop],
                         self.text[start:stop], self.structured[start:stop])


def _col(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * len(table)


def row_fields(table: pa.Table) -> RowFields:
    """Extract instruction/input/output/text for every row of a canonical table."""
    ins, inp, out = _col(table, schema.INSTRUCTION), _col(table, schema.INPUT), _col(table, schema.OUTPUT)
    txt, msgs = _col(table, schema.TEXT), _col(table, schema.MESSAGES)
    I, X, O, T, S = [], [], [], [], []
    for i in range(len(table)):
        a, x, o = ins[i], inp[i], out[i]
        if (a is None or o is None) and msgs[i]:
            # Single-turn view of a conversation: first user turn and the assistant reply after it.
            user = next((m for m in msgs[i] if m.get("role") == "user"), None)
            if user is not None:
                k = msgs[i].index(user)
                reply = next((m for m in msgs[i][k + 1:] if m.get("role") == "assistant"), None)
                if reply is not None:
                    a, x, o = user.get("content") or "", "", reply.get("content") or ""
        structured = a is not None and o is not None
        I.append(a or "")
        X.append(x or "")
        O.append(o or "")
        t = txt[i]
        if t is None:
            t = car_string(a or "", x or "", o or "") if structured else ""
        T.append(t)
        S.append(structured)
    return RowFields(I, X, O, T, np.array(S, dtype=bool))


def car_string(instruction: str, input: str, output: str) -> str:
    """CaR's IQS input string (Ge et al. 2024): "Instruction: … [Input: …] Response: …".

    The released APE data omits " Input: …" when the input is empty, so we do too.
    """
    s = f"Instruction: {instruction}"
    if input and input.strip():
        s += f" Input: {input}"
    return f"{s} Response: {output}"


def parse_car_string(src: str) -> tuple[str, str, str]:
    """Inverse of :func:`car_string` (for label files in CaR's ``src`` format).

    Returns:
        (instruction, input, output); output is "" when there is no " Response: " part.
    """
    s = src[len("Instruction: "):] if src.startswith("Instruction: ") else src
    head, sep, output = s.partition(" Response: ")
    if not sep and head.startswith("Response: "):
        head, output = "", head[len("Response: "):]
    instruction, sep2, input = head.partition(" Input: ")
    return instruction.strip(), input.strip() if sep2 else "", output.strip()
