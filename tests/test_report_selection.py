"""The report's selection section: pool map from cached embeddings, cluster sizes, score plots."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from _planted import N_TOPICS, planted_vector, write_pool

import curate
from curate.cache.store import StageStore
from curate.report import selection as rs


def _run(tmp_path, method: dict, *, embed: bool = True, name: str = "run"):
    pool = tmp_path / "pool.jsonl"
    if not pool.exists():
        write_pool(pool)
    stages = [{"type": "exact_dedup"}]
    if embed:
        stages.append({"type": "planted_embedding"})
    # a selector between the embedding step and the method: the pool's vectors must still line up
    stages.append({"type": "length_filter", "min_words": 10})
    stages.append(method)
    cfg = {"name": name, "input": {"path": str(pool)}, "stages": stages, "output": {"dir": str(tmp_path / name)}}
    return curate.run(cfg, show_progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs most tests read (module scope: each pipeline run + plots takes a few seconds)."""
    tmp = tmp_path_factory.mktemp("report_selection")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATE_CACHE", str(tmp / "cache"))
    out = {"random": _run(tmp, {"type": "random", "budget": 40, "seed": 3}, name="random"),
           "top_k": _run(tmp, {"type": "top_k", "score": "h_words", "budget": 30}, name="top_k"),
           "no_embed": _run(tmp, {"type": "random", "budget": 20}, embed=False, name="no_embed")}
    mp.undo()
    return out


def _report(res) -> dict:
    return json.loads((res.output_dir / "report.json").read_text())


def test_random_report_has_map_clusters_and_counts(runs):
    res = runs["random"]
    rep = _report(res)
    (sel,) = rep["selection"]
    assert sel["type"] == "random" and sel["label"] == "3:random"
    # 202 rows - 1 exact duplicate - 1 too short reach the method; it keeps exactly its budget
    assert (sel["pool_rows"], sel["picked_rows"]) == (200, 40)
    assert sel["embeddings"]["label"] == "1:planted_embedding"
    cl = sel["clusters"]
    assert cl["n_clusters"] == N_TOPICS and sum(cl["sizes_pool"]) == 200 and sum(cl["sizes_picked"]) == 40
    prov = pq.read_table(res.output_dir / "provenance.parquet")
    picked = [c for c, s in zip(prov.column("cluster_id").to_pylist(), prov.column("status").to_pylist()) if s == "selected"]
    assert cl["n_covered"] == len(set(picked))
    for p in ("plots/select_3_random_map.png", "plots/select_3_random_clusters.png"):
        assert p in rep["plots"] and (res.output_dir / p).stat().st_size > 1000
    assert rep["selection"][0]["map"] == {"method": "pca", "points_pool": 200, "points_picked": 40, "seed": 0}
    md = (res.output_dir / "report.md").read_text()
    assert "## Selection methods" in md and f"{cl['n_covered']}/{N_TOPICS}" in md


def test_pool_vectors_line_up_with_the_ledger(runs):
    """The vectors read back from the cache are those of the pool rows, in provenance order."""
    res = runs["random"]
    rep = _report(res)
    prov = pq.read_table(res.output_dir / "provenance.parquet")
    sel = rep["selection"][0]
    pool, picks = rs.step_masks(prov, 3, sel["label"])
    ids = np.array(prov.column("id").to_pylist(), dtype=object)
    assert "dup0" not in ids[pool] and "short" not in ids[pool] and picks.sum() == 40
    x = rs.load_pool_embeddings(prov, rep["stages"], sel["embeddings"], sel["cache_dir"], pool)
    data = pq.read_table(res.output_dir / "data")
    instr = dict(zip(data.column("id").to_pylist(), data.column("instruction").to_pylist()))
    # selected rows: compare with the planted vector of their own text
    for row, rid in zip(x[picks[pool]], ids[picks]):
        np.testing.assert_allclose(row, planted_vector(instr[rid]))
    # every pool row: the planted vector of "topic c: question i" for id r<i>
    expect = np.stack([planted_vector(f"topic {int(r[1:]) % N_TOPICS}: question {int(r[1:])}") for r in ids[pool]])
    np.testing.assert_allclose(x, expect)


def test_top_k_scores_and_coverage(runs):
    """top_k on h_words takes only topic 0's long rows: one cluster of four covered."""
    rep = _report(runs["top_k"])
    sel = next(s for s in rep["selection"] if s["type"] == "top_k")
    assert sel["clusters"]["n_covered"] == 1 and sel["clusters"]["coverage"] == 0.25
    assert sel["clusters"]["sizes_picked"] == [30, 0, 0, 0] and sel["clusters"]["sizes_pool"] == [50] * 4
    s = sel["scores"]["top_k_score"]
    assert s["pool"]["n"] == 200 and s["picked"]["n"] == 30 and s["picked"]["mean"] > s["pool"]["mean"]
    assert any(p.endswith("_scores.png") for p in rep["plots"])


def test_without_embeddings_the_report_says_why(runs):
    res = runs["no_embed"]
    rep = _report(res)
    (sel,) = rep["selection"]
    assert "missing" in sel["embeddings"] and "embed" in sel["embeddings"]["missing"]
    assert "clusters" not in sel and not any("_map" in p for p in rep["plots"])
    assert "no cluster_id" in (res.output_dir / "report.md").read_text()


def test_cleared_cache_drops_the_map_not_the_report(tmp_path):
    res = _run(tmp_path, {"type": "random", "budget": 40, "seed": 3})
    rep = json.loads((res.output_dir / "report.json").read_text())
    entries = rep["selection"]
    shutil.rmtree(StageStore(entries[0]["cache_dir"]).path(entries[0]["embeddings"]["key"]))
    assert "no longer in" in rs.find_embeddings(rep["stages"], 3, entries[0]["cache_dir"])["missing"]
    prov = pq.read_table(res.output_dir / "provenance.parquet")
    made = rs.make_plots(entries, prov, rep["stages"], tmp_path)  # redrawn from the run dir alone
    assert made == ["plots/select_3_random_clusters.png"]
    assert entries[0]["embeddings"]["missing"].startswith("could not read cached embeddings")


def test_non_budget_selectors_are_not_selection_methods(runs):
    res = runs["random"]
    rep = _report(res)
    cols = pq.read_table(res.output_dir / "provenance.parquet").column_names
    kinds = {s["type"]: rs.is_selection_step(s, cols) for s in rep["stages"]}
    assert kinds == {"exact_dedup": False, "planted_embedding": False, "length_filter": False, "random": True}


def test_pca_map_is_deterministic_and_sign_fixed():
    x = np.random.default_rng(0).normal(size=(5000, 6)) * [5, 2, 1, 1, 1, 1]
    m1, c1 = rs.pca_2d(x, max_points=1000, seed=4)
    _, c1b = rs.pca_2d(x, max_points=1000, seed=4)
    np.testing.assert_array_equal(c1, c1b)  # same data, same seed: the same map
    m2, c2 = rs.pca_2d(-x, max_points=1000, seed=4)
    np.testing.assert_allclose(m2, -m1)
    np.testing.assert_allclose(c2, c1, atol=1e-12)  # mirrored data: the same axes, signs fixed by the rule
    assert abs(c1[0, 0]) > 0.99 and c1[0, 0] > 0  # first axis = the widest direction, positive sign
    # the sign rule itself (largest-magnitude loading positive) on inputs whose raw eigenvectors
    # come out with either sign: without the rule, 16 components all positive has odds 2**-16
    for seed in range(8):
        y = np.random.default_rng(100 + seed).normal(size=(300, 5)) @ np.random.default_rng(seed).normal(size=(5, 5))
        _, comp = rs.pca_2d(y, max_points=1000)
        for row in comp:
            assert row[np.argmax(np.abs(row))] > 0
    _, c3 = rs.pca_2d(x[:1], max_points=1000)
    assert c3.shape == (2, 6)


def test_cluster_stats_ignores_missing_ids():
    ids = np.array([0, 0, 1, None, -1, 2], dtype=object)
    pool = np.array([1, 1, 1, 1, 1, 0], bool)
    picks = np.array([1, 0, 0, 1, 0, 0], bool)
    assert rs.cluster_stats(ids, pool, picks) == {"n_clusters": 2, "n_covered": 1, "coverage": 0.5,
                                                  "sizes_pool": [2, 1], "sizes_picked": [1, 0]}
    assert rs.cluster_stats(np.array([None, None], dtype=object), np.ones(2, bool), np.ones(2, bool)) is None


def test_budgeted_selectors_off_the_contract_count():
    d4 = {"kind": "selector", "type": "d4", "params": {"budget": 0.5, "dedup_ratio": 0.75}}
    semdedup = {"kind": "selector", "type": "semdedup", "params": {"eps": None, "target_ratio": 0.9}}
    assert rs.is_selection_step(d4, []) and not rs.is_selection_step(semdedup, [])
    assert rs.is_selection_step({"kind": "selector", "type": "my_method", "params": {}}, ["my_method_score"])
    assert not rs.is_selection_step({"kind": "annotator", "type": "embed", "params": {}}, ["embed_score"])
