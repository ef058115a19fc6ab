"""``lp_scores`` + ``learning_percentage`` + ``clust_rand`` (Mekala et al., ACL Findings 2024)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import yaml
from select_toys import REPO, SESSION_CACHE, blobs, dolly_rows, planted_table
from tiny_lm import save_tiny_lm, tiny_lm, toy_rows

import curate
import curate.train.learning_percentage as lp_mod
from curate.core.stage import StageContext
from curate.select.base import NOT_SELECTED
from curate.select.learning_percentage import (
    LP_REASON,
    RAND_REASON,
    ClustRand,
    LearningPercentage,
    cluster_quotas,
    stratified_picks,
)
from curate.train.learning_percentage import LPScores, learning_percentage, response_ppl
from curate.train.lora import LoRATrainer


def test_lp_formulas_by_hand():
    # rows: P_0..P_3 per column
    ppl = np.array([[10.0, 10.0, 8.0, 5.0, np.nan],
                    [6.0, 9.0, 8.0, 4.0, np.nan],
                    [4.0, 8.0, 8.0, 6.0, np.nan],
                    [2.0, 7.0, 8.0, 5.0, np.nan]])
    lp, app = learning_percentage(ppl)
    # row 0: (10-6)/(10-2) = 0.5; row 1: (10-9)/(10-7) = 1/3; rows 2, 3: P_0 = P_3 -> 0 (the code's rule)
    np.testing.assert_allclose(lp[:4], [0.5, 1 / 3, 0.0, 0.0])
    np.testing.assert_allclose(app[:4], [0.4, 0.1, 0.0, 0.2])
    assert np.isnan(lp[4]) and np.isnan(app[4])


def test_quotas_and_stratified_picks_by_hand():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    score = np.array([0.9, 0.1, 0.5, np.nan, 0.7, 0.2, 0.3, 0.3, 0.0, 0.8])
    assert cluster_quotas(labels, 5) == {0: 2, 1: 1, 2: 2}
    assert stratified_picks(labels, score, 5).tolist() == [1, 2, 5, 8, 6]  # tie 0.3/0.3 by position
    assert cluster_quotas(np.array([0] * 3 + [1] * 3 + [2] * 4), 5) == {0: 2, 1: 1, 2: 2}  # 1.5/1.5/2: tie to id 0
    t = planted_table(np.eye(10, dtype=np.float32), cluster=labels).append_column("lp", pa.array(score))
    sel = LearningPercentage(budget=5, cluster_column="cluster_id").select(t, None)
    assert np.flatnonzero(sel.keep).tolist() == [1, 2, 5, 6, 8]
    assert set(sel.reason[~sel.keep]) == {LP_REASON}
    np.testing.assert_array_equal(sel.extras["lp_cluster"], labels)
    np.testing.assert_array_equal(sel.extras["learning_percentage_score"], score)
    rand = ClustRand(budget=5, cluster_column="cluster_id", seed=3).select(t, None)
    assert np.bincount(labels[rand.keep]).tolist() == [2, 1, 2]  # the same counts per cluster
    assert set(rand.reason[~rand.keep]) == {RAND_REASON}


def test_exact_budgets_determinism_and_own_clustering():
    x, lab = blobs([50, 30, 20], d=8, spread=0.05, seed=1)
    t = planted_table(x, seed=1).append_column("lp", pa.array(np.random.default_rng(2).random(100)))
    for budget, k in ((1, 1), (0.1, 10), (37, 37), (100, 100)):
        sel = LearningPercentage(budget=budget, k=3).select(t, None)
        assert sel.n_kept == k and set(sel.reason[~sel.keep]) <= {LP_REASON, NOT_SELECTED}
        again = LearningPercentage(budget=budget, k=3).select(t, None)
        np.testing.assert_array_equal(again.keep, sel.keep)
    # three well-separated blobs: k-means finds them, and a 10-row budget takes 5/3/2
    sel = LearningPercentage(budget=10, k=3).select(t, None)
    assert sorted(np.bincount(lab[sel.keep]).tolist()) == [2, 3, 5]
    a = ClustRand(budget=10, k=3, seed=0).select(t, None).keep
    b = ClustRand(budget=10, k=3, seed=1).select(t, None).keep
    assert not np.array_equal(a, b) and np.array_equal(a, ClustRand(budget=10, k=3, seed=0).select(t, None).keep)
    tok = t.set_column(t.column_names.index("n_tokens"), "n_tokens", pa.array(np.full(100, 10)))
    assert LearningPercentage(budget={"tokens": 125}, k=3).select(tok, None).n_kept == 12


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("lp") / "lm")


def test_response_ppl_by_hand():
    import torch

    lm, tok = tiny_lm()
    tr = LoRATrainer(model=(lm, tok), layers=2, show_progress=False)
    enc = tr.encode(toy_rows(7))
    model = tr.new_model(0)
    got = response_ppl(tr, model, enc, batch_size=3)
    for i in range(len(enc)):  # one row at a time through the plain forward
        with torch.no_grad():
            nll = tr.token_nll(model.get_base_model(), enc, [i])
        assert got[i] == pytest.approx(float(torch.exp(nll.mean())), rel=1e-5)


LP_TINY = {"epochs": 2, "layers": 2, "batch_size": 4, "device": "cpu", "show_progress": False}


def test_annotator_trains_resumes_and_scores(tiny_path, tmp_path, monkeypatch):
    rows = toy_rows(16)
    st = LPScores(model=tiny_path, **LP_TINY)
    assert st.output_columns() == ["lp_ppl_0", "lp_ppl_1", "lp_ppl_2", "lp", "lp_app"]
    full = st.annotate(rows, StageContext(work_dir=tmp_path / "a", show_progress=False))
    p = np.stack([full.column(f"lp_ppl_{e}").to_numpy() for e in range(3)])
    assert np.nanmean(p[2]) < np.nanmean(p[0])  # training on the pool lowers its perplexity
    lp, app = learning_percentage(p)
    np.testing.assert_allclose(full.column("lp").to_numpy(), lp)
    np.testing.assert_allclose(full.column("lp_app").to_numpy(), app)
    # P_0 is the untrained model's (LoRA starts as the identity)
    lm, tok = tiny_lm()
    tr = LoRATrainer(model=(lm, tok), layers=2, show_progress=False)
    np.testing.assert_allclose(p[0], response_ppl(tr, tr.new_model(0), tr.encode(rows)), rtol=1e-5)
    # killed while measuring after epoch 2: a rerun resumes from epoch 1's checkpoint, same result
    calls = {"n": 0}
    real = lp_mod.response_ppl

    def dies_at_third(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(lp_mod, "response_ppl", dies_at_third)
    ctx = StageContext(work_dir=tmp_path / "b", show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        st.annotate(rows, ctx)
    assert (tmp_path / "b" / "state_1.pt").exists() and not (tmp_path / "b" / "ppl_2.npy").exists()
    calls["n"] = 10  # no more failures; count what the rerun measures
    again = st.annotate(rows, ctx)
    assert calls["n"] == 11  # only epoch 2's perplexities were measured again
    for c in full.column_names:
        np.testing.assert_allclose(again.column(c).to_numpy(), full.column(c).to_numpy(), rtol=1e-6)


def test_parameters_and_prerequisites():
    with pytest.raises(ValueError, match="epochs"):
        LPScores(epochs=0)
    with pytest.raises(ValueError, match="template"):
        LPScores(template="vicuna")
    with pytest.raises(ValueError, match="features"):
        LearningPercentage(budget=3, features=[1])
    assert "batch_size" in LPScores().cache_params()  # it changes the training
    steps = LearningPercentage(budget=3, features={"epochs": 1}).prerequisites(["id", "text"])
    assert [s.name for s in steps] == ["embed", "lp_scores"] and steps[1].epochs == 1
    assert LearningPercentage(budget=3).prerequisites(["embedding", "lp"]) == []
    assert [s.name for s in ClustRand(budget=3).prerequisites(["text"])] == ["embed"]


def test_raw_rows_and_the_recipe(tiny_path, tmp_path):
    rows = dolly_rows()
    ds, prov = curate.select(rows, method="learning_percentage", budget=6, k=4, features={"model": tiny_path, **LP_TINY},
                             cache_dir=str(SESSION_CACHE), return_provenance=True)
    assert len(ds) == 6
    p = prov.to_pylist()
    # the tiny LM reads bytes: a few long Dolly prompts fill max_length, leaving no response token (NaN LP,
    # ranked last); the picks all have a score
    assert all(r["learning_percentage_score"] is not None for r in p if r["status"] == "selected")
    assert sum(r["learning_percentage_score"] is not None for r in p) >= 40
    assert len(curate.select(rows, method="clust_rand", budget=6, k=4, cache_dir=str(SESSION_CACHE))) == 6


@pytest.mark.slow  # embeds and trains over the whole recipe (about a minute on a loaded 2-core box)
def test_the_shipped_recipe(tiny_path, tmp_path):
    rows = dolly_rows()
    # the shipped recipe, its lp_scores stage pointed at the tiny LM
    cfg = yaml.safe_load((REPO / "configs" / "instruction" / "learning_percentage.yaml").read_text())
    stages = [dict(s, model=tiny_path, **LP_TINY) if s["type"] == "lp_scores" else s for s in cfg["stages"]]
    stages[-1] = {**stages[-1], "budget": 8, "k": 4}
    pool = tmp_path / "pool.jsonl"
    import json

    pool.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = curate.run({"name": "lp", "input": {"path": str(pool)}, "stages": stages, "output": {"dir": str(tmp_path / "o")}},
                     show_progress=False, cache_dir=str(SESSION_CACHE))
    assert res.counts["n_selected"] == 8
