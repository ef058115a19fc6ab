"""Fixed overhead of ``curate.select(rows, method="minhash_dedup")`` on a small pool, against datasketch.

Pool: the 61,446-row labelled set of ``minhash_quality.py`` (all 59,646 dolly_15k + alpaca_44k
rows rendered as canonical text, plus one perturbed copy of 200 source rows per perturbation
type), given to ``curate.select`` as a list of ``{"id", "text"}`` dicts, as a user would.

Jobs, each in a fresh process (``--child``), run in turn ``--rounds`` times so machine load hits
them alike; compare ratios within one run only:

* ``curate``: ``curate.select(rows, method="minhash_dedup", threshold=T, return_provenance=True)``
  of this checkout; ``curate_before`` the same of the checkout ``--before`` names (on
  ``PYTHONPATH``; each result records the ``curate/__init__.py`` it ran); first call in the process (``cold``: lazy imports of the
  stage's modules included) and a second call on a fresh temporary cache (``warm``).
* ``curate_arrow``: the same with ``output="arrow"`` (no ``datasets.Dataset``; newer curate only).
* ``datasketch``: ``MinHash(num_perm).update_batch`` of the same normalised word 5-gram shingles
  per row, then ``MinHashLSH.query`` + ``insert`` with curate's band shape for T, union-find
  (keep first): what a user would write (``minhash_common.word_shingles``).

Wall and CPU seconds (``time.process_time``: this process, all threads; at 61k rows
curate computes signatures in its own process, so no worker CPU is missed) are both recorded:
on the shared 2-core machine wall time moves +-50% with the other jobs' load, CPU time less.
Import time is not counted for any job (``import curate`` / ``import datasketch`` happen before the
clock starts). F1: ``minhash_quality.evaluate`` on the ``dup_cluster`` column of the provenance
(Jaccard truth at T, over the labelled pairs).

Usage (repository root)::

    python benchmarks/minhash_select_overhead.py --jobs curate curate_arrow datasketch --rounds 2
    git worktree add /tmp/wt25 HEAD      # the "before": an older commit, no stash needed
    python benchmarks/minhash_select_overhead.py --before /tmp/wt25 --rounds 2

Appends one JSON line per job and round to runs/bench/minhash_select_overhead/minhash_select_overhead.jsonl
(``--record``: benchmarks/results/; ``--out`` any file).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from minhash_common import build_labelled, datasketch_dedup, load_real_texts  # noqa: E402
from results_io import add_record_flag, data_dir, output_dir

PER_TYPE = 200


def corpus(data: Path) -> tuple[list[str], list]:
    return build_labelled(load_real_texts(data), PER_TYPE)


def f1_of(cluster: np.ndarray, texts: list[str], pairs, t: float) -> float:
    import pyarrow as pa  # noqa: F401
    from minhash_quality import Sets, evaluate

    sets = Sets(texts)
    pair_j = np.array([sets.j(s, c) for s, c, _ in pairs])
    rows, _ = evaluate(cluster, pairs, pair_j, sets, t, {c: name for _, c, name in pairs})
    return float(rows[-1]["f1"])


def child_curate(texts: list[str], pairs, t: float, output: str | None) -> dict:
    import curate

    rows = [{"id": f"r{i}", "text": x} for i, x in enumerate(texts)]
    kw = {} if output is None else {"output": output}
    out = {"curate_file": curate.__file__}
    for call in ("cold", "warm"):
        t0, c0 = time.perf_counter(), time.process_time()
        got, prov = curate.select(rows, method="minhash_dedup", threshold=t, return_provenance=True, **kw)
        out[f"{call}_s"] = round(time.perf_counter() - t0, 3)
        out[f"{call}_cpu_s"] = round(time.process_time() - c0, 3)
    out["kept"] = len(got)
    pos = {f"r{i}": i for i in range(len(texts))}
    cluster = np.full(len(texts), -1, np.int64)
    ids, cl = prov.column("id").to_pylist(), prov.column("dup_cluster").to_pylist()
    for i, c in zip(ids, cl):
        if c is not None:
            cluster[pos[i]] = c
    out["f1"] = round(f1_of(cluster, texts, pairs, t), 4)
    return out


def child_datasketch(texts: list[str], t: float) -> dict:
    from curate.dedup.minhash import MinHashDedup

    b, r = MinHashDedup(threshold=t).band_shape()
    t0, c0 = time.perf_counter(), time.process_time()
    kept = int(datasketch_dedup(texts, num_perm=128, bands=b, rows=r, seed=42, n=5, bulk=False).sum())
    return {"cold_s": round(time.perf_counter() - t0, 3), "cold_cpu_s": round(time.process_time() - c0, 3),
            "kept": kept, "bands": [b, r]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(data_dir()))
    ap.add_argument("--jobs", nargs="+", default=["curate", "curate_arrow", "datasketch"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--before", default=None,
                    help="an older checkout (git worktree add /tmp/wt25 HEAD): adds the job curate_before, "
                         "curate.select of that checkout (PYTHONPATH), run in turn with the others")
    ap.add_argument("--child", default=None)
    ap.add_argument("--out", default=None, help="JSONL to append to (default minhash_select_overhead.jsonl in the "
                                                "run folder, or in benchmarks/results/ with --record)")
    add_record_flag(ap)
    args = ap.parse_args()
    if args.child:
        texts, pairs = corpus(Path(args.data))
        if args.child == "datasketch":
            res = child_datasketch(texts, args.threshold)
        else:
            res = child_curate(texts, pairs, args.threshold, "arrow" if args.child == "curate_arrow" else None)
        print(json.dumps(res))
        return
    out = Path(args.out) if args.out else output_dir(args) / "minhash_select_overhead.jsonl"
    jobs = args.jobs + (["curate_before"] if args.before else [])
    for rnd in range(args.rounds):
        for job in jobs:
            env = os.environ.copy()
            if job == "curate_before":
                env["PYTHONPATH"] = str(Path(args.before).resolve())
            cmd = [sys.executable, __file__, "--child", "curate" if job == "curate_before" else job,
                   "--data", args.data, "--threshold", str(args.threshold)]
            p = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if p.returncode:
                print(p.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{job} failed")
            res = {"job": job, "round": rnd, "rows": 61_446, "threshold": args.threshold,
                   "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **json.loads(p.stdout.splitlines()[-1])}
            print(json.dumps(res), flush=True)
            with open(out, "a") as f:
                f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
