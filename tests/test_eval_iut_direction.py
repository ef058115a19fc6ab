"""The intersection-union p of "better on every verdict set" counts only differences the better way."""
from __future__ import annotations

from curate.eval.report import better_side_p
from curate.eval.stats import holm


def test_a_significant_worse_set_is_not_evidence_of_better():
    better, worse, flat = {"delta": -0.03, "p": 0.002}, {"delta": +0.12, "p": 0.002}, {"delta": -0.001, "p": 0.9}
    assert better_side_p(better) == 0.001
    assert better_side_p(worse) == 0.999
    assert better_side_p(flat) == 0.45  # the better way, not significant
    # an arm better on two sets and much worse on the third: the test must not call it better on all
    p_style_dependent = max(better_side_p(s) for s in (better, better, worse))
    p_all_better = max(better_side_p(s) for s in (better, better, better))
    assert p_style_dependent == 0.999 and p_all_better == 0.001
    adjusted = holm({"a": p_all_better, "b": p_style_dependent})
    assert adjusted["a"] < 0.01 and adjusted["b"] > 0.99
