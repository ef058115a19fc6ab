"""LSH banding and connected components on numpy arrays (no Python dicts of sets).

Memory is O(n * b) for the band keys plus O(edges): per band we argsort the (n,) uint64 keys
and link consecutive members of each run of equal keys (datatrove's "adjacent equal
signatures" chain), which gives the same connected components as linking all pairs of a
bucket at a fraction of the edges. Components come from union-find (scipy's C
``connected_components``, which is a union-find / BFS over a CSR graph).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def band_edges(keys: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs from band collisions, as chains within each bucket.

    Args:
        keys: (n, b) uint64 band keys.
        valid: optional (n,) bool; rows where False (no signature) never become candidates.

    Returns:
        (src, dst): (e,) int64 row indices with src != dst; every bucket of m rows in any band
        contributes its m - 1 consecutive links (duplicates across bands removed).
    """
    n, b = keys.shape
    rows = np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)
    srcs, dsts = [], []
    for i in range(b):
        k = keys[rows, i]
        order = np.argsort(k, kind="stable")
        sk = k[order]
        same = np.flatnonzero(sk[1:] == sk[:-1])
        if len(same):
            srcs.append(rows[order[same]])
            dsts.append(rows[order[same + 1]])
    if not srcs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    src, dst = np.concatenate(srcs), np.concatenate(dsts)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    code = np.unique(lo * np.int64(n) + hi)
    return code // n, code % n


def bucket_members(keys: np.ndarray, valid: np.ndarray | None = None) -> list[np.ndarray]:
    """Row indices of every bucket with >= 2 members, over all bands (for exhaustive checks).

    Args:
        keys: (n, b) uint64 band keys.
        valid: optional (n,) bool mask of rows with a signature.

    Returns:
        list of (m,) int64 arrays, one per bucket (a bucket repeated in several bands repeats).
    """
    n, b = keys.shape
    rows = np.arange(n, dtype=np.int64) if valid is None else np.flatnonzero(valid).astype(np.int64)
    out = []
    for i in range(b):
        k = keys[rows, i]
        order = np.argsort(k, kind="stable")
        sk = k[order]
        starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        ends = np.r_[starts[1:], len(sk)]
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            out.append(rows[order[s:e]])
    return out


def warm_up() -> None:
    """Import what :func:`connected_components` needs (scipy.sparse, ~0.3 s) ahead of time.

    ``compute_band_keys`` calls it while the parent only waits for the last worker shards, so
    the import is off the serial path after the signatures.
    """
    import scipy.sparse  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401


def connected_components(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Union-find over edges: component label of every node.

    Args:
        n: number of nodes.
        src, dst: (e,) int64 edge endpoints.

    Returns:
        (n,) int64 labels; each label is the smallest node index of its component, so labels are
        deterministic whatever order the edges came in.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    if len(src) == 0:
        return np.arange(n, dtype=np.int64)
    g = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n, n)).tocsr()
    _, lab = cc(g, directed=False)
    lab = lab.astype(np.int64)
    first = np.full(lab.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n, dtype=np.int64))
    return first[lab]


def representatives(labels: np.ndarray, priority: np.ndarray | None = None) -> np.ndarray:
    """The kept row of each component: highest priority, ties to the lowest row index.

    Args:
        labels: (n,) int64 component labels (from :func:`connected_components`).
        priority: optional (n,) float64; larger wins (NaN counts as -inf). None = keep first.

    Returns:
        (n,) int64: for every row, the index of its component's representative.
    """
    n = len(labels)
    idx = np.arange(n, dtype=np.int64)
    if priority is None:
        pr = np.zeros(n)
    else:
        pr = np.where(np.isnan(priority), -np.inf, priority.astype(np.float64))
    order = np.lexsort((idx, -pr, labels))  # by label, then priority desc, then index asc
    sl = labels[order]
    head = np.r_[True, sl[1:] != sl[:-1]]
    rep_of_label = np.empty(n, dtype=np.int64)
    rep_of_label[sl[head]] = order[head]
    return rep_of_label[labels]
