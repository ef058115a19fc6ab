"""Baseline selectors: random subset, top-k by a score column, score threshold/quantile filter.

``random`` is the control every selection method is compared against (same budget, same seed
rules); ``top_k`` and ``score_filter`` turn any score column (perplexity, IFD, quality, ...)
into a selection, e.g. Ankner et al.'s "low/medium/high perplexity" rules.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import score_column
from curate.core.stage import StageContext
from curate.score.producers import score_producer
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores


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

    def required_columns(self) -> list[str]:
        return [self.score] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        return score_producer(self.score, columns)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        s = score_column(table, self.score, self.name)
        return Picks(order=pick_order_from_scores(s, descending=not self.ascending), score=s,
                     reasons=np.full(len(s), "below_top_k", dtype=object))


