"""Helpers shared by the reliability tests (imported by tests and by the subprocesses they start).

``tagger`` is a sharded test Annotator (``ctx.map_shards``) that appends one line per computed
shard to ``$CURATE_TEST_LOG`` and can SIGKILL its own process after a chosen number of shards
(``$CURATE_TEST_KILL_AFTER_SHARDS``), so fault-injection tests can count exactly what a rerun
recomputes. ``sleepy_select`` is a Selector that sleeps (to widen race windows) and logs each
computation; it can SIGKILL itself (``$CURATE_TEST_KILL_IN_SELECT=1``).
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.registry import _REGISTRY, register
from curate.core.stage import (
    EXECUTION_PARAMS,
    Annotator,
    Selection,
    Selector,
    StageContext,
)


def _log(event: str) -> None:
    path = os.environ.get("CURATE_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "event": event}) + "\n")


def read_log(path: Path) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines()] if Path(path).exists() else []


class Tagger(Annotator):
    """Adds ``tag`` = len(text) % 7 as float, shard by shard (shard_size rows per shard)."""

    name = "tagger"
    execution_params = EXECUTION_PARAMS + ("shard_size", "sleep")  # like embed's shard_size

    def __init__(self, *, shard_size: int = 10, sleep: float = 0.0):
        self.shard_size, self.sleep = shard_size, sleep

    def output_columns(self) -> list[str]:
        return ["tag"]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        texts = table.column("text").to_pylist()
        kill_after = int(os.environ.get("CURATE_TEST_KILL_AFTER_SHARDS", "0"))
        done = [0]

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            if kill_after and done[0] >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self.sleep)
            _log(f"tagger_shard:{start}")
            done[0] += 1
            return {"tag": np.array([len(t) % 7 for t in texts[start:stop]], dtype=np.float64)}

        res = ctx.map_shards(len(table), fn, shard_size=self.shard_size, desc="tagger")
        return pa.table({"tag": res["tag"]})


class SleepySelect(Selector):
    """Drops rows whose ``tag`` is 0 (reason ``tag_zero``) after sleeping ``sleep`` seconds."""

    name = "sleepy_select"
    execution_params = EXECUTION_PARAMS + ("sleep",)
    reasons = {"tag_zero": "tag is 0"}

    def __init__(self, *, sleep: float = 0.0):
        self.sleep = sleep

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        _log("sleepy_select")
        if os.environ.get("CURATE_TEST_KILL_IN_SELECT"):
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep)
        tag = table.column("tag").to_numpy(zero_copy_only=False)
        return Selection.keep_mask(tag != 0, "tag_zero")


class Vectorizer(Annotator):
    """Adds a 4-d float32 ``embedding`` (a fixed-size-list column), no model needed."""

    name = "vectorizer"

    def output_columns(self) -> list[str]:
        return ["embedding"]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        lens = np.array([len(t) for t in table.column("text").to_pylist()], dtype=np.float32)
        x = np.stack([lens, lens % 3, lens % 5, np.ones_like(lens)], axis=1).astype(np.float32)
        return pa.table({"embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4)})


for _cls in (Tagger, SleepySelect, Vectorizer):
    if _cls.name not in _REGISTRY:
        register(_cls)


def write_pool(path: Path, n: int = 60, seed: int = 0) -> Path:
    """An alpaca JSONL pool of ``n`` distinct rows plus 2 exact duplicates and 2 bad lines."""
    rng = np.random.default_rng(seed)
    words = ["sea", "salt", "wave", "tide", "shore", "sand", "reef", "gull", "boat", "wind", "storm", "calm"]
    rows = []
    for i in range(n):
        w = " ".join(rng.choice(words, size=int(rng.integers(4, 30))))
        rows.append({"id": f"row-{i:04d}", "instruction": f"Describe item {i}.", "input": "", "output": f"{w} {i}."})
    lines = [json.dumps(r) for r in rows]
    lines.insert(5, json.dumps({**rows[1], "id": "dup-a"}))
    lines.insert(9, json.dumps({**rows[2], "id": "dup-b"}))
    lines.insert(12, "{not json")
    lines.insert(20, json.dumps({"id": "bad-1", "instruction": 5, "output": "x"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def recipe(tmp_path: Path, data: Path, out: str = "run", cache: str = "cache", **extra) -> dict:
    """exact_dedup -> tagger -> sleepy_select -> random(budget 30)."""
    stages = extra.pop("stages", None) or [
        {"type": "exact_dedup"}, {"type": "tagger"}, {"type": "sleepy_select"}, {"type": "random", "budget": 30}]
    return {"name": "rel", "input": {"path": str(data)}, "stages": stages,
            "output": {"dir": str(tmp_path / out), "plots": False}, "cache_dir": str(tmp_path / cache), **extra}


# A script run as ``python -c FAULT_RUNNER <recipe json>``: it runs the recipe in a fresh process,
# logging every computed shard (any sharded annotator, through StageContext.map_shards) and
# SIGKILLing itself at the point named by $CURATE_FAULT:
#   ingest:<n>        after parsing n JSON lines
#   shards:<n>        before computing the (n+1)-th shard of any sharded annotator
#   select            inside sleepy_select (via $CURATE_TEST_KILL_IN_SELECT)
#   output            while writing provenance.parquet into the output dir
FAULT_RUNNER = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
import reliability_helpers
from reliability_helpers import _log
import curate, curate.ingest.readers.jsonl, curate.engine.output
from curate.core.stage import StageContext

fault = os.environ.get("CURATE_FAULT", "")
kind, _, arg = fault.partition(":")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

orig_map = StageContext.map_shards
def map_shards(self, n_rows, fn, shard_size=4096, desc="shards"):
    done = [0]
    def counted(a, b):
        if kind == "shards" and done[0] >= int(arg):
            die()
        out = fn(a, b)
        done[0] += 1
        _log(f"shard:{{desc}}:{{a}}")
        return out
    return orig_map(self, n_rows, counted, shard_size=shard_size, desc=desc)
StageContext.map_shards = map_shards

if kind == "ingest":
    orig_parse, seen = curate.ingest.readers.jsonl.parse_line, [0]
    def parse(b, m):
        seen[0] += 1
        if seen[0] > int(arg):
            die()
        return orig_parse(b, m)
    curate.ingest.readers.jsonl.parse_line = parse
if kind == "select":
    os.environ["CURATE_TEST_KILL_IN_SELECT"] = "1"
if kind == "output":
    orig_write = curate.engine.output._write_parquet
    def write(table, path):
        if path.name == "provenance.parquet":
            die()
        return orig_write(table, path)
    curate.engine.output._write_parquet = write

res = curate.run(json.loads(sys.argv[1]), show_progress=False)
print("RESULT " + json.dumps({{"hash": res.output_hash, "counts": res.counts,
                              "stages": [[s["type"], s["cached"]] for s in res.report["stages"]],
                              "ingest_cached": res.report["input"]["cached"]}}))
"""


def run_in_process(cfg: dict, log: Path, fault: str = "", timeout: float = 600):
    """Run ``cfg`` in a fresh Python process with an optional fault; return (returncode, result|None, stderr)."""
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": str(tests.parent), "CURATE_TEST_LOG": str(log), "CURATE_FAULT": fault}
    env.pop("CURATE_TEST_KILL_IN_SELECT", None)
    p = subprocess.run([sys.executable, "-c", FAULT_RUNNER.format(tests=str(tests)), json.dumps(cfg)],
                       capture_output=True, text=True, env=env, timeout=timeout)
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    return p.returncode, json.loads(line[7:]) if line else None, p.stderr
