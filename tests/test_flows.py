"""The Prefect flow runs a recipe task by task and gives the same result as `curate run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

import curate
from conftest import REPO


def test_prefect_flow_matches_direct_run(tmp_path):
    data = tmp_path / "pool.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"Question {i % 7} about tides?", "output": f"Answer {i % 7} about tides."})
                              for i in range(30)) + "\n")
    recipe = {"input": {"path": str(data)}, "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 5, "seed": 1}],
              "output": {"dir": str(tmp_path / "flow_out")}, "cache_dir": str(tmp_path / "cache")}
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "PYTHONPATH": str(REPO),
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}  # a loaded 2-core machine starts it slowly
    code = f"from flows.curate_flow import curate_flow; import json; print(json.dumps(curate_flow({str(cfg)!r})))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flow_result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert flow_result["counts"] == {"n_input": 30, "n_selected": 5, "n_dropped": 25, "n_quarantined": 0}
    direct = curate.run({**recipe, "output": {"dir": str(tmp_path / "direct_out")}}, show_progress=False)
    assert direct.output_hash == flow_result["output_hash"]
    assert all(s["cached"] for s in direct.report["stages"])  # the flow's tasks filled the cache
