"""Baselines ``longest`` and ``kcenter``: planted lengths and outliers, budgets, seeds, reasons."""
from __future__ import annotations

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
from curate.select.baselines import KCenter, Longest, farthest_first, response_lengths


def _lengths_table(lengths, seed=0):
    x, _ = blobs([len(lengths)], seed=seed)
    t = planted_table(x, tokens=np.full(len(lengths), 10), seed=seed)
    return t.set_column(t.schema.get_field_index("output"), "output",
                        __import__("pyarrow").array(["a" * int(n) for n in lengths]))


def test_longest_keeps_the_longest_responses_ties_by_position():
    lengths = [5, 50, 7, 50, 3, 49, 0, 100]
    sel = Longest(budget=3).select(_lengths_table(lengths), None)
    assert np.flatnonzero(sel.keep).tolist() == [1, 3, 7]
    assert sel.score.tolist() == [float(v) for v in lengths]
    sel = Longest(budget=2).select(_lengths_table(lengths), None)
    assert np.flatnonzero(sel.keep).tolist() == [1, 7]  # tie 50/50: the earlier row first


def test_longest_words_unit_and_conversation_rows():
    import pyarrow as pa

    t = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"],
                  "output": ["one two three", "a_very_long_single_word_here", None],
                  "messages": pa.array([None, None, [{"role": "user", "content": "q"},
                                                     {"role": "assistant", "content": "w1 w2 w3 w4"}]],
                                       pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])))})
    assert response_lengths(t, "words").tolist() == [3.0, 1.0, 4.0]
    assert response_lengths(t, "chars").tolist() == [13.0, 28.0, 11.0]
    assert np.flatnonzero(Longest(budget=1, unit="words").select(t, None).keep).tolist() == [2]


def test_longest_contract_budgets_and_token_budget_is_the_longest_fitting_prefix():
    x, _ = blobs([300])
    t = planted_table(x)
    check_budgets_and_reasons(lambda b: Longest(budget=b), t, "shorter_response")
    tokens = t.column("n_tokens").to_numpy()
    sel = Longest(budget={"tokens": 2000}).select(t, None)
    order = np.argsort(-response_lengths(t), kind="stable")
    k = sel.n_kept
    assert set(np.flatnonzero(sel.keep)) == set(order[:k])
    assert tokens[order[:k]].sum() <= 2000 < tokens[order[:k + 1]].sum()


def test_longest_bad_unit_fails_at_config_time():
    with pytest.raises(ConfigError, match="unit"):
        build_stage({"type": "longest", "budget": 3, "unit": "pages"})


def _naive_kcenter(x, k, start):
    """O(n^2) reference: full distance matrix, farthest-first."""
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    order = [start]
    for _ in range(k - 1):
        near = d[:, order].min(axis=1)
        near[order] = -1
        order.append(int(np.argmax(near)))
    return order


def test_farthest_first_matches_the_quadratic_reference_in_small_blocks():
    x = np.random.default_rng(3).normal(size=(120, 5)).astype(np.float32)
    order, radius, nearest = farthest_first(x, 15, start=7, block_size=16)
    assert order.tolist() == _naive_kcenter(x, 15, 7)
    assert np.all(np.diff(radius[1:]) <= 1e-5)  # covering radius never grows
    d = np.linalg.norm(x[:, None] - x[order][None], axis=2).min(axis=1)
    np.testing.assert_allclose(nearest, d, atol=1e-4)


def test_kcenter_picks_the_planted_far_outliers_first():
    x, _ = blobs([100, 100, 100], spread=0.3)
    outliers = np.array([[40, 0, 0, 0, 0, 0, 0, 0], [0, -35, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 30, 30, 0]], np.float32)
    rng = np.random.default_rng(1)
    pos = np.sort(rng.choice(303, size=3, replace=False))
    rows = np.insert(x, pos - np.arange(3), outliers, axis=0)
    planted = set(pos.tolist())
    assert {int(i) for i in np.flatnonzero(np.abs(rows).max(axis=1) > 20)} == planted
    t = planted_table(rows)
    sel = KCenter(budget=3).select(t, None)
    assert set(np.flatnonzero(sel.keep).tolist()) == planted
    sel = KCenter(budget=6).select(t, None)
    rank = sel.extras["pick_rank"]
    assert set(np.flatnonzero((rank >= 1) & (rank <= 3)).tolist()) == planted
    # then one row from each of the three blobs: the picks cover every blob
    _, lab = blobs([100, 100, 100])
    lab_full = np.insert(lab, pos - np.arange(3), -1)
    assert set(lab_full[(rank >= 4) & (rank <= 6)].tolist()) == {0, 1, 2}
    # the random start picks them right after its seeded first row
    sel = KCenter(budget=4, start="random", seed=5).select(t, None)
    assert planted <= set(np.flatnonzero(sel.keep).tolist())


def test_kcenter_contract_nested_seeded_and_reasons():
    x, _ = blobs([80, 80, 80, 60], spread=0.5)
    t = planted_table(x)
    check_budgets_and_reasons(lambda b: KCenter(budget=b, show_progress=False), t, "covered")
    small = KCenter(budget=10).select(t, None).keep
    big = KCenter(budget=40).select(t, None).keep
    assert big[small].all()  # nested
    a = KCenter(budget=20, start="random", seed=1).select(t, None).keep
    b = KCenter(budget=20, start="random", seed=1).select(t, None).keep
    c = KCenter(budget=20, start="random", seed=2).select(t, None).keep
    assert (a == b).all() and (a != c).any()
    # token budget: longest fitting prefix of the pick order
    tokens = t.column("n_tokens").to_numpy()
    sel = KCenter(budget={"tokens": 1500}).select(t, None)
    order = np.argsort(np.where(sel.extras["pick_rank"] > 0, sel.extras["pick_rank"], 10**9), kind="stable")
    k = sel.n_kept
    assert set(np.flatnonzero(sel.keep)) == set(order[:k]) and tokens[order[:k]].sum() <= 1500
    assert tokens[order[:k + 1]].sum() > 1500


def test_kcenter_handles_duplicates_tiny_pools_and_k_equal_n():
    x = np.zeros((5, 4), np.float32)  # all identical: distances are 0 everywhere
    sel = KCenter(budget=5).select(planted_table(x), None)
    assert sel.n_kept == 5
    sel = KCenter(budget=1).select(planted_table(x[:1]), None)
    assert sel.n_kept == 1


@pytest.mark.parametrize("method", ["longest", "kcenter"])
def test_baselines_on_raw_rows_through_curate_select(method, tmp_path):
    rows = dolly_rows()
    ds, prov = curate.select(rows, schema="canonical", method=method, budget=7, cache_dir=SESSION_CACHE, return_provenance=True)
    assert len(ds) == 7
    p = prov.to_pandas()
    assert (p.status == "selected").sum() == 7
    assert set(p[p.status == "dropped"].reason) == {"shorter_response" if method == "longest" else "covered"}
    assert p[f"{method}_score"].notna().all()
    if method == "longest":
        lengths = np.array([len(r["output"]) for r in rows])
        assert sorted(len(o) for o in ds["output"]) == sorted(lengths)[-7:]


@pytest.mark.parametrize("method", ["longest", "kcenter"])
def test_baseline_recipes_run_through_extends(method, tmp_path):
    res, prov = run_recipe(method, tmp_path, budget=8)
    assert res.counts["n_selected"] == 8
    dropped = prov[(prov.status == "dropped") & prov.stage.str.endswith(method)]
    assert set(dropped.reason) == {"shorter_response" if method == "longest" else "covered"}
    assert len(dropped) == len(prov) - 8
