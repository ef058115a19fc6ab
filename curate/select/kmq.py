"""kMQ: k-means clustering, then quality-weighted sampling inside every cluster.

Yu, Chen, Ahmadian and Fadaee, "Diversify and Conquer: Diversity-Centric Data Selection with
Iterative Refinement" (arXiv 2409.11378); authors' code for-ai/iterative-data-selection
(``selection/methods/deita/kmeansrandom.py``). Where the two disagree the paper is the default
and the code's variant an option:

* **Allocation** (paper Eq. 3, default ``allocation="proportional"``): cluster j gets
  b * |X_j| / |X| of the budget and is sampled from Multinomial(p(x | q)) *with* replacement;
  we de-duplicate the draws and top up (quality-weighted, without replacement) so every quota
  is met exactly. The code's ``allocation="equal"`` gives every cluster b / K, drawn without
  replacement. Either way a cluster too small for its quota hands the leftover to the clusters
  that still have rows (the code loses it; the budget here is exact).
* **Quality weighting**: p(x | q) = softmax(q(x) / tau) over the cluster's rows. The paper uses
  Deita quality x complexity scores; our default score is the shipped ``quality`` scorer
  (``quality_model``). ``score=None`` samples uniformly (the paper's kM-Random baseline).
* **k** (paper section 2b): a number, or ``"silhouette"``: the best silhouette score over a
  small grid (the paper's way to choose k), computed on a sample.

The shared pieces (:func:`allocate`, :func:`draw_in_cluster`, clustering) are used by
``kmq_iterative`` too.
"""
from __future__ import annotations

import logging
from numbers import Integral

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import assign, default_k, train_kmeans
from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_matrix, score_column
from curate.core.stage import StageContext
from curate.score.producers import score_producer
from curate.select.base import BudgetSelector, Picks

log = logging.getLogger(__name__)

ALLOCATIONS = ("proportional", "equal")
DEFAULT_K_GRID = (16, 32, 64, 128, 256)
QUOTA_REASON = "below_cluster_quota"


def allocate(weights: np.ndarray, capacity: np.ndarray, m: int) -> np.ndarray:
    """Split ``m`` rows over clusters in proportion to ``weights``, never above ``capacity``.

    Clusters whose share exceeds their rows are filled and the rest is shared again among the
    others by weight (a small cluster's leftover is redistributed); the final shares are
    rounded by largest remainder (Hamilton; ties to the lower cluster index). When only
    zero-weight clusters have room, the rest is split by their remaining room.

    Args:
        weights: (K,) non-negative weights (sizes for proportional, ones for equal).
        capacity: (K,) int rows available per cluster.
        m: rows to allocate; capped at ``capacity.sum()``.

    Returns:
        (K,) int64 quotas, ``quota <= capacity``, summing to ``min(m, capacity.sum())``.
    """
    w = np.asarray(weights, dtype=np.float64)
    cap = np.asarray(capacity, dtype=np.int64)
    if w.shape != cap.shape or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"weights must be finite, >= 0 and shaped like capacity {cap.shape}, got {w}")
    m = int(min(m, cap.sum()))
    quota = np.zeros(len(cap), dtype=np.int64)
    while (rem := m - int(quota.sum())) > 0:
        room = cap - quota
        wa = np.where(room > 0, w, 0.0)
        if wa.sum() <= 0:
            wa = np.where(room > 0, room, 0).astype(np.float64)
        exact = rem * wa / wa.sum()
        full = (room > 0) & (exact >= room)
        if full.any():  # these clusters cannot take their share: fill them, share the rest again
            quota[full] = cap[full]
            continue
        # nobody saturates: Hamilton's largest-remainder rounding (exact < room, so +1 fits)
        add = np.floor(exact).astype(np.int64)
        frac = exact - add
        add[np.lexsort((np.arange(len(cap)), -frac))[:rem - int(add.sum())]] += 1
        quota += add
    return quota


def gumbel_order(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Order of a sequential draw without replacement with p proportional to exp(logits).

    Gumbel-top-k (Kool et al. 2019): argsort of logits + Gumbel noise is distributed as
    sampling without replacement from softmax(logits); it never fails on underflowing p.

    Args:
        rng: numpy Generator.
        logits: (m,) float64.

    Returns:
        (m,) int64 permutation, first = drawn first.
    """
    keys = np.asarray(logits, np.float64) + rng.gumbel(size=len(logits))
    return np.argsort(-keys, kind="stable").astype(np.int64)


def draw_in_cluster(rng: np.random.Generator, logits: np.ndarray, m: int, replacement: bool) -> np.ndarray:
    """Draw ``m`` distinct positions of one cluster, quality-weighted (p = softmax(logits)).

    Args:
        rng: numpy Generator.
        logits: (c,) q / tau of the cluster's candidate rows.
        m: rows to draw, 0 <= m <= c.
        replacement: paper Eq. 3: m multinomial draws with replacement, de-duplicated, then
            topped up without replacement until m distinct rows; False: m draws without
            replacement (the authors' code).

    Returns:
        (m,) int64 positions into ``logits``, in draw order.
    """
    c = len(logits)
    if m <= 0:
        return np.zeros(0, np.int64)
    if not replacement or m >= c:
        return gumbel_order(rng, logits)[:m]
    p = np.exp(logits - logits.max())
    draws = rng.choice(c, size=m, replace=True, p=p / p.sum())
    _, first = np.unique(draws, return_index=True)
    got = draws[np.sort(first)]
    if len(got) < m:
        rest = np.setdiff1d(np.arange(c), got)
        got = np.concatenate([got, rest[gumbel_order(rng, logits[rest])[:m - len(got)]]])
    return got.astype(np.int64)


def silhouette_k(x: np.ndarray, grid, *, seed: int, niter: int, sample: int,
                 score_sample: int = 2000) -> tuple[int, dict[int, float]]:
    """The k of ``grid`` with the best silhouette score (Yu et al. 2024, section 2b).

    For speed, k-means is fitted on one seeded sample of at most ``sample`` rows and the
    silhouette (quadratic in the rows it scores) is computed on ``score_sample`` of them.
    Grid values that would leave fewer than 39 sampled rows per centroid (faiss's minimum for
    a meaningful fit) are skipped.

    Args:
        x: (n, d) float32 embeddings.
        grid: candidate k values.
        seed: seed for the samples and k-means.
        niter: k-means iterations.
        sample: rows k-means is fitted on.
        score_sample: rows the silhouette is computed on (default 2000).

    Returns:
        (best k, {k: silhouette}); (floor(sqrt(n/2)), {}) when no grid value fits.
    """
    from sklearn.metrics import silhouette_score

    n = len(x)
    rng = np.random.default_rng(seed)
    xs = x[np.sort(rng.choice(n, size=sample, replace=False))] if n > sample else x
    scores: dict[int, float] = {}
    for k in sorted(set(int(g) for g in grid)):
        if not 2 <= k <= len(xs) // 39:
            continue
        cent, _ = train_kmeans(xs, k, spherical=False, niter=niter, seed=seed, use_gpu=False)
        lab, _ = assign(xs, cent, spherical=False, use_gpu=False)
        if len(np.unique(lab)) < 2:
            continue
        scores[k] = float(silhouette_score(xs, lab, sample_size=min(score_sample, len(xs)), random_state=seed))
    if not scores:
        return default_k(n), {}
    best = max(scores, key=lambda k: (scores[k], -k))
    log.info("kmq: silhouette over k=%s (fit on %d rows): %s -> k=%d", sorted(scores), len(xs),
             {k: round(v, 4) for k, v in scores.items()}, best)
    return best, scores


class ClusterSampler(BudgetSelector):
    """Shared parameters and clustering of ``kmq`` and ``kmq_iterative`` (not a stage itself)."""

    nested = False  # per-cluster quotas depend on the budget as a whole

    def _init_cluster_params(self, *, budget, k, k_grid, allocation, replacement, temperature, score,
                             cluster_column, embedding_column, niter, silhouette_sample, seed) -> None:
        self._init_budget(budget, seed)
        if not (k is None or k == "silhouette" or (isinstance(k, Integral) and not isinstance(k, bool) and k >= 1)):
            raise ValueError(f"k must be an int >= 1, \"silhouette\" or null, got {k!r}")
        if not isinstance(k_grid, (list, tuple)) or not k_grid or \
                not all(isinstance(g, Integral) and not isinstance(g, bool) and g >= 2 for g in k_grid):
            raise ValueError(f"k_grid must be a non-empty list of ints >= 2, got {k_grid!r}")
        if allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be one of {ALLOCATIONS}, got {allocation!r}")
        if replacement is not None and not isinstance(replacement, bool):
            raise ValueError(f"replacement must be true, false or null, got {replacement!r}")
        check_real(temperature, "temperature", 1e-9)
        for pname, v in (("score", score), ("cluster_column", cluster_column)):
            if v is not None and (not isinstance(v, str) or not v):
                raise ValueError(f"{pname} must name a column or be null, got {v!r}")
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must name a column, got {embedding_column!r}")
        check_real(niter, "niter", 1, integer=True)
        check_real(silhouette_sample, "silhouette_sample", 4, integer=True)
        self.k, self.k_grid, self.allocation, self.replacement = k, k_grid, allocation, replacement
        self.temperature, self.score = temperature, score
        self.cluster_column, self.embedding_column = cluster_column, embedding_column
        self.niter, self.silhouette_sample = niter, silhouette_sample
        self._fitted_on = None

    def select(self, table: pa.Table, ctx: StageContext | None):
        try:
            return super().select(table, ctx)
        finally:
            self._fitted_on = None  # the clusters are reused across a token bisection only

    def required_columns(self) -> list[str]:
        """The score column (unless sampling uniformly), then the clusters or the embeddings to cluster."""
        clusters = self.cluster_column if self.cluster_column is not None else self.embedding_column
        return ([self.score] if self.score is not None else []) + [clusters] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        steps = []
        if self.cluster_column is None and self.embedding_column not in columns:
            from curate.embed.stage import Embed

            steps.append(Embed(column=self.embedding_column))
        if self.score is not None:
            steps += score_producer(self.score, columns)
        return steps

    @property
    def uses_replacement(self) -> bool:
        """Paper (proportional) samples with replacement; the code (equal) without."""
        return self.allocation == "proportional" if self.replacement is None else self.replacement

    def _clusters(self, table: pa.Table) -> np.ndarray:
        """(n,) int64 cluster index 0..K-1 per row; fitted once per input table.

        Sets ``k_`` (clusters used), ``silhouette_`` ({k: score} when k="silhouette"),
        ``labels_`` (n,) and ``cluster_ids_`` (n,): the ids for the ledger (the column's own ids
        with ``cluster_column``, else ``labels_``).
        """
        if self._fitted_on is table:
            return self.labels_
        n = len(table)
        self.silhouette_ = {}
        if self.cluster_column is not None:
            raw = score_column(table, self.cluster_column, self.name).astype(np.int64)
            _, labels = np.unique(raw, return_inverse=True)
            self.k_ = int(labels.max()) + 1 if n else 0
            self.cluster_ids_ = raw
        else:
            x = np.ascontiguousarray(embedding_matrix(table, self.embedding_column), dtype=np.float32)
            if self.k == "silhouette":
                k, self.silhouette_ = silhouette_k(x, self.k_grid, seed=self.seed, niter=self.niter,
                                                   sample=self.silhouette_sample)
            else:
                k = default_k(n) if self.k is None else int(self.k)
            k = max(1, min(k, n))
            # L2 k-means on the raw embeddings, as the authors' code (faiss.Kmeans, L2)
            cent, _ = train_kmeans(x, k, spherical=False, niter=self.niter, seed=self.seed, use_gpu=False)
            labels, _ = assign(x, cent, spherical=False, use_gpu=False)
            self.k_ = k
            self.cluster_ids_ = np.asarray(labels, dtype=np.int64)
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self._fitted_on = table
        return self.labels_

    def _logits(self, table: pa.Table) -> np.ndarray:
        """(n,) q / tau (zeros for uniform sampling); a NaN score counts as the lowest score."""
        n = len(table)
        if self.score is None:
            return np.zeros(n)
        q = score_column(table, self.score, self.name)
        finite = np.isfinite(q)
        q = np.where(finite, q, q[finite].min() if finite.any() else 0.0)
        return q / float(self.temperature)

    def _draw(self, rng, labels: np.ndarray, logits: np.ndarray, quota: np.ndarray,
              available: np.ndarray | None = None) -> np.ndarray:
        """Draw ``quota[j]`` rows of every cluster j among ``available`` rows, cluster by cluster."""
        out = []
        ok = np.ones(len(labels), bool) if available is None else available
        members = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[members], np.arange(len(quota) + 1))
        for j in range(len(quota)):
            rows = members[bounds[j]:bounds[j + 1]]
            rows = rows[ok[rows]]
            if quota[j]:
                out.append(rows[draw_in_cluster(rng, logits[rows], int(quota[j]), self.uses_replacement)])
        return np.concatenate(out) if out else np.zeros(0, np.int64)


@register
class KMQ(ClusterSampler):
    """kMQ (Yu et al. 2024, arXiv 2409.11378): cluster, allocate the budget, sample by quality.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        k: clusters: an int, ``"silhouette"`` (default: the best silhouette over ``k_grid``,
            the paper's rule) or null (floor(sqrt(n/2))).
        k_grid: candidate k for ``k="silhouette"`` (default [16, 32, 64, 128, 256]; values
            above half the sampled rows are skipped).
        allocation: ``"proportional"`` (default, paper Eq. 3: b |X_j| / |X|) or ``"equal"``
            (the authors' code: b / K per cluster). Leftover quota is redistributed.
        replacement: sample within a cluster with replacement, then de-duplicate and top up
            (paper) or without replacement (code); null (default) follows ``allocation``.
        temperature: tau in softmax(q / tau) (default 1.0); large tau approaches uniform.
        score: quality column (default ``"quality"``, added by ``quality_model`` when
            missing); null samples uniformly (kM-Random).
        cluster_column: use this column's clusters instead of clustering here (default null).
        embedding_column: embeddings to cluster (default ``"embedding"``).
        niter: k-means iterations (default 50; the code uses 300 with 5 restarts on GPU).
        silhouette_sample: rows the silhouette search fits k-means on (default 10000; the
            silhouette itself is computed on 2000 of them; grid values above rows / 39 skipped).
        seed: seed of k-means, the silhouette sample and the sampling (default 0).

    Ledger: ``kmq_score`` = the quality score sampled by; ``kmq_cluster`` = the cluster used
    (named so it never overwrites a ``kmeans`` stage's ``cluster_id``).
    """

    name = "kmq"
    reasons = {QUOTA_REASON: "not drawn within its cluster's quota (quality-weighted sampling)"}

    def __init__(self, *, budget, k: int | str | None = "silhouette", k_grid=DEFAULT_K_GRID,
                 allocation: str = "proportional", replacement: bool | None = None, temperature: float = 1.0,
                 score: str | None = "quality", cluster_column: str | None = None,
                 embedding_column: str = "embedding", niter: int = 50, silhouette_sample: int = 10000,
                 seed: int = 0):
        self._init_cluster_params(budget=budget, k=k, k_grid=k_grid, allocation=allocation,
                                  replacement=replacement, temperature=temperature, score=score,
                                  cluster_column=cluster_column, embedding_column=embedding_column,
                                  niter=niter, silhouette_sample=silhouette_sample, seed=seed)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        labels = self._clusters(table)
        logits = self._logits(table)
        sizes = np.bincount(labels, minlength=self.k_)
        weights = sizes if self.allocation == "proportional" else np.ones(self.k_)
        quota = allocate(weights, sizes, k)
        order = self._draw(np.random.default_rng(self.seed), labels, logits, quota)
        n = len(table)
        score = score_column(table, self.score, self.name) if self.score else None
        return Picks(order=order, score=score, extras={f"{self.name}_cluster": self.cluster_ids_},
                     reasons=np.full(n, QUOTA_REASON, dtype=object))
