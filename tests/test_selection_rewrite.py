"""Selectors that edit the rows they keep (Selection.rewrite): line filters, PII, substring dedup."""
from __future__ import annotations

import numpy as np
import pytest

import curate
from curate.core.registry import register
from curate.core.stage import Selection, Selector


@register
class _TrimToFirstLine(Selector):
    """Keeps each text's first line; drops texts whose first line is shorter than 4 characters."""

    name = "test_trim_first_line"
    reasons = {"first_line_too_short": "first line under 4 characters"}

    def __init__(self, *, column: str = "text"):
        self.column = column

    def required_columns(self) -> list[str]:
        return [self.column]

    def select(self, table, ctx):
        first = np.array([t.split("\n")[0] for t in table.column(self.column).to_pylist()], dtype=object)
        keep = np.array([len(t) >= 4 for t in first])
        chars = np.array([len(t) - len(f) for t, f in zip(table.column(self.column).to_pylist(), first)], float)
        return Selection(keep=keep, reason=np.where(keep, None, "first_line_too_short").astype(object),
                         extras={"chars_removed": chars}, rewrite={self.column: first})


ROWS = [{"id": "a", "text": "first line\nsecond line"}, {"id": "b", "text": "no\nlonger second line"},
        {"id": "c", "text": "single"}]


def test_rewritten_text_reaches_the_output_and_the_ledger_keeps_decisions(tmp_path):
    ds, prov = curate.select(ROWS, schema="canonical", method="test_trim_first_line", cache_dir=tmp_path, return_provenance=True)
    assert ds["id"] == ["a", "c"]
    assert ds["text"] == ["first line", "single"]
    p = {r["id"]: r for r in prov.to_pylist()}
    assert p["b"]["status"] == "dropped" and p["b"]["reason"] == "first_line_too_short"
    assert p["a"]["chars_removed"] == len("\nsecond line")
    assert "text" not in prov.column_names  # rewritten text is data, not provenance


def test_rewrite_survives_the_cache(tmp_path):
    first = curate.select(ROWS, schema="canonical", method="test_trim_first_line", cache_dir=tmp_path)
    again = curate.select(ROWS, schema="canonical", method="test_trim_first_line", cache_dir=tmp_path)  # loaded from the stage cache
    assert again["text"] == first["text"] == ["first line", "single"]


def test_rewrite_of_a_missing_column_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="rewrites column 'nope'"):
        from curate.engine.pipeline import apply_rewrite
        import pyarrow as pa

        apply_rewrite(pa.table({"text": ["x"]}), {"nope": np.array(["y"], dtype=object)}, "0:demo")


def test_rewrite_length_is_checked():
    with pytest.raises(ValueError, match="rewrite of column 'text' has length 1, expected 2"):
        Selection(keep=np.array([True, True]), reason=np.array([None, None], dtype=object),
                  rewrite={"text": np.array(["x"], dtype=object)})
