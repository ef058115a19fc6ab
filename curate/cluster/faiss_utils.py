"""Array-in/array-out clustering helpers on FAISS: k-means, assignment, cluster-size plots.

Everything here takes and returns numpy arrays (shapes in each docstring), in the manner of
``faiss.contrib``. Embeddings are (n, d) float32; for cosine work they are L2-normalised rows.
"""
from __future__ import annotations

import logging
import math

import numpy as np

log = logging.getLogger(__name__)


def default_k(n: int) -> int:
    """CaR's rule k = floor(sqrt(n / 2)), at least 1 (Ge et al. 2024, ``Clustering/cluster.py``).

    Args:
        n: number of rows to cluster.

    Returns:
        int >= 1 (k = 161 for Alpaca's 52,002 rows).
    """
    return max(1, int(math.floor(math.sqrt(n / 2))))


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Return a float32 copy of (n, d) ``x`` with unit-norm rows (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def train_kmeans(
    x: np.ndarray,
    k: int,
    *,
    spherical: bool = True,
    niter: int = 100,
    nredo: int = 1,
    seed: int = 1234,
    use_gpu: bool | None = None,
    max_points_per_centroid: int = 256,
    verbose: bool = False,
) -> tuple[np.ndarray, float]:
    """Fit k-means with ``faiss.Kmeans`` and return the centroids.

    Spherical k-means (centroids re-normalised each iteration, inner-product assignment) is what
    SemDeDup's reference clustering uses (Abbas et al. 2023; faiss ``spherical=True``, niter 100,
    seed 1234).

    Args:
        x: (n, d) float32 embeddings (L2-normalised when ``spherical``).
        k: number of clusters, 1 <= k <= n.
        spherical: cosine k-means (default True); False is plain L2 k-means (kMQ's choice).
        niter: Lloyd iterations (default 100).
        nredo: independent restarts, the best objective wins (default 1).
        seed: faiss seed (default 1234).
        use_gpu: True forces the GPU (error if none), False forbids it, None uses it when
            faiss-gpu and a GPU are present. The GPU path is not yet verified on a GPU.
        max_points_per_centroid: faiss subsamples the training set to k * this many points
            (default 256, faiss's own default); pass a large number to train on everything.
        verbose: let faiss print its iteration log.

    Returns:
        (centroids (k, d) float32, objective): the objective is faiss's last-iteration value
        (sum of squared L2 distances; for spherical, sum of inner products).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k!r}")
    gpu = gpu_available() if use_gpu is None else bool(use_gpu)
    if gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no GPU")
    km = faiss.Kmeans(d, k, niter=niter, nredo=nredo, seed=seed, spherical=spherical, gpu=gpu, verbose=verbose,
                      max_points_per_centroid=max_points_per_centroid)
    km.train(x)
    obj = float(km.obj[-1]) if len(km.obj) else float("nan")
    return np.ascontiguousarray(km.centroids, dtype=np.float32), obj


def assign(
    embeddings: np.ndarray, centroids: np.ndarray, *, spherical: bool = True, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row, and its distance: use it to place new rows on refresh.

    Args:
        embeddings: (n, d) float32 (L2-normalised when ``spherical``).
        centroids: (k, d) float32, e.g. ``centroids.npy`` saved by the ``kmeans`` stage.
        spherical: cosine assignment, distance = 1 - cos (default True); False uses Euclidean
            distance (not squared).
        use_gpu: as in :func:`train_kmeans` (not yet verified on a GPU).

    Returns:
        (cluster_id (n,) int64, distance (n,) float32).
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise ValueError(f"embeddings {x.shape} and centroids {c.shape} must be (n, d) and (k, d)")
    if spherical:
        c = l2_normalize(c)
    index = faiss.IndexFlatIP(c.shape[1]) if spherical else faiss.IndexFlatL2(c.shape[1])
    gpu = gpu_available() if use_gpu is None else bool(use_gpu)
    if gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(c)
    if len(x) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    dist, idx = index.search(x, 1)
    ids = idx[:, 0].astype(np.int64)
    d = (1.0 - dist[:, 0]) if spherical else np.sqrt(np.maximum(dist[:, 0], 0.0))
    return ids, d.astype(np.float32)


def inertia(embeddings: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared Euclidean distances of rows to their assigned centroid (sklearn's ``inertia_``).

    Args:
        embeddings: (n, d); centroids: (k, d); labels: (n,) ints in [0, k).
    """
    diff = np.asarray(embeddings, np.float64) - np.asarray(centroids, np.float64)[labels]
    return float(np.einsum("ij,ij->", diff, diff))


def plot_cluster_sizes(before: np.ndarray, after: np.ndarray, path, *, title: str = "cluster sizes",
                       labels: tuple[str, str] = ("before", "after")) -> None:
    """Write a PNG histogram of cluster sizes before and after a selection.

    Args:
        before: (n0,) cluster ids of the rows before (e.g. the ``kmeans`` output).
        after: (n1,) cluster ids of the rows that survived, in the same id space.
        path: PNG file to write.
        title: plot title.
        labels: legend labels for (before, after).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = np.asarray(before, dtype=np.int64)
    after = np.asarray(after, dtype=np.int64)
    k = int(max(before.max(initial=-1), after.max(initial=-1))) + 1
    sb = np.bincount(before[before >= 0], minlength=k)
    sa = np.bincount(after[after >= 0], minlength=k)
    fig, ax = plt.subplots(figsize=(7, 4))
    top = max(int(sb.max(initial=1)), 1)
    bins = np.linspace(0, top + 1, 41)
    ax.hist(sb, bins=bins, alpha=0.6, label=f"{labels[0]} ({len(before)} rows)")
    ax.hist(sa, bins=bins, alpha=0.6, label=f"{labels[1]} ({len(after)} rows)")
    ax.set_xlabel("rows per cluster")
    ax.set_ylabel("clusters")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
