"""D4: Document De-Duplication and Diversification (Tirumala et al. 2023, arXiv 2308.12284).

Steps, on L2-normalised embeddings already clustered by ``kmeans``:

1. SemDeDup (Abbas et al. 2023) inside the clusters, with eps solved so that a fraction
   ``dedup_ratio`` (R_dedup) of the rows survives.
2. Re-cluster the survivors with spherical k-means (the paper stresses that re-clustering
   after SemDeDup matters).
3. SSL-prototypes pruning (Sorscher et al. 2022): drop the most prototypical survivors, those
   closest (cosine) to their new centroid, until ``budget`` (R, overall) rows remain, i.e.
   R_proto = R / R_dedup of the survivors. Ranking is global by default; ``global_ranking=False``
   keeps the same fraction of every new cluster instead (D4 does not say which it used).

No official D4 code exists; details follow the paper (Tirumala et al. 2023, arXiv 2308.12284); docs/semdedup.md says where it is read one way or another.
"""
from __future__ import annotations

import json
import logging
from numbers import Integral

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import assign
from curate.cluster.kmeans import KMeans
from curate.core.budget import resolve_budget, validate_budget
from curate.core.params import check_ratio
from curate.core.registry import register
from curate.core.schema import CENTROID_DISTANCE, CLUSTER_ID, ID, embedding_matrix
from curate.core.stage import EXECUTION_PARAMS, Selection, Selector, StageContext
from curate.dedup.semantic import (
    KEEP_RULES,
    resolve_representatives,
    semantic_prerequisites,
    semdedup_scores,
    threshold_for_ratio,
)

log = logging.getLogger(__name__)


def prototype_keep(distance: np.ndarray, n_keep: int, cluster_id: np.ndarray | None = None) -> np.ndarray:
    """Keep the ``n_keep`` least prototypical rows (largest distance to their centroid).

    Args:
        distance: (n,) distance of each row to its centroid.
        n_keep: rows to keep, 0 <= n_keep <= n.
        cluster_id: (n,) cluster ids for per-cluster ranking (each cluster keeps its share of
            ``n_keep``, by largest remainder); None ranks globally (default).

    Returns:
        (n,) bool keep mask; ties broken by position (earlier rows kept first).
    """
    n = len(distance)
    keep = np.zeros(n, dtype=bool)
    pos = np.arange(n)
    if cluster_id is None:
        keep[np.lexsort((pos, -np.asarray(distance, np.float64)))[:n_keep]] = True
        return keep
    cid = np.asarray(cluster_id)
    labels, inv, sizes = np.unique(cid, return_inverse=True, return_counts=True)
    exact = sizes * (n_keep / max(n, 1))
    quota = np.floor(exact).astype(np.int64)
    rest = n_keep - int(quota.sum())
    quota[np.lexsort((np.arange(len(labels)), -(exact - quota)))[:rest]] += 1
    order = np.lexsort((pos, -np.asarray(distance, np.float64), inv))
    rank = np.empty(n, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rank[order] = np.arange(n) - np.repeat(starts, sizes)
    return rank < quota[inv]


@register
class D4(Selector):
    """SemDeDup to ``dedup_ratio``, re-cluster, then prune the most prototypical rows to ``budget``.

    Args:
        budget: overall rows to keep, R: a float fraction in (0, 1] (at most ``dedup_ratio``)
            or an int count (required).
        dedup_ratio: R_dedup, fraction kept by the SemDeDup step (default 0.75, the paper's
            recommendation).
        k: clusters for the re-clustering (default None = floor(sqrt(n'/2)) of the survivors).
        global_ranking: rank prototypicality over all survivors (default True) or keep the
            same fraction of each new cluster (False).
        keep: SemDeDup's surviving copy: ``"hard"`` (default), ``"easy"``, ``"random"``.
        niter: k-means iterations for the re-clustering (default 100).
        nredo: k-means restarts for the re-clustering, best objective kept (default 1).
        seed: k-means seed and ``keep="random"`` seed (default 1234).
        embedding_column: L2-normalised embeddings (default ``"embedding"``).
        cluster_column: first clustering's ids (default ``"cluster_id"``).
        distance_column: first clustering's distances (default ``"centroid_distance"``).
        use_gpu: faiss GPU for the re-clustering (None = auto; not yet verified on a GPU).
        block_size: similarity tile size (default 2048; execution-only).

    Selection: reasons ``semantic_duplicate`` (extras ``dup_of``) and ``prototypical``; score =
    cosine distance to the new centroid (every row is assigned to the re-clustered centroids);
    extras ``recluster_id`` = the new cluster (the first clustering stays in ``cluster_id``).
    Artifacts: ``d4.json`` (solved eps, counts) and ``recluster/centroids.npy``.
    """

    name = "d4"
    reasons = {
        "semantic_duplicate": "SemDeDup step: near-duplicate of an earlier row of its cluster (dup_of names the kept one)",
        "prototypical": "SSL-prototypes step: among the closest rows to their (re-clustered) centroid",
    }
    execution_params = EXECUTION_PARAMS + ("block_size",)

    def __init__(self, *, budget, dedup_ratio: float = 0.75, k: int | None = None, global_ranking: bool = True,
                 keep: str = "hard", niter: int = 100, nredo: int = 1, seed: int = 1234, embedding_column: str = "embedding",
                 cluster_column: str = CLUSTER_ID, distance_column: str = CENTROID_DISTANCE,
                 use_gpu: bool | None = None, block_size: int = 2048):
        validate_budget(budget)
        check_ratio("dedup_ratio", dedup_ratio, allow_none=False)
        if not isinstance(budget, Integral) and float(budget) > float(dedup_ratio):
            raise ValueError(f"budget={budget!r} exceeds dedup_ratio={dedup_ratio!r}: the prototype step "
                             "can only remove rows (R_proto = budget / dedup_ratio must be <= 1)")
        if k is not None and (isinstance(k, bool) or not isinstance(k, Integral) or k < 1):
            raise ValueError(f"k must be an int >= 1 or null, got {k!r}")
        if not isinstance(global_ranking, bool):
            raise ValueError(f"global_ranking must be true or false, got {global_ranking!r}")
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        KMeans(k=k, niter=niter, nredo=nredo, seed=seed, use_gpu=use_gpu)  # validates niter/nredo/seed/use_gpu
        self.budget = budget
        self.dedup_ratio = dedup_ratio
        self.k = k
        self.global_ranking = global_ranking
        self.keep = keep
        self.niter = niter
        self.nredo = nredo
        self.seed = seed
        self.embedding_column = embedding_column
        self.cluster_column = cluster_column
        self.distance_column = distance_column
        self.use_gpu = use_gpu
        self.block_size = block_size

    def required_columns(self) -> list[str]:
        return [self.embedding_column, self.cluster_column, self.distance_column, ID]

    def prerequisites(self, columns: list[str]) -> list:
        return semantic_prerequisites(columns, self.embedding_column, self.cluster_column, self.distance_column)

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        n = len(table)
        if n == 0:
            return Selection(keep=np.zeros(0, bool), reason=np.zeros(0, object))
        ids = np.array(table.column(ID).to_pylist(), dtype=object)
        x = embedding_matrix(table, self.embedding_column)
        cid = table.column(self.cluster_column).to_numpy(zero_copy_only=False).astype(np.int64)
        dist = table.column(self.distance_column).to_numpy(zero_copy_only=False)
        n_target = resolve_budget(self.budget, n)

        # 1. SemDeDup down to R_dedup
        m, match, order = semdedup_scores(x, cid, dist, keep=self.keep, seed=self.seed, block=self.block_size)
        t = threshold_for_ratio(m, float(self.dedup_ratio))
        kept1 = m.astype(np.float64) <= t
        self.eps_ = 1.0 - t
        rep = resolve_representatives(kept1, match, order)
        n1 = int(kept1.sum())
        if n_target > n1:
            log.warning("d4: budget asks for %d rows but SemDeDup left %d; keeping all %d", n_target, n1, n1)
            n_target = n1

        # 2. re-cluster the survivors; 3. prune the most prototypical
        km = KMeans(k=self.k, niter=self.niter, nredo=self.nredo, seed=self.seed, embedding_column=self.embedding_column,
                    use_gpu=self.use_gpu)
        art = None if ctx is None or ctx.artifact_dir is None else ctx.artifact_dir / "recluster"
        sub = np.flatnonzero(kept1)
        new_cid_sub, new_dist_sub = km.fit_predict(x[sub], art)
        keep_sub = prototype_keep(new_dist_sub, n_target, None if self.global_ranking else new_cid_sub)
        keep = np.zeros(n, dtype=bool)
        keep[sub[keep_sub]] = True

        new_cid, new_dist = assign(x, km.centroids_, spherical=True, use_gpu=self.use_gpu)
        new_cid[sub], new_dist[sub] = new_cid_sub, new_dist_sub  # identical; avoids float drift
        reason = np.full(n, None, dtype=object)
        reason[~kept1] = "semantic_duplicate"
        reason[kept1 & ~keep] = "prototypical"
        dup_of = np.where(kept1, None, ids[rep]).astype(object)
        self.k_ = km.k_
        log.info("d4: eps=%.5f, %d -> %d after SemDeDup -> %d after prototypes (k'=%d)", self.eps_, n, n1,
                 int(keep.sum()), km.k_)
        if art is not None:
            (ctx.artifact_dir / "d4.json").write_text(json.dumps(
                {"eps": self.eps_, "rows": n, "after_semdedup": n1, "kept": int(keep.sum()), "k_recluster": km.k_},
                indent=2))
        return Selection(keep=keep, reason=reason, score=new_dist.astype(np.float64),
                         extras={"dup_of": dup_of, "recluster_id": new_cid})
