"""curate.filters.score"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import score_column
from curate.core.stage import Selection, Selector, StageContext
from curate.score.producers import score_producer


@register
class ScoreFilter(Selector):
    """Keep rows whose score lies within absolute bounds and/or a quantile range.

    Quantiles are computed over the non-NaN scores of the rows reaching this stage; rows with a
    NaN score are dropped as ``missing_score`` unless ``keep_missing``.
    ``quantile_range: [0.25, 0.75]`` is Ankner et al.'s "medium" perplexity rule at 50%.

    Args:
        column: score column (required).
        min: drop rows with score < min (default None).
        max: drop rows with score > max (default None).
        quantile_range: [lo, hi] with 0 <= lo < hi <= 1 (default None).
        keep_missing: keep rows whose score is NaN (default False).
    """

    name = "score_filter"
    reasons = {
        "below_min": "score < min",
        "above_max": "score > max",
        "outside_quantile_range": "score outside the requested quantile range",
        "missing_score": "score is NaN / missing",
    }

    def __init__(self, *, column: str, min: float | None = None, max: float | None = None,
                 quantile_range: list[float] | None = None, keep_missing: bool = False):
        if min is not None and max is not None and min > max:
            raise ValueError(f"min ({min}) > max ({max})")
        if quantile_range is not None:
            if len(quantile_range) != 2 or not 0 <= quantile_range[0] < quantile_range[1] <= 1:
                raise ValueError(f"quantile_range must be [lo, hi] with 0 <= lo < hi <= 1, got {quantile_range!r}")
            quantile_range = [float(q) for q in quantile_range]
        self.column, self.min, self.max = column, min, max
        self.quantile_range, self.keep_missing = quantile_range, keep_missing

    def required_columns(self) -> list[str]:
        return [self.column]

    def prerequisites(self, columns: list[str]) -> list:
        return score_producer(self.column, columns)

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        s = score_column(table, self.column, self.name)
        reason = np.full(len(s), None, dtype=object)
        nan = np.isnan(s)
        if self.quantile_range is not None and (~nan).any():
            lo, hi = np.quantile(s[~nan], self.quantile_range)
            reason[~nan & ((s < lo) | (s > hi))] = "outside_quantile_range"
        if self.max is not None:
            reason[~nan & (s > self.max)] = "above_max"
        if self.min is not None:
            reason[~nan & (s < self.min)] = "below_min"
        if not self.keep_missing:
            reason[nan] = "missing_score"
        keep = np.array([r is None for r in reason], dtype=bool)
        return Selection(keep=keep, reason=reason, score=s)
