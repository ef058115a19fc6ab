"""Prefect flows under prefect_test_harness (one temporary server for the whole session):
the `curate` flow equals `curate run`, names its tasks by stage, the refresh flow versions, and
sharded annotators run one Dask task per shard."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import yaml
from conftest import REPO

import curate

pytest.importorskip("prefect")
if str(REPO) not in sys.path:  # flows/ is imported from the checkout, whichever way pytest was started
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    import os

    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    with prefect_test_harness(server_startup_timeout=240):  # a loaded 2-core machine starts it slowly
        yield


def _pool(tmp_path, n=30):
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Question {i % 7} about tides?",
                                        "output": f"Answer {i % 7} about tides."}) + "\n" for i in range(n)))
    return data


def _task_run_names(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(r.name for r in runs)


def test_flow_matches_direct_run_and_names_tasks_by_stage(prefect_server, tmp_path):
    from flows.curate_flow import curate_flow

    recipe = {"name": "toy", "input": {"path": str(_pool(tmp_path))},
              "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 5, "seed": 1}],
              "output": {"dir": str(tmp_path / "flow_out"), "plots": False}, "cache_dir": str(tmp_path / "cache")}
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    state = curate_flow(str(cfg), return_state=True)
    result = state.result()
    assert result["counts"] == {"n_input": 30, "n_selected": 5, "n_dropped": 25, "n_quarantined": 0}
    direct = curate.run({**recipe, "output": {"dir": str(tmp_path / "direct_out"), "plots": False}},
                        show_progress=False)
    assert direct.output_hash == result["output_hash"]
    assert all(s["cached"] for s in direct.report["stages"])  # the flow's tasks filled the cache
    names = _task_run_names(state.state_details.flow_run_id)
    assert names == ["0:exact_dedup [toy]", "1:random [toy]", "ingest toy", "write-output toy"]


def test_refresh_flow_versions_then_noop(prefect_server, tmp_path):
    from flows.curate_flow import refresh_flow

    src = tmp_path / "src"
    src.mkdir()
    _pool(src, 20)
    recipe = {"refresh": {"source": str(src), "versions_dir": str(tmp_path / "v")}, "input": {"path": "x"},
              "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 3, "seed": 1}],
              "output": {"plots": False, "save_dataset": False}, "cache_dir": str(tmp_path / "cache")}
    cfg = tmp_path / "refresh.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    first = refresh_flow(str(cfg))
    assert (first["version"], first["noop"], first["added"]) == ("v0001", False, 3)
    again = refresh_flow(str(cfg))
    assert again["noop"] and again["version"] == "v0001"


def _square(marks, start: int, stop: int) -> dict:
    # records each call; the first attempt of the shard starting at 10 fails
    (marks / f"call-{start}-{len(list(marks.glob(f'call-{start}-*')))}").touch()
    if start == 10 and not (marks / "failed-once").exists():
        (marks / "failed-once").touch()
        raise RuntimeError("planted failure of shard 10")
    x = np.arange(start, stop, dtype=np.float64)
    return {"sq": x * x, "ids": np.arange(start, stop)}


def test_one_dask_task_per_shard_retry_and_resume(prefect_server, tmp_path):
    """map_shards under a flow on a 2-worker LocalCluster: same arrays as the local loop, a
    failing shard retried, a shard finished by a killed run reused."""
    pytest.importorskip("prefect_dask")
    import cloudpickle
    from prefect import flow

    from curate.core.shards import active_executor, use_executor
    from curate.core.stage import StageContext
    from flows.curate_flow import dask_runner
    from flows.shard_executor import PrefectShardExecutor

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask workers cannot import this test module
    local_marks = tmp_path / "local_marks"
    local_marks.mkdir()
    (local_marks / "failed-once").touch()
    local = StageContext(work_dir=tmp_path / "local", show_progress=False).map_shards(
        25, lambda a, b: _square(local_marks, a, b), shard_size=10)
    marks = tmp_path / "marks"
    marks.mkdir()
    ctx = StageContext(work_dir=tmp_path / "work", show_progress=False)
    (ctx.work_dir / "shards").mkdir(parents=True)  # a killed run had finished rows [20, 25)
    np.savez(ctx.work_dir / "shards" / f"{20:012d}-{25:012d}.npz", sq=np.arange(20, 25.0) ** 2, ids=np.arange(20, 25))

    import pyarrow as pa

    from curate.dedup.minhash import MinHashDedup
    from curate.dedup.minhash_index import compute_band_keys

    texts = pa.array([f"alpha beta gamma delta {i % 4} epsilon zeta eta theta" for i in range(30)])
    params = MinHashDedup().signature_params()
    local_keys = compute_band_keys(texts, params, batch_size=8)

    @flow(name="dask-shards-test", task_runner=dask_runner(n_workers=2))
    def shards_flow():
        with use_executor(PrefectShardExecutor(retries=2, retry_delay_seconds=0)):
            keys = compute_band_keys(texts, params, batch_size=8, work_dir=tmp_path / "mh")
            return ctx.map_shards(25, lambda a, b: _square(marks, a, b), shard_size=10, desc="square"), keys

    out, keys = shards_flow()
    assert active_executor() is None
    assert np.array_equal(keys[0], local_keys[0]) and np.array_equal(keys[1], local_keys[1])
    assert len(list((tmp_path / "mh" / "shards").glob("*.npz"))) == 4  # one task per shard
    assert np.array_equal(out["sq"], local["sq"]) and np.array_equal(out["ids"], local["ids"])
    assert sorted(p.name for p in marks.glob("call-*")) == ["call-0-0", "call-10-0", "call-10-1"]


def test_evaluate_flow_one_task_per_seed_then_report(prefect_server, tmp_path):
    """curate/evaluate's flow on a tiny LM saved to a folder: the same results as `run_eval`,
    tasks named by seed, and a second flow run trains nothing (every unit cached)."""
    pytest.importorskip("peft")
    from tiny_lm import tiny_lm

    from curate.eval.runner import run_eval
    from flows.evaluate_flow import evaluate_flow

    lm, tok = tiny_lm(seed=0, n_layers=2, hidden=32)
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    rows = [{"instruction": f"Say the word number {i}.", "input": "", "output": "word " * (1 + i % 7)} for i in range(40)]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ev = [{"instruction": f"Repeat {i}.", "input": "", "output": "word word"} for i in range(6)]
    (tmp_path / "ev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ev))
    cfg = {"name": "tiny", "output": str(tmp_path / "eval_flow"), "pool": {"paths": [str(tmp_path / "pool.jsonl")]},
           "decontaminate": {"exact": True, "minhash_threshold": None, "embed_threshold": None},
           "eval_sets": [{"name": "ev", "path": str(tmp_path / "ev.jsonl"), "style": "human"}],
           "budget": 8, "seeds": [0, 1],
           "arms": [{"name": "random", "method": "random"}, {"name": "longest", "method": "longest"}],
           "train": {"model": str(tmp_path / "lm"), "layers": 1, "batch_size": 4, "epochs": 1, "max_length": 64},
           "eval": {"batch_size": 4, "content_skip": 1}, "n_boot": 100}
    path = tmp_path / "tiny_eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    state = evaluate_flow(str(path), return_state=True)
    out = state.result()
    assert out["complete"] and out["units"] == 4
    assert set(out["verdicts"]["random"]) == {"longest"}  # every arm but the reference
    assert sorted(_task_run_names(state.state_details.flow_run_id)) == [
        "eval tiny_eval seed 0", "eval tiny_eval seed 1", "report tiny_eval"]
    again = evaluate_flow(str(path))
    assert again["complete"] and again["units"] == 4
    direct = run_eval(str(path), show_progress=False)  # the library call sees the flow's units, all cached
    assert all(u["cached"] for u in direct["units"])
    assert {a: r["verdict"] for a, r in direct["comparisons"][0]["arms"].items()} == out["verdicts"]["random"]
