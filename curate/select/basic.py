"""Baseline selectors: random subset, top-k by a score column, score threshold/quantile filter.

``random`` is the control every selection method is compared against (same budget, same seed
rules); ``top_k`` and ``score_filter`` turn any score column (perplexity, IFD, quality, ...)
into a selection, e.g. Ankner et al.'s "low/medium/high perplexity" rules.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.registry import register
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores
from curate.stage import Selection, Selector, StageContext


# Score columns built-in annotators make: a top_k / score_filter on one of them adds that
# annotator (with its defaults) when the column is missing, so
# curate.select(rows, method="top_k", score="quality", budget=100) works on raw rows.
SCORE_PRODUCERS = {"quality": "quality_model", "ppl_response": "perplexity", "ppl_text": "perplexity",
                   "ifd": "ifd", "ifd_loss_cond": "ifd", "ifd_loss_uncond": "ifd", "ifd_truncated": "ifd"}


def score_producer(column: str, columns: list[str]) -> list:
    """The annotator that makes ``column`` (as a one-item list), or [] if present or unknown."""
    if column in columns:
        return []
    name = SCORE_PRODUCERS.get(column) or ("heuristics" if column.startswith("h_") else None)
    if name is None:
        return []
    from curate.registry import get_stage

    return [get_stage(name)()]


def _score_column(table: pa.Table, column: str, stage: str) -> np.ndarray:
    if column not in table.column_names:
        raise KeyError(f"{stage}: score column {column!r} not in table; have {table.column_names} "
                       "(add the stage that computes it earlier in `stages`)")
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)


@register
class RandomSelect(BudgetSelector):
    """Keep a uniformly random subset of ``budget`` rows (seeded, order-preserving).

    The rows are taken in the order of one seeded permutation, so a smaller budget's subset is
    contained in a larger one's (and a token budget is a prefix of the same order).

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        seed: RNG seed (default 0); same seed + same input gives the same subset.
    """

    name = "random"
    reasons = {"not_sampled": "not drawn in the random subset"}

    def __init__(self, *, budget, seed: int = 0):
        self._init_budget(budget, seed)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        n = len(table)
        order = np.random.default_rng(self.seed).permutation(n)
        return Picks(order=order, reasons=np.full(n, "not_sampled", dtype=object))


@register
class TopK(BudgetSelector):
    """Keep the ``budget`` rows with the highest (or lowest) value of a score column.

    NaN scores rank last in either direction. Ties are broken by input order (stable sort).

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        score: name of the score column (required), e.g. ``quality`` or ``ifd``.
        ascending: keep the lowest scores instead (default False), e.g. for perplexity.
    """

    name = "top_k"
    reasons = {"below_top_k": "score not within the budget's best rows"}

    def __init__(self, *, budget, score: str, ascending: bool = False):
        self._init_budget(budget, 0)
        del self.seed  # deterministic: no randomness to seed
        if not isinstance(score, str) or not score:
            raise ValueError(f"score must name a column, got {score!r}")
        self.score, self.ascending = score, ascending

    def method_prerequisites(self, columns: list[str]) -> list:
        return score_producer(self.score, columns)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        s = _score_column(table, self.score, self.name)
        return Picks(order=pick_order_from_scores(s, descending=not self.ascending), score=s,
                     reasons=np.full(len(s), "below_top_k", dtype=object))


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

    def prerequisites(self, columns: list[str]) -> list:
        return score_producer(self.column, columns)

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        s = _score_column(table, self.column, self.name)
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
