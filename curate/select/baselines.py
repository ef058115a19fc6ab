"""Baselines every selection method must beat: ``longest`` response and greedy ``kcenter``.

* ``longest``: keep the rows with the longest responses. Zhao, Andriushchenko, Croce and
  Flammarion, "Long Is More for Alignment: A Simple but Tough-to-Beat Baseline for Instruction
  Fine-Tuning" (ICML 2024, arXiv 2402.04833) select the 1,000 longest responses of a pool and
  match or beat LIMA / AlpaGasus style selections.
* ``kcenter``: greedy k-center (farthest-first traversal; Gonzalez 1985, used as the "core-set"
  selection of Sener and Savarese, ICLR 2018, and as the k-Center baseline of Yu et al.,
  arXiv 2409.11378): each pick is the row farthest from every row picked so far, a
  2-approximation of the minimax covering radius. Distances are computed one new center against
  all rows per step (an (n,) vector, in row blocks), never an n x n matrix.
"""
from __future__ import annotations

import logging
import re

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_matrix
from curate.core.stage import EXECUTION_PARAMS, StageContext
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores

log = logging.getLogger(__name__)

LENGTH_UNITS = ("chars", "words", "tokens")
KCENTER_STARTS = ("farthest_from_mean", "random")
_WORD = re.compile(r"\S+")


def response_lengths(table: pa.Table, unit: str = "chars") -> np.ndarray:
    """Length of every row's response.

    The response is the ``output`` field (the first assistant reply for conversations, as
    :func:`curate.score.rows.row_fields` reads it); rows with no response (plain text) have
    length 0, so they rank last.

    Args:
        table: canonical rows.
        unit: ``"chars"`` (default, Unicode code points), ``"words"`` (whitespace-separated) or
            ``"tokens"`` (the proxy LM's tokenizer, as the ``token_count`` stage counts).

    Returns:
        (n,) float64 lengths.
    """
    from curate.score.rows import row_fields

    out = row_fields(table).output
    if unit == "chars":
        return np.fromiter((len(o) for o in out), dtype=np.float64, count=len(out))
    if unit == "words":
        return np.fromiter((len(_WORD.findall(o)) for o in out), dtype=np.float64, count=len(out))
    from curate.models.tokenizers import load_tokenizer

    tok = load_tokenizer("SmolLM2-135M-Instruct")
    ids = tok(list(out), add_special_tokens=False)["input_ids"] if out else []
    return np.array([len(i) for i in ids], dtype=np.float64)


@register
class Longest(BudgetSelector):
    """Keep the ``budget`` rows with the longest responses (Zhao et al. 2024, arXiv 2402.04833).

    The paper ranks by response length and keeps the top 1,000; ties here go to the earlier row.
    The ranking is nested (a smaller budget's rows are the first of a larger one's), so a token
    budget keeps the longest responses that fit.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        unit: length unit, ``"chars"`` (default: no model needed), ``"words"`` or ``"tokens"``
            (SmolLM2's tokenizer; the paper counts tokens of its own models' tokenizers, which
            ranks nearly the same as characters).

    Ledger: ``longest_score`` = the response length in ``unit``.
    """

    name = "longest"
    reasons = {"shorter_response": "response shorter than the budget's longest responses"}

    def __init__(self, *, budget, unit: str = "chars"):
        self._init_budget(budget, 0)
        del self.seed  # deterministic: nothing random to seed
        if unit not in LENGTH_UNITS:
            raise ValueError(f"unit must be one of {LENGTH_UNITS}, got {unit!r}")
        self.unit = unit

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        length = response_lengths(table, self.unit)
        return Picks(order=pick_order_from_scores(length), score=length,
                     reasons=np.full(len(length), "shorter_response", dtype=object))


def farthest_first(x: np.ndarray, k: int, *, start: int, block_size: int = 65536,
                   show_progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center (farthest-first traversal) on (n, d) rows, Euclidean distance.

    Every step computes the distance of the newest center to all rows, block by block, and
    keeps each row's distance to its nearest center: O(k n d) time, O(n) extra memory.

    Args:
        x: (n, d) float32 rows.
        k: centers to pick, 1 <= k <= n.
        start: index of the first center.
        block_size: rows per distance block (default 65536; bounds the temporaries).
        show_progress: draw a progress bar.

    Returns:
        (order (k,) int64 in pick order, radius (k,) float64: each pick's distance to the
        centers before it (inf for the first), nearest (n,) float64: every row's distance to its
        nearest of the k centers).
    """
    from tqdm.auto import tqdm

    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.full(n, np.inf, dtype=np.float32)
    order = np.empty(k, dtype=np.int64)
    radius = np.empty(k, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    nxt, r = int(start), np.inf
    for step in tqdm(range(k), desc="kcenter", disable=not show_progress, unit="center", mininterval=1.0):
        order[step], radius[step] = nxt, r
        chosen[nxt] = True
        c = x[nxt]
        for a in range(0, n, block_size):
            b = min(a + block_size, n)
            # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2 (one gemv per block)
            d2 = sq[a:b] - 2.0 * (x[a:b] @ c) + sq[nxt]
            np.minimum(nearest[a:b], d2, out=nearest[a:b])
        nearest[nxt] = 0.0  # exact for the center itself (the expansion above leaves ~1e-6)
        if step + 1 < k:
            # picked rows never come back, even when duplicates tie them at distance 0
            cand = np.where(chosen, -np.inf, nearest)
            nxt = int(np.argmax(cand))
            r = float(np.sqrt(max(cand[nxt], 0.0)))
    return order, radius, np.sqrt(np.maximum(nearest, 0.0)).astype(np.float64)


@register
class KCenter(BudgetSelector):
    """Greedy k-center on embeddings: each pick is the row farthest from those already picked.

    Gonzalez's farthest-first traversal (a 2-approximation of the k-center objective), the
    core-set method of Sener and Savarese (ICLR 2018) and the k-Center baseline of Yu et al.
    (arXiv 2409.11378). Picks are nested: budget k's rows are the first k of any larger budget.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        start: first center, ``"farthest_from_mean"`` (default: deterministic, the row farthest
            from the pool's mean, so isolated outliers come first) or ``"random"`` (a seeded
            random row, as the core-set papers do).
        seed: RNG seed for ``start="random"`` (default 0).
        embedding_column: (n, d) embeddings (default ``"embedding"``; added by ``embed`` when
            missing).
        block_size: rows per distance block (default 65536; execution-only).
        show_progress: progress bar (execution-only).

    Ledger: ``kcenter_score`` = for a picked row, its distance to the rows picked before it
    (the covering radius when it was picked; the first pick's is its distance from the mean);
    for an unpicked row, its distance to the nearest picked row. Extra ``pick_rank`` (1-based,
    -1 when unpicked).
    """

    name = "kcenter"
    reasons = {"covered": "within the covering radius of the selected centers"}
    execution_params = EXECUTION_PARAMS + ("block_size",)

    def __init__(self, *, budget, start: str = "farthest_from_mean", seed: int = 0,
                 embedding_column: str = "embedding", block_size: int = 65536, show_progress: bool = True):
        self._init_budget(budget, seed)
        if start not in KCENTER_STARTS:
            raise ValueError(f"start must be one of {KCENTER_STARTS}, got {start!r}")
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must name a column, got {embedding_column!r}")
        check_real(block_size, "block_size", 1, integer=True)
        self.start = start
        self.embedding_column = embedding_column
        self.block_size = block_size
        self.show_progress = show_progress

    def required_columns(self) -> list[str]:
        return [self.embedding_column] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        if self.embedding_column in columns:
            return []
        from curate.embed.stage import Embed

        return [Embed(column=self.embedding_column)]

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        x = embedding_matrix(table, self.embedding_column)
        n = len(x)
        mean_dist = np.linalg.norm(x - x.mean(axis=0, dtype=np.float64).astype(np.float32), axis=1)
        if self.start == "random":
            first = int(np.random.default_rng(self.seed).integers(n))
        else:
            first = int(np.argmax(mean_dist))
        show = bool(self.show_progress and (ctx is None or ctx.show_progress))
        order, radius, nearest = farthest_first(x, max(k, 1), start=first, block_size=self.block_size,
                                                show_progress=show)
        radius[0] = mean_dist[first]
        score = nearest.copy()
        score[order] = radius
        rank = np.full(n, -1, dtype=np.int64)
        rank[order] = np.arange(1, len(order) + 1)
        return Picks(order=order, score=score, extras={"pick_rank": rank},
                     reasons=np.full(n, "covered", dtype=object))
