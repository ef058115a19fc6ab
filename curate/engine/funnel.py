"""What a Selector step removed, for the report: tokens in and out, and examples to read.

Pretraining curation is judged in documents *and* tokens (FineWeb reports both per filter),
and filters are judged by reading what they remove. For every Selector step the Runner records:

* ``tokens_in`` / ``tokens_out``: the sum of the ``n_tokens`` column (made by a ``token_count``
  step earlier in the recipe) before the step and over the rows it keeps; when the step rewrote
  the counted text column (``Selection.rewrite``: C4 line removal, PII, substring dedup), the
  changed rows are counted again with the same tokenizer, so ``tokens_out`` is exact. Without a
  ``token_count`` step both are None.
* ``examples``: for each drop reason up to ``n`` dropped rows (id and the first ``max_chars`` of
  their text), and for a rewriting step up to ``n`` changed rows with the lines it removed. The
  rows are drawn with a generator seeded by the step's cache key, so a cached rerun shows the
  same examples.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.schema import TOKENS_COLUMN

EXAMPLES_PER_REASON = 3
EXAMPLE_CHARS = 600


def total_tokens(table: pa.Table) -> int | None:
    """Sum of ``n_tokens`` over ``table``'s rows, or None when the column is absent."""
    if TOKENS_COLUMN not in table.column_names:
        return None
    return int(pc.sum(table.column(TOKENS_COLUMN)).as_py() or 0)


def recount_rewritten(before: pa.Table, after: pa.Table, counter) -> pa.Table:
    """``after`` with ``n_tokens`` counted again where ``counter``'s text column changed.

    Args:
        before: the step's input table.
        after: the same rows with rewritten columns applied.
        counter: the recipe's ``token_count`` stage (its ``text_column`` and ``model``), or None.
    """
    if counter is None or TOKENS_COLUMN not in after.column_names:
        return after
    col = counter.text_column
    old = before.column(col).to_pylist()
    new = after.column(col).to_pylist()
    changed = [i for i, (a, b) in enumerate(zip(old, new)) if a != b]
    if not changed:
        return after
    from curate.score.tokens import count_tokens

    counts = after.column(TOKENS_COLUMN).to_numpy(zero_copy_only=False).copy()
    counts[changed] = count_tokens(["" if new[i] is None else new[i] for i in changed], counter.model)
    i = after.schema.get_field_index(TOKENS_COLUMN)
    return after.set_column(i, after.schema.field(i), pa.array(counts, after.schema.field(i).type))


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(key[:12], 16) if all(c in "0123456789abcdef" for c in key[:12]) else 0)


def _text_column(table: pa.Table) -> str | None:
    return "text" if "text" in table.column_names else None


def drop_examples(table: pa.Table, keep: np.ndarray, reason: np.ndarray, key: str,
                  n: int = EXAMPLES_PER_REASON, max_chars: int = EXAMPLE_CHARS) -> list[dict]:
    """Up to ``n`` dropped rows per reason: ``{"reason", "id", "text"}`` (text cut at ``max_chars``).

    Args:
        table: the step's input table (n_rows).
        keep: (n_rows,) bool from the Selection.
        reason: (n_rows,) reason codes.
        key: the step's cache key (seeds the draw).
    """
    col = _text_column(table)
    if col is None or keep.all():
        return []
    rng, out = _rng(key), []
    ids = table.column("id")
    for r in sorted({str(x) for x in reason[~keep]}):
        rows = np.flatnonzero(~keep & (reason.astype(str) == r))
        for i in sorted(rng.choice(rows, size=min(n, len(rows)), replace=False).tolist()):
            text = table.column(col)[i].as_py() or ""
            out.append({"reason": r, "id": ids[i].as_py(), "text": text[:max_chars],
                        "chars": len(text)})
    return out


def rewrite_examples(before: pa.Table, after: pa.Table, keep: np.ndarray, key: str,
                     n: int = EXAMPLES_PER_REASON, max_chars: int = EXAMPLE_CHARS) -> list[dict]:
    """Up to ``n`` kept rows whose text the step changed: ``{"reason": "rewritten", "id", "removed"}``.

    ``removed`` is the text's lines that are gone (or, when no whole line went, the characters
    removed, by count), cut at ``max_chars``.
    """
    col = _text_column(before)
    if col is None:
        return []
    old, new = before.column(col).to_pylist(), after.column(col).to_pylist()
    changed = np.flatnonzero(keep & np.array([a != b for a, b in zip(old, new)], dtype=bool))
    if not len(changed):
        return []
    rng, out = _rng(key), []
    ids = before.column("id")
    for i in sorted(rng.choice(changed, size=min(n, len(changed)), replace=False).tolist()):
        a, b = old[i] or "", new[i] or ""
        kept = set(b.splitlines())
        gone = [line for line in a.splitlines() if line not in kept]
        removed = "\n".join(gone) if gone else f"({len(a) - len(b)} characters removed inside lines)"
        out.append({"reason": "rewritten", "id": ids[i].as_py(), "removed": removed[:max_chars],
                    "chars_before": len(a), "chars_after": len(b)})
    return out
