"""DEITA: score-first, diversity-aware selection (Liu et al., ICLR 2024, arXiv 2312.15685).

"What Makes Good Data for Alignment? A Comprehensive Study of Automatic Data Selection in
Instruction Tuning" (authors' code: hkust-nlp/deita, ``selection/filter/``). The rule, called
the *Repr Filter* in the paper:

1. score every row (the paper: the "evol score", complexity x quality from two LLaMA-13B scorers);
2. sort the rows by score, best first;
3. walk down the list and accept a row unless its cosine similarity to *any* row accepted
   before it is above ``tau`` (0.9 in the paper), until the budget is filled.

The walk is sequential (whether row i is accepted depends on every acceptance before it), but
its cost is not O(n * k) in Python: rows are taken in blocks of ``block_size`` in score order;
one FAISS inner-product search gives each row of the block its maximum cosine to the rows
accepted in earlier blocks, and a (block x block) similarity matrix settles the acceptances
inside the block (a row is compared with the rows of its own block accepted before it). The
Python loop runs once per *visited* row with a vector update of at most ``block_size`` values.

The pick order does not depend on the budget (the walk is the same; a smaller budget stops it
earlier), so the method is nested and serves token budgets and length-neutral bins by prefixes.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import l2_normalize
from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_matrix, score_column
from curate.core.stage import StageContext
from curate.score.producers import score_producer
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores

log = logging.getLogger(__name__)

TOO_SIMILAR = "too_similar"


def deita_walk(x: np.ndarray, order: np.ndarray, k: int, tau: float,
               block_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """DEITA's Repr Filter: walk ``order`` and accept rows whose max cosine to the accepted ones is <= tau.

    Args:
        x: (n, d) float32 L2-normalised embeddings (a dot product is a cosine).
        order: (m,) int row indices in score order (best first); rows not in it are never visited.
        k: stop once ``k`` rows are accepted (``k >= m`` walks the whole order).
        tau: a row is rejected when its cosine to an accepted row is strictly above ``tau``.
        block_size: rows compared per FAISS search (default 1024; execution-only: any value
            gives the same acceptances).

    Returns:
        ``(accepted, max_sim)``: (a,) int64 accepted rows in acceptance order (``a <= k``), and
        (n,) float64 max cosine of each visited row to the rows accepted before it (NaN for the
        first row visited, which has none, and for rows never visited).
    """
    import faiss

    n, d = x.shape
    max_sim = np.full(n, np.nan)
    accepted: list[np.ndarray] = []
    n_acc = 0
    index = faiss.IndexFlatIP(d)
    pos = 0
    while n_acc < k and pos < len(order):
        blk = np.asarray(order[pos:pos + block_size], dtype=np.int64)
        pos += len(blk)
        xb = np.ascontiguousarray(x[blk])
        if index.ntotal:
            prior = index.search(xb, 1)[0][:, 0].astype(np.float64)
        else:
            prior = np.full(len(blk), -np.inf)
        sims = (xb @ xb.T).astype(np.float64)  # inside the block: earlier accepted rows count too
        cur = prior.copy()
        took = []
        for i in range(len(blk)):
            if n_acc + len(took) >= k:
                break
            max_sim[blk[i]] = cur[i] if np.isfinite(cur[i]) else np.nan
            if cur[i] <= tau:
                took.append(i)
                np.maximum(cur[i + 1:], sims[i, i + 1:], out=cur[i + 1:])
        if took:
            index.add(xb[took])
            accepted.append(blk[took])
            n_acc += len(took)
    acc = np.concatenate(accepted) if accepted else np.zeros(0, np.int64)
    return acc.astype(np.int64), max_sim


@register
class Deita(BudgetSelector):
    """DEITA's score-first diversity selection (Liu et al., ICLR 2024, arXiv 2312.15685).

    Rows are walked in descending ``score``; a row is accepted unless its cosine to an already
    accepted row exceeds ``tau``; the walk stops at the budget (module docstring). DEITA's own
    scorers (complexity and quality, LLaMA-1-13B each) are not available offline: any score
    column works, by default curate's learned quality score ``quality`` (the ``quality_model``
    annotator, added when missing). The paper embeds with the last token's final hidden state
    of a 13B LM; the default here is the MiniLM ``embedding`` column (``embed``, added when
    missing); any embedding column may be named.

    When the walk runs out of rows before the budget (a pool of near-repeats), the budget is
    filled with the best-scoring rejected rows and a warning is logged (the authors' code returns
    fewer rows; curate's budgets are exact).

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        score: score column, higher is better (default ``"quality"``). Rows with a NaN score
            are visited last.
        tau: cosine threshold (default 0.9, the paper's); a row with cosine > tau to an
            accepted row is rejected.
        embedding_column: embedding column (default ``"embedding"``).
        block_size: rows per FAISS search (default 1024; execution-only, same result).

    Ledger: ``deita_score`` = the score; ``max_sim`` = the row's max cosine to the rows accepted
    before it was visited (NaN: never visited, or the first row). Rejected rows: ``too_similar``; rows the walk
    never reached: ``not_selected_by_budget``. Deterministic (no seed).
    """

    name = "deita"
    reasons = {TOO_SIMILAR: "cosine above tau to a better-scoring row already accepted"}
    execution_params = BudgetSelector.execution_params + ("block_size",)

    def __init__(self, *, budget, score: str = "quality", tau: float = 0.9, embedding_column: str = "embedding",
                 block_size: int = 1024):
        self._init_budget(budget, 0)
        del self.seed  # deterministic: nothing random to seed
        if not isinstance(score, str) or not score:
            raise ValueError(f"score must name a column, got {score!r}")
        check_real(tau, "tau", low=-1.0, high=1.0)
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must name a column, got {embedding_column!r}")
        check_real(block_size, "block_size", low=1, integer=True)
        self.score, self.tau, self.embedding_column, self.block_size = score, tau, embedding_column, block_size

    def required_columns(self) -> list[str]:
        return [self.score, self.embedding_column] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        steps = []
        if self.embedding_column not in columns:
            from curate.embed.stage import Embed

            steps.append(Embed(column=self.embedding_column))
        return steps + score_producer(self.score, columns)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        s = score_column(table, self.score, self.name)
        x = l2_normalize(embedding_matrix(table, self.embedding_column))
        order = pick_order_from_scores(s)
        acc, max_sim = deita_walk(x, order, k, float(self.tau), int(self.block_size))
        reasons = np.where(max_sim > self.tau, TOO_SIMILAR, None).astype(object)
        if len(acc) < k:
            taken = np.zeros(len(s), bool)
            taken[acc] = True
            rest = order[~taken[order]]
            log.warning("deita: only %d of %d rows are at cosine <= %.3f from every better row; filling the budget "
                        "of %d with the %d best-scoring rejected rows", len(acc), len(s), self.tau, k, k - len(acc))
            acc = np.concatenate([acc, rest])
        log.info("deita: %d accepted, %d rejected as too similar (tau=%.3f) on the way", min(len(acc), k),
                 int((reasons == TOO_SIMILAR).sum()), self.tau)
        return Picks(order=acc, score=s, extras={"max_sim": max_sim}, reasons=reasons)
