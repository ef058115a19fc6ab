"""Fault injection: a real SIGKILL at chosen points (during ingest, mid-way through a sharded
annotator, during a selector, during the final output write), then a rerun. Asserted from the
step records and the shard log: only what was missing is recomputed, and the output hash equals
an uninterrupted run's. The output dir never looks complete when it is not.

The real-model variant (``embed`` killed mid-way) is ``@pytest.mark.slow``:
``python -m pytest -m slow tests/test_reliability_faults.py``.
"""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import read_log, recipe, run_in_process, write_pool  # noqa: E402

STAGES = [{"type": "exact_dedup"}, {"type": "tagger", "shard_size": 10}, {"type": "sleepy_select"},
          {"type": "random", "budget": 30}]
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run in its own cache: the hash every interrupted+resumed run must match."""
    tmp = tmp_path_factory.mktemp("ref")
    data = write_pool(tmp / "pool.jsonl", n=60)
    rc, res, err = run_in_process(recipe(tmp, data, stages=STAGES), tmp / "log.jsonl")
    assert rc == 0, err[-3000:]
    return data, res


def _events(log: Path, pid_filter=None) -> list[str]:
    return [e["event"] for e in read_log(log)]


def _setup(tmp_path, reference):
    data, ref = reference
    local = tmp_path / "pool.jsonl"
    local.write_bytes(data.read_bytes())
    return recipe(tmp_path, local, stages=STAGES), ref


def _assert_not_complete(tmp_path):
    out = tmp_path / "run"
    assert not (out / "manifest.json").exists()


def test_kill_during_ingest(tmp_path, reference):
    cfg, ref = _setup(tmp_path, reference)
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="ingest:30")
    assert rc == KILLED
    assert not [p for p in (tmp_path / "cache").iterdir() if (p / "manifest.json").exists()]  # nothing committed
    _assert_not_complete(tmp_path)
    rc, res, err = run_in_process(cfg, tmp_path / "log2.jsonl")
    assert rc == 0, err[-3000:]
    assert not res["ingest_cached"] and not any(c for _, c in res["stages"])
    assert res["hash"] == ref["hash"]


def test_kill_mid_sharded_annotator_resumes_shard_by_shard(tmp_path, reference):
    cfg, ref = _setup(tmp_path, reference)
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="shards:3")
    assert rc == KILLED
    first = [e for e in _events(tmp_path / "log1.jsonl") if e.startswith("shard:tagger")]
    assert len(first) == 3
    _assert_not_complete(tmp_path)
    rc, res, err = run_in_process(cfg, tmp_path / "log2.jsonl")
    assert rc == 0, err[-3000:]
    assert res["ingest_cached"]
    assert res["stages"] == [["exact_dedup", True], ["tagger", False], ["sleepy_select", False], ["random", False]]
    second = [e for e in _events(tmp_path / "log2.jsonl") if e.startswith("shard:tagger")]
    assert sorted(second) == ["shard:tagger:30", "shard:tagger:40", "shard:tagger:50"]  # only the missing shards
    assert res["hash"] == ref["hash"]


def test_kill_during_selector(tmp_path, reference):
    cfg, ref = _setup(tmp_path, reference)
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="select")
    assert rc == KILLED
    _assert_not_complete(tmp_path)
    rc, res, err = run_in_process(cfg, tmp_path / "log2.jsonl")
    assert rc == 0, err[-3000:]
    assert res["ingest_cached"]
    assert res["stages"] == [["exact_dedup", True], ["tagger", True], ["sleepy_select", False], ["random", False]]
    assert not [e for e in _events(tmp_path / "log2.jsonl") if e.startswith("shard:")]
    assert res["hash"] == ref["hash"]


def test_kill_during_output_write_keeps_previous_output(tmp_path, reference):
    cfg, ref = _setup(tmp_path, reference)
    # a previous, complete output of another budget in the same folder
    old_cfg = json.loads(json.dumps(cfg))
    old_cfg["stages"][-1]["budget"] = 20
    rc, old, err = run_in_process(old_cfg, tmp_path / "log0.jsonl")
    assert rc == 0, err[-3000:]
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="output")
    assert rc == KILLED
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["output_hash"] == old["hash"]  # the old output is intact, not half-replaced
    assert list(tmp_path.glob(".run.tmp-*"))  # the killed run's partial folder is a hidden temp
    rc, res, err = run_in_process(cfg, tmp_path / "log2.jsonl")
    assert rc == 0, err[-3000:]
    assert res["ingest_cached"] and all(c for _, c in res["stages"])  # nothing recomputed
    assert res["hash"] == ref["hash"]
    assert not list(tmp_path.glob(".run.tmp-*")) and not list(tmp_path.glob(".run.old-*"))


def test_kill_during_first_output_write_leaves_no_output(tmp_path, reference):
    cfg, _ = _setup(tmp_path, reference)
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="output")
    assert rc == KILLED
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_mid_embed_resumes_shard_by_shard(tmp_path):
    """The same with the real ``embed`` stage (MiniLM from its package): killed after 2 of 4 shards."""
    data = write_pool(tmp_path / "pool.jsonl", n=60)
    stages = [{"type": "exact_dedup"}, {"type": "embed", "shard_size": 16}, {"type": "random", "budget": 30}]
    ref_cfg = recipe(tmp_path, data, out="ref", cache="refcache", stages=stages)
    rc, ref, err = run_in_process(ref_cfg, tmp_path / "log0.jsonl")
    assert rc == 0, err[-3000:]
    cfg = recipe(tmp_path, data, stages=stages)
    rc, _, _ = run_in_process(cfg, tmp_path / "log1.jsonl", fault="shards:2")
    assert rc == KILLED
    rc, res, err = run_in_process(cfg, tmp_path / "log2.jsonl")
    assert rc == 0, err[-3000:]
    assert res["stages"][:2] == [["exact_dedup", True], ["embed", False]]
    second = [e for e in _events(tmp_path / "log2.jsonl") if e.startswith("shard:embed")]
    assert len(second) == 2  # 60 rows / 16 = 4 shards, 2 were finished before the kill
    assert res["hash"] == ref["hash"]
