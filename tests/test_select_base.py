"""The selection contract (curate/select/base.py): exact budgets, token budgets, reasons, ledger."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

import curate
from curate.core.errors import ConfigError
from curate.core.registry import register
from curate.core.stage import Annotator
from curate.engine.config import build_stage
from curate.score.heuristics import HEURISTIC_COLUMNS
from curate.score.producers import score_producer, score_producers
from curate.select.base import (
    NOT_SELECTED,
    BudgetSelector,
    Picks,
    validate_selection_budget,
)


def _table(n: int, tokens=None) -> pa.Table:
    cols = {"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)]}
    if tokens is not None:
        cols["n_tokens"] = pa.array(tokens, pa.int64())
    return pa.table(cols)


@register
class _EveryOther(BudgetSelector):
    """Test method, not nested: takes every other row from the end, so picks(k) depend on k."""

    name = "_test_every_other"
    nested = False
    reasons = {"odd_one_out": "test reason"}

    def __init__(self, *, budget, seed: int = 0):
        self._init_budget(budget, seed)

    def pick(self, table, ctx, k):
        n = len(table)
        evens, odds = np.arange(0, n, 2), np.arange(1, n, 2)
        order = np.concatenate([evens[::-1], odds])[:max(k, 0)] if k % 2 == 0 else np.concatenate([odds, evens])
        reasons = np.where(np.arange(n) % 2 == 1, "odd_one_out", None).astype(object)
        return Picks(order=order, score=np.arange(n, dtype=float), extras={"round": np.zeros(n, np.int64)}, reasons=reasons)


@pytest.mark.parametrize("budget,expected", [(1, 1), (17, 17), (40, 40), (0.25, 10), (1.0, 40)])
def test_count_and_fraction_budgets_are_exact(budget, expected):
    sel = build_stage({"type": "random", "budget": budget, "seed": 3}).select(_table(40), None)
    assert sel.n_kept == expected
    assert set(sel.reason[~sel.keep]) <= {"not_sampled"}


def test_budget_larger_than_pool_keeps_all_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        sel = build_stage({"type": "random", "budget": 100}).select(_table(7), None)
    assert sel.n_kept == 7 and "larger than the 7 rows" in caplog.text


def test_random_is_seeded_and_nested():
    t = _table(500)
    a = build_stage({"type": "random", "budget": 50, "seed": 1}).select(t, None).keep
    b = build_stage({"type": "random", "budget": 50, "seed": 1}).select(t, None).keep
    c = build_stage({"type": "random", "budget": 100, "seed": 1}).select(t, None).keep
    d = build_stage({"type": "random", "budget": 50, "seed": 2}).select(t, None).keep
    assert (a == b).all() and (c[a]).all() and (a != d).any()


def test_token_budget_takes_the_longest_fitting_prefix_of_the_pick_order():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 200, size=300)
    t = _table(300, tokens)
    stage = build_stage({"type": "random", "budget": {"tokens": 5000}, "seed": 4})
    sel = stage.select(t, None)
    order = np.random.default_rng(4).permutation(300)
    k = sel.n_kept
    assert tokens[sel.keep].sum() <= 5000 < tokens[order[:k + 1]].sum()
    assert set(np.flatnonzero(sel.keep)) == set(order[:k])


def test_token_budget_for_a_non_nested_method_never_exceeds_and_is_maximal():
    tokens = np.full(101, 10)
    sel = _EveryOther(budget={"tokens": 333}).select(_table(101, tokens), None)
    assert sel.n_kept == 33  # 33 rows x 10 tokens; 34 would not fit


def test_method_reasons_default_to_not_selected_by_budget_and_score_reaches_the_ledger():
    rows = [{"id": f"r{i}", "text": f"text number {i}"} for i in range(20)]
    ds, prov = curate.select(rows, schema="canonical", method="_test_every_other", budget=4, return_provenance=True)
    assert len(ds) == 4
    p = prov.to_pandas().set_index("id")
    dropped = p[p.status == "dropped"]
    assert set(dropped.reason) == {NOT_SELECTED, "odd_one_out"}
    assert (dropped.loc[[f"r{i}" for i in range(1, 20, 2)], "reason"] == "odd_one_out").all()
    assert "_test_every_other_score" in p.columns and p.loc["r7", "_test_every_other_score"] == 7.0
    assert "round" in p.columns


def test_a_method_returning_too_few_picks_is_an_error():
    class Short(_EveryOther):
        def pick(self, table, ctx, k):
            return Picks(order=np.arange(k - 1))

    with pytest.raises(RuntimeError, match="picked 4 rows for a budget of 5"):
        Short(budget=5).select(_table(10), None)


@pytest.mark.parametrize("bad", [0, {"tokens": 0}, {"tokens": -1}, {"rows": 3}, {"tokens": 1.5}, -2, 1.5, "10"])
def test_bad_budgets_fail_at_config_time(bad):
    with pytest.raises(ValueError):
        validate_selection_budget(bad)
    with pytest.raises(ConfigError, match="budget"):
        build_stage({"type": "random", "budget": bad}, "stages[0]")


def test_token_count_matches_the_proxy_tokenizer_and_is_added_automatically(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    from curate.models.tokenizers import load_tokenizer

    rows = [{"id": f"r{i}", "instruction": f"Write {i} words about cats.", "output": "cat " * (i + 1)} for i in range(30)]
    ds, prov = curate.select(rows, schema="canonical", method="random", budget={"tokens": 400}, seed=0, return_provenance=True)
    tok = load_tokenizer("SmolLM2-135M-Instruct")
    truth = {r: len(tok(t, add_special_tokens=False)["input_ids"]) for r, t in zip(ds["id"], ds["text"])}
    assert dict(zip(ds["id"], ds["n_tokens"])) == truth
    assert 0 < sum(truth.values()) <= 400
    assert prov.column("n_tokens").null_count == 0


@register
class _TextLength(Annotator):
    """Test score annotator: declares ``produces``, and is in no list of score columns."""

    name = "_test_text_length"
    produces = ("_test_chars",)

    def output_columns(self):
        return ["_test_chars"]

    def annotate(self, table, ctx):
        return pa.table({"_test_chars": pa.array([float(len(t)) for t in table.column("text").to_pylist()])})


def test_a_new_score_annotator_is_added_for_a_selector_on_its_column():
    rows = [{"id": f"r{i}", "text": "x" * (i + 1)} for i in range(12)]
    ds, prov = curate.select(rows, schema="canonical", method="top_k", score="_test_chars", budget=3, return_provenance=True)
    assert sorted(ds["id"]) == ["r10", "r11", "r9"]
    assert prov.column("_test_chars").to_pylist()[:3] == [1.0, 2.0, 3.0]
    assert score_producer("_test_chars", ["id", "_test_chars"]) == []  # present: nothing to add


def test_builtin_score_producers_are_read_from_the_annotators():
    got = score_producers()
    assert {c: got[c] for c in ("quality", "ppl_response", "ppl_text", "ifd", "ifd_loss_cond", "ifd_loss_uncond",
                                "ifd_truncated")} == {
        "quality": "quality_model", "ppl_response": "perplexity", "ppl_text": "perplexity", "ifd": "ifd",
        "ifd_loss_cond": "ifd", "ifd_loss_uncond": "ifd", "ifd_truncated": "ifd"}
    assert {c for c, name in got.items() if name == "heuristics"} == set(HEURISTIC_COLUMNS)
    for not_a_score in ("ifd_gt1", "embedding", "cluster_id", "n_tokens", "reward", "h_no_such_heuristic"):
        assert not_a_score not in got
    assert [s.name for s in score_producer("h_words", ["id", "text"])] == ["heuristics"]
