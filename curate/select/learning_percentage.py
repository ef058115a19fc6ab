"""Learning percentage, stratified by cluster, and its ``clust_rand`` baseline.

Mekala, Nguyen and Shang, "Smaller Language Models are capable of selecting Instruction-Tuning
Training Data for Larger Language Models" (ACL Findings 2024, arXiv 2402.10430; authors' code
dheeraj7596/Small2Large ``clustering.py``, ``subset.py``). The score, LP(1), comes from a small
model fine-tuned on the whole pool (the ``lp_scores`` annotator in :mod:`curate.train.
learning_percentage`: it trains, so it lives in the train layer; this selector only reads its
column). Selection, as the code does it:

1. embed every row and cluster with k-means, k = 1000 (MiniLM on "Instruction: ... Response: ...",
   scikit-learn ``KMeans(random_state=42)``);
2. inside every cluster sort by LP(1), lowest first, and take the first p% of the cluster
   (``np.array_split(rows, round(100 / p))[0]``);
3. ``clust_rand``: the same count per cluster, drawn at random (the paper's control for the
   clustering's own effect).

Budgets here are exact: the budget is split over the clusters in proportion to their sizes
(largest remainder), which is the code's p% per cluster without its rounding up (the code's
first chunk has ceil(|C| / m) rows, so its subsets are slightly larger than p%). Clustering is
FAISS k-means (L2, ``seed``), or the clusters of a ``cluster_column`` when one is named.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import assign, train_kmeans
from curate.core.params import check_real
from curate.core.registry import get_stage, register
from curate.core.schema import embedding_matrix, score_column
from curate.core.stage import StageContext
from curate.select.base import BudgetSelector, Picks
from curate.select.kmq import allocate

log = logging.getLogger(__name__)

LP_REASON = "not_lowest_lp_in_cluster"
RAND_REASON = "not_sampled_in_cluster"
PAPER_K = 1000


def cluster_quotas(labels: np.ndarray, k: int) -> dict[int, int]:
    """Rows each cluster contributes to a budget of ``k``: proportional to its size, exact total.

    Args:
        labels: (n,) int cluster ids.
        k: budget, 0 <= k <= n.

    Returns:
        {cluster id: quota}, quotas summing to ``k`` (largest remainder; ties to the lower id).
    """
    ids, sizes = np.unique(labels, return_counts=True)
    q = allocate(sizes.astype(np.float64), sizes, k)
    return {int(c): int(x) for c, x in zip(ids, q)}


def stratified_picks(labels: np.ndarray, rank_key: np.ndarray, k: int) -> np.ndarray:
    """Each cluster's quota (:func:`cluster_quotas`) of its rows with the smallest ``rank_key``.

    Args:
        labels: (n,) int cluster ids.
        rank_key: (n,) float; smaller is taken first (NaN last), ties by position.
        k: budget.

    Returns:
        (k,) int64 picked rows, cluster by cluster (ascending id), best first inside each.
    """
    key = np.where(np.isnan(rank_key), np.inf, rank_key)
    order = np.lexsort((np.arange(len(key)), key, labels))
    quota = cluster_quotas(labels, k)
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    out = [order[s:s + quota[int(lab[s])]] for s in starts]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


class _Stratified(BudgetSelector):
    """Shared clustering of ``learning_percentage`` and ``clust_rand`` (see the module docstring)."""

    nested = False  # per-cluster quotas depend on the budget as a whole

    def _init_clusters(self, k, embedding_column, cluster_column, niter) -> None:
        check_real(k, "k", low=1, integer=True)
        check_real(niter, "niter", low=1, integer=True)
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must name a column, got {embedding_column!r}")
        if cluster_column is not None and (not isinstance(cluster_column, str) or not cluster_column):
            raise ValueError(f"cluster_column must name a column or be null, got {cluster_column!r}")
        self.k, self.embedding_column, self.cluster_column, self.niter = k, embedding_column, cluster_column, niter
        self._memo = None

    def required_columns(self) -> list[str]:
        return [self.cluster_column or self.embedding_column] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        if self.cluster_column is None and self.embedding_column not in columns:
            from curate.embed.stage import Embed

            return [Embed(column=self.embedding_column)]
        return []

    def clusters(self, table: pa.Table) -> np.ndarray:
        """(n,) cluster ids: the ``cluster_column``, or FAISS k-means on the embeddings (memoised per table)."""
        if self.cluster_column is not None:
            return table.column(self.cluster_column).to_numpy(zero_copy_only=False).astype(np.int64)
        if self._memo is not None and self._memo[0] is table:
            return self._memo[1]
        x = embedding_matrix(table, self.embedding_column)
        k = min(int(self.k), len(x))
        if k < self.k:
            log.info("%s: %d clusters asked for, the pool has %d rows; clustering into %d", self.name, self.k,
                     len(x), k)
        cent, _ = train_kmeans(x, k, spherical=False, niter=int(self.niter), seed=int(self.seed), use_gpu=False)
        labels, _ = assign(x, cent, spherical=False, use_gpu=False)
        self._memo = (table, labels)
        return labels


@register
class LearningPercentage(_Stratified):
    """Lowest learning percentage per cluster (Mekala et al., ACL Findings 2024, arXiv 2402.10430).

    Needs the score column (default ``lp``, LP(1)); when missing, an ``lp_scores`` stage with
    the ``features`` parameters is added (it fine-tunes the proxy LM with LoRA on the whole pool
    for 3 epochs: the expensive step; docs/methods/learning_percentage.md has its cost).

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        score: ``"lp"`` (default, LP(1)), ``"lp_app"`` (the one-epoch approximation) or any column
            where lower means "learned later".
        k: clusters (default 1000, the paper's; at most the rows reaching the stage).
        embedding_column: embeddings to cluster (default ``"embedding"``, added when missing).
        cluster_column: use these clusters instead of clustering here (default None).
        niter: k-means iterations (default 20).
        features: parameters of the ``lp_scores`` stage added when ``score`` is missing (default
            None = its defaults), e.g. ``{epochs: 1}`` with ``score: lp_app``.
        seed: k-means seed (default 42, the code's ``random_state``).

    Ledger: ``learning_percentage_score`` = the score; ``lp_cluster``. Unselected rows:
    ``not_lowest_lp_in_cluster``.
    """

    name = "learning_percentage"
    reasons = {LP_REASON: "not among its cluster's lowest-LP rows within the cluster's share of the budget"}

    def __init__(self, *, budget, score: str = "lp", k: int = PAPER_K, embedding_column: str = "embedding",
                 cluster_column: str | None = None, niter: int = 20, features: dict | None = None, seed: int = 42):
        self._init_budget(budget, seed)
        if not isinstance(score, str) or not score:
            raise ValueError(f"score must name a column, got {score!r}")
        if features is not None and not isinstance(features, dict):
            raise ValueError(f"features must be a mapping of lp_scores parameters or null, got {features!r}")
        self.score, self.features = score, features
        self._init_clusters(k, embedding_column, cluster_column, niter)

    def required_columns(self) -> list[str]:
        return [self.score] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        steps = super().method_prerequisites(columns)
        if self.score not in columns:
            cls = get_stage("lp_scores")  # the train layer's annotator, found by name (select sits below train)
            if self.score in cls.produces:
                steps.append(cls(**(self.features or {})))
        return steps

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        s = score_column(table, self.score, self.name)
        labels = self.clusters(table)
        order = stratified_picks(labels, s, k)
        return Picks(order=order, score=s, extras={"lp_cluster": labels},
                     reasons=np.full(len(s), LP_REASON, dtype=object))


@register
class ClustRand(_Stratified):
    """``clust_rand``: the learning-percentage method's control, random rows per cluster.

    Mekala et al., ACL Findings 2024, arXiv 2402.10430: the same clusters and per-cluster counts
    as ``learning_percentage``, rows drawn uniformly inside each cluster. No model is trained.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        k, embedding_column, cluster_column, niter: as for ``learning_percentage`` (k = 1000).
        seed: k-means seed and the draw's (default 42).

    Ledger: ``lp_cluster``. Unselected rows: ``not_sampled_in_cluster``.
    """

    name = "clust_rand"
    reasons = {RAND_REASON: "not drawn within its cluster's share of the budget"}

    def __init__(self, *, budget, k: int = PAPER_K, embedding_column: str = "embedding",
                 cluster_column: str | None = None, niter: int = 20, seed: int = 42):
        self._init_budget(budget, seed)
        self._init_clusters(k, embedding_column, cluster_column, niter)

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        labels = self.clusters(table)
        draw = np.random.default_rng(self.seed).random(len(table))  # a seeded random rank in every cluster
        order = stratified_picks(labels, draw, k)
        return Picks(order=order, extras={"lp_cluster": labels}, reasons=np.full(len(table), RAND_REASON, dtype=object))
