"""D4 on hand-made vectors: planted duplicates go first, then the most prototypical rows."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.core.schema import embedding_column
from curate.dedup.d4 import D4, prototype_keep


def _planted(thetas_per_cluster, d=8):
    """Rows cos(t) e_a +/- sin(t) e_(3+a), symmetric so every centroid is exactly e_a and a row's
    cosine distance to it is 1 - cos(t). Returns (x, cluster, theta)."""
    xs, cs, ts = [], [], []
    for a, thetas in enumerate(thetas_per_cluster):
        for t in thetas:
            for sign in (1, -1):
                v = np.zeros(d)
                v[a] = np.cos(np.radians(t))
                v[3 + a] = sign * np.sin(np.radians(t))
                xs.append(v), cs.append(a), ts.append(t)
    return np.array(xs, np.float32), np.array(cs), np.array(ts, float)


def _table(x, cid):
    n = len(x)
    c = np.eye(x.shape[1], dtype=np.float32)[cid]
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"t{i}" for i in range(n)],
                     "embedding": embedding_column(x), "cluster_id": pa.array(cid, pa.int64()),
                     "centroid_distance": pa.array(1 - np.einsum("ij,ij->i", x, c), pa.float32())})


def _with_copies(x, cid, rows):
    """Append exact copies of ``rows`` (the planted duplicates)."""
    return np.concatenate([x, x[rows]]), np.concatenate([cid, cid[rows]])


def test_prototype_keep_global_and_per_cluster():
    d = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.05])
    assert prototype_keep(d, 3).tolist() == [False, True, False, True, True, False]
    # per cluster: sizes 3 and 3 share 3 slots -> 2 (tie of remainders goes to cluster 0) and 1
    assert prototype_keep(d, 3, np.array([0, 0, 0, 1, 1, 1])).tolist() == [False, True, True, True, False, False]
    assert prototype_keep(d, 0).sum() == 0 and prototype_keep(d, 6).all()


def test_duplicates_first_then_prototypes(ctx):
    x, cid, theta = _planted([[5, 10, 15, 20], [5.5, 10.5, 15.5, 20.5], [6, 11, 16, 21]])  # 24 rows
    x, cid = _with_copies(x, cid, [0, 9])  # r24 copies r0, r25 copies r9
    theta = np.concatenate([theta, theta[[0, 9]]])
    st = D4(budget=12, dedup_ratio=24 / 26, k=3, niter=20, nredo=10)
    sel = st.select(_table(x, cid), ctx)
    reason = sel.reason.tolist()
    assert [i for i, r in enumerate(reason) if r == "semantic_duplicate"] == [24, 25]
    assert sel.extras["dup_of"][24] == "r0" and sel.extras["dup_of"][25] == "r9"
    assert sel.n_kept == 12
    # the 12 least prototypical originals (theta >= 15 deg) survive; the rest are "prototypical"
    np.testing.assert_array_equal(sel.keep[:24], theta[:24] >= 15)
    assert all(reason[i] == "prototypical" for i in range(24) if theta[i] < 15)
    np.testing.assert_allclose(sel.score[:24], 1 - np.cos(np.radians(theta[:24])), atol=1e-5)
    assert (ctx.artifact_dir / "recluster" / "centroids.npy").exists() and st.k_ == 3


def test_global_versus_per_cluster_ranking(ctx):
    x, cid, theta = _planted([[5, 10, 15, 20], [5.5, 10.5, 15.5, 20.5], [1, 2, 3, 4]])
    t = _table(x, cid)
    glob = D4(budget=12, dedup_ratio=1.0, k=3, niter=20, nredo=10).select(t, ctx)
    per = D4(budget=12, dedup_ratio=1.0, k=3, niter=20, nredo=10, global_ranking=False).select(t, ctx)
    assert glob.n_kept == per.n_kept == 12
    assert not glob.keep[cid == 2].any()  # the tight cluster is all prototypes globally
    assert [int(per.keep[cid == a].sum()) for a in range(3)] == [4, 4, 4]
    np.testing.assert_array_equal(per.keep[cid == 2], theta[cid == 2] >= 3)


def test_fraction_budget_and_invariant(ctx):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cid = (x[:, 0] > 0).astype(np.int64)
    sel = D4(budget=0.5, dedup_ratio=0.75, k=5, niter=10).select(_table(x, cid), ctx)
    assert sel.n_kept == 100
    n_dup = int((sel.reason == "semantic_duplicate").sum())
    assert n_dup == 50 and int((sel.reason == "prototypical").sum()) == 50
    assert sel.extras["recluster_id"].max() < 5


@pytest.mark.parametrize("kw, name", [({"budget": 0.9, "dedup_ratio": 0.75}, "budget"),
                                      ({"budget": 0.5, "dedup_ratio": 0}, "dedup_ratio"),
                                      ({"budget": 0.5, "k": 0}, "k"), ({"budget": -1}, "budget"),
                                      ({"budget": 0.5, "keep": "x"}, "keep")])
def test_init_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        D4(**kw)


def test_via_curate_select_with_precomputed_embeddings():
    import curate

    x, cid, theta = _planted([[5, 10, 15, 20], [5.5, 10.5, 15.5, 20.5], [6, 11, 16, 21]])
    x, cid = _with_copies(x, cid, [0])
    t = pa.table({"id": [f"r{i}" for i in range(len(x))], "text": [f"t{i}" for i in range(len(x))],
                  "embedding": embedding_column(x)})
    ds, prov = curate.select(t, schema="canonical", method="d4", budget=12, dedup_ratio=24 / 25, k=3, niter=20, nredo=10,
                             return_provenance=True)
    assert len(ds) == 12 and sorted(ds["id"]) == sorted(f"r{i}" for i in range(24) if theta[i] >= 15)
    p = {r["id"]: r for r in prov.to_pylist()}
    assert p["r24"]["reason"] == "semantic_duplicate" and p["r24"]["dup_of"] == "r0"
