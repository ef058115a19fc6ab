"""``length_neutral``: every budget selector splits its budget over the pool's response-length bins."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from select_toys import blobs, planted_table

import curate
from curate.core.errors import ConfigError
from curate.core.stage import StageContext
from curate.engine.config import build_stage
from curate.select.base import NOT_SELECTED
from curate.select.car import car_order
from curate.select.kmq import KMQ
from curate.select.length_bins import (
    LENGTH_BIN_QUOTA,
    assign_bins,
    bin_quotas,
    fill_bins,
    length_edges,
    response_chars,
    response_tokens,
)


def pool(lengths, score=None, seed: int = 0) -> pa.Table:
    """Rows whose responses are ``"x" * length``, with a ``s`` score column (default random)."""
    n = len(lengths)
    s = np.random.default_rng(seed).normal(size=n) if score is None else np.asarray(score, float)
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)],
                     "instruction": [f"do {i}" for i in range(n)], "input": [""] * n,
                     "output": ["x" * int(v) for v in lengths], "s": pa.array(s)})


def kept_per_bin(sel, table: pa.Table, bins: int = 10) -> np.ndarray:
    lens = response_chars(table)
    b = assign_bins(lens, length_edges(lens, bins))
    return np.bincount(b[sel.keep], minlength=int(b.max()) + 1)


def test_quotas_by_hand_with_tied_quantiles():
    # 10 rows of length 3, 5 of 10, 5 of 50; quartiles (np.quantile, linear): 3, 6.5, 20.
    # Bins (a length equal to an edge goes up): [<3], [3, 6.5), [6.5, 20), [>=20] = 0, 10, 5, 5 rows.
    # Budget 7: shares 0, 3.5, 1.75, 1.75 -> floors 0, 3, 1, 1 (5 rows); the 2 left go to the
    # largest remainders, 0.75 and 0.75 (bins 2 and 3) -> 0, 3, 2, 2.
    lens = np.array([3] * 10 + [10] * 5 + [50] * 5)
    edges = length_edges(lens, 4)
    assert edges.tolist() == [3.0, 6.5, 20.0]
    b = assign_bins(lens, edges)
    assert np.bincount(b, minlength=4).tolist() == [0, 10, 5, 5]
    assert bin_quotas(np.bincount(b, minlength=4), 7).tolist() == [0, 3, 2, 2]
    # equal remainders go to the lower bin; the total is exact
    assert bin_quotas(np.array([5, 5, 5, 5]), 6).tolist() == [2, 2, 1, 1]
    assert bin_quotas(np.array([3, 3, 4]), 10).tolist() == [3, 3, 4]
    with pytest.raises(ValueError, match="k=11"):
        bin_quotas(np.array([3, 3, 4]), 11)
    # rows 0-2 in bin 0, 3-9 in bin 1; the order holds one row of bin 1 only: bin 1 is short
    chosen, got = fill_bins(np.array([9, 0, 1, 2]), np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1]), np.array([2, 2]))
    assert chosen.tolist() == [9, 0, 1] and got.tolist() == [2, 1]


def test_exact_budget_per_bin_on_the_hand_computed_toy():
    lens = np.array([3] * 10 + [10] * 5 + [50] * 5)
    t = pool(lens, score=np.arange(20))  # top_k alone would take the 7 last rows: 5 long, 2 medium
    sel = build_stage({"type": "top_k", "budget": 7, "score": "s", "length_neutral": True, "length_bins": 4}).select(t, None)
    got = np.bincount([{3: 1, 10: 2, 50: 3}[v] for v in lens[sel.keep]], minlength=4)
    assert sel.n_kept == 7 and got.tolist() == [0, 3, 2, 2]
    # and within each bin the best by score: rows 7-9 (length 3), 13-14 (10), 18-19 (50)
    assert np.flatnonzero(sel.keep).tolist() == [7, 8, 9, 13, 14, 18, 19]


def test_selected_histogram_matches_the_pool_deciles_where_plain_top_k_does_not():
    rng = np.random.default_rng(1)
    lens = np.round(np.exp(rng.normal(5, 1, 1000))).astype(int) + 1
    t = pool(lens, score=lens + rng.normal(0, 5, 1000))  # a score that prefers long answers
    plain = build_stage({"type": "top_k", "budget": 100, "score": "s"}).select(t, None)
    neutral = build_stage({"type": "top_k", "budget": 100, "score": "s", "length_neutral": True}).select(t, None)
    pool_share = kept_per_bin(type("All", (), {"keep": np.ones(1000, bool)}), t) / 1000
    assert kept_per_bin(plain, t)[-1] >= 90  # the length bias the option removes
    got = kept_per_bin(neutral, t)
    assert neutral.n_kept == 100 and np.abs(got - 100 * pool_share).max() < 1  # equal within rounding
    assert np.abs(np.median(lens[neutral.keep]) - np.median(lens)) < 0.2 * np.median(lens)


def test_top_k_takes_the_top_of_every_bin_and_displaced_rows_say_why():
    rng = np.random.default_rng(2)
    lens = rng.integers(1, 500, 300)
    t = pool(lens, seed=3)
    s = t.column("s").to_numpy()
    ds, prov = curate.select(t, method="top_k", budget=60, score="s", length_neutral=True, return_provenance=True)
    sel = build_stage({"type": "top_k", "budget": 60, "score": "s", "length_neutral": True}).select(t, None)
    b = assign_bins(lens, length_edges(lens, 10))
    for j in np.unique(b):
        in_bin = np.flatnonzero(b == j)
        k = int(sel.keep[in_bin].sum())
        assert set(np.flatnonzero(sel.keep & (b == j))) == set(in_bin[np.argsort(-s[in_bin])[:k]])
    # a row of plain top_k's 60 that lost its place to the bin quota has its own reason
    plain = set(np.argsort(-s)[:60])
    displaced = sorted(plain - set(np.flatnonzero(sel.keep)))
    assert displaced and all(sel.reason[i] == LENGTH_BIN_QUOTA for i in displaced)
    assert set(sel.reason[~sel.keep]) == {LENGTH_BIN_QUOTA, "below_top_k"}
    p = prov.to_pandas().set_index("id")
    assert len(ds) == 60 and {"response_chars", "length_bin"} <= set(p.columns)
    assert p.loc["r5", "response_chars"] == lens[5]


def test_deterministic_and_random_is_uniform_within_bins():
    rng = np.random.default_rng(4)
    t = pool(rng.integers(1, 2000, 500))
    spec = {"type": "random", "budget": 50, "seed": 7, "length_neutral": True}
    a, b = build_stage(spec).select(t, None), build_stage(spec).select(t, None)
    assert (a.keep == b.keep).all() and (a.reason == b.reason).all()
    c = build_stage({**spec, "seed": 8}).select(t, None)
    assert (a.keep != c.keep).any() and (kept_per_bin(a, t) == kept_per_bin(c, t)).all()
    # within a bin the rows are the seeded permutation's first ones in that bin
    order = np.random.default_rng(7).permutation(500)
    lens = response_chars(t)
    bins = assign_bins(lens, length_edges(lens, 10))
    q = kept_per_bin(a, t)
    expect = np.concatenate([order[bins[order] == j][:q[j]] for j in range(len(q))])
    assert set(np.flatnonzero(a.keep)) == set(expect)


def test_car_keeps_its_own_order_restricted_to_each_bin():
    x, labels = blobs([40, 40, 40])
    rng = np.random.default_rng(5)
    lens = rng.integers(1, 900, 120)
    t = planted_table(x, cluster=labels, tokens=lens)  # output = "w " * n: 2n characters
    sel = build_stage({"type": "car", "budget": 30, "cluster_column": "cluster_id", "length_neutral": True,
                       "length_bins": 5}).select(t, None)
    order, _ = car_order(t.column("quality").to_numpy(), labels, None, 1)
    chars = response_chars(t)
    b = assign_bins(chars, length_edges(chars, 5))
    q = bin_quotas(np.bincount(b), 30)
    expect, _ = fill_bins(order, b, q)
    assert sel.n_kept == 30 and set(np.flatnonzero(sel.keep)) == set(expect)


def test_non_nested_kmq_runs_on_each_bin_with_the_bin_quota(tmp_path):
    x, labels = blobs([50, 50, 50, 50])
    lens = np.random.default_rng(6).integers(1, 300, 200)
    t = planted_table(x, cluster=labels, tokens=lens)
    ctx = StageContext(work_dir=tmp_path / "w", artifact_dir=tmp_path / "a", show_progress=False)
    st = KMQ(budget=37, cluster_column="cluster_id", length_neutral=True, length_bins=4)
    sel = st.check(st.select(t, ctx), 200)
    chars = response_chars(t)
    b = assign_bins(chars, length_edges(chars, 4))
    assert sel.n_kept == 37 and (kept_per_bin(sel, t, 4) == bin_quotas(np.bincount(b), 37)).all()
    again = KMQ(budget=37, cluster_column="cluster_id", length_neutral=True, length_bins=4).select(t, ctx)
    assert (again.keep == sel.keep).all()
    assert "kmq_cluster" in sel.extras and len(sel.extras["kmq_cluster"]) == 200
    # a budget below the number of bins: bins with quota 0 are not run, their rows say so
    small = KMQ(budget=2, cluster_column="cluster_id", length_neutral=True, length_bins=4).select(t, ctx)
    assert small.n_kept == 2 and (kept_per_bin(small, t, 4) == bin_quotas(np.bincount(b), 2)).all()
    empty_bins = np.isin(b, np.flatnonzero(bin_quotas(np.bincount(b), 2) == 0))
    assert (small.reason[empty_bins] == LENGTH_BIN_QUOTA).all()
    assert np.isnan(small.extras["kmq_cluster"][empty_bins]).all() and not np.isnan(small.extras["kmq_cluster"][~empty_bins]).any()


def test_response_chars_reads_output_last_assistant_message_or_text():
    t = pa.table({"id": ["a", "b", "c"], "text": ["plain text row", "t", "t"],
                  "instruction": [None, "q", None], "output": [None, "four", None],
                  "messages": [None, None, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "first"},
                                            {"role": "user", "content": "more"}, {"role": "assistant", "content": "second!"}]]})
    assert response_chars(t).tolist() == [len("plain text row"), 4, 7]


def test_token_bins_hold_the_pools_token_deciles_where_character_bins_do_not(tmp_path, monkeypatch):
    # Planted: prose and code-like responses of the same character lengths; the score prefers code,
    # which tokenises denser, so character bins let top_k take more tokens than the pool's share.
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    from curate.models.tokenizers import load_tokenizer

    rng = np.random.default_rng(0)
    lens = rng.integers(20, 400, size=300)
    prose = ["the cat sat on the warm mat and looked outside " * 20]
    code = ["{x[0]=>y;};<a/>#!=%&" * 40]
    outs = [(prose[0] if i % 2 else code[0])[:n] for i, n in enumerate(lens)]
    t = pool(lens, score=np.where(np.arange(300) % 2, 0.0, 1.0) + rng.uniform(0, 0.1, 300))
    t = t.set_column(t.column_names.index("output"), "output", pa.array(outs))
    tok = load_tokenizer("SmolLM2-135M-Instruct")
    truth = np.array([len(tok(o, add_special_tokens=False)["input_ids"]) for o in outs])
    assert response_tokens(t, "SmolLM2-135M-Instruct").tolist() == truth.tolist()
    token_bins = assign_bins(truth, length_edges(truth, 5))
    quota = bin_quotas(np.bincount(token_bins), 60)

    def picked(unit):
        spec = {"type": "top_k", "budget": 60, "score": "s", "length_neutral": True, "length_bins": 5, "length_unit": unit}
        st = build_stage(spec)
        return st, st.select(t, None)

    chars_st, by_chars = picked("chars")
    tokens_st, by_tokens = picked("tokens")
    assert np.bincount(token_bins[by_tokens.keep], minlength=len(quota)).tolist() == quota.tolist()
    assert np.bincount(token_bins[by_chars.keep], minlength=len(quota)).tolist() != quota.tolist()
    # character bins: the picks' mean tokens well above the pool's; token bins: near it
    assert truth[by_chars.keep].mean() > 1.3 * truth.mean()
    assert abs(truth[by_tokens.keep].mean() / truth.mean() - 1) < 0.15
    assert by_tokens.extras["response_tokens"].tolist() == truth.tolist()
    assert "response_tokens" not in by_chars.extras
    # the unit and tokenizer join the key only when counting tokens
    assert "length_unit" not in chars_st.cache_params()
    assert tokens_st.cache_params()["length_unit"] == "tokens"
    assert tokens_st.cache_params()["length_tokenizer"] == "SmolLM2-135M-Instruct"
    with pytest.raises(ConfigError, match="length_unit"):
        build_stage({"type": "random", "budget": 5, "length_neutral": True, "length_unit": "words"})


def test_cache_key_unchanged_unless_length_neutral_and_bad_values_fail():
    base = build_stage({"type": "top_k", "budget": 5, "score": "s"})
    off = build_stage({"type": "top_k", "budget": 5, "score": "s", "length_neutral": False, "length_bins": 4})
    on = build_stage({"type": "top_k", "budget": 5, "score": "s", "length_neutral": True})
    assert base.cache_params() == off.cache_params() == {"budget": 5, "score": "s", "ascending": False}
    assert on.cache_params() == {**base.cache_params(), "length_neutral": True, "length_bins": 10}
    for name in ("car", "kmq", "rds", "cherry_ifd", "zipfit", "sae_greedy", "random", "longest", "kcenter"):
        from curate.core.registry import get_stage

        assert {"length_neutral", "length_bins"} <= set(get_stage(name).param_names()), name
    with pytest.raises(ConfigError, match="length_neutral"):
        build_stage({"type": "random", "budget": {"tokens": 100}, "length_neutral": True})
    with pytest.raises(ConfigError, match="length_bins"):
        build_stage({"type": "random", "budget": 5, "length_bins": 1})
    with pytest.raises(ConfigError, match="length_neutral"):
        build_stage({"type": "random", "budget": 5, "length_neutral": "yes"})


def test_a_method_that_ranks_too_few_rows_of_a_bin_is_an_error():
    lens = np.array([5] * 50 + [500] * 50)
    t = pool(lens, score=np.r_[np.full(50, np.nan), np.arange(50.0)])
    # top_k ranks NaN last but still ranks them: every bin fills
    assert build_stage({"type": "top_k", "budget": 10, "score": "s", "length_neutral": True,
                        "length_bins": 2}).select(t, None).n_kept == 10
    from curate.select.base import BudgetSelector, Picks

    class LongOnly(BudgetSelector):
        name = "_test_long_only"

        def __init__(self, *, budget):
            self._init_budget(budget, 0)

        def pick(self, table, ctx, k):
            return Picks(order=np.arange(50, 100), reasons=np.full(len(table), NOT_SELECTED, dtype=object))

    with pytest.raises(RuntimeError, match="too few rows"):
        LongOnly(budget=10, length_neutral=True, length_bins=2).select(t, None)


@pytest.mark.parametrize("unit", ["chars", "tokens"])
def test_run_report_plots_the_selection_lengths_against_the_pool(tmp_path, monkeypatch, unit):
    import json

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(8)
    rows = [{"id": f"r{i}", "instruction": f"question {i}", "input": "", "output": "word " * int(n)}
            for i, n in enumerate(rng.integers(1, 300, 200))]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "ln", "input": {"path": str(tmp_path / "pool.jsonl")},
           "stages": [{"type": "top_k", "score": "h_chars", "budget": 40, "length_neutral": True, "length_unit": unit}],
           "output": {"dir": str(tmp_path / "out")}}
    res = curate.run(cfg, show_progress=False)
    rep = json.loads((res.output_dir / "report.json").read_text())
    (e,) = rep["selection"]
    col, name, suffix = ("response_chars", "characters", "") if unit == "chars" else ("response_tokens", "tokens", "_tokens")
    rc = e[col]
    # 40 picks of 200 rows: each pool decile's share (in the binning unit) to within one row of 40
    assert np.abs(np.array(rc["picked_share"]) - np.array(rc["pool_share"])).max() <= 1 / 40 + 1e-9
    tag = e["label"].replace(":", "_")
    assert (res.output_dir / "plots" / f"select_{tag}_lengths{suffix}.png").exists()
    assert f"response length ({name})" in (res.output_dir / "report.md").read_text()
    assert ("response_tokens" in e) == (unit == "tokens") and "response_chars" in e  # characters always shown
