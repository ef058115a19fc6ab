"""kmeans stage and faiss helpers on planted, hand-checkable clusters."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.cluster.faiss_utils import (
    assign,
    default_k,
    inertia,
    plot_cluster_sizes,
    train_kmeans,
)
from curate.cluster.kmeans import KMeans, assign_from_artifacts
from curate.core.schema import embedding_column


def _blobs(n_per=40, d=16, k=4, noise=0.05, seed=0):
    """k unit directions (orthogonal axes) with small noise: the clustering is unambiguous."""
    rng = np.random.default_rng(seed)
    centres = np.eye(d, dtype=np.float32)[:k]
    labels = np.repeat(np.arange(k), n_per)
    x = centres[labels] + noise * rng.normal(size=(len(labels), d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels


def _same_partition(a, b):
    pairs = {(int(i), int(j)) for i, j in zip(a, b)}
    return len(pairs) == len(set(a)) == len(set(b))


def test_default_k_is_car_rule():
    assert default_k(52002) == 161 and default_k(1) == 1 and default_k(8) == 2


@pytest.mark.parametrize("kw, name", [({"k": 0}, "k"), ({"niter": 0}, "niter"), ({"pca": 1.5}, "pca"),
                                      ({"spherical": "yes"}, "spherical"), ({"use_gpu": "auto"}, "use_gpu")])
def test_init_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        KMeans(**kw)


def test_recovers_planted_clusters_and_saves_centroids(ctx):
    x, labels = _blobs()
    t = pa.table({"id": [f"r{i}" for i in range(len(x))], "embedding": embedding_column(x)})
    km = KMeans(k=4, niter=20)
    out = km.annotate(t, ctx)
    assert out.column_names == ["cluster_id", "centroid_distance"]
    assert out.schema.field("cluster_id").type == pa.int64()
    assert out.schema.field("centroid_distance").type == pa.float32()
    cid = out.column("cluster_id").to_numpy()
    dist = out.column("centroid_distance").to_numpy()
    assert _same_partition(cid, labels)
    # cosine distance to the row's own (normalised) centroid, computed by hand
    c = km.centroids_ / np.linalg.norm(km.centroids_, axis=1, keepdims=True)
    np.testing.assert_allclose(dist, 1 - np.einsum("ij,ij->i", x, c[cid]), atol=1e-5)
    assert dist.max() < 0.05
    assert (ctx.artifact_dir / "centroids.npy").exists() and (ctx.artifact_dir / "kmeans.json").exists()
    # refresh: new rows near axis 2 land in the cluster of the old axis-2 rows
    new = np.eye(16, dtype=np.float32)[[2, 2, 0]]
    nid, ndist = assign_from_artifacts(new, ctx.artifact_dir)
    assert nid[0] == nid[1] == cid[labels == 2][0] and nid[2] == cid[labels == 0][0]
    assert ndist.max() < 0.05


def test_seeded_determinism_and_default_k():
    x, _ = _blobs(n_per=50, k=4, noise=0.3, seed=1)
    a = KMeans(seed=7, niter=10).fit_predict(x)
    b = KMeans(seed=7, niter=10).fit_predict(x)
    np.testing.assert_array_equal(a[0], b[0])
    km = KMeans(niter=5)
    cid, _ = km.fit_predict(x)
    assert km.k_ == default_k(200) == 10 and km.centroids_.shape == (10, 16) and cid.max() < 10


def test_euclidean_mode_and_inertia():
    x, labels = _blobs()
    x3 = 3 * x  # raw (unnormalised) vectors: L2 k-means must still separate them
    km = KMeans(k=4, spherical=False, niter=20)
    cid, dist = km.fit_predict(x3)
    assert _same_partition(cid, labels)
    np.testing.assert_allclose(dist, np.linalg.norm(x3 - km.centroids_[cid], axis=1), rtol=1e-4, atol=1e-5)
    assert inertia(x3, km.centroids_, cid) == pytest.approx(float((dist.astype(np.float64) ** 2).sum()), rel=1e-4)


def test_pca_path_and_artifacts(ctx):
    x, labels = _blobs(d=32)
    km = KMeans(k=4, pca=0.95, niter=20)
    cid, _ = km.fit_predict(x, ctx.artifact_dir)
    assert km.pca_components_.shape[1] == 32 and km.pca_components_.shape[0] < 32
    assert _same_partition(cid, labels)
    again, _ = assign_from_artifacts(x, ctx.artifact_dir)
    np.testing.assert_array_equal(again, cid)


def test_k_larger_than_n_is_capped_and_assign_shapes():
    x, _ = _blobs(n_per=2, k=2)
    km = KMeans(k=10, niter=5)
    cid, _ = km.fit_predict(x)
    assert km.k_ == 4 and km.centroids_.shape[0] == 4  # k capped at n = 4 rows
    assert cid.shape == (4,) and set(cid.tolist()) <= set(range(4))
    c, _ = train_kmeans(x, 2, niter=5)
    with pytest.raises(ValueError, match="centroids"):
        assign(x, c[:, :3])


def test_prerequisite_embed_when_column_missing():
    from curate.embed.stage import Embed

    pre = KMeans(embedding_column="vec").prerequisites(["id", "text"])
    assert len(pre) == 1 and isinstance(pre[0], Embed) and pre[0].column == "vec"
    assert KMeans().prerequisites(["id", "embedding"]) == []


def test_plot_cluster_sizes(tmp_path):
    p = tmp_path / "sizes.png"
    plot_cluster_sizes(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 2]), p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
