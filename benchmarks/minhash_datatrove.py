"""datatrove's 4-step MinHash (FineWeb's settings) on a benchmark corpus, timed and sampled.

Runs in datatrove's own virtualenv (it is not a curate dependency), e.g.::

    python -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install datatrove==0.10.1
    /tmp/dt-venv/bin/python benchmarks/minhash_datatrove.py PARQUET_DIR WORK_DIR [--workers 2]

Steps (datatrove ``examples/fineweb.py``): ``MinhashDedupSignature`` (one task per input file)
-> ``MinhashDedupBuckets`` (one task per bucket) -> ``MinhashDedupCluster`` (one task) ->
``MinhashDedupFilter`` (one task per input file, documents read again and dropped; nothing is
written: curate's stage writes nothing either), on ``LocalPipelineExecutor`` with ``--workers``
processes; ``MinhashConfig``: word 5-grams, 14 buckets x 8 hashes, 64-bit hashes (its default).
The input is ``PARQUET_DIR/*.parquet`` (columns ``id``, ``text``), in name order.

Prints one JSON line: seconds per step and in all, peak memory of the process tree and peak
disk of WORK_DIR (``proc_sampler``), and writes ``WORK_DIR/decision.json``: per input file the
removed document indices and the cluster id of every document in a cluster.
"""
from __future__ import annotations

import argparse
import json
import shutil
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_sampler import TreeSampler  # noqa: E402


def read_u32(path: Path) -> list[int]:
    data = path.read_bytes() if path.exists() else b""
    return list(struct.unpack(f"<{len(data) // 4}I", data))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("parquet_dir")
    ap.add_argument("work")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import ParquetReader

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = sorted(Path(args.parquet_dir).glob("*.parquet"))
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)

    def reader():
        return ParquetReader(str(args.parquet_dir), glob_pattern="*.parquet", text_key="text", id_key="id")

    steps = {
        "signatures": ([reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], len(files)),
        "buckets": ([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                         config=cfg)], cfg.num_buckets),
        "cluster": ([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"),
                                         config=cfg, save_cluster_id=True)], 1),
        "filter": ([reader(), MinhashDedupFilter(input_folder=str(work / "remove_ids"))], len(files)),
    }
    sampler = TreeSampler(work)
    out = {"tool": "datatrove", "workers": args.workers, "steps_s": {}}
    t_all = time.perf_counter()
    for name, (pipeline, tasks) in steps.items():
        t = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(args.workers, tasks),
                              logging_dir=str(work / "logs" / name), skip_completed=False).run()
        out["steps_s"][name] = round(time.perf_counter() - t, 2)
    out["seconds"] = round(time.perf_counter() - t_all, 2)
    out.update(sampler.stop())
    decision = []
    for rank in range(len(files)):
        clusters = read_u32(work / "remove_ids" / f"{rank:06d}.clusters")
        decision.append({"removed": read_u32(work / "remove_ids" / f"{rank:06d}.remove"),
                         "cluster_doc": clusters[0::2], "cluster_id": clusters[1::2]})
    (work / "decision.json").write_text(json.dumps(decision))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
