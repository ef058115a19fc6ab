"""benchmarks/eval_query_overlap.py: the outside view of the query/scored split sees templated near-duplicates."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_query_overlap.py"
_spec = importlib.util.spec_from_file_location("eval_query_overlap", _PATH)
overlap = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overlap)


def _config(tmp_path, prompts):
    f = tmp_path / "set.jsonl"
    f.write_text("".join(json.dumps({"instruction": p, "input": "", "output": "an answer"}) + "\n" for p in prompts))
    return {"name": "t", "output": str(tmp_path / "out"), "pool": {"paths": [str(f)]},
            "eval_sets": [{"name": "s", "path": str(f), "queries": {"n": 3, "seed": 0, "draw": "queries_first"}}],
            "budget": 2, "arms": [{"name": "random", "method": "random"}], "train": {"layers": 1}, "eval": {}}


def test_templated_prompts_show_as_near_duplicates_and_distinct_ones_do_not(tmp_path):
    cities = ["Paris", "Lima", "Oslo", "Quito", "Hanoi", "Accra", "Bern", "Doha", "Riga", "Sofia"]
    templated = [f"Plan a three-day trip to {c} for a family of four on a tight budget." for c in cities]
    (tmp_path / "a").mkdir()
    (r,) = overlap.overlap_rows(_config(tmp_path / "a", templated))
    assert (r["queries"], r["scored_all_sets"], r["shared_ids"], r["shared_prompts"]) == (3, 7, 0, 0)
    assert r["near_duplicates"] == 3 and r["nearest_max"] > 0.7
    distinct = ["Write a haiku about rain.", "Sum the integers 1 to 100.", "Name three prime numbers.",
                "Translate 'good morning' into German.", "Explain photosynthesis briefly.",
                "List the planets by size.", "Give a synonym for happy.", "What causes tides?"]
    (tmp_path / "b").mkdir()
    (r,) = overlap.overlap_rows(_config(tmp_path / "b", distinct))
    assert (r["shared_ids"], r["shared_prompts"], r["near_duplicates"]) == (0, 0, 0) and r["nearest_max"] < 0.3
