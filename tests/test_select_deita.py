"""``deita`` (Liu et al., ICLR 2024): score-first walk that rejects rows too similar to accepted ones."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest
from select_toys import SESSION_CACHE, blobs, dolly_rows, planted_table, run_recipe

import curate
from curate.core.errors import ConfigError
from curate.engine.config import build_stage
from curate.select.base import NOT_SELECTED
from curate.select.deita import TOO_SIMILAR, Deita, deita_walk


def unit(deg: float) -> list[float]:
    return [float(np.cos(np.radians(deg))), float(np.sin(np.radians(deg)))]


# Hand-computed toy: 2-D unit vectors at these angles, scores descending in row order.
# cos(a - b) > 0.9 <=> |a - b| < 25.84 degrees.
ANGLES = [0, 10, 90, 50, 70, 180]
SCORES = [5.0, 4.0, 3.0, 2.0, 1.0, 0.0]
# walk: 0 accepted; 1 at 10 deg from 0 (cos 0.985) rejected; 2 at 90 deg accepted; 3 at 50 deg
# (cos 0.643 to 0, 0.643 to 90) accepted; 4 at 70 deg: 20 deg from row 3 (cos 0.940) rejected;
# 5 at 180 deg accepted.
WANT = [0, 2, 3, 5]


def toy() -> pa.Table:
    return planted_table(np.array([unit(a) for a in ANGLES], np.float32), quality=SCORES)


def test_hand_computed_toy():
    for k, want in ((1, [0]), (2, [0, 2]), (4, WANT)):
        sel = Deita(budget=k).select(toy(), None)
        assert np.flatnonzero(sel.keep).tolist() == sorted(want)
    sel = Deita(budget=4).select(toy(), None)
    assert sel.reason.tolist() == [None, TOO_SIMILAR, None, None, TOO_SIMILAR, None]
    ms = sel.extras["max_sim"]
    assert np.isnan(ms[0])  # the first row has nothing before it
    # row 3 is 40 deg from row 2; row 4 is 20 deg from row 3; row 5's nearest accepted row is 90 deg away
    np.testing.assert_allclose(ms[1:], [np.cos(np.radians(10)), 0.0, np.cos(np.radians(40)),
                                        np.cos(np.radians(20)), 0.0], atol=1e-6)
    np.testing.assert_array_equal(sel.extras["deita_score"], SCORES)
    # a budget of 3 stops the walk at row 3: row 4 and 5 are never visited
    sel = Deita(budget=3).select(toy(), None)
    assert sel.reason.tolist() == [None, TOO_SIMILAR, None, None, NOT_SELECTED, NOT_SELECTED]
    assert np.isnan(sel.extras["max_sim"][4:]).all()
    # tau = 0.95: row 4 (cos 0.940 to row 3) passes now, before row 5
    assert np.flatnonzero(Deita(budget=4, tau=0.95).select(toy(), None).keep).tolist() == [0, 2, 3, 4]


def brute_force(x: np.ndarray, order: np.ndarray, k: int, tau: float) -> list[int]:
    acc: list[int] = []
    for i in order:
        if len(acc) == k:
            break
        if not acc or float(np.max(x[acc] @ x[i])) <= tau:
            acc.append(int(i))
    return acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_faiss_walk_equals_the_sequential_definition(seed):
    rng = np.random.default_rng(seed)
    x, _ = blobs([60, 40, 50, 30], d=8, spread=0.4, seed=seed)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    order = rng.permutation(len(x))
    for k, tau in ((20, 0.9), (200, 0.8), (5, 0.99)):
        want = brute_force(x, order, k, tau)
        for block in (1, 7, 64, 4096):
            got, _ = deita_walk(x, order, k, tau, block)
            assert got.tolist() == want, (k, tau, block)


def test_exact_budgets_nested_and_deterministic():
    x, _ = blobs([40, 40, 40], d=8, spread=0.3, seed=3)
    t = planted_table(x, seed=3)
    n = len(t)
    prev = None
    for budget, k in ((1, 1), (0.1, 12), (37, 37), (n, n)):
        sel = Deita(budget=budget, tau=0.97).select(t, None)
        assert sel.n_kept == k
        assert all(r in (TOO_SIMILAR, NOT_SELECTED) for r in sel.reason[~sel.keep])
        assert all(r is None for r in sel.reason[sel.keep])
        if prev is not None:
            assert set(np.flatnonzero(prev)) <= set(np.flatnonzero(sel.keep))  # nested
        prev = sel.keep
        again = Deita(budget=budget, tau=0.97, block_size=5).select(t, None)
        np.testing.assert_array_equal(again.keep, sel.keep)


def test_exhausted_walk_fills_the_budget_with_best_rejected_rows(caplog):
    # 10 copies of one direction + 2 other directions: only 3 rows can be accepted
    x = np.array([unit(0)] * 10 + [unit(90), unit(180)], np.float32)
    q = np.arange(12, 0, -1, dtype=float)  # row 0 best
    t = planted_table(x, quality=q)
    with caplog.at_level(logging.WARNING, logger="curate.select.deita"):
        sel = Deita(budget=5).select(t, None)
    assert "filling the budget" in caplog.text
    assert np.flatnonzero(sel.keep).tolist() == [0, 1, 2, 10, 11]  # 3 accepted + rejected rows 1, 2 by score


def test_token_budget_never_exceeds():
    x, _ = blobs([30, 30], d=8, spread=0.5, seed=4)
    t = planted_table(x, tokens=np.full(60, 10), seed=4)
    sel = Deita(budget={"tokens": 95}).select(t, None)
    assert sel.n_kept == 9


def test_parameter_errors():
    with pytest.raises(ValueError, match="tau"):
        Deita(budget=3, tau=1.5)
    with pytest.raises(ValueError, match="score"):
        Deita(budget=3, score="")
    with pytest.raises(ConfigError, match="block_size"):
        build_stage({"type": "deita", "budget": 3, "block_size": 0})
    assert "block_size" not in Deita(budget=3).cache_params()  # execution-only


def test_raw_rows_through_curate_select_and_the_recipe(tmp_path):
    rows = dolly_rows()
    ds, prov = curate.select(rows, method="deita", budget=12, cache_dir=str(SESSION_CACHE), return_provenance=True)
    assert len(ds) == 12
    p = prov.to_pylist()
    assert all(r["deita_score"] is not None for r in p)
    picked_q = [r["deita_score"] for r in p if r["status"] == "selected"]
    dropped = [r for r in p if r["status"] == "dropped"]
    # every row scoring above the lowest pick and not taken was too similar to a pick
    low = min(picked_q)
    assert all(r["reason"] == TOO_SIMILAR for r in dropped if r["deita_score"] > low)
    res, prov = run_recipe("deita", tmp_path, budget=10)
    assert res.counts["n_selected"] == 10
    assert set(prov[prov.status == "dropped"].reason) <= {TOO_SIMILAR, NOT_SELECTED}
