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


def _refresh_recipe(tmp_path, *, n_rows: int, budget: int, seed: int, versions: str, cache: str):
    """A refresh recipe (exact dedup, then ``budget`` random rows) over a pool of ``n_rows`` in
    ``tmp_path/src``, written to ``tmp_path/refresh.yaml``; returns (recipe dict, its path)."""
    src = tmp_path / "src"
    src.mkdir()
    _pool(src, n_rows)
    recipe = {"refresh": {"source": str(src), "versions_dir": str(tmp_path / versions)}, "input": {"path": "x"},
              "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": budget, "seed": seed}],
              "output": {"plots": False, "save_dataset": False}, "cache_dir": str(tmp_path / cache)}
    cfg = tmp_path / "refresh.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    return recipe, cfg


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
    # `curate run` in a cache of its own: it computes every step itself (reusing the flow's
    # cache would replay what the flow committed and could not disagree with it)
    direct = curate.run({**recipe, "output": {"dir": str(tmp_path / "direct_out"), "plots": False},
                         "cache_dir": str(tmp_path / "direct_cache")}, show_progress=False)
    assert not direct.report["input"]["cached"] and not any(s["cached"] for s in direct.report["stages"])
    assert direct.output_hash == result["output_hash"]
    assert (tmp_path / "flow_out" / "provenance.parquet").read_bytes() == \
        (tmp_path / "direct_out" / "provenance.parquet").read_bytes()
    names = _task_run_names(state.state_details.flow_run_id)
    assert names == ["0:exact_dedup [toy]", "1:random [toy]", "ingest toy", "write-output toy"]


def _artifacts(key: str) -> list:
    """Every artifact stored under ``key``, newest first, read back through the Prefect client."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def _table(artifact) -> list[dict]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


def test_flow_publishes_funnel_and_stage_artifacts_under_the_recipe_key(prefect_server, tmp_path):
    """Each flow run adds a markdown (funnel, top reasons, quarantine, output and hash, links) and a
    table (one row per step) under ``curate-<recipe>``: two runs, two entries in the key's history."""
    from flows.curate_flow import curate_flow

    data = _pool(tmp_path)
    with open(data, "a") as fh:
        fh.write("{not json\n")  # one quarantined row
    recipe = {"name": "Toy Funnel", "input": {"path": str(data)},
              "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 5, "seed": 1}],
              "output": {"dir": str(tmp_path / "out"), "save_dataset": False}, "cache_dir": str(tmp_path / "cache")}
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    state = curate_flow(str(cfg), return_state=True)
    res = state.result()
    run_id = state.state_details.flow_run_id
    assert res["artifacts"] == {"markdown": "curate-toy-funnel", "table": "curate-toy-funnel-stages"}
    md = _artifacts("curate-toy-funnel")
    assert len(md) == 1 and md[0].type == "markdown" and md[0].flow_run_id == run_id
    text = md[0].data
    for must in ("**31** input rows", "**5** selected", "0:exact_dedup", "exact_duplicate: 23",
                 "**Top drop reasons:** 0:exact_dedup exact_duplicate (23)", "**Quarantine:** 1 rows (malformed_json 1)",
                 res["output_hash"], res["output_dir"], (tmp_path / "out" / "report.md").resolve().as_uri()):
        assert must in text, must
    table = _table(_artifacts("curate-toy-funnel-stages")[0])
    assert [r["step"] for r in table] == ["ingest", "0:exact_dedup", "1:random"]
    assert [(r["rows_in"], r["rows_out"]) for r in table] == [(31, 30), (30, 7), (7, 5)]
    curate_flow(str(cfg))  # a second run: the key's history holds both
    assert len(_artifacts("curate-toy-funnel")) == 2 and len(_artifacts("curate-toy-funnel-stages")) == 2


def test_refresh_flow_versions_then_noop(prefect_server, tmp_path):
    from flows.curate_flow import refresh_flow

    _, cfg = _refresh_recipe(tmp_path, n_rows=20, budget=3, seed=1, versions="v", cache="cache")
    first = refresh_flow(str(cfg))
    assert (first["version"], first["noop"], first["added"]) == ("v0001", False, 3)
    again = refresh_flow(str(cfg))
    assert again["noop"] and again["version"] == "v0001"
    # artifacts: the version and its changelog summary, then the no-op, under the recipe's key
    noop, v1 = _artifacts("curate-refresh")
    assert "**Version:** v0001" in v1.data and "**Changelog:** +3 added, -0 removed" in v1.data
    assert "new_row 3" in v1.data and "**3** selected" in v1.data
    assert "**No-op:**" in noop.data
    assert len(_artifacts("curate-refresh-stages")) == 1


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
    from tiny_lm import save_tiny_lm

    from curate.eval.runner import run_eval
    from flows.evaluate_flow import evaluate_flow

    save_tiny_lm(tmp_path / "lm", seed=0, n_layers=2, hidden=32)
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
    # the verdict table, once per flow run, under the config's key
    tables = _artifacts("curate-eval-tiny-eval-verdicts")
    assert len(tables) == 2
    rows = _table(tables[0])
    assert {(r["reference"], r["arm"]) for r in rows} == {("random", "longest")}
    assert {r["metric"]: r["verdict"] for r in rows} == out["verdicts"]["random"]["longest"]
    assert "| random | longest |" in _artifacts("curate-eval-tiny-eval")[0].data
    direct = run_eval(str(path), show_progress=False)  # the library call sees the flow's units, all cached
    assert all(u["cached"] for u in direct["units"])
    assert {a: r["verdict"] for a, r in direct["comparisons"][0]["arms"].items()} == out["verdicts"]["random"]


def _reliability_recipe(tmp_path, stages, out="flow_out", cache="cache"):
    from reliability_helpers import write_pool

    data = tmp_path / "pool.jsonl"
    if not data.exists():
        write_pool(data, n=60)
    return {"name": "toy", "input": {"path": str(data)}, "stages": stages,
            "output": {"dir": str(tmp_path / out), "plots": False}, "cache_dir": str(tmp_path / cache)}


def test_curate_flow_with_dask_matches_curate_run(prefect_server, tmp_path):
    """``curate_flow(dask=True)`` itself (its subflow on a 2-worker LocalCluster, one task per
    shard of the sharded annotators) gives the output of a plain `curate run` in a fresh cache."""
    pytest.importorskip("prefect_dask")
    from flows.curate_flow import curate_flow

    stages = [{"type": "exact_dedup"}, {"type": "minhash_dedup", "threshold": 0.7},
              {"type": "heuristics"}, {"type": "random", "budget": 20, "seed": 3}]
    recipe = _reliability_recipe(tmp_path, stages)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    result = curate_flow(str(cfg), dask=True, dask_workers=2)
    direct = curate.run({**recipe, "output": {"dir": str(tmp_path / "direct_out"), "plots": False},
                         "cache_dir": str(tmp_path / "direct_cache")}, show_progress=False)
    assert not any(s["cached"] for s in direct.report["stages"])
    assert result["counts"] == direct.counts and result["output_hash"] == direct.output_hash


def test_refresh_flow_equals_run_refresh(prefect_server, tmp_path):
    """The refresh flow's version is the version `run_refresh` writes from the same recipe
    (another versions folder and cache): same rows, counts and changelog."""
    from curate.ops.refresh import run_refresh
    from flows.curate_flow import refresh_flow

    recipe, cfg = _refresh_recipe(tmp_path, n_rows=25, budget=4, seed=2, versions="v_flow", cache="cache_flow")
    flow_out = refresh_flow(str(cfg))
    direct = run_refresh({**recipe, "refresh": {**recipe["refresh"], "versions_dir": str(tmp_path / "v_direct")},
                          "cache_dir": str(tmp_path / "cache_direct")}, show_progress=False)
    assert (flow_out["version"], direct.version) == ("v0001", "v0001")
    assert flow_out["output_hash"] == direct.output_hash and flow_out["counts"] == direct.counts
    assert (flow_out["added"], flow_out["removed"]) == (direct.changelog["n_added"], direct.changelog["n_removed"])
    prov = [(tmp_path / v / "v0001" / "provenance.parquet").read_bytes() for v in ("v_flow", "v_direct")]
    assert prov[0] == prov[1]


FLOW_RUNNER = """
import json, sys
sys.path[:0] = [{tests!r}, {repo!r}]
import reliability_helpers  # registers tagger
from flows.curate_flow import curate_flow
print("RESULT " + json.dumps(curate_flow({cfg!r})))
"""


def test_flow_killed_mid_stage_resumes_shard_by_shard(prefect_server, tmp_path):
    """A worker process running the flow is SIGKILLed after 3 of the tagger's 6 shards; the
    flow run again (here, in-process) computes only the 3 missing shards and writes the output
    of an uninterrupted run."""
    import os
    import signal
    import subprocess

    from prefect.settings import PREFECT_API_URL
    from reliability_helpers import read_log

    from flows.curate_flow import curate_flow

    stages = [{"type": "exact_dedup"}, {"type": "tagger", "shard_size": 10}, {"type": "sleepy_select"},
              {"type": "random", "budget": 30}]
    recipe = _reliability_recipe(tmp_path, stages)
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    log1, log2 = tmp_path / "log1.jsonl", tmp_path / "log2.jsonl"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "CURATE_TEST_LOG": str(log1),
           "CURATE_TEST_KILL_AFTER_SHARDS": "3"}
    code = FLOW_RUNNER.format(tests=str(REPO / "tests"), repo=str(REPO), cfg=str(cfg))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert [e["event"] for e in read_log(log1)] == ["tagger_shard:0", "tagger_shard:10", "tagger_shard:20"]
    assert not (tmp_path / "flow_out" / "manifest.json").exists()

    os.environ["CURATE_TEST_LOG"] = str(log2)
    try:
        result = curate_flow(str(cfg))
    finally:
        del os.environ["CURATE_TEST_LOG"]
    assert [e["event"] for e in read_log(log2) if e["event"].startswith("tagger")] == \
        ["tagger_shard:30", "tagger_shard:40", "tagger_shard:50"]
    ref = curate.run({**recipe, "output": {"dir": str(tmp_path / "ref_out"), "plots": False},
                      "cache_dir": str(tmp_path / "ref_cache")}, show_progress=False)
    assert result["output_hash"] == ref.output_hash
