"""Several real processes on one cache directory (same or different recipes) all finish
correctly: the per-key lock makes the second wait and reuse the first's result, so each
shard and each stage is computed once, and every process gets the same output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import read_log, recipe, write_pool  # noqa: E402

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

RUNNER = """
import json, sys
sys.path.insert(0, {tests!r})
import reliability_helpers  # registers the test stages
import curate
res = curate.run(json.loads(sys.argv[1]), show_progress=False)
print("RESULT " + json.dumps({{"hash": res.output_hash, "counts": res.counts,
                              "cached": [s["cached"] for s in res.report["stages"]]}}))
"""


def start(cfg: dict, log: Path, **env) -> subprocess.Popen:
    e = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_TEST_LOG": str(log), **env}
    return subprocess.Popen([sys.executable, "-c", RUNNER.format(tests=str(TESTS)), json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    return json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])


def test_three_processes_same_recipe_compute_each_step_once(tmp_path):
    data = write_pool(tmp_path / "pool.jsonl", n=60)
    stages = [{"type": "exact_dedup"}, {"type": "tagger", "shard_size": 10, "sleep": 0.3},
              {"type": "sleepy_select", "sleep": 0.5}, {"type": "random", "budget": 30}]
    log = tmp_path / "events.jsonl"
    procs = [start(recipe(tmp_path, data, out=f"run{i}", stages=stages), log) for i in range(3)]
    results = [finish(p) for p in procs]
    assert len({r["hash"] for r in results}) == 1
    events = [e["event"] for e in read_log(log)]
    shards = [e for e in events if e.startswith("tagger_shard")]
    assert sorted(shards) == sorted(set(shards)) and len(shards) == 6  # 60 rows after dedup / 10
    assert events.count("sleepy_select") == 1
    # each step computed by one process (it held the step's lock), the others waited and reused it;
    # which process wins each step's lock is a race, so different steps may come from different ones
    by_step: dict[str, set] = {}
    for e in read_log(log):
        by_step.setdefault(e["event"].split(":")[0], set()).add(e["pid"])
    assert set(by_step) == {"tagger_shard", "sleepy_select"} and all(len(p) == 1 for p in by_step.values())
    for r in results:
        c = r["counts"]
        assert c["n_input"] == c["n_selected"] + c["n_dropped"] + c["n_quarantined"] == 64


def test_different_recipes_and_same_output_dir_concurrently(tmp_path):
    """Two recipes sharing their first steps, plus two processes writing the same output dir."""
    data = write_pool(tmp_path / "pool.jsonl", n=60)
    base = [{"type": "exact_dedup"}, {"type": "tagger", "shard_size": 10, "sleep": 0.2}, {"type": "sleepy_select"}]
    log = tmp_path / "events.jsonl"
    a = recipe(tmp_path, data, out="a", stages=base + [{"type": "random", "budget": 30}])
    b = recipe(tmp_path, data, out="b", stages=base + [{"type": "random", "budget": 20}])
    procs = [start(a, log), start(b, log), start(a, log)]
    ra, rb, ra2 = [finish(p) for p in procs]
    assert ra["hash"] == ra2["hash"] != rb["hash"]
    assert ra["counts"]["n_selected"] == 30 and rb["counts"]["n_selected"] == 20
    shards = [e["event"] for e in read_log(log) if e["event"].startswith("tagger_shard")]
    assert len(shards) == len(set(shards)) == 6
    out = tmp_path / "a"
    assert (out / "manifest.json").is_file() and not list(tmp_path.glob(".a.tmp-*")) and not list(tmp_path.glob(".a.old-*"))
    assert json.loads((out / "manifest.json").read_text())["output_hash"] == ra["hash"]
