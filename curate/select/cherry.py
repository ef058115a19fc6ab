"""Cherry LLM's IFD selection: drop IFD > 1 and over-long rows, keep the highest IFD.

Li et al., "From Quantity to Quality: Boosting LLM Performance with Self-Guided Data Selection
for Instruction Tuning" (NAACL 2024, arXiv 2308.12032), the authors' ``data_by_IFD.py``:

1. IFD(Q, A) = s(A|Q) / s(A) for every row (the ``ifd`` annotator, added when missing).
2. Discard rows with IFD > 1 (the instruction does not help predict the answer, which the paper
   reads as misalignment) and rows whose prompt + answer exceeds the scorer's ``max_length``
   (512 tokens by default; their scores cover a cut answer).
3. Keep the ``budget`` rows with the highest IFD among the rest.

A plain ``top_k`` on ``ifd`` skips step 2, and on alpaca-style pools its top rows are exactly the
IFD > 1 rows Cherry throws away.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.stage import StageContext
from curate.score.producers import score_producer
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores

IFD_COLUMNS = ("ifd", "ifd_truncated")


@register
class CherryIFD(BudgetSelector):
    """Top rows by IFD after Cherry LLM's filters (arXiv 2308.12032; docs/methods/cherry_ifd.md).

    Needs the ``ifd`` and ``ifd_truncated`` columns; the ``ifd`` annotator (defaults:
    SmolLM2-135M-Instruct, alpaca template, max_length 512) is added when either is missing; put an
    ``ifd`` stage earlier in the recipe to score with another model or template.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        max_ifd: drop rows with IFD above this (default 1.0, the paper's rule; None keeps them).
        drop_truncated: drop rows whose prompt + answer exceeded the scorer's max_length
            (default True, as Cherry's code does).

    Raises:
        ValueError: fewer rows pass the filters than the budget asks for (filling up with
            IFD > 1 rows would turn the method into its opposite).
    """

    name = "cherry_ifd"
    reasons = {
        "ifd_above_max": "IFD > max_ifd: the instruction does not help predict the answer",
        "ifd_truncated": "prompt + answer longer than the IFD scorer's max_length",
        "missing_ifd": "no IFD (plain-text row, empty answer, or no answer token within max_length)",
        "below_top_ifd": "IFD not within the budget's highest",
    }

    def __init__(self, *, budget, max_ifd: float | None = 1.0, drop_truncated: bool = True):
        self._init_budget(budget, 0)
        del self.seed  # deterministic: no randomness to seed
        check_real(max_ifd, "max_ifd", low=0.0, allow_none=True)
        if not isinstance(drop_truncated, bool):
            raise ValueError(f"drop_truncated must be true or false, got {drop_truncated!r}")
        self.max_ifd, self.drop_truncated = max_ifd, drop_truncated

    def required_columns(self) -> list[str]:
        return list(IFD_COLUMNS) + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        # ifd_truncated comes with ifd from the same annotator (absent from version-1 outputs)
        return score_producer("ifd_truncated", columns)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        missing = [c for c in IFD_COLUMNS if c not in table.column_names]
        if missing:
            raise KeyError(f"cherry_ifd: columns {missing} not in table (an `ifd` stage adds them)")
        ifd = table.column("ifd").to_numpy(zero_copy_only=False).astype(np.float64)
        cut = pc.fill_null(table.column("ifd_truncated"), False).to_numpy(zero_copy_only=False).astype(bool)
        reasons = np.full(len(ifd), "below_top_ifd", dtype=object)
        above = ~np.isnan(ifd) & (ifd > self.max_ifd) if self.max_ifd is not None else np.zeros(len(ifd), bool)
        reasons[above] = "ifd_above_max"
        if self.drop_truncated:  # also rows whose prompt alone filled max_length (IFD NaN)
            reasons[cut & ~above] = "ifd_truncated"
        reasons[np.isnan(ifd) & ~(cut & self.drop_truncated)] = "missing_ifd"
        eligible = reasons == "below_top_ifd"
        if eligible.sum() < k:
            counts = {r: int((reasons == r).sum()) for r in ("ifd_above_max", "ifd_truncated", "missing_ifd")}
            raise ValueError(f"cherry_ifd: only {int(eligible.sum())} of {len(ifd)} rows pass Cherry's filters "
                             f"(dropped: {counts}); the budget asks for {k}")
        order = pick_order_from_scores(np.where(eligible, ifd, np.nan))[: int(eligible.sum())]
        return Picks(order=order, score=ifd, reasons=reasons)
