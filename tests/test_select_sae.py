"""SAE-based diversity selection (reconstruction of Yang et al. 2025): sae_features, sae_greedy, sae_simscale."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import curate
from curate.cache.store import StageStore
from curate.core.errors import ConfigError
from curate.core.schema import embedding_column
from curate.engine.config import build_stage
from curate.select.sae import (
    SAEFeatures,
    SAEGreedy,
    SAESimScale,
    feature_coverage,
    feature_coverage_vs_random,
    greedy_coverage,
)
from curate.select.sae_model import TopKSAE

FAST = {"epochs": 15, "expansion": 4, "k": 8}


def clustered(sizes=(300,) + (10,) * 9, d=32, noise=0.05, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around len(sizes) random centres; returns (x, cluster label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), d))
    lab = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[lab] + noise * rng.normal(size=(len(lab), d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(len(lab))
    return x[perm].astype(np.float32), lab[perm]


def table(x: np.ndarray, tokens=None) -> pa.Table:
    cols = {"id": [f"r{i}" for i in range(len(x))], "text": [f"row {i}" for i in range(len(x))],
            "embedding": embedding_column(x)}
    if tokens is not None:
        cols["n_tokens"] = pa.array(tokens, pa.int64())
    return pa.table(cols)


def test_greedy_coverage_beats_random_on_a_planted_feature_set():
    # 200 redundant rows all drawing from the same 10 features, 10 rows each owning 10 private features
    rng = np.random.default_rng(0)
    common = [np.sort(rng.choice(10, 5, replace=False)) for _ in range(200)]
    private = [np.arange(10 + 10 * j, 20 + 10 * j) for j in range(10)]
    feats = common + private
    order, gain, rnd = greedy_coverage(feats, 12, 110, rng.permutation(210))
    assert set(order[:10]) == set(range(200, 210))  # the ten feature-rich rows come first
    keep = np.zeros(210, bool)
    keep[order] = True
    rand = [feature_coverage(feats, np.isin(np.arange(210), rng.choice(210, 12, replace=False))) for _ in range(50)]
    assert feature_coverage(feats, keep) == 1.0 > max(rand)
    assert (np.diff(gain) <= 0).all() and (rnd == 0).all()


def test_lazy_greedy_equals_plain_greedy():
    rng = np.random.default_rng(1)
    feats = [np.unique(rng.integers(0, 60, rng.integers(1, 12))) for _ in range(150)]
    tie = rng.permutation(150)
    order, gain, _ = greedy_coverage(feats, 25, 60, tie, saturation="random")
    covered, want = np.zeros(60, bool), []
    for _ in range(25):  # plain greedy, same tie rule
        g = np.array([(~covered[f]).sum() if i not in want else -1 for i, f in enumerate(feats)])
        best = min(np.flatnonzero(g == g.max()), key=lambda i: tie[i])
        if g[best] == 0:
            break
        want.append(best)
        covered[feats[best]] = True
    assert order[:len(want)].tolist() == want


def test_saturation_restarts_a_new_coverage_pass():
    feats = [np.array([0, 1]), np.array([1, 2]), np.array([0, 1, 2]), np.array([2])]
    order, gain, rnd = greedy_coverage(feats, 4, 3, np.arange(4), saturation="restart")
    assert order.tolist()[0] == 2 and rnd.tolist()[0] == 0 and rnd.max() >= 1 and len(set(order)) == 4


def test_sae_trains_saves_loads_and_is_seeded(tmp_path):
    x, _ = clustered()
    a = TopKSAE(**FAST, seed=0).fit(x)
    assert a.fvu_ < 0.5  # reconstructs clustered data
    a.save(tmp_path)
    b = TopKSAE.load(tmp_path)
    la, va = a.encode(x)
    lb, vb = b.encode(x)
    assert (la == lb).all() and np.allclose(va, vb) and la.shape == (len(x), 8)
    c = TopKSAE(**FAST, seed=0).fit(x)
    assert np.allclose(c.W_dec_, a.W_dec_)
    with pytest.raises(ValueError, match="width"):
        TopKSAE(width=4, k=8)


def test_greedy_covers_more_than_random_and_reaches_every_planted_cluster(tmp_path):
    x, lab = clustered()
    ds, prov = curate.select(table(x), schema="canonical", method="sae_greedy", budget=20, cache_dir=tmp_path, return_provenance=True,
                             **FAST)
    picked = np.array([int(i[1:]) for i in ds["id"]])
    # one big cluster of 300 and nine of 10: random subsets of 20 reach ~4-5 clusters
    rng = np.random.default_rng(0)
    rand_clusters = [len(set(lab[rng.choice(len(x), 20, replace=False)])) for _ in range(50)]
    assert len(picked) == 20 and len(set(lab[picked])) > max(rand_clusters), (len(set(lab[picked])), rand_clusters)
    st = StageStore(tmp_path)
    feats_key = [k for k in st.root.iterdir() if (k / "artifacts" / "sae.npz").exists()]
    assert len(feats_key) == 1  # the SAE is a stage artifact
    full = curate.select(table(x), schema="canonical", with_scores=["sae_latents", "sae_acts"], method="sae_features", cache_dir=tmp_path, **{k: v for k, v in FAST.items()})
    t = pa.table({"sae_latents": full.data.table.column("sae_latents"), "sae_acts": full.data.table.column("sae_acts")})
    keep = np.isin(np.arange(len(x)), picked)
    cov = feature_coverage_vs_random(t, keep, n_random=20, seed=0)
    assert cov["selected"] > cov["random_max"], cov
    p = prov.to_pylist()
    assert {"n_features", "round", "sae_greedy_score"} <= set(prov.column_names)
    assert {r["reason"] for r in p if r["status"] == "dropped"} <= {"covered_features", "not_selected_by_budget"}
    assert all(r["reason"] for r in p if r["status"] == "dropped")


@pytest.mark.parametrize("method", ["sae_greedy", "sae_simscale"])
def test_exact_budgets_determinism_and_reasons(method, tmp_path):
    x, _ = clustered(sizes=(60, 40, 20, 10), seed=2)
    for budget, k in ((1, 1), (7, 7), (130, 130), (0.25, 32)):
        ds, prov = curate.select(table(x), schema="canonical", method=method, budget=budget, cache_dir=tmp_path, return_provenance=True,
                                 **FAST)
        assert len(ds) == k
        st = prov.column("status").to_pylist()
        assert st.count("dropped") == 130 - k
        assert all(r for r, s in zip(prov.column("reason").to_pylist(), st) if s == "dropped")
    a = curate.select(table(x), schema="canonical", method=method, budget=15, seed=3, cache_dir=tmp_path / "a", **FAST)["id"]
    b = curate.select(table(x), schema="canonical", method=method, budget=15, seed=3, cache_dir=tmp_path / "b", **FAST)["id"]
    assert a == b
    tokens = np.arange(1, 131)
    stage = build_stage({"type": method, "budget": {"tokens": 400}, **FAST})
    ann = SAEFeatures(**FAST, show_progress=False).annotate(table(x), None)
    t = table(x, tokens)
    for c in ann.column_names:
        t = t.append_column(c, ann.column(c))
    sel = stage.select(t, None)
    assert 0 < tokens[sel.keep].sum() <= 400
    # as many picks as fit: the method's own k picks, and its k + 1 picks would overflow
    k = sel.n_kept
    assert set(np.flatnonzero(sel.keep)) == set(stage.pick(t, None, k).order[:k])
    assert tokens[stage.pick(t, None, k + 1).order[:k + 1]].sum() > 400


def test_simscale_drops_planted_near_duplicates_first(tmp_path):
    # 20 distinct directions, each copied 5 times (tiny noise): at budget 20 one copy of each is kept
    x, lab = clustered(sizes=(5,) * 20, d=48, noise=0.001, seed=4)
    ds, prov = curate.select(table(x), schema="canonical", method="sae_simscale", budget=20, cache_dir=tmp_path, return_provenance=True,
                             **FAST)
    picked = np.array([int(i[1:]) for i in ds["id"]])
    assert sorted(lab[picked].tolist()) == list(range(20))
    p = prov.to_pylist()
    assert {r["reason"] for r in p if r["status"] == "dropped"} <= {"similar_features", "not_selected_by_budget"}
    assert any(r["reason"] == "similar_features" for r in p)
    cos = curate.select(table(x), schema="canonical", method="sae_simscale", budget=20, similarity="cosine", cache_dir=tmp_path, **FAST)
    assert sorted(lab[[int(i[1:]) for i in cos["id"]]].tolist()) == list(range(20))


def test_raw_rows_get_minilm_and_the_sae_automatically(tmp_path):
    from conftest import SAMPLE

    from curate.ingest import read as cio

    t = cio.read_input(SAMPLE / "gsm8k_500.jsonl").table.slice(0, 60)
    ds, prov = curate.select(t, schema="canonical", with_scores=["sae_latents"], method="sae_greedy", budget=10, cache_dir=tmp_path, return_provenance=True, **FAST)
    assert len(ds) == 10 and "sae_latents" in ds.column_names
    assert sorted({r["stage"] for r in prov.to_pylist() if r["stage"]}) == ["2:sae_greedy"]


@pytest.mark.parametrize("n", [1, 2])
def test_tiny_pools(n):
    x, _ = clustered(sizes=(n,), d=16)
    for method in ("sae_greedy", "sae_simscale"):
        assert len(curate.select(table(x), schema="canonical", method=method, budget=n, epochs=2, k=4, expansion=2)) == n


def test_errors_name_the_parameter():
    with pytest.raises(ValueError, match="saturation"):
        SAEGreedy(budget=3, saturation="stop")
    with pytest.raises(ValueError, match="similarity"):
        SAESimScale(budget=3, similarity="dice")
    with pytest.raises(ValueError, match="order"):
        SAESimScale(budget=3, order="length")
    with pytest.raises(ValueError, match="tau_step"):
        SAESimScale(budget=3, tau_step=0)
    with pytest.raises(ConfigError, match="k"):
        build_stage({"type": "sae_greedy", "budget": 3, "k": 0})
    assert SAEGreedy(budget=3).method_prerequisites(["sae_latents", "sae_acts"]) == []
    assert "batch_size" in SAEFeatures().cache_params()  # it changes the trained SAE
    assert [s.name for s in SAEGreedy(budget=3).method_prerequisites([])] == ["embed", "sae_features"]


def test_shipped_recipe_runs(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from test_select_rds import bow_encode, recipe_from, write_sample_pool

    from curate.embed.stage import Embed

    monkeypatch.setattr(Embed, "encode", bow_encode)  # MiniLM stand-in, keeps the suite fast
    recipe = recipe_from("sae_greedy", write_sample_pool(tmp_path), tmp_path / "out", 12)
    recipe["stages"][-1].update(FAST)
    res = curate.run(recipe, show_progress=False)
    assert res.counts["n_selected"] == 12 and res.counts["n_dropped"] == 78
    p = pq.read_table(res.output_dir / "provenance.parquet").to_pylist()
    assert {r["reason"] for r in p if r["status"] == "dropped"} <= {"covered_features", "not_selected_by_budget"}
