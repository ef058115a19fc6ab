"""End-to-end runs: outputs of the contract, invariants, cache hits, selector-only reruns, resume."""
from __future__ import annotations

import json

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest

import curate
from curate.engine.pipeline import plan
from curate.select.basic import RandomSelect

ROWS = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red is a primary colour."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5."},
    {"instruction": "name a PRIMARY colour.", "input": "", "output": "Red is a primary  colour."},  # exact dup of 1 (case/space)
    {"instruction": "Translate 'hello' to French.", "input": "", "output": "Bonjour."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5."},  # exact dup of 2
    {"instruction": "Say hi.", "input": "", "output": "Hi."},  # short: dropped by length_filter
] + [{"instruction": f"Write fact number {i} about the sea.", "input": "", "output": f"The sea fact {i} is that it is salty and wide."} for i in range(40)]


@pytest.fixture
def recipe(tmp_path):
    data = tmp_path / "pool.jsonl"
    lines = [json.dumps(r) for r in ROWS] + ["{not json", json.dumps({"instruction": "no output field"}),
                                              json.dumps({"instruction": " ", "input": "", "output": "  "})]
    data.write_text("\n".join(lines) + "\n")
    return {"input": {"path": str(data)},
            "stages": [{"type": "exact_dedup"}, {"type": "length_filter", "min_words": 4}, {"type": "random", "budget": 20, "seed": 0}],
            "output": {"dir": str(tmp_path / "run")}, "cache_dir": str(tmp_path / "cache")}


def _check_contract(res):
    out = res.output_dir
    for name in ("dataset", "data", "provenance.parquet", "report.md", "report.json", "manifest.json"):
        assert (out / name).exists(), name
    ds = datasets.load_from_disk(str(out / "dataset"))
    prov = pq.read_table(out / "provenance.parquet").to_pylist()
    c = res.counts
    assert c["n_input"] == c["n_selected"] + c["n_dropped"] + c["n_quarantined"] == len(prov)
    assert len(ds) == c["n_selected"] == sum(pq.read_table(p).num_rows for p in (out / "data").glob("*.parquet"))
    assert sorted(ds["id"]) == sorted(r["id"] for r in prov if r["status"] == "selected")
    by_id = {r["id"]: r for r in prov}
    assert len(by_id) == len(prov), "provenance ids must be unique"
    order = [s["label"] for s in res.report["stages"]]
    for r in prov:
        if r["status"] != "selected":
            assert r["stage"] and r["reason"], r
        if r["dup_of"] is not None:
            rep = by_id[r["dup_of"]]
            # the representative survived the dedup stage: selected, or dropped by a later stage
            assert rep["status"] == "selected" or order.index(rep["stage"]) > order.index(r["stage"]), (r, rep)
    return ds, prov


def test_run_writes_contract_and_accounts_for_every_row(recipe):
    res = curate.run(recipe, show_progress=False)
    ds, prov = _check_contract(res)
    c = res.counts
    assert c == {"n_input": 49, "n_selected": 20, "n_dropped": 26, "n_quarantined": 3}
    reasons = {(r["stage"], r["reason"]) for r in prov if r["status"] != "selected"}
    assert ("0:exact_dedup", "exact_duplicate") in reasons and ("1:length_filter", "too_short") in reasons
    assert ("2:random", "not_sampled") in reasons
    dups = {r["id"]: r["dup_of"] for r in prov if r["reason"] == "exact_duplicate"}
    assert dups == {"pool.jsonl:3": "pool.jsonl:1", "pool.jsonl:5": "pool.jsonl:2"}
    q = [json.loads(l) for l in (res.output_dir / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in q) == ["empty_text", "malformed_json", "missing_field"]
    assert all(r["file"] and r["line"] and "raw" in r and r["error"] for r in q)
    rep = json.loads((res.output_dir / "report.json").read_text())
    assert rep["stages"][0]["dropped"] == {"exact_duplicate": 2}
    assert (res.output_dir / "plots" / "funnel.png").exists()
    manifest = json.loads((res.output_dir / "manifest.json").read_text())
    assert manifest["output_hash"] == res.output_hash and manifest["packages"]["pyarrow"]


def test_dedup_only_recipe_every_dup_of_points_at_a_selected_row(recipe):
    recipe["stages"] = [{"type": "exact_dedup"}]
    res = curate.run(recipe, show_progress=False)
    _, prov = _check_contract(res)
    status = {r["id"]: r["status"] for r in prov}
    assert all(status[r["dup_of"]] == "selected" for r in prov if r["dup_of"])


def test_second_run_does_no_work_and_plan_says_cached(recipe):
    first = curate.run(recipe, show_progress=False)
    second = curate.run(recipe, show_progress=False)
    assert not second.did_work and second.output_hash == first.output_hash
    assert all(s["cached"] for s in second.report["stages"])
    assert all(row["cached"] for row in plan(recipe))


def test_changing_a_selector_budget_reruns_only_that_selector(recipe):
    curate.run(recipe, show_progress=False)
    recipe["stages"][2]["budget"] = 10
    res = curate.run(recipe, show_progress=False)
    assert [s["cached"] for s in res.report["stages"]] == [True, True, False]
    assert res.report["input"]["cached"] and res.counts["n_selected"] == 10


def test_plan_before_any_run_marks_everything_to_run(recipe):
    rows = plan(recipe)
    assert [r["step"] for r in rows] == ["ingest", "0:exact_dedup", "1:length_filter", "2:random"]
    assert not any(r["cached"] for r in rows)


def test_crash_mid_run_resumes_with_same_output_hash(recipe, tmp_path, monkeypatch):
    clean = curate.run({**recipe, "cache_dir": str(tmp_path / "clean_cache"), "output": {"dir": str(tmp_path / "clean")}},
                       show_progress=False)

    def boom(self, table, ctx):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(RandomSelect, "select", boom)
    with pytest.raises(KeyboardInterrupt):
        curate.run(recipe, show_progress=False)
    assert [r["cached"] for r in plan(recipe)] == [True, True, True, False]
    assert not (tmp_path / "run" / "manifest.json").exists()
    monkeypatch.undo()
    res = curate.run(recipe, show_progress=False)
    assert [s["cached"] for s in res.report["stages"]] == [True, True, False]
    assert res.output_hash == clean.output_hash


def test_map_shards_resumes_after_a_failure(ctx):
    calls = []

    def fn(start, stop):
        calls.append(start)
        if start == 20 and len(calls) < 4:
            raise RuntimeError("killed in shard 3")
        return {"x": np.arange(start, stop)}

    with pytest.raises(RuntimeError):
        ctx.map_shards(35, fn, shard_size=10)
    out = ctx.map_shards(35, fn, shard_size=10)
    assert calls == [0, 10, 20, 20, 30]
    assert out["x"].tolist() == list(range(35))


def test_select_api_on_list_of_dicts_and_table():
    rows = [{"text": f"document number {i}", "q": float(i)} for i in range(10)]
    ds = curate.select(rows, schema="canonical", method="top_k", budget=3, score="q")
    assert sorted(ds["q"]) == [7.0, 8.0, 9.0]
    ds, prov = curate.select(rows + rows[:2], schema="canonical", method="exact_dedup", return_provenance=True)
    assert len(ds) == 10 and prov.num_rows == 12
    assert len(curate.select(rows, schema="canonical", method="random", budget=0.5, seed=3)) == 5
