"""``kmeans`` stage: FAISS k-means over an embedding column, adding ``cluster_id`` and ``centroid_distance``.

Spherical (cosine) k-means with niter 100 and seed 1234 follows SemDeDup's reference clustering
(Abbas et al. 2023, arXiv 2303.09540); the default k = floor(sqrt(n/2)) and the optional PCA to
95% explained variance follow CaR (Ge et al. 2024, arXiv 2402.18191). Centroids are saved in the
stage's artifact folder so new rows can be placed later with :func:`assign_from_artifacts`.
"""
from __future__ import annotations

import json
import logging
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.cluster.faiss_utils import assign, default_k, l2_normalize, train_kmeans
from curate.core.registry import register
from curate.core.schema import CENTROID_DISTANCE, CLUSTER_ID, embedding_matrix
from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)


def _check_int(name: str, value, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{' or None' if allow_none else ''}, got {value!r}")


@register
class KMeans(Annotator):
    """Cluster rows by their embeddings with FAISS k-means.

    Args:
        k: number of clusters (default None = floor(sqrt(n/2)), CaR's rule); capped at n.
        spherical: cosine k-means on L2-normalised vectors (default True); the distance column
            is then the cosine distance 1 - cos(x, c). False gives L2 k-means on raw vectors
            and Euclidean distances (kMQ's choice).
        niter: Lloyd iterations (default 100, SemDeDup's value).
        nredo: independent k-means runs, the best objective kept (default 1); more restarts
            guard against a poor seeding on small or very separated data.
        seed: faiss seed (default 1234, SemDeDup's value).
        embedding_column: fixed-size-list column to cluster (default ``"embedding"``).
        pca: optional float in (0, 1): reduce to that fraction of explained variance first
            (CaR uses 0.95), or an int number of components; None skips PCA (default).
        max_points_per_centroid: faiss trains on at most k * this many sampled rows (default
            256, faiss's default); every row is still assigned.
        use_gpu: None = use faiss-gpu when present (default), True = require it, False = CPU.
            The GPU path is not yet verified on a GPU.
        show_progress: unused (faiss logs its own iterations); accepted for uniformity.

    Output columns: ``cluster_id`` (int64), ``centroid_distance`` (float32).
    Artifacts: ``centroids.npy`` (k, d') float32, ``kmeans.json`` (k, spherical, objective,
    PCA flag), and with PCA ``pca_mean.npy`` (d,) / ``pca_components.npy`` (d', d).
    """

    name = "kmeans"

    def __init__(self, *, k: int | None = None, spherical: bool = True, niter: int = 100, nredo: int = 1,
                 seed: int = 1234,
                 embedding_column: str = "embedding", pca: float | int | None = None,
                 max_points_per_centroid: int = 256, use_gpu: bool | None = None, show_progress: bool = True):
        _check_int("k", k, 1, allow_none=True)
        _check_int("niter", niter, 1)
        _check_int("nredo", nredo, 1)
        _check_int("seed", seed, 0)
        _check_int("max_points_per_centroid", max_points_per_centroid, 1)
        if not isinstance(spherical, bool):
            raise ValueError(f"spherical must be true or false, got {spherical!r}")
        if use_gpu is not None and not isinstance(use_gpu, bool):
            raise ValueError(f"use_gpu must be true, false or null, got {use_gpu!r}")
        if not isinstance(embedding_column, str) or not embedding_column:
            raise ValueError(f"embedding_column must name a column, got {embedding_column!r}")
        if pca is not None:
            ok = (isinstance(pca, Integral) and not isinstance(pca, bool) and pca >= 1) or \
                 (isinstance(pca, Real) and not isinstance(pca, (bool, Integral)) and 0.0 < pca < 1.0)
            if not ok:
                raise ValueError(f"pca must be a float in (0, 1) (variance kept), an int >= 1 or null, got {pca!r}")
        self.k = k
        self.spherical = spherical
        self.niter = niter
        self.nredo = nredo
        self.seed = seed
        self.embedding_column = embedding_column
        self.pca = pca
        self.max_points_per_centroid = max_points_per_centroid
        self.use_gpu = use_gpu
        self.show_progress = show_progress

    def output_columns(self) -> list[str]:
        return [CLUSTER_ID, CENTROID_DISTANCE]

    def required_columns(self) -> list[str]:
        return [self.embedding_column]

    def prerequisites(self, columns: list[str]) -> list:
        if self.embedding_column in columns:
            return []
        from curate.embed.stage import Embed

        return [Embed(column=self.embedding_column)]

    def fit_predict(self, x: np.ndarray, artifact_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fit on (n, d) embeddings and return (cluster_id (n,) int64, distance (n,) float32).

        Sets ``k_``, ``centroids_`` (k, d') and ``objective_``; with PCA also ``pca_mean_`` and
        ``pca_components_``. Writes the artifacts when ``artifact_dir`` is given.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        k = default_k(n) if self.k is None else int(self.k)
        if k > n:
            log.warning("kmeans: k=%d > n=%d rows; using k=n", k, n)
            k = n
        self.k_ = k
        self.pca_mean_ = self.pca_components_ = None
        if self.pca is not None:
            z = self._fit_pca(x)
        else:
            z = x
        if self.spherical:
            z = l2_normalize(z)
        self.centroids_, self.objective_ = train_kmeans(
            z, k, spherical=self.spherical, niter=self.niter, nredo=self.nredo, seed=self.seed, use_gpu=self.use_gpu,
            max_points_per_centroid=self.max_points_per_centroid)
        cid, dist = assign(z, self.centroids_, spherical=self.spherical, use_gpu=self.use_gpu)
        if artifact_dir is not None:
            self.save(artifact_dir)
        return cid, dist

    def _fit_pca(self, x: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import PCA

        p = PCA(n_components=self.pca, random_state=self.seed, svd_solver="full").fit(x)
        self.pca_mean_ = p.mean_.astype(np.float32)
        self.pca_components_ = p.components_.astype(np.float32)
        log.info("kmeans: PCA kept %d of %d dims (%.3f variance)", p.n_components_, x.shape[1],
                 float(p.explained_variance_ratio_.sum()))
        return (x - self.pca_mean_) @ self.pca_components_.T

    def save(self, artifact_dir: Path) -> None:
        """Write centroids (and PCA) to ``artifact_dir`` for :func:`assign_from_artifacts`."""
        artifact_dir = Path(artifact_dir)
        artifact_dir.mkdir(parents=True, exist_ok=True)
        np.save(artifact_dir / "centroids.npy", self.centroids_)
        if self.pca_components_ is not None:
            np.save(artifact_dir / "pca_mean.npy", self.pca_mean_)
            np.save(artifact_dir / "pca_components.npy", self.pca_components_)
        meta = {"k": self.k_, "spherical": self.spherical, "objective": self.objective_, "niter": self.niter,
                "nredo": self.nredo, "seed": self.seed, "pca": self.pca_components_ is not None,
                "dim": int(self.centroids_.shape[1])}
        (artifact_dir / "kmeans.json").write_text(json.dumps(meta, indent=2))

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        if len(table) == 0:
            return pa.table({CLUSTER_ID: pa.array([], pa.int64()), CENTROID_DISTANCE: pa.array([], pa.float32())})
        x = embedding_matrix(table, self.embedding_column)
        cid, dist = self.fit_predict(x, ctx.artifact_dir)
        return pa.table({CLUSTER_ID: pa.array(cid, pa.int64()), CENTROID_DISTANCE: pa.array(dist, pa.float32())})


def assign_from_artifacts(embeddings: np.ndarray, artifact_dir, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Place new rows in the clusters saved by a ``kmeans`` stage (for refresh runs).

    Args:
        embeddings: (n, d) float32 embeddings from the same embedder.
        artifact_dir: folder holding ``centroids.npy`` and ``kmeans.json`` (and PCA files).
        use_gpu: as in :class:`KMeans`.

    Returns:
        (cluster_id (n,) int64, centroid_distance (n,) float32), as the stage computes them.
    """
    artifact_dir = Path(artifact_dir)
    meta = json.loads((artifact_dir / "kmeans.json").read_text())
    centroids = np.load(artifact_dir / "centroids.npy")
    z = np.asarray(embeddings, dtype=np.float32)
    if meta.get("pca"):
        z = (z - np.load(artifact_dir / "pca_mean.npy")) @ np.load(artifact_dir / "pca_components.npy").T
    if meta["spherical"]:
        z = l2_normalize(z)
    return assign(z, centroids, spherical=meta["spherical"], use_gpu=use_gpu)
