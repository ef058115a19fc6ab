"""SemDeDup: semantic de-duplication inside k-means clusters (Abbas et al. 2023, arXiv 2303.09540).

Rule (faithful to the reference ``semdedup.py``): inside each cluster, order the members by
cosine distance to the centroid (``keep="hard"``, the default: farthest first), compute for
every member j its highest cosine similarity to any *earlier* member,
``M[j] = max_{i<j} cos(x_i, x_j)``, and drop j when ``M[j] > 1 - eps``. Earlier members count
whether they were kept or dropped, so ``M`` does not depend on ``eps``: a target keep ratio is
then solved exactly (no bisection) by taking the matching quantile of ``M``. Singleton
clusters, and the first member of every cluster, are always kept.

Pairwise similarities are computed in (block x block) tiles with BLAS, so a cluster of c
members needs O(block^2) memory, never c x c.
"""
from __future__ import annotations

import json
import logging
from numbers import Real

import numpy as np
import pyarrow as pa

from curate.core.params import check_ratio
from curate.core.registry import register
from curate.core.schema import CENTROID_DISTANCE, CLUSTER_ID, ID, embedding_matrix
from curate.core.stage import EXECUTION_PARAMS, Selection, Selector, StageContext

log = logging.getLogger(__name__)

KEEP_RULES = ("hard", "easy", "random")


def earlier_max_similarity(x: np.ndarray, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For rows in their given order, the best cosine similarity to any earlier row.

    Args:
        x: (c, d) float32, L2-normalised rows, already in the cluster's sort order.
        block: tile size; memory is O(block^2) (default 2048).

    Returns:
        (m (c,) float32 with m[0] = -inf, arg (c,) int64 index of the earlier row reaching
        m, -1 for row 0). Ties go to the lowest earlier index.
    """
    c = len(x)
    m = np.full(c, -np.inf, dtype=np.float32)
    arg = np.full(c, -1, dtype=np.int64)
    for s in range(0, c, block):
        e = min(s + block, c)
        cols = x[s:e]
        for i0 in range(0, e, block):
            i1 = min(i0 + block, e)
            sim = x[i0:i1] @ cols.T  # (i1-i0, e-s)
            if i1 > s:  # tile touches the diagonal: keep only i < j
                ii = np.arange(i0, i1)[:, None]
                jj = np.arange(s, e)[None, :]
                sim = np.where(ii < jj, sim, -np.inf)
            best = sim.argmax(axis=0)
            val = sim[best, np.arange(e - s)]
            better = val > m[s:e]  # strict: earlier tiles (lower i) win ties
            m[s:e] = np.where(better, val, m[s:e])
            arg[s:e] = np.where(better, best + i0, arg[s:e])
    return m, arg


def cluster_order(cluster_id: np.ndarray, distance: np.ndarray, keep: str = "hard", seed: int = 1234) -> np.ndarray:
    """Row order: grouped by cluster, and inside a cluster by the ``keep`` rule.

    Args:
        cluster_id: (n,) ints.
        distance: (n,) distance to the centroid.
        keep: ``"hard"`` farthest first (SemDeDup's default, keeps the least prototypical copy),
            ``"easy"`` closest first, ``"random"`` seeded shuffle.
        seed: for ``"random"``.

    Returns:
        (n,) int64 permutation; ties broken by input position.
    """
    n = len(cluster_id)
    pos = np.arange(n)
    if keep == "hard":
        key = -np.asarray(distance, np.float64)
    elif keep == "easy":
        key = np.asarray(distance, np.float64)
    elif keep == "random":
        key = np.random.default_rng(seed).permutation(n).astype(np.float64)
    else:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    return np.lexsort((pos, key, np.asarray(cluster_id))).astype(np.int64)


def semdedup_scores(x: np.ndarray, cluster_id: np.ndarray, distance: np.ndarray, *, keep: str = "hard",
                    seed: int = 1234, block: int = 2048) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SemDeDup's M for every row, and the earlier row it matched.

    Args:
        x: (n, d) float32 L2-normalised embeddings.
        cluster_id: (n,) int cluster of each row.
        distance: (n,) distance of each row to its centroid (orders rows inside a cluster).
        keep: ``"hard"`` | ``"easy"`` | ``"random"`` (see :func:`cluster_order`).
        seed: for ``keep="random"``.
        block: tile size for the similarity blocks.

    Returns:
        (m (n,) float32: max cosine similarity to an earlier member of the same cluster, -inf
        for a cluster's first member; match (n,) int64 row of that member, -1 if none;
        order (n,) the processing order, in which every match precedes its row).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    order = cluster_order(cluster_id, distance, keep, seed)
    cid = np.asarray(cluster_id)[order]
    bounds = np.flatnonzero(np.diff(cid)) + 1
    m = np.full(len(x), -np.inf, dtype=np.float32)
    match = np.full(len(x), -1, dtype=np.int64)
    for grp in np.split(order, bounds) if len(order) else []:
        if len(grp) < 2:
            continue
        gm, garg = earlier_max_similarity(x[grp], block)
        m[grp] = gm
        match[grp] = np.where(garg >= 0, grp[np.maximum(garg, 0)], -1)
    return m, match, order


def threshold_for_ratio(m: np.ndarray, ratio: float) -> float:
    """Largest similarity threshold t such that keeping ``m <= t`` keeps about ``ratio`` of rows.

    Keeps at least round(ratio * n) rows (ties at t are all kept); rows with m = -inf (first
    in their cluster) are always kept, so a ratio below their share cannot be reached.

    Returns:
        t; the matching SemDeDup epsilon is 1 - t.
    """
    n = len(m)
    k = max(1, int(round(ratio * n)))
    if k >= n:
        return float("inf")
    return float(np.sort(m.astype(np.float64))[k - 1])


def resolve_representatives(keep: np.ndarray, match: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Follow match chains to a kept row: (n,) int64 representative row (self for kept rows)."""
    rep = np.arange(len(keep), dtype=np.int64)
    for j in order:  # every match precedes its row in ``order``, so rep[match[j]] is final
        if not keep[j]:
            rep[j] = rep[match[j]]
    return rep


@register
class SemDeDup(Selector):
    """Drop near-duplicates by embedding similarity inside k-means clusters (Abbas et al. 2023).

    Give exactly one of ``eps`` and ``target_ratio``.

    Args:
        eps: drop a row when its cosine similarity to an earlier row of its cluster exceeds
            1 - eps (e.g. 0.05; lower eps prunes less).
        target_ratio: fraction of rows to keep, in (0, 1]; eps is solved exactly from the data
            and stored as ``eps_`` (and in the artifact ``semdedup.json``).
        keep: which copy survives: ``"hard"`` (default, farthest from the centroid, as the
            reference code), ``"easy"`` (closest), ``"random"``.
        embedding_column: L2-normalised embeddings (default ``"embedding"``).
        cluster_column: cluster ids (default ``"cluster_id"``).
        distance_column: distance to centroid (default ``"centroid_distance"``).
        seed: for ``keep="random"`` (default 1234).
        block_size: similarity tile size (default 2048; execution-only).

    Missing ``embedding``/``cluster_id`` columns are computed first by ``embed`` + ``kmeans``
    with their defaults (``prerequisites``).

    Selection: reason ``semantic_duplicate``; score = M (max similarity to an earlier row of the
    cluster, NaN for a cluster's first row); extras ``dup_of`` (id of the kept representative,
    found by following the chain of matches), ``dup_match`` (id of the earlier row matched
    directly; it may itself be dropped), ``cluster_id``.
    """

    name = "semdedup"
    reasons = {"semantic_duplicate": "cosine similarity to an earlier row of its cluster > 1 - eps (dup_of names the kept one)"}
    execution_params = EXECUTION_PARAMS + ("block_size",)

    def __init__(self, *, eps: float | None = None, target_ratio: float | None = None, keep: str = "hard",
                 embedding_column: str = "embedding", cluster_column: str = CLUSTER_ID,
                 distance_column: str = CENTROID_DISTANCE, seed: int = 1234, block_size: int = 2048):
        if (eps is None) == (target_ratio is None):
            raise ValueError(f"give exactly one of eps and target_ratio, got eps={eps!r}, target_ratio={target_ratio!r}")
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, Real) or not 0.0 <= float(eps) < 2.0):
            raise ValueError(f"eps must be a number in [0, 2), got {eps!r}")
        check_ratio("target_ratio", target_ratio)
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        self.eps = eps
        self.target_ratio = target_ratio
        self.keep = keep
        self.embedding_column = embedding_column
        self.cluster_column = cluster_column
        self.distance_column = distance_column
        self.seed = seed
        self.block_size = block_size

    def required_columns(self) -> list[str]:
        return [self.embedding_column, self.cluster_column, self.distance_column, ID]

    def prerequisites(self, columns: list[str]) -> list:
        return semantic_prerequisites(columns, self.embedding_column, self.cluster_column, self.distance_column)

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        n = len(table)
        ids = np.array(table.column(ID).to_pylist(), dtype=object)
        cid = table.column(self.cluster_column).to_numpy(zero_copy_only=False).astype(np.int64)
        if n == 0:
            return Selection.keep_mask(np.zeros(0, bool), "semantic_duplicate", dup_of=np.zeros(0, object))
        x = embedding_matrix(table, self.embedding_column)
        dist = table.column(self.distance_column).to_numpy(zero_copy_only=False)
        m, match, order = semdedup_scores(x, cid, dist, keep=self.keep, seed=self.seed, block=self.block_size)
        t = 1.0 - float(self.eps) if self.eps is not None else threshold_for_ratio(m, float(self.target_ratio))
        keep = m.astype(np.float64) <= t
        self.eps_ = 1.0 - t
        self.threshold_ = t
        rep = resolve_representatives(keep, match, order)
        dup_of = np.where(keep, None, ids[rep]).astype(object)
        dup_match = np.where(keep, None, ids[np.maximum(match, 0)]).astype(object)
        log.info("semdedup: eps=%.5f keeps %d of %d rows (%.3f)", self.eps_, keep.sum(), n, keep.mean())
        if ctx is not None and ctx.artifact_dir is not None:
            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
            (ctx.artifact_dir / "semdedup.json").write_text(json.dumps(
                {"eps": self.eps_, "target_ratio": self.target_ratio, "kept": int(keep.sum()), "rows": n}, indent=2))
        score = np.where(np.isfinite(m), m, np.nan)
        return Selection.keep_mask(keep, "semantic_duplicate", score=score, dup_of=dup_of, dup_match=dup_match,
                                   cluster_id=cid)


def semantic_prerequisites(columns, embedding_column: str, cluster_column: str, distance_column: str) -> list:
    """``[Embed, KMeans]`` / ``[KMeans]`` / ``[]`` depending on which inputs are missing."""
    from curate.cluster.kmeans import KMeans
    from curate.embed.stage import Embed

    steps = []
    if embedding_column not in columns:
        steps.append(Embed(column=embedding_column))
    if steps or cluster_column not in columns or distance_column not in columns:
        if cluster_column != CLUSTER_ID or distance_column != CENTROID_DISTANCE:
            raise ValueError(f"columns {cluster_column!r}/{distance_column!r} are missing and the automatic "
                             "kmeans stage writes cluster_id/centroid_distance; add a kmeans stage to the recipe")
        steps.append(KMeans(embedding_column=embedding_column))
    return steps
