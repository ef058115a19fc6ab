"""Hand-computed toys for exact_dedup, length_filter, random, top_k, score_filter."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import toy_table

from curate.core.budget import resolve_budget
from curate.dedup.exact import ExactDedup
from curate.filters.length import LengthFilter
from curate.filters.score import ScoreFilter
from curate.select.basic import RandomSelect, TopK


def test_exact_dedup_normalises_case_and_whitespace_and_keeps_first(ctx):
    t = toy_table(["Hello  world", "other", "hello world", " HELLO WORLD\n", "other", "different"])
    sel = ExactDedup().select(t, ctx)
    assert sel.keep.tolist() == [True, True, False, False, False, True]
    assert sel.extras["dup_of"].tolist() == [None, None, "r0", "r0", "r1", None]
    assert set(sel.reason[~sel.keep]) == {"exact_duplicate"}


def test_exact_dedup_without_normalisation_is_byte_exact(ctx):
    t = toy_table(["a b", "A B", "a b"])
    sel = ExactDedup(normalize=False).select(t, ctx)
    assert sel.keep.tolist() == [True, True, False]


def test_length_filter_bounds_inclusive(ctx):
    t = toy_table(["one", "one two", "one two three", "x" * 25 + " " + "y" * 25])
    sel = LengthFilter(min_words=2, max_chars=20).select(t, ctx)
    assert sel.keep.tolist() == [False, True, True, False]
    assert sel.reason.tolist() == ["too_short", None, None, "too_long"]


@pytest.mark.parametrize("bad", [{"min_words": -1}, {"min_chars": 5, "max_chars": 2}, {"max_words": 1.5}])
def test_length_filter_rejects_bad_params(bad):
    with pytest.raises(ValueError):
        LengthFilter(**bad)


def test_budget_count_fraction_and_cap():
    assert resolve_budget(10, 100) == 10
    assert resolve_budget(0.25, 100) == 25
    assert resolve_budget(500, 100) == 100
    for bad in (-1, 1.5, 0.0, "10", True):
        with pytest.raises(ValueError):
            resolve_budget(bad, 100)


def test_random_is_seeded_and_exact_size(ctx):
    t = toy_table([f"t{i}" for i in range(100)])
    a = RandomSelect(budget=30, seed=1).select(t, ctx)
    b = RandomSelect(budget=30, seed=1).select(t, ctx)
    c = RandomSelect(budget=30, seed=2).select(t, ctx)
    assert a.n_kept == 30 and np.array_equal(a.keep, b.keep) and not np.array_equal(a.keep, c.keep)
    assert RandomSelect(budget=0.1).select(t, ctx).n_kept == 10


def test_top_k_highest_lowest_and_nan_last(ctx):
    t = toy_table(list("abcde"), q=[0.5, np.nan, 0.9, 0.1, 0.7])
    assert TopK(budget=2, score="q").select(t, ctx).keep.tolist() == [False, False, True, False, True]
    assert TopK(budget=2, score="q", ascending=True).select(t, ctx).keep.tolist() == [True, False, False, True, False]
    assert TopK(budget=5, score="q").select(t, ctx).n_kept == 5


def test_top_k_missing_column_names_it(ctx):
    with pytest.raises(KeyError, match="quality"):
        TopK(budget=1, score="quality").select(toy_table(["a"]), ctx)


def test_cherry_ifd_drops_ifd_above_1_truncated_and_missing_then_keeps_the_highest(ctx):
    """Cherry LLM: IFD > 1 and over-long rows are discarded before ranking, unlike a plain top_k."""
    import pyarrow as pa

    from curate.select.cherry import CherryIFD

    ifd = [0.95, 1.40, 0.60, np.nan, 0.99, 0.80, 2.10, np.nan]
    cut = pa.array([False, False, False, None, True, False, False, True])  # last: prompt filled max_length
    t = toy_table(list("abcdefgh"), ifd=ifd, ifd_truncated=cut)
    sel = CherryIFD(budget=2).select(t, ctx)
    assert np.flatnonzero(sel.keep).tolist() == [0, 5]  # 0.95 and 0.80; 0.99 is truncated
    assert sel.reason.tolist() == [None, "ifd_above_max", "below_top_ifd", "missing_ifd", "ifd_truncated",
                                   None, "ifd_above_max", "ifd_truncated"]
    assert CherryIFD(budget=2, drop_truncated=False).select(t, ctx).reason[7] == "missing_ifd"
    assert np.flatnonzero(TopK(budget=2, score="ifd").select(t, ctx).keep).tolist() == [1, 6]  # the rows Cherry drops
    assert np.flatnonzero(CherryIFD(budget=2, drop_truncated=False).select(t, ctx).keep).tolist() == [0, 4]
    assert np.flatnonzero(CherryIFD(budget=1, max_ifd=None).select(t, ctx).keep).tolist() == [6]
    with pytest.raises(ValueError, match="only 3 of 8 rows pass"):
        CherryIFD(budget=4).select(t, ctx)
    with pytest.raises(KeyError, match="ifd_truncated"):
        CherryIFD(budget=1).select(toy_table(list("ab"), ifd=[0.5, 0.7]), ctx)
    assert [s.name for s in CherryIFD(budget=1).prerequisites(["ifd"])] == ["ifd"]
    assert CherryIFD(budget=1).prerequisites(["ifd", "ifd_truncated"]) == []


def test_cherry_ifd_recipe_validates():
    from conftest import REPO

    from curate.engine.config import load_config

    cfg = load_config(REPO / "configs" / "instruction" / "cherry_ifd.yaml")
    assert [s.name for s in cfg.build_stages()][-2:] == ["ifd", "cherry_ifd"]


def test_score_filter_quantiles_and_bounds(ctx):
    t = toy_table([str(i) for i in range(11)], s=[float(i) for i in range(10)] + [np.nan])
    sel = ScoreFilter(column="s", quantile_range=[0.2, 0.8]).select(t, ctx)
    # quantiles of 0..9 at 0.2/0.8 are 1.8 and 7.2 -> keep 2..7
    assert np.flatnonzero(sel.keep).tolist() == [2, 3, 4, 5, 6, 7]
    assert sel.reason[10] == "missing_score"
    sel = ScoreFilter(column="s", min=3, max=5, keep_missing=True).select(t, ctx)
    assert np.flatnonzero(sel.keep).tolist() == [3, 4, 5, 10]
    assert sel.reason[0] == "below_min" and sel.reason[9] == "above_max"


def test_score_selectors_add_the_annotator_that_makes_a_known_score():
    assert [s.name for s in TopK(budget=1, score="quality").prerequisites(["id", "text"])] == ["quality_model"]
    assert [s.name for s in ScoreFilter(column="ppl_text", max=50).prerequisites(["id", "text"])] == ["perplexity"]
    assert [s.name for s in TopK(budget=1, score="h_words").prerequisites(["id", "text"])] == ["heuristics"]
    assert TopK(budget=1, score="quality").prerequisites(["id", "text", "quality"]) == []
    assert TopK(budget=1, score="my_own_score").prerequisites(["id", "text"]) == []


def test_select_top_k_by_heuristic_on_raw_rows():
    import curate

    rows = [{"text": " ".join(["word"] * n)} for n in (3, 9, 5, 7)]
    ds = curate.select(rows, schema="canonical", method="top_k", budget=2, score="h_words")
    assert sorted(ds["h_words"]) == [7.0, 9.0]
