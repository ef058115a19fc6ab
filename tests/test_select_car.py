"""CaR: planted best row of every cluster is taken, n1 solved from the budget or fixed, contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
from select_toys import (
    SESSION_CACHE,
    blobs,
    check_budgets_and_reasons,
    dolly_rows,
    planted_table,
    run_recipe,
)

import curate
from curate.core.errors import ConfigError
from curate.engine.config import build_stage
from curate.select.car import CaR, car_order, cluster_representatives


def _planted(sizes=(60, 50, 40, 30, 20), seed=0):
    """Blobs whose global top quality all sits in cluster 0; each other cluster holds one
    planted row that is the best of its cluster but below cluster 0's top rows."""
    x, lab = blobs(list(sizes), seed=seed)
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 1, size=len(lab))
    q[lab == 0] += 5.0  # cluster 0 dominates the global ranking
    planted = []
    for j in range(1, len(sizes)):
        i = int(rng.choice(np.flatnonzero(lab == j)))
        q[i] = 2.0 + 0.1 * j  # best of its cluster, far below cluster 0
        planted.append(i)
    return planted_table(x, quality=q), lab, np.array(planted), q


def test_cluster_representatives_and_order_by_hand():
    q = np.array([0.9, 0.1, 0.5, 0.8, np.nan, 0.3])
    lab = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_representatives(q, lab, 1).tolist() == [True, False, False, True, False, True]
    order, rep = car_order(q, lab, None, 1)
    assert order.tolist() == [0, 3, 5, 2, 1, 4]  # reps by score, then the rest by score (NaN last)
    order, _ = car_order(q, lab, 1, 1)
    assert order.tolist() == [0, 3, 5, 2, 1, 4]
    order, _ = car_order(q, lab, 3, 1)
    assert order.tolist() == [0, 3, 2, 5, 1, 4]  # top-3 global first, then the missing rep (5)


def test_car_takes_the_planted_best_row_of_every_cluster():
    t, lab, planted, q = _planted()
    sel = CaR(budget=10, k=5).select(t, None)
    kept = set(np.flatnonzero(sel.keep).tolist())
    assert set(planted.tolist()) <= kept
    # the other 6 are cluster 0's top rows by quality (its rep and the global top)
    top0 = np.flatnonzero(lab == 0)[np.argsort(-q[lab == 0])][:6]
    assert kept == set(planted.tolist()) | set(top0.tolist())
    # the k-means clusters are the planted blobs (up to renaming)
    cid = sel.extras["car_cluster"]
    assert len({(a, b) for a, b in zip(lab, cid)}) == 5
    assert sel.extras["cluster_rep"].sum() == 5
    # top_k by quality at the same budget misses every planted row
    top = build_stage({"type": "top_k", "score": "quality", "budget": 10}).select(t, None)
    assert not top.keep[planted].any()


def test_car_default_k_and_pca_and_every_found_clusters_best_row_is_kept():
    t, lab, planted, q = _planted(sizes=(120, 100, 80, 60, 40))
    st = CaR(budget=30)
    sel = st.select(t, None)
    n = len(lab)
    assert st.k_ == math.floor(math.sqrt(n / 2)) == 14
    assert 1 <= st.pca_dims_ <= 8
    cid = sel.extras["car_cluster"]
    assert len(np.unique(cid)) == st.k_
    for c in np.unique(cid):
        rows = np.flatnonzero(cid == c)
        assert sel.keep[rows[np.argmax(q[rows])]]
    assert set(planted.tolist()) <= set(np.flatnonzero(sel.keep).tolist())


def test_car_paper_n1_gives_the_paper_set_at_its_size_and_is_capped_or_filled_by_budget():
    t, lab, planted, q = _planted()
    n1 = 8
    glob = np.argsort(-q, kind="stable")
    paper = set(glob[:n1].tolist()) | set(planted.tolist())  # top n1 are all in cluster 0
    sel = CaR(budget=len(paper), n1=n1, k=5).select(t, None)
    assert set(np.flatnonzero(sel.keep).tolist()) == paper
    assert CaR(budget=5, n1=n1, k=5).select(t, None).keep[glob[:5]].all()  # a cap: top n1 first
    assert CaR(budget=20, n1=n1, k=5).select(t, None).n_kept == 20  # filled by score


def test_car_contract_budgets_reasons_determinism():
    t, lab, planted, q = _planted()
    check_budgets_and_reasons(lambda b: CaR(budget=b), t, "below_quality_rank")
    a = CaR(budget=15, seed=3).select(t, None)
    b = CaR(budget=15, seed=3).select(t, None)
    assert (a.keep == b.keep).all() and (a.extras["car_cluster"] == b.extras["car_cluster"]).all()
    # nested: a token budget keeps the longest fitting prefix of one pick order
    tokens = t.column("n_tokens").to_numpy()
    st = CaR(budget={"tokens": 900})
    sel = st.select(t, None)
    order, _ = car_order(q, sel.extras["car_cluster"], None, 1)
    k = sel.n_kept
    assert set(np.flatnonzero(sel.keep)) == set(order[:k])
    assert tokens[order[:k]].sum() <= 900 < tokens[order[:k + 1]].sum()


def test_car_tiny_pools_and_given_clusters():
    x, lab = blobs([3])
    sel = CaR(budget=2).select(planted_table(x, quality=[0.1, 0.9, 0.5]), None)
    assert np.flatnonzero(sel.keep).tolist() == [1, 2]
    sel = CaR(budget=1).select(planted_table(x[:1]), None)
    assert sel.n_kept == 1
    x, lab = blobs([10, 10])
    q = np.r_[np.linspace(5, 6, 10), np.linspace(0, 1, 10)]
    sel = CaR(budget=2, cluster_column="cluster_id").select(planted_table(x, quality=q, cluster=lab), None)
    assert np.flatnonzero(sel.keep).tolist() == [9, 19]


@pytest.mark.parametrize("bad", [{"n2": -1}, {"pca": 1.5}, {"k": 0}, {"n1": "all"}])
def test_car_bad_params_fail_at_config_time(bad):
    with pytest.raises(ConfigError):
        build_stage({"type": "car", "budget": 5, **bad})


def test_car_on_raw_rows_adds_embed_and_quality(tmp_path):
    ds, prov = curate.select(dolly_rows(), method="car", budget=12, cache_dir=SESSION_CACHE,
                             return_provenance=True)
    assert len(ds) == 12
    p = prov.to_pandas()
    assert p.car_score.notna().all() and p.quality.notna().all()
    assert set(p[p.status == "dropped"].reason) == {"below_quality_rank"}
    # k = floor(sqrt(60/2)) = 5 clusters, each one's best row selected
    sel = p[p.status == "selected"]
    assert p.car_cluster.nunique() == 5
    for _, g in p.groupby("car_cluster"):
        assert g.loc[g.car_score.idxmax(), "status"] == "selected"
    assert len(sel) == 12


def test_car_recipe_runs_through_extends(tmp_path):
    res, prov = run_recipe("car", tmp_path, budget=8)
    assert res.counts["n_selected"] == 8
    dropped = prov[(prov.status == "dropped") & prov.stage.str.endswith("car")]
    assert set(dropped.reason) == {"below_quality_rank"} and len(dropped) == len(prov) - 8
    # the kmeans stage's cluster_id is kept next to CaR's own clusters
    assert prov.cluster_id.notna().all() and prov.car_cluster.notna().all()
