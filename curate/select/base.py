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

**Length-neutral selection** (``length_neutral: true``, ``length_bins: 10``, ``length_unit: chars``
or ``tokens``, ``length_tokenizer``: the proxy LM's; every subclass takes them without code of its
own): the budget is split over response-length quantile bins of the pool
(:mod:`curate.select.length_bins`) in the pool's proportions, and the method picks within each bin:

* a nested method (``nested = True``: random, top_k, longest, cherry_ifd, car, rds, zipfit, kcenter,
  sae_greedy) is asked once for its pick order (again with a doubled budget while some bin is
  short), and each bin keeps the first rows of that order that fall in it: the method's own order
  restricted to the bin. This trusts that the order a nested method returns, whatever its length,
  is a prefix of its full order (true of every built-in one). For greedy methods (kcenter,
  sae_greedy) the order is the global greedy order, so a row's gain counts rows of other bins
  that their quota later leaves out.
* a non-nested method (kmq, kmq_iterative, sae_simscale: picks depend on the budget as a whole)
  runs on each bin's rows as its own pool with the bin's quota as budget (its clusters, quotas,
  thresholds and feedback rounds per bin; per-bin scratch folders, so nothing is shared between
  bins by mistake). Cluster ids in the ledger are then per bin.

A length-neutral budget must be a row count or a fraction (a token budget is refused: the bins
would need a token split). The ledger gets ``response_chars`` (and ``response_tokens`` when binning
by tokens) and ``length_bin``; a row the method would have taken but whose bin was full gets the
reason ``length_bin_quota``. The length parameters join a stage's cache key only when
``length_neutral`` is true, the unit and tokenizer only with ``length_unit: tokens``, so existing
keys do not change.
"""
from __future__ import annotations

import functools
import inspect
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
from curate.select.length_bins import (
    LENGTH_BIN_QUOTA,
    LENGTH_BIN_QUOTA_MEANING,
    assign_bins,
    bin_context,
    bin_quotas,
    fill_bins,
    length_edges,
    response_chars,
    response_tokens,
    scatter_rows,
)

log = logging.getLogger(__name__)

NOT_SELECTED = "not_selected_by_budget"
LENGTH_PARAMS = ("length_neutral", "length_bins", "length_unit", "length_tokenizer")  # added to every subclass
LENGTH_UNITS = ("chars", "tokens")
DEFAULT_LENGTH_TOKENIZER = "SmolLM2-135M-Instruct"  # the proxy LM, the model curate eval trains


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
    reasons: ClassVar[dict[str, str]] = {NOT_SELECTED: "outside the method's budget",
                                         LENGTH_BIN_QUOTA: LENGTH_BIN_QUOTA_MEANING}
    length_neutral: bool = False
    length_bins: int = 10
    length_unit: str = "chars"
    length_tokenizer: str = DEFAULT_LENGTH_TOKENIZER

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        cls.reasons = {**cls.reasons, NOT_SELECTED: "outside the method's budget",
                       LENGTH_BIN_QUOTA: LENGTH_BIN_QUOTA_MEANING}
        if "__init__" in cls.__dict__:
            cls.__init__ = _with_length_params(cls.__dict__["__init__"])

    def _init_budget(self, budget, seed: int) -> None:
        validate_selection_budget(budget)
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.budget = budget
        self.seed = seed

    def _init_length(self, length_neutral: bool, length_bins: int, length_unit: str = "chars",
                     length_tokenizer: str = DEFAULT_LENGTH_TOKENIZER) -> None:
        """Validate and store the length-neutral parameters (called after the subclass's ``__init__``)."""
        if not isinstance(length_neutral, bool):
            raise ValueError(f"length_neutral must be true or false, got {length_neutral!r}")
        if isinstance(length_bins, bool) or not isinstance(length_bins, Integral) or length_bins < 2:
            raise ValueError(f"length_bins must be an int >= 2 (10 = deciles), got {length_bins!r}")
        if length_unit not in LENGTH_UNITS:
            raise ValueError(f"length_unit must be one of {list(LENGTH_UNITS)}, got {length_unit!r}")
        if not isinstance(length_tokenizer, str) or not length_tokenizer:
            raise ValueError(f"length_tokenizer must be a tokenizer name or path, got {length_tokenizer!r}")
        if length_neutral and is_token_budget(getattr(self, "budget", None)):
            raise ValueError(f"length_neutral needs a row count or a fraction for the budget, got {self.budget!r} "
                             "(tokens would need a token split over the length bins)")
        self.length_neutral = length_neutral
        self.length_bins = int(length_bins)
        self.length_unit = length_unit
        self.length_tokenizer = length_tokenizer

    def cache_params(self) -> dict:
        """The stage's parameters; the length parameters only when length-neutral, and the unit and
        tokenizer only when counting tokens, so the keys of every existing selector stay what they were."""
        params = super().cache_params()
        unused = LENGTH_PARAMS if not self.length_neutral else \
            ("length_unit", "length_tokenizer") if self.length_unit == "chars" else ()
        for p in unused:
            params.pop(p, None)
        return params

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
            if not k:
                picks = _empty_picks(n)
            elif self.length_neutral:
                picks = self._pick_length_neutral(table, ctx, k)
            else:
                picks = self.pick(table, ctx, k)
        return self._to_selection(picks, n, k)

    def _pick_length_neutral(self, table: pa.Table, ctx, k: int) -> Picks:
        """``k`` picks split over the pool's response-length bins (module docstring)."""
        chars = response_chars(table)
        lengths = chars if self.length_unit == "chars" else response_tokens(table, self.length_tokenizer)
        edges = length_edges(lengths, self.length_bins)
        bin_of = assign_bins(lengths, edges)
        quota = bin_quotas(np.bincount(bin_of, minlength=len(edges) + 1), k)
        picks = self._nested_in_bins(table, ctx, k, bin_of, quota) if self.nested else \
            self._each_bin(table, ctx, bin_of, quota)
        per_unit = {} if self.length_unit == "chars" else {"response_tokens": lengths}
        picks.extras = {**picks.extras, "response_chars": chars, **per_unit, "length_bin": bin_of}
        log.info("%s: length_neutral over %d response-length bins (edges %s %s), quotas %s",
                 self.name, len(quota), [int(e) for e in edges], self.length_unit, quota.tolist())
        return picks

    def _nested_in_bins(self, table: pa.Table, ctx, k: int, bin_of: np.ndarray, quota: np.ndarray) -> Picks:
        """The method's own order restricted to each bin (nested methods)."""
        n, m = len(table), k
        while True:
            try:
                p = self.pick(table, ctx, m)
            except ValueError as e:  # e.g. cherry_ifd: fewer rows pass its filters than asked for
                raise ValueError(f"{self.name}: length_neutral needs {quota.tolist()} rows per response-length "
                                 f"bin; asking the method for {m} rows to fill them failed: {e}") from e
            order = np.asarray(p.order, dtype=np.int64)
            chosen, got = fill_bins(order, bin_of, quota)
            if (got >= quota).all():
                break
            if m >= n or len(order) >= n:
                short = {int(j): f"{int(got[j])}/{int(quota[j])}" for j in np.flatnonzero(got < quota)}
                raise RuntimeError(f"{self.name}: length_neutral: the method ranks too few rows of response-length "
                                   f"bins {short} (found/needed) to fill them")
            m = min(n, 2 * max(m, len(order)))  # a longer prefix of the same (nested) order
        reasons = np.full(n, None, dtype=object) if p.reasons is None else np.asarray(p.reasons, dtype=object).copy()
        # rows of the method's own top k that a full bin displaced: say so, not "below the budget"
        plain = np.zeros(n, bool)
        plain[order[:k]] = True
        plain[chosen] = False
        reasons[plain] = LENGTH_BIN_QUOTA
        return Picks(order=chosen, score=p.score, extras=dict(p.extras), reasons=reasons)

    def _each_bin(self, table: pa.Table, ctx, bin_of: np.ndarray, quota: np.ndarray) -> Picks:
        """The method run on each bin's rows as its own pool, with the bin's quota as budget (non-nested methods)."""
        n = len(table)
        chosen, score = [], None
        reasons = np.full(n, LENGTH_BIN_QUOTA, dtype=object)  # rows of a bin with quota 0
        parts: dict[str, list] = {}
        for j, q in enumerate(quota):
            rows = np.flatnonzero(bin_of == j)
            if not q:
                continue
            p = self.pick(table.take(pa.array(rows)), bin_context(ctx, j), int(q))
            order = np.asarray(p.order, dtype=np.int64)
            if len(order) < q:
                raise RuntimeError(f"{self.name}: picked {len(order)} rows for length bin {j}'s quota of {q}")
            chosen.append(rows[order[:q]])
            reasons[rows] = None if p.reasons is None else np.asarray(p.reasons, dtype=object)
            if p.score is not None:
                score = np.full(n, np.nan) if score is None else score
                score[rows] = p.score
            for name, v in p.extras.items():
                parts.setdefault(name, []).append((rows, np.asarray(v)))
        extras = {name: scatter_rows(n, got) for name, got in parts.items()}
        return Picks(order=np.concatenate(chosen) if chosen else np.zeros(0, np.int64), score=score,
                     extras=extras, reasons=reasons)

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


def _with_length_params(init):
    """Wrap a subclass's ``__init__`` to also take the :data:`LENGTH_PARAMS` (keyword-only).

    The wrapper's signature is the original's plus those parameters, so ``param_names()``,
    ``get_params()``, config validation and ``curate stages`` see them for every method.
    """
    sig = inspect.signature(init)
    params = list(sig.parameters.values())
    if any(p.name in LENGTH_PARAMS for p in params):
        return init  # already wrapped (or declared by hand)
    extra = [inspect.Parameter("length_neutral", inspect.Parameter.KEYWORD_ONLY, default=False),
             inspect.Parameter("length_bins", inspect.Parameter.KEYWORD_ONLY, default=10),
             inspect.Parameter("length_unit", inspect.Parameter.KEYWORD_ONLY, default="chars"),
             inspect.Parameter("length_tokenizer", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_LENGTH_TOKENIZER)]
    var_kw = [p for p in params if p.kind is inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(init)
    def __init__(self, *args, length_neutral: bool = False, length_bins: int = 10, length_unit: str = "chars",
                 length_tokenizer: str = DEFAULT_LENGTH_TOKENIZER, **kwargs):
        init(self, *args, **kwargs)
        # a subclass's __init__ calling a wrapped parent's sets the defaults first, then its own values
        self._init_length(length_neutral, length_bins, length_unit, length_tokenizer)

    __init__.__signature__ = sig.replace(parameters=rest + extra + var_kw)
    return __init__


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


