"""Run configs/instruction/alpaca_full.yaml on a pool from empty caches; print wall time and per-stage timings.

Both caches start empty: the stage cache (a fresh folder) and the model cache
(``CURATE_MODEL_CACHE``, so the one-time ONNX export / quantisation is inside the wall time).

    python benchmarks/alpaca_full.py [POOL] [--work DIR]

Writes runs/bench/alpaca_full/alpaca_full.{md,json} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir


def cpu_info() -> str:
    """CPU model and its widest vector extension: embedding speed differs 1.3x+ between machines."""
    from curate.models.loading import cpu_flags

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "?")
    flags = cpu_flags()
    vec = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{model}, {vec}{', avx512_bf16' if 'avx512_bf16' in flags else ''}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool", nargs="?", default=str(data_dir() / "instruct" / "alpaca_44k.json"),
                    help="pool, default: $CURATE_DATA/instruct/alpaca_44k.json (docs/data.md)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/curate-alpaca-full"))
    ap.add_argument("--no-progress", action="store_true")
    add_record_flag(ap)
    a = ap.parse_args()
    out_dir = output_dir(a)
    shutil.rmtree(a.work, ignore_errors=True)
    os.environ["CURATE_MODEL_CACHE"] = str(a.work / "models")  # before curate is imported
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import curate

    cfg = {"extends": str(REPO / "configs" / "instruction" / "alpaca_full.yaml"), "input": {"path": a.pool},
           "output": {"dir": str(a.work / "out")}, "cache_dir": str(a.work / "cache")}
    t0 = time.perf_counter()
    res = curate.run(cfg, show_progress=not a.no_progress)
    wall = time.perf_counter() - t0
    rep = res.report
    steps = [{"step": "ingest", "rows_in": None, "rows_out": rep["input"]["rows_read"], "seconds": rep["input"]["seconds"]}]
    steps += [{"step": s["label"], "rows_in": s["rows_in"], "rows_out": s["rows_out"], "seconds": s["seconds"],
               "cached": s["cached"]} for s in rep["stages"]]
    out = {"pool": a.pool, "wall_seconds": wall, "report_seconds": rep["seconds"], "counts": res.counts, "steps": steps,
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "cpu": cpu_info()}
    md = ["# The 44k recipe (`configs/instruction/alpaca_full.yaml`) from empty caches", "",
          f"Pool `{a.pool}`; stage cache and model cache empty at the start; {os.cpu_count()} CPU cores "
          f"({cpu_info()}), no GPU.", "",
          f"**Wall time {int(wall // 60)} min {wall % 60:.0f} s** ({wall:.0f} s; the run's own report: "
          f"{rep['seconds']:.0f} s, the rest is writing the output directory). "
          f"{res.counts['n_input']} rows in -> {res.counts['n_selected']} selected, {res.counts['n_dropped']} dropped, "
          f"{res.counts['n_quarantined']} quarantined.", "",
          "| step | rows in | rows out | seconds |", "|---|---|---|---|"]
    for s in steps:
        md.append(f"| {s['step']} | {s['rows_in'] if s['rows_in'] is not None else ''} | {s['rows_out']} | {s['seconds']:.1f} |")
    (out_dir / "alpaca_full.json").write_text(json.dumps(out, indent=2, default=str))
    (out_dir / "alpaca_full.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
