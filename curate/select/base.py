"""The contract every selection method follows: exact budgets, seeds, reasons, ledger extras.

A selection method (CaR, kMQ, k-center, RDS+, ZIP-FIT, SAE, ...) subclasses
:class:`BudgetSelector` and implements one method, ``pick(table, ctx, k) -> Picks``: the row
indices it chooses, in the order it chose them, plus the score it ranked by and per-row extras.
The base class turns that into a :class:`~curate.core.stage.Selection` and guarantees, for every
method alike:

* **Budgets** (``budget:``) are a row count (``1000``), a fraction of the rows reaching the stage
  (``0.05``), or a token budget (``{tokens: 500000}``): tokens are counted with the proxy LM's
  tokenizer by the ``token_count`` annotator (column ``n_tokens``), which is added automatically
  when the column is missing.
* **Exactness**: a count budget keeps exactly ``k`` rows when the pool has at least ``k``
  (``pick`` returning fewer is a bug and raises); a smaller pool keeps every row, with a warning.
  A token budget keeps the longest prefix of the pick order whose tokens fit, never more.
* **Reasons**: every unselected row gets a declared reason: the method's own (e.g.
  ``below_cluster_quota``, ``off_target``) where ``pick`` gives one, else
  ``not_selected_by_budget``.
* **Ledger**: the method's ranking score becomes the provenance column ``<method>_score``; extras
  such as ``cluster_id``, ``round``, ``n_features`` or ``target_sim`` land next to it.

Token budgets: methods whose pick order is *nested* (the first k picks of a larger budget equal
the picks of budget k: greedy and ranking methods) serve a token budget by taking a prefix of one
long pick order. Methods whose picks depend on k as a whole (per-cluster allocations: CaR, kMQ)
set ``nested = False``; the base then searches for the largest row count whose picks fit the token
budget (bisection, about log2(n) calls of ``pick``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from numbers import Integral
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.budget import resolve_budget, validate_budget
from curate.core.schema import TOKENS_COLUMN
from curate.core.stage import Selection, Selector, StageContext

log = logging.getLogger(__name__)

NOT_SELECTED = "not_selected_by_budget"


def is_token_budget(budget) -> bool:
    """True for ``{"tokens": N}``."""
    return isinstance(budget, dict)


def validate_selection_budget(budget, name: str = "budget") -> None:
    """Raise ValueError naming ``name`` unless ``budget`` is a count, a fraction or ``{tokens: N}``.

    Args:
        budget: int >= 0 (rows), float in (0, 1] (fraction of the rows reaching the stage), or a
            mapping ``{"tokens": N}`` with an int N >= 1.
        name: parameter name for the message (default "budget").
    """
    if isinstance(budget, dict):
        if set(budget) != {"tokens"}:
            raise ValueError(f"{name} as a mapping must be {{tokens: N}}, got {budget!r}")
        n = budget["tokens"]
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"{name}.tokens must be an int >= 1 (a zero budget would silently give an "
                             f"empty dataset), got {n!r}")
        return
    validate_budget(budget, name)


@dataclass
class Picks:
    """What a selection method chose, before the base class applies the budget.

    Attributes:
        order: (m,) int64 row indices in the order the method picked them (no repeats). For a
            count budget k the first k are selected; a method must return at least
            ``min(k, n)`` picks.
        score: optional (n,) float64 score the method ranked by (NaN where undefined); it lands
            in the ledger as ``<method>_score``.
        extras: per-row (n,) arrays for the ledger (``cluster_id``, ``round``, ``target_sim``, ...).
        reasons: optional (n,) object array: the reason an *unselected* row was not taken (None
            where the method has nothing more specific than ``not_selected_by_budget``).
    """

    order: np.ndarray
    score: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: np.ndarray | None = None


class BudgetSelector(Selector):
    """Base of selection methods with a budget (see module docstring for the guarantees).

    Subclasses set ``name``, ``reasons`` (their own codes; ``not_selected_by_budget`` is added),
    take ``budget`` and ``seed`` keyword arguments (validated with :meth:`_init_budget`), and
    implement :meth:`pick`. ``method_prerequisites(columns)`` lists annotators the method needs;
    a method reading columns extends ``required_columns()`` (``super()`` adds ``n_tokens`` for a
    token budget).
    """

    budgeted = True
    nested: ClassVar[bool] = True
    reasons: ClassVar[dict[str, str]] = {NOT_SELECTED: "outside the method's budget"}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.reasons = {**cls.reasons, NOT_SELECTED: "outside the method's budget"}

    def _init_budget(self, budget, seed: int) -> None:
        validate_selection_budget(budget)
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.budget = budget
        self.seed = seed

    # -- what subclasses implement -------------------------------------------------------
    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:  # pragma: no cover - abstract
        """Choose ``k`` rows of ``table`` (``0 <= k <= len(table)``), in pick order."""
        raise NotImplementedError

    def method_prerequisites(self, columns: list[str]) -> list:
        """Annotators the method needs when their columns are missing (default none)."""
        return []

    # -- the contract ------------------------------------------------------------------------
    def required_columns(self) -> list[str]:
        """``n_tokens`` under a token budget (the method's own columns come first in subclasses)."""
        return [TOKENS_COLUMN] if is_token_budget(self.budget) else []

    def prerequisites(self, columns: list[str]) -> list:
        steps = list(self.method_prerequisites(columns))
        if is_token_budget(self.budget) and TOKENS_COLUMN not in columns:
            from curate.score.tokens import TokenCount

            steps.append(TokenCount())
        return steps

    def select(self, table: pa.Table, ctx: StageContext | None) -> Selection:
        n = len(table)
        if is_token_budget(self.budget):
            picks, k = self._pick_tokens(table, ctx, int(self.budget["tokens"]))
        else:
            k = resolve_budget(self.budget, n)
            if isinstance(self.budget, Integral) and self.budget > n:
                log.warning("%s: budget %d is larger than the %d rows reaching it; keeping all of them",
                            self.name, self.budget, n)
            picks = self.pick(table, ctx, k) if k else _empty_picks(n)
        return self._to_selection(picks, n, k)

    def _pick_tokens(self, table: pa.Table, ctx, limit: int) -> tuple[Picks, int]:
        """Picks and the row count to keep under a token budget (never more than ``limit``)."""
        n = len(table)
        if TOKENS_COLUMN not in table.column_names:
            raise KeyError(f"{self.name}: a token budget needs the {TOKENS_COLUMN!r} column "
                           "(the token_count stage adds it)")
        tokens = table.column(TOKENS_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)
        if n == 0 or limit == 0:
            return _empty_picks(n), 0
        if tokens.sum() <= limit:
            log.warning("%s: token budget %d covers the whole pool (%d tokens); keeping all %d rows",
                        self.name, limit, int(tokens.sum()), n)
            return self.pick(table, ctx, n), n

        def fitting(p: Picks, k: int) -> int:
            csum = np.cumsum(tokens[p.order[:k]])
            return int(np.searchsorted(csum, limit, side="right"))

        mean = max(float(tokens.mean()), 1.0)
        if self.nested:
            k = min(n, max(1, math.ceil(1.2 * limit / mean)))
            while True:
                p = self.pick(table, ctx, k)
                m = fitting(p, k)
                if m < k or k == n:
                    return p, m
                k = min(n, 2 * k)
        # not nested: the largest k whose k picks all fit (bisection on k)
        lo, hi, best = 0, n, (_empty_picks(n), 0)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            p = self.pick(table, ctx, mid)
            if fitting(p, mid) == mid:
                lo, best = mid, (p, mid)
            else:
                hi = mid - 1
        return best

    def _to_selection(self, picks: Picks, n: int, k: int) -> Selection:
        order = np.asarray(picks.order, dtype=np.int64)
        if len(order) < k:
            raise RuntimeError(f"{self.name}: picked {len(order)} rows for a budget of {k} out of {n}")
        chosen = order[:k]
        if len(np.unique(chosen)) != len(chosen):
            raise RuntimeError(f"{self.name}: the same row was picked twice")
        keep = np.zeros(n, dtype=bool)
        keep[chosen] = True
        reason = np.full(n, None, dtype=object)
        if picks.reasons is not None:
            reason[:] = picks.reasons
        reason[keep] = None
        reason[~keep & np.array([r is None for r in reason], dtype=bool)] = NOT_SELECTED
        extras = {name: np.asarray(v) for name, v in picks.extras.items()}
        if picks.score is not None:
            extras[f"{self.name}_score"] = np.asarray(picks.score, dtype=np.float64)
        return Selection(keep=keep, reason=reason, score=picks.score, extras=extras)


def _empty_picks(n: int) -> Picks:
    return Picks(order=np.zeros(0, dtype=np.int64))


def pick_order_from_scores(score: np.ndarray, descending: bool = True) -> np.ndarray:
    """Row indices sorted by score (NaN last), ties broken by input position.

    Args:
        score: (n,) float scores.
        descending: highest first (default True).

    Returns:
        (n,) int64 order.
    """
    s = np.asarray(score, dtype=np.float64)
    key = np.where(np.isnan(s), np.inf, -s if descending else s)
    return np.argsort(key, kind="stable").astype(np.int64)


