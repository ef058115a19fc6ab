"""One engine (curate.engine.execute) behind curate.run, the versioned refresh, the flow's tasks
and curate.select: a refresh writes under the output lock, is recorded for gc and locates its
left-out vector columns like `curate run`; every entry point gives the same result."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, SAMPLE

import curate
from curate.cache.gc import gc
from curate.cache.store import StageStore
from curate.core.shards import active_executor
from curate.core.stage import Annotator
from curate.engine.execute import execute, execute_table
from curate.engine.output import output_lock
from curate.ingest.read import from_records
from curate.ops.refresh import run_refresh

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import write_pool  # noqa: E402  (registers the test stages: vectorizer, tagger)


def _refresh_recipe(tmp_path, stages: list[dict]) -> dict:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    if not any(src.iterdir()):
        write_pool(src / "a.jsonl", n=40)
    return {"refresh": {"source": str(src), "versions_dir": str(tmp_path / "versions")}, "input": {"path": "unused"},
            "stages": stages, "output": {"plots": False, "save_dataset": False}, "cache_dir": str(tmp_path / "cache")}


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _keys(out: Path) -> list[str]:
    m = _manifest(out)
    return [m["input"]["key"]] + [s["key"] for s in m["stages"]]


def _committed(cache: Path) -> int:
    return sum(1 for p in cache.iterdir() if (p / "manifest.json").is_file()) if cache.is_dir() else 0


def test_refresh_waits_for_the_output_lock_like_curate_run(tmp_path):
    """A concurrent writer of the version folder (holding its output lock) makes the refresh wait."""
    stages = [{"type": "exact_dedup"}, {"type": "heuristics", "columns": ["h_words"]},
              {"type": "top_k", "score": "h_words", "budget": 10}]
    recipe = _refresh_recipe(tmp_path, stages)
    version = tmp_path / "versions" / "v0001"
    got: dict = {}

    def refresh():
        try:
            got["result"] = run_refresh(recipe, show_progress=False)
        except Exception as e:  # reported by the main thread
            got["error"] = e

    with output_lock(StageStore(tmp_path / "cache"), version):
        worker = threading.Thread(target=refresh, daemon=True)
        worker.start()
        deadline = time.monotonic() + 120
        # every step committed (ingest + 3 stages): all the refresh has left is writing the version
        while _committed(tmp_path / "cache") < 1 + len(stages) and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.join(timeout=3)
        assert "error" not in got, got.get("error")
        assert worker.is_alive(), "the refresh wrote its version while another writer held the output lock"
        assert not version.exists() and not (tmp_path / "versions" / "latest").exists()
    worker.join(timeout=120)
    assert not worker.is_alive() and "error" not in got, got.get("error")
    assert got["result"].version == "v0001" and (version / "refresh.json").is_file()
    assert _manifest(version)["output_hash"] == got["result"].output_hash


def test_gc_keeps_the_latest_refresh_entries(tmp_path):
    recipe = _refresh_recipe(tmp_path, [{"type": "exact_dedup"}, {"type": "tagger"},
                                        {"type": "random", "budget": 10, "seed": 0}])
    vdir = tmp_path / "versions"
    run_refresh(recipe, show_progress=False)
    write_pool(tmp_path / "src" / "b.jsonl", n=8, seed=1)  # new rows: a second version
    assert run_refresh(recipe, show_progress=False).version == "v0002"
    first, latest = _keys(vdir / "v0001"), _keys(vdir / "v0002")
    assert set(first) != set(latest)
    store = StageStore(tmp_path / "cache")
    removed = {e["key"] for e in gc(store, keep_last=0)["removed"]}
    assert all(store.has(k) for k in latest), "gc removed entries the latest refresh used"
    # the refresh is recorded per versions folder: v0001's own entries (its output is written) may go
    assert removed == set(first) - set(latest)


def test_refresh_manifest_locates_left_out_vectors_like_curate_run(tmp_path):
    stages = [{"type": "vectorizer"}, {"type": "tagger"}, {"type": "random", "budget": 10, "seed": 0}]
    recipe = _refresh_recipe(tmp_path, stages)
    res = run_refresh(recipe, show_progress=False)
    where = _manifest(res.path)["columns_left_out"]
    assert where["embedding"]["step"] == "0:vectorizer" and where["embedding"]["path"]
    assert Path(where["embedding"]["path"]).is_file()
    assert json.loads((res.path / "report.json").read_text())["columns_left_out"] == where
    run = curate.run({"input": {"path": recipe["refresh"]["source"]}, "stages": stages,
                      "output": {"dir": str(tmp_path / "run"), "plots": False, "save_dataset": False},
                      "cache_dir": recipe["cache_dir"]}, show_progress=False)
    assert run.output_hash == res.output_hash
    assert _manifest(run.output_dir)["columns_left_out"] == where


def _quickstart(tmp_path, out: str) -> dict:
    # the bare pipe (exact dedup, length filter, random): the quick start's models would make
    # this engine test minutes long without testing more of the engine
    data = yaml.safe_load((REPO / "configs" / "minimal.yaml").read_text())
    data["input"]["path"] = str(SAMPLE)
    data["output"] = {"dir": str(tmp_path / out), "plots": False, "save_dataset": False}
    data["cache_dir"] = str(tmp_path / "cache")
    return data


def test_run_refresh_and_flow_steps_give_the_same_output(tmp_path):
    """The quickstart recipe through curate.run, a refresh, and the flow's steps (ingest task, one
    task per stage, write task) on one cache: one output hash, and each later entry point only
    reuses what the first computed."""
    run = curate.run(_quickstart(tmp_path, "run"), show_progress=False)
    assert run.counts["n_selected"] == 1000

    refresh = _quickstart(tmp_path, "unused") | {"refresh": {"source": str(SAMPLE),
                                                             "versions_dir": str(tmp_path / "versions")}}
    version = run_refresh(refresh, show_progress=False)
    assert (version.output_hash, version.counts) == (run.output_hash, run.counts)

    cfg, n = _quickstart(tmp_path, "flow"), len(_quickstart(tmp_path, "flow")["stages"])
    key = execute(cfg, show_progress=False, n_stages=0, write=False).final_key  # the flow's ingest task
    for i in range(n):  # its stage tasks: stage i replays 0..i-1 from the cache
        ex = execute(cfg, show_progress=False, n_stages=i + 1, write=False, ingest_key=key if i == 0 else None)
        assert [r.cached for r in ex.records] == [True] * (i + 1)
        key = ex.final_key
    written = execute(cfg, show_progress=False)  # the write task
    assert written.final_key == key and written.result.output_hash == run.output_hash
    with pytest.raises(RuntimeError, match="ingest_key"):
        execute(cfg, show_progress=False, n_stages=1, write=False, ingest_key="0" * 32)
    with pytest.raises(ValueError, match="n_stages"):
        execute(cfg, show_progress=False, n_stages=1)  # writing a partial recipe's output


def test_select_matches_run_on_the_same_rows(tmp_path):
    stage = {"type": "random", "budget": 300, "seed": 0}
    run = curate.run({"input": {"path": str(SAMPLE)}, "stages": [stage],
                      "output": {"dir": str(tmp_path / "run"), "plots": False, "save_dataset": False},
                      "cache_dir": str(tmp_path / "cache")}, show_progress=False)
    run_ids = [i for p in sorted((run.output_dir / "data").glob("*.parquet")) for i in pq.read_table(p)["id"].to_pylist()]
    ds, prov = curate.select(str(SAMPLE), "random", 300, seed=0, return_provenance=True, schema="canonical")
    assert ds["id"] == run_ids and len(run_ids) == 300
    run_prov = run.provenance()
    assert prov.select(run_prov.column_names).equals(run_prov)  # same decisions, same reasons


class _ExecutorProbe(Annotator):
    """Adds ``probe`` = 1.0 and records the shard executor installed while it annotates."""

    name = "executor_probe"
    seen: ClassVar[list] = []

    def annotate(self, table, ctx):
        _ExecutorProbe.seen.append(active_executor())
        return pa.table({"probe": pa.array([1.0] * len(table))})


def test_execute_table_runs_stages_inside_the_given_shard_executor(tmp_path):
    got = from_records([{"id": f"r{i}", "text": f"row {i}"} for i in range(5)])
    executor = object()  # stands for the flow's PrefectShardExecutor: only its installation is checked
    ex = execute_table(got, [_ExecutorProbe()], cache_dir=tmp_path / "c", executor=executor)
    assert _ExecutorProbe.seen == [executor] and active_executor() is None
    assert ex.table.column("probe").to_pylist() == [1.0] * 5 and ex.ledger.counts["n_selected"] == 5
    assert ex.config is None and ex.result is None and ex.keys == [ex.ingest.key, ex.final_key]
