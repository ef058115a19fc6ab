"""SemDeDup on hand-made vectors with exact expectations, and on real MiniLM embeddings."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.core.schema import embedding_column
from curate.dedup.semantic import (
    SemDeDup,
    earlier_max_similarity,
    semdedup_scores,
    threshold_for_ratio,
)

DATA = Path(__file__).parent / "data" / "embed" / "gsm8k_planted.jsonl"


def _unit(*angles_deg):
    """2-D unit vectors at the given angles (cosine between a and b = cos(a - b))."""
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def _table(x, cid, dist, ids=None):
    n = len(x)
    return pa.table({"id": ids or [f"r{i}" for i in range(n)], "embedding": embedding_column(x),
                     "cluster_id": pa.array(cid, pa.int64()), "centroid_distance": pa.array(dist, pa.float32())})


def test_earlier_max_similarity_matches_brute_force_across_blocks():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m, arg = earlier_max_similarity(x, block=37)
    s = x @ x.T
    s[np.tril_indices(300)] = -np.inf
    assert m[0] == -np.inf and arg[0] == -1
    np.testing.assert_allclose(m[1:], s.max(axis=0)[1:], atol=1e-5)
    np.testing.assert_array_equal(arg[1:], s.argmax(axis=0)[1:])


def test_planted_pair_removed_far_pair_kept_farthest_copy_survives(ctx):
    # cluster 0: r0/r1 at 0 deg and 1 deg (cos 0.99985: duplicates); r2 at 60 deg (cos 0.5: not)
    # cluster 1: r3 at 90 deg and r4 at 90.5 deg, but r4 is in cluster 2 -> never compared
    x = _unit(0, 1, 60, 90, 90.5)
    cid = [0, 0, 0, 1, 2]
    dist = [0.10, 0.30, 0.20, 0.0, 0.0]  # r1 farther from the centroid than r0
    sel = SemDeDup(eps=0.01).select(_table(x, cid, dist), ctx)
    assert sel.keep.tolist() == [False, True, True, True, True]
    assert sel.reason[0] == "semantic_duplicate" and sel.extras["dup_of"][0] == "r1"
    assert sel.extras["dup_of"][1] is None
    assert sel.score[0] == pytest.approx(np.cos(np.radians(1)), abs=1e-6) and np.isnan(sel.score[1])
    # keep="easy": the copy closest to the centroid (r0) survives instead
    easy = SemDeDup(eps=0.01, keep="easy").select(_table(x, cid, dist), ctx)
    assert easy.keep.tolist() == [True, False, True, True, True] and easy.extras["dup_of"][1] == "r0"


def test_chain_compares_against_dropped_items_and_dup_of_follows_it(ctx):
    # a=0, b=2, c=4 deg, processed a, b, c (distance descending). cos(a,c)=cos 4deg < 1-eps,
    # but cos(b,c) = cos 2deg > 1-eps: c is dropped although b (its match) was dropped too
    eps = 1 - np.cos(np.radians(3))
    x = _unit(0, 2, 4)
    sel = SemDeDup(eps=float(eps)).select(_table(x, [0, 0, 0], [0.3, 0.2, 0.1]), ctx)
    assert sel.keep.tolist() == [True, False, False]
    assert sel.extras["dup_match"].tolist() == [None, "r0", "r1"]
    assert sel.extras["dup_of"].tolist() == [None, "r0", "r0"]  # the kept representative


def test_target_ratio_solves_eps_exactly(ctx):
    # 10 identical rows: M[j] is the same number for every j >= 1, so a threshold cannot split
    # them: ties are kept together rather than broken arbitrarily...
    x = _unit(*[7] * 10)
    dist = np.linspace(1, 0, 10)
    sel = SemDeDup(target_ratio=0.5).select(_table(x, [0] * 10, dist), ctx)
    assert sel.n_kept == 10
    # ...while distinct similarities give an exact count
    x = _unit(0, 1, 3, 6, 10, 15, 21, 28, 36, 45)  # gaps 1..9 deg
    st = SemDeDup(target_ratio=0.5)
    sel = st.select(_table(x, [0] * 10, dist), ctx)
    # M = cos(gap): keep row 0 (no earlier row) and the 4 rows with the widest gaps (6..9 deg)
    assert sel.n_kept == 5 and sel.keep.tolist() == [True] + [False] * 5 + [True] * 4
    assert st.eps_ == pytest.approx(1 - np.cos(np.radians(6)), abs=1e-6)
    assert json.loads((ctx.artifact_dir / "semdedup.json").read_text())["kept"] == 5


def test_threshold_for_ratio_and_singletons_kept():
    m = np.array([-np.inf, 0.2, 0.9, 0.5, -np.inf], np.float32)
    assert threshold_for_ratio(m, 0.6) == pytest.approx(0.2)
    assert threshold_for_ratio(m, 1.0) == np.inf
    x = _unit(0, 0, 0)
    m, match, _ = semdedup_scores(x, np.array([0, 1, 2]), np.zeros(3))
    assert np.isneginf(m).all() and (match == -1).all()  # identical vectors, but each alone in its cluster


@pytest.mark.parametrize("kw", [{}, {"eps": 0.1, "target_ratio": 0.5}, {"target_ratio": 0}, {"keep": "oldest"},
                                {"eps": -0.1}])
def test_init_validation(kw):
    with pytest.raises(ValueError):
        SemDeDup(**kw)


def test_prerequisites():
    from curate.cluster.kmeans import KMeans
    from curate.embed.stage import Embed

    pre = SemDeDup(eps=0.05).prerequisites(["id", "text"])
    assert [type(p) for p in pre] == [Embed, KMeans]
    assert [type(p) for p in SemDeDup(eps=0.05).prerequisites(["id", "embedding"])] == [KMeans]
    assert SemDeDup(eps=0.05).prerequisites(["id", "embedding", "cluster_id", "centroid_distance"]) == []


def test_curate_select_on_real_text_removes_only_planted_copies():
    import curate

    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    ds, prov = curate.select([{"id": r["id"], "text": r["text"]} for r in rows], method="semdedup", eps=0.05,
                             return_provenance=True)
    assert len(ds) == 20
    dropped = prov.filter(pa.compute.equal(prov.column("status"), "dropped")).to_pylist()
    assert {d["reason"] for d in dropped} == {"semantic_duplicate"}
    # exactly one row of each planted pair goes (which one depends on the distance to the
    # centroid: keep="hard" keeps the farther), and dup_of names the other one
    pairs = {frozenset((r["id"], r["planted"])) for r in rows if r["planted"]}
    assert {frozenset((d["id"], d["dup_of"])) for d in dropped} == pairs
