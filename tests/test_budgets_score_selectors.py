"""Fraction and token budgets of the score selectors ``top_k`` and ``cherry_ifd``, on planted scores.

Row budgets are tested with each method; these check the other two budget forms against a
hand-computed answer: a fraction keeps round(f * n) rows, a token budget keeps the longest prefix
of the score order that fits (one more pick would overflow).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.core.schema import TOKENS_COLUMN
from curate.engine.config import build_stage

N = 40


def _table() -> pa.Table:
    rng = np.random.default_rng(7)
    score = rng.permutation(N).astype(np.float64) / N  # distinct scores: one right answer
    ifd = 0.2 + 0.9 * rng.random(N)  # about a fifth above Cherry's max_ifd of 1.0
    truncated = np.zeros(N, bool)
    truncated[[3, 11]] = True
    ifd[5] = np.nan
    tokens = rng.integers(10, 60, N)
    return pa.table({"id": [f"r{i}" for i in range(N)], "text": ["x"] * N, "quality": score, "ifd": ifd,
                     "ifd_truncated": truncated, TOKENS_COLUMN: pa.array(tokens, pa.int64())})


def _eligible_order(t: pa.Table, method: str) -> np.ndarray:
    """The hand-computed pick order: descending score over the rows the method may pick."""
    if method == "top_k":
        s = t.column("quality").to_numpy()
        return np.argsort(-s, kind="stable")
    ifd = t.column("ifd").to_numpy(zero_copy_only=False)
    ok = ~np.isnan(ifd) & (ifd <= 1.0) & ~t.column("ifd_truncated").to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(ok)
    return idx[np.argsort(-ifd[idx], kind="stable")]


SPECS = {"top_k": {"type": "top_k", "score": "quality"}, "cherry_ifd": {"type": "cherry_ifd"}}


@pytest.mark.parametrize("method", ["top_k", "cherry_ifd"])
def test_fraction_budget(method):
    t = _table()
    sel = build_stage({**SPECS[method], "budget": 0.25}).select(t, None)
    want = _eligible_order(t, method)[:10]  # round(0.25 * 40)
    assert sorted(np.flatnonzero(sel.keep)) == sorted(want)


@pytest.mark.parametrize("method", ["top_k", "cherry_ifd"])
@pytest.mark.parametrize("limit", [37, 300, 700])
def test_token_budget_is_the_longest_prefix_that_fits(method, limit):
    t = _table()
    tokens = t.column(TOKENS_COLUMN).to_numpy()
    order = _eligible_order(t, method)
    m = int(np.searchsorted(np.cumsum(tokens[order]), limit, side="right"))
    sel = build_stage({**SPECS[method], "budget": {"tokens": limit}}).select(t, None)
    assert sorted(np.flatnonzero(sel.keep)) == sorted(order[:m])
    assert tokens[sel.keep].sum() <= limit < tokens[order[:m + 1]].sum()
