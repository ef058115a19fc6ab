"""CaR: Clustering and Ranking (Ge et al., EMNLP 2024, arXiv 2402.18191).

The authors' code (IronBeliever/CaR, ``Clustering/cluster.py``): score every row with the IQS
quality model, embed it, reduce the embeddings by PCA to 95% explained variance, cluster with
k-means at k = floor(sqrt(n / 2)), then keep the top n1 rows by score globally plus the top n2
rows of every cluster (n1 = 1000, n2 = 1), de-duplicated. The selection's size is therefore
n1 + (clusters whose best row is not already in the top n1), not a budget.

Budgets here are exact. How n1 relates to the budget b:

* ``n1=None`` (default): n1 is solved from the budget. The top-n2 rows of every cluster
  ("representatives") come first, then the rest of the budget by global score. This is
  exactly the paper's set top(n1) + representatives for the n1 that makes it b rows (the union
  grows by 0 or 1 row per unit of n1, so such an n1 exists whenever b >= the number of
  representatives). With b below the number of representatives, the b best representatives
  by score are kept (one row from each of b clusters).
* ``n1=<int>`` (the paper's fixed n1): the pick order is top n1 globally, then the
  representatives not among them, then the remaining rows by score. A budget of n1 + the new
  representatives gives the paper's exact set; a smaller budget cuts it (a cap), a larger one
  fills with the next best rows.

Both orders do not depend on b, so the method is nested (a token budget keeps the longest
fitting prefix).
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import default_k
from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_matrix, score_column
from curate.core.stage import StageContext
from curate.score.producers import score_producer
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores

log = logging.getLogger(__name__)

REASON = "below_quality_rank"


def cluster_representatives(score: np.ndarray, labels: np.ndarray, n2: int) -> np.ndarray:
    """The ``n2`` highest-scoring rows of every cluster (NaN scores last, ties by position).

    Args:
        score: (n,) float scores.
        labels: (n,) int cluster ids.
        n2: rows per cluster (a cluster smaller than n2 gives all its rows).

    Returns:
        (n,) bool mask of representatives.
    """
    s = np.asarray(score, np.float64)
    key = np.where(np.isnan(s), np.inf, -s)
    n = len(s)
    order = np.lexsort((np.arange(n), key, labels))
    lab = np.asarray(labels)[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    rep = np.zeros(n, bool)
    rep[order[rank < n2]] = True
    return rep


def car_order(score: np.ndarray, labels: np.ndarray, n1: int | None, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """CaR's pick order (see module docstring).

    Args:
        score: (n,) quality scores.
        labels: (n,) cluster ids.
        n1: global top count, or None to solve it from the budget (representatives first).
        n2: representatives per cluster.

    Returns:
        (order (n,) int64, representative mask (n,) bool).
    """
    rep = cluster_representatives(score, labels, n2)
    glob = pick_order_from_scores(score)
    if n1 is None:
        order = np.concatenate([glob[rep[glob]], glob[~rep[glob]]])
    else:
        head = glob[:n1]
        tail = glob[n1:]
        order = np.concatenate([head, tail[rep[tail]], tail[~rep[tail]]])
    return order.astype(np.int64), rep


@register
class CaR(BudgetSelector):
    """CaR (Ge et al., EMNLP 2024, arXiv 2402.18191): cluster representatives + global top quality.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        n1: rows taken by global score before the representatives (default None = solved from
            the budget, representatives first; the paper uses 1000). See the module docstring.
        n2: top rows per cluster (default 1, the paper's).
        k: clusters (default None = floor(sqrt(n/2)), the paper's rule).
        pca: PCA before k-means: float in (0, 1) = explained variance kept (default 0.95, the
            paper's), an int number of components, or None for no PCA.
        score: quality column (default ``"quality"``: the shipped CaR-APE scorer of
            ``quality_model``, added when missing; the paper uses its 550M IQS model).
        cluster_column: use this column's clusters instead of clustering here (default None).
        embedding_column: embeddings (default ``"embedding"``: MiniLM on the row's text; the
            paper embeds "Instruction: ... Input: ... Response: ..." with a 384-d Sentence-BERT:
            embed with ``template`` = ``curate.embed.stage.CAR_TEMPLATE`` for that).
        niter: k-means iterations (default 100).
        seed: PCA and k-means seed (default 42, the paper's).

    Ledger: ``car_score`` = the quality score; ``car_cluster`` = CaR's own cluster (named so it
    never overwrites a ``kmeans`` stage's ``cluster_id``); ``cluster_rep`` (True for the top-n2
    rows of a cluster).
    """

    name = "car"
    reasons = {REASON: "neither a top-n2 row of its cluster nor within the budget's global top by quality"}

    def __init__(self, *, budget, n1: int | None = None, n2: int = 1, k: int | None = None,
                 pca: float | int | None = 0.95, score: str = "quality", cluster_column: str | None = None,
                 embedding_column: str = "embedding", niter: int = 100, seed: int = 42):
        self._init_budget(budget, seed)
        check_real(n1, "n1", 0, allow_none=True, integer=True)
        check_real(n2, "n2", 0, integer=True)
        check_real(k, "k", 1, allow_none=True, integer=True)
        check_real(niter, "niter", 1, integer=True)
        if not isinstance(score, str) or not score:
            raise ValueError(f"score must name a column, got {score!r}")
        if cluster_column is not None and (not isinstance(cluster_column, str) or not cluster_column):
            raise ValueError(f"cluster_column must name a column or be null, got {cluster_column!r}")
        from curate.cluster.kmeans import KMeans

        KMeans(pca=pca, seed=seed)  # validates pca and seed with KMeans's messages
        self.n1, self.n2, self.k, self.pca = n1, n2, k, pca
        self.score, self.cluster_column, self.embedding_column = score, cluster_column, embedding_column
        self.niter = niter

    def select(self, table: pa.Table, ctx: StageContext | None):
        try:
            return super().select(table, ctx)
        finally:
            self._fitted_on = None  # the clusters are reused across a token budget's calls only

    def required_columns(self) -> list[str]:
        clusters = self.cluster_column if self.cluster_column is not None else self.embedding_column
        return [self.score, clusters] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        steps = []
        if self.cluster_column is None and self.embedding_column not in columns:
            from curate.embed.stage import Embed

            steps.append(Embed(column=self.embedding_column))
        return steps + score_producer(self.score, columns)

    def _clusters(self, table: pa.Table) -> np.ndarray:
        """(n,) cluster ids: the given column, or PCA + L2 k-means here (once per table). Sets ``k_``."""
        if getattr(self, "_fitted_on", None) is table:
            return self.labels_
        self.labels_ = self._fit_clusters(table)
        self._fitted_on = table
        return self.labels_

    def _fit_clusters(self, table: pa.Table) -> np.ndarray:
        if self.cluster_column is not None:
            labels = score_column(table, self.cluster_column, self.name).astype(np.int64)
            self.k_ = len(np.unique(labels))
            return labels
        n = len(table)
        k = min(n, default_k(n) if self.k is None else int(self.k))
        self.k_ = k
        if k <= 1:  # too few rows to cluster (n < 8 with the default k): one cluster
            return np.zeros(n, np.int64)
        from curate.cluster.kmeans import KMeans

        x = embedding_matrix(table, self.embedding_column)
        # sklearn KMeans (Euclidean) on the PCA output in the paper: faiss L2 k-means here
        km = KMeans(k=k, spherical=False, pca=self.pca, niter=self.niter, seed=self.seed, use_gpu=False)
        labels, _ = km.fit_predict(x)
        self.pca_dims_ = None if km.pca_components_ is None else int(km.pca_components_.shape[0])
        log.info("car: k=%d clusters on %d rows (PCA to %s dims)", k, n, self.pca_dims_)
        return labels

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        q = score_column(table, self.score, self.name)
        labels = self._clusters(table)
        order, rep = car_order(q, labels, self.n1, self.n2)
        return Picks(order=order, score=q, extras={f"{self.name}_cluster": labels, "cluster_rep": rep},
                     reasons=np.full(len(q), REASON, dtype=object))
