"""AlpaGasus selection: keep the rows an LLM rates highest (Chen et al., ICLR 2024, arXiv 2307.08701).

AlpaGasus rates each Alpaca triplet 0-5 with ChatGPT (the ``llm_rater`` annotator,
:mod:`curate.score.llm_rating`, reproduces the prompt and the parse rule with any HF causal LM)
and keeps the rows rated >= 4.5 (9,229 of 52,002 in the paper). That threshold rule is a
``score_filter`` on the rating column::

    - {type: llm_rater}
    - {type: score_filter, column: llm_rating, min: 4.5}

``llm_rating`` is the budgeted form: the ``budget`` best-rated rows. Ratings are coarse (a few
distinct values: 3, 3.5, 4, 4.5, 5 for ChatGPT), so ties are broken by a seeded random order, not
by pool position (which would favour whatever came first in the file). ``min_rating`` keeps the
paper's rule as a floor: a budget larger than the rows at or above it is an error rather than a
silent fill with lower-rated rows.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import score_column
from curate.core.stage import StageContext
from curate.score.llm_rating import LLMRater
from curate.select.base import BudgetSelector, Picks

log = logging.getLogger(__name__)

BELOW_MIN = "below_min_rating"
NO_RATING = "no_rating"
BELOW_TOP = "below_top_rating"


def rating_order(rating: np.ndarray, seed: int) -> np.ndarray:
    """Rows by rating, best first; ties (and NaN, last) in a seeded random order.

    Args:
        rating: (n,) float ratings (NaN = none).
        seed: seed of the tie-breaking permutation.

    Returns:
        (n,) int64 order.
    """
    r = np.asarray(rating, np.float64)
    tie = np.random.default_rng(seed).permutation(len(r))
    key = np.where(np.isnan(r), np.inf, -r)
    return np.lexsort((tie, key)).astype(np.int64)


@register
class LLMRating(BudgetSelector):
    """The ``budget`` rows with the highest LLM rating (AlpaGasus; Chen et al., ICLR 2024, arXiv 2307.08701).

    Needs the rating column (``llm_rating``); when it is missing an ``llm_rater`` stage with the
    ``rater`` parameters is added (default: SmolLM2-135M-Instruct, the paper's prompt and parse
    rule: weak, see docs/methods/llm_rating.md for its measured agreement).

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        min_rating: None (default) or a floor, e.g. 4.5 (the paper's threshold): rows below it
            are never taken, and a budget larger than the rows at or above it raises.
        column: rating column (default ``"llm_rating"``).
        rater: parameters of the ``llm_rater`` stage added when ``column`` is missing (default
            None = its defaults), e.g. ``{scoring: expected}``.
        seed: seed of the order among equal ratings (default 0).

    Ledger: ``llm_rating_score`` = the rating. Unselected rows: ``below_min_rating``,
    ``no_rating`` (the rater's answer did not parse) or ``below_top_rating``.
    """

    name = "llm_rating"
    reasons = {BELOW_MIN: "rating below min_rating", NO_RATING: "no parsable rating (NaN)",
               BELOW_TOP: "rating not within the budget's best"}

    def __init__(self, *, budget, min_rating: float | None = None, column: str = "llm_rating",
                 rater: dict | None = None, seed: int = 0):
        self._init_budget(budget, seed)
        check_real(min_rating, "min_rating", allow_none=True)
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must name a column, got {column!r}")
        if rater is not None and not isinstance(rater, dict):
            raise ValueError(f"rater must be a mapping of llm_rater parameters or null, got {rater!r}")
        self.min_rating, self.column, self.rater = min_rating, column, rater
        self._rater()  # validates the rater parameters now, not after ingest

    def _rater(self) -> LLMRater:
        params = dict(self.rater or {})
        params.setdefault("column", self.column)
        try:
            return LLMRater(**params)
        except TypeError as e:
            raise ValueError(f"rater: {e}") from None

    def required_columns(self) -> list[str]:
        return [self.column] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        return [] if self.column in columns else [self._rater()]

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        r = score_column(table, self.column, self.name)
        reasons = np.full(len(r), BELOW_TOP, dtype=object)
        reasons[np.isnan(r)] = NO_RATING
        if self.min_rating is not None:
            reasons[~np.isnan(r) & (r < self.min_rating)] = BELOW_MIN
            ok = int((reasons == BELOW_TOP).sum())
            if ok < k:
                raise ValueError(f"llm_rating: only {ok} of {len(r)} rows are rated >= min_rating={self.min_rating} "
                                 f"({int(np.isnan(r).sum())} unrated); the budget asks for {k}")
        order = rating_order(r, self.seed)
        if self.min_rating is not None:
            order = order[reasons[order] == BELOW_TOP]
        return Picks(order=order, score=r, reasons=reasons)
