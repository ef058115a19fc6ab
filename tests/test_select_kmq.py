"""kMQ and iterative kMQ: allocation by hand, quality weighting, silhouette k, feedback rounds, resume."""
from __future__ import annotations

import numpy as np
import pytest
from select_toys import (
    SESSION_CACHE,
    blobs,
    check_budgets_and_reasons,
    dolly_rows,
    make_feedback,
    planted_table,
    run_recipe,
)

import curate
from curate.core.errors import ConfigError
from curate.core.hashing import stage_key
from curate.core.stage import StageContext
from curate.engine.config import build_stage
from curate.select.kmq import KMQ, allocate, draw_in_cluster
from curate.select.kmq_iterative import KMQIterative, feedback_key, update_weights


def test_allocate_by_hand():
    assert allocate(np.array([100, 50, 30, 20]), np.array([100, 50, 30, 20]), 40).tolist() == [20, 10, 6, 4]
    # equal split; the 5-row cluster's leftover goes to the others, still equally
    assert allocate(np.ones(4), np.array([100, 5, 100, 100]), 40).tolist() == [12, 5, 12, 11]
    # largest remainder, ties to the lower index
    assert allocate(np.ones(3), np.array([9, 9, 9]), 4).tolist() == [2, 1, 1]
    assert allocate(np.array([1.0, 0.0]), np.array([2, 5]), 4).tolist() == [2, 2]  # zero weight only when needed
    assert allocate(np.ones(2), np.array([1, 1]), 10).tolist() == [1, 1]


def test_draw_in_cluster_is_distinct_exact_and_quality_weighted():
    rng = np.random.default_rng(0)
    logits = np.r_[np.full(5, 4.0), np.zeros(45)]
    for replacement in (True, False):
        got = draw_in_cluster(rng, logits, 12, replacement)
        assert len(got) == len(set(got.tolist())) == 12
    hits = sum(np.isin(draw_in_cluster(np.random.default_rng(s), logits, 5, True), np.arange(5)).sum()
               for s in range(200))
    assert hits / (200 * 5) > 0.6  # e^4 = 55x more likely: mostly the 5 high-quality rows
    assert sorted(draw_in_cluster(rng, logits, 50, True).tolist()) == list(range(50))


def _clustered(sizes=(100, 50, 30, 20), seed=0):
    x, lab = blobs(list(sizes), seed=seed)
    return planted_table(x, cluster=lab, seed=seed), lab


def test_kmq_proportional_and_equal_allocation_with_given_clusters():
    t, lab = _clustered()
    sel = KMQ(budget=40, cluster_column="cluster_id").select(t, None)
    assert np.bincount(lab[sel.keep]).tolist() == [20, 10, 6, 4]
    t, lab = _clustered((100, 5, 100, 100))
    sel = KMQ(budget=40, cluster_column="cluster_id", allocation="equal").select(t, None)
    assert np.bincount(lab[sel.keep]).tolist() == [12, 5, 12, 11]


def test_kmq_quality_weighting_beats_uniform_and_low_temperature_takes_the_best():
    t, lab = _clustered()
    q = t.column("quality").to_numpy()
    sharp = KMQ(budget=40, cluster_column="cluster_id", temperature=1e-4).select(t, None)
    for j, m in enumerate([20, 10, 6, 4]):  # tau -> 0: each cluster's top-quality rows
        rows = np.flatnonzero(lab == j)
        assert set(np.flatnonzero(sharp.keep & (lab == j))) == set(rows[np.argsort(-q[rows])][:m])
    means = [q[KMQ(budget=40, cluster_column="cluster_id", seed=s).select(t, None).keep].mean() for s in range(10)]
    uniform = [q[KMQ(budget=40, cluster_column="cluster_id", score=None, seed=s).select(t, None).keep].mean()
               for s in range(10)]
    assert np.mean(means) > np.mean(uniform) + 0.3


def test_kmq_silhouette_finds_the_planted_cluster_count():
    x, lab = blobs([150, 120, 100, 80], spread=0.1)
    st = KMQ(budget=40, k="silhouette", k_grid=[2, 4, 8])
    sel = st.select(planted_table(x), None)
    assert st.k_ == 4 and max(st.silhouette_, key=st.silhouette_.get) == 4
    cid = sel.extras["kmq_cluster"]
    assert len({(a, b) for a, b in zip(lab, cid)}) == 4  # clusters = planted blobs
    assert sorted(np.bincount(cid[sel.keep]).tolist()) == sorted([13, 11, 9, 7])


def test_kmq_contract_budgets_reasons_determinism_and_token_maximality():
    x, _ = blobs([120, 90, 60, 30], spread=0.3)
    t = planted_table(x)
    check_budgets_and_reasons(lambda b: KMQ(budget=b, k=4), t, "below_cluster_quota")
    a = KMQ(budget=30, k=4, seed=1).select(t, None).keep
    assert (a == KMQ(budget=30, k=4, seed=1).select(t, None).keep).all()
    assert (a != KMQ(budget=30, k=4, seed=2).select(t, None).keep).any()
    tokens = t.column("n_tokens").to_numpy()
    st = KMQ(budget={"tokens": 1200}, k=4)
    sel = st.select(t, None)
    assert tokens[sel.keep].sum() <= 1200
    assert tokens[st.pick(t, None, sel.n_kept + 1).order].sum() > 1200  # one more row would not fit


def test_kmq_tiny_pools():
    x, _ = blobs([3])
    assert KMQ(budget=2).select(planted_table(x), None).n_kept == 2
    assert KMQ(budget=1, k=5).select(planted_table(x[:1]), None).n_kept == 1
    assert KMQ(budget=3, k=3).select(planted_table(x), None).n_kept == 3


# -- iterative ------------------------------------------------------------------------------------
def _four(sizes=(60, 60, 60, 60)):
    x, lab = blobs(list(sizes))
    return planted_table(x, cluster=lab), lab


def test_update_weights_rules():
    w = np.full(4, 0.25)
    np.testing.assert_allclose(update_weights(w, np.array([1, 1, 4, 2.0])), [1 / 8, 1 / 8, 4 / 8, 2 / 8])
    np.testing.assert_allclose(update_weights(np.array([0.5, 0.5]), np.array([1.0, 3.0])), [0.25, 0.75])
    s = np.array([-1.0, 0.0, 1.0, 1.0])
    shifted = update_weights(w, s)
    assert (shifted > 0).all() and shifted[0] < shifted[1] < shifted[2] == shifted[3]
    assert update_weights(w, s, negative="clip").tolist()[:2] == [0.0, 0.0]
    np.testing.assert_allclose(update_weights(w, np.array([0.0, 0, 0, np.log(3)]), "softmax"), [1 / 6] * 3 + [0.5])


def test_kmq_iterative_shifts_weight_toward_the_rewarded_cluster(tmp_path):
    t, lab = _four()
    calls = []
    st = KMQIterative(budget=120, rounds=3, feedback=make_feedback(favour=2, calls=calls), cluster_column="cluster_id")
    ctx = StageContext(work_dir=tmp_path / "w", artifact_dir=tmp_path / "a", show_progress=False)
    sel = st.check(st.select(t, ctx), len(t))
    assert sel.n_kept == 120 and calls == [40, 80]  # feedback after rounds 1 and 2 only
    rnd = sel.extras["round"]
    per_round = np.array([np.bincount(lab[rnd == r], minlength=4) for r in (1, 2, 3)])
    assert per_round.sum(axis=1).tolist() == [40, 40, 40]
    assert per_round[0].tolist() == [10, 10, 10, 10]  # round 1 is plain kMQ (equal sizes)
    assert per_round[1, 2] > per_round[1, [0, 1, 3]].max() and per_round[2, 2] > per_round[1, 2]
    np.testing.assert_allclose(st.weights_[1], [1 / 7, 1 / 7, 4 / 7, 1 / 7])
    np.testing.assert_allclose(st.weights_[2], [1 / 19, 1 / 19, 16 / 19, 1 / 19])
    assert (rnd[~sel.keep] == -1).all() and (np.sort(np.unique(rnd[sel.keep])) == [1, 2, 3]).all()
    assert (tmp_path / "a" / "kmq_iterative.json").is_file()
    # the code's memoryless softmax: w = softmax(s) after every round, also toward cluster 2
    st = KMQIterative(budget=120, feedback=make_feedback(favour=2), cluster_column="cluster_id",
                      weight_update="softmax")
    soft = st.select(t, None)
    e = np.exp(3.0)
    np.testing.assert_allclose(st.weights_[1], [1 / (e + 3), 1 / (e + 3), e / (e + 3), 1 / (e + 3)])
    np.testing.assert_allclose(st.weights_[2], st.weights_[1])  # memoryless: same s, same w
    assert np.bincount(lab[soft.keep], minlength=4).argmax() == 2


def test_kmq_iterative_negative_feedback_shift_or_clip():
    t, lab = _four()
    fb = make_feedback(favour=1, high=2.0, low=-1.0)
    clip = KMQIterative(budget=60, feedback=fb, cluster_column="cluster_id", negative="clip").select(t, None)
    later = clip.keep & (clip.extras["round"] > 1)
    assert set(lab[later]) == {1}  # clipped clusters get nothing after round 1
    st = KMQIterative(budget=60, feedback=fb, cluster_column="cluster_id")
    shift = st.select(t, None)
    # shift: s - min(s) + 1% of the range = [0.03, 3.03, 0.03, 0.03]: every weight stays > 0
    np.testing.assert_allclose(st.weights_[1], np.array([0.03, 3.03, 0.03, 0.03]) / 3.12)
    assert (st.weights_ > 0).all() and shift.n_kept == 60


def test_kmq_iterative_resumes_at_its_round_after_a_kill(tmp_path):
    t, lab = _four()
    ctx = lambda: StageContext(work_dir=tmp_path / "w", artifact_dir=tmp_path / "a", show_progress=False)  # noqa: E731
    good = make_feedback(favour=2)
    calls = []

    def dies_in_round_2(selected, cluster_ids):
        calls.append(len(selected))
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill during round 2's feedback")
        return good(selected, cluster_ids)

    dies_in_round_2.__qualname__ = "feedback_v1"  # same cache identity as the rerun below
    with pytest.raises(KeyboardInterrupt):
        KMQIterative(budget=120, feedback=dies_in_round_2, cluster_column="cluster_id").select(t, ctx())
    assert calls == [40, 40 + 40]
    assert sorted(p.name for p in (tmp_path / "w" / "kmq_iterative" / "rows120").iterdir()) == ["round_001.npz"]
    again = []
    resumed_fb = make_feedback(favour=2, calls=again)
    resumed_fb.__qualname__ = "feedback_v1"
    resumed = KMQIterative(budget=120, feedback=resumed_fb, cluster_column="cluster_id").select(t, ctx())
    assert again == [80]  # round 1 came from the work dir; only round 2's feedback ran again
    fresh = KMQIterative(budget=120, feedback=make_feedback(favour=2), cluster_column="cluster_id").select(t, None)
    assert (resumed.keep == fresh.keep).all() and (resumed.extras["round"] == fresh.extras["round"]).all()


def test_kmq_iterative_contract_and_token_budget(tmp_path):
    x, _ = blobs([120, 90, 60, 30], spread=0.3)
    t = planted_table(x)
    check_budgets_and_reasons(lambda b: KMQIterative(budget=b, k=4, feedback=make_feedback()), t,
                              "below_cluster_quota")
    a = KMQIterative(budget=60, k=4, feedback=make_feedback(), seed=1).select(t, None).keep
    assert (a == KMQIterative(budget=60, k=4, feedback=make_feedback(), seed=1).select(t, None).keep).all()
    assert (a != KMQIterative(budget=60, k=4, feedback=make_feedback(), seed=2).select(t, None).keep).any()
    tokens = t.column("n_tokens").to_numpy()
    sel = KMQIterative(budget={"tokens": 3000}, k=4, feedback=make_feedback()).select(t, None)
    used = tokens[sel.keep].sum()
    assert 3000 - 3 * tokens.max() < used <= 3000
    assert set(np.unique(sel.extras["round"][sel.keep])) == {1, 2, 3}


def test_kmq_iterative_config_errors_and_stable_cache_key():
    with pytest.raises(ConfigError, match=r"feedback.*curate.eval.feedback:lora_feedback"):
        build_stage({"type": "kmq_iterative", "budget": 10})
    with pytest.raises(ConfigError, match="feedback"):
        build_stage({"type": "kmq_iterative", "budget": 10, "feedback": "not a spec"})
    with pytest.raises(ConfigError, match="feedback_params"):
        build_stage({"type": "kmq_iterative", "budget": 10, "feedback": make_feedback(), "feedback_params": {"a": 1}})
    a = KMQIterative(budget=10, feedback=make_feedback(favour=1))
    b = KMQIterative(budget=10, feedback=make_feedback(favour=1))
    assert stage_key("p", a) == stage_key("p", b)
    assert a.cache_params()["feedback"] == feedback_key(make_feedback()) == "select_toys:make_feedback.<locals>.feedback"
    s1 = build_stage({"type": "kmq_iterative", "budget": 10, "feedback": "select_toys:make_feedback",
                      "feedback_params": {"favour": 1}})
    s2 = build_stage({"type": "kmq_iterative", "budget": 10, "feedback": "select_toys:make_feedback",
                      "feedback_params": {"favour": 2}})
    assert stage_key("p", s1) != stage_key("p", s2) and s1.cache_params()["feedback"] == "select_toys:make_feedback"


def test_kmq_iterative_string_feedback_spec_with_params():
    t, lab = _four()
    st = build_stage({"type": "kmq_iterative", "budget": 120, "cluster_column": "cluster_id",
                      "feedback": "select_toys:make_feedback", "feedback_params": {"favour": 3}})
    sel = st.select(t, None)
    assert np.bincount(lab[sel.keep], minlength=4).argmax() == 3
    # a bad spec fails when the recipe is built, before any upstream stage runs
    with pytest.raises(ConfigError, match="no_such_factory"):
        build_stage({"type": "kmq_iterative", "budget": 12, "feedback": "select_toys:no_such_factory"})
    with pytest.raises(ConfigError, match="no_such_module"):
        build_stage({"type": "kmq_iterative", "budget": 12, "feedback": "no_such_module:make"})


@pytest.mark.parametrize("method", ["kmq", "kmq_iterative"])
def test_kmq_on_raw_rows_through_curate_select(method):
    extra = {"feedback": make_feedback(favour=0)} if method == "kmq_iterative" else {}
    ds, prov = curate.select(dolly_rows(), method=method, budget=9, cache_dir=SESSION_CACHE,
                             return_provenance=True, **extra)
    assert len(ds) == 9
    p = prov.to_pandas()
    assert set(p[p.status == "dropped"].reason) == {"below_cluster_quota"}
    assert p[f"{method}_score"].notna().all() and p[f"{method}_cluster"].notna().all()
    if method == "kmq_iterative":
        assert sorted(p[p.status == "selected"]["round"].value_counts().tolist()) == [3, 3, 3]


@pytest.mark.parametrize("method", ["kmq", "kmq_iterative"])
def test_kmq_recipes_run_through_extends(method, tmp_path):
    over = {"budget": 10}
    if method == "kmq_iterative":  # the recipe's LoRA feedback lives in the evaluation package
        over.update(feedback="select_toys:make_feedback", feedback_params={"favour": 1})
    res, prov = run_recipe(method, tmp_path, **over)
    assert res.counts["n_selected"] == 10
    dropped = prov[(prov.status == "dropped") & prov.stage.str.endswith(method)]
    assert set(dropped.reason) == {"below_cluster_quota"} and len(dropped) == len(prov) - 10
