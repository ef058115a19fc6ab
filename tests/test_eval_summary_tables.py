"""benchmarks/eval_summary_tables.py: the docs' summary tables carry results.json's numbers."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_summary_tables.py"
_spec = importlib.util.spec_from_file_location("eval_summary_tables", _PATH)
summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(summary)


def _stat(delta, lo, hi):
    return {"delta": delta, "ci": [lo, hi]}


def test_cells_rows_and_seed_counts_follow_the_results():
    results = {
        "units": [{"arm": "random", "seed": s} for s in range(5)] + [{"arm": "a", "seed": s} for s in range(3)],
        "comparisons": [{
            "reference": "random", "verdict_sets": ["x"], "out_of_target": ["o"],
            "arms": {"a": {"sets": {"x": {"full": _stat(0.01234, -0.0049, 0.0296)},
                                    "o": {"full": _stat(-0.02, -0.031, -0.009)}},
                           "verdict": {"full": "no detectable difference"},
                           "verdict_out_of_target": {"full": "beats random"}}},
        }],
    }
    text = summary.tables(results, ["full", "content"])
    assert "**full loss, arm − random** (5 seeds of random; 95% CI)" in text
    assert "| a | 3 | +0.012 [-0.005, +0.030] | -0.020 [-0.031, -0.009] | no detectable difference | beats random |" in text
    # a metric the results lack gives empty cells, not made-up numbers
    assert "| a | 3 |  |  |  |  |" in text
