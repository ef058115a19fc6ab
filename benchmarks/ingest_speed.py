"""Ingest speed: the vectorised Arrow adapters against the per-row path, same inputs, same run.

Inputs: a JSON array file (``curate.ingest.read.read_input``) and the same rows as an in-memory list of
dicts (``curate.ingest.read.from_records``, what ``curate.select(list_of_dicts, ...)`` calls). The per-row
peer is the same code with the vectorised path switched off. Rounds alternate (per-row,
vectorised, ...); best round kept; both outputs (table, quarantine, record counts) are compared for equality.

    python benchmarks/ingest_speed.py [FILE ...] [--repeats 3] [--quick]

Writes runs/bench/ingest_speed/ingest_speed.{md,json} (``--record``: benchmarks/results/); ``--quick`` (one round per mode, alpaca_44k and
dolly_15k by default) only prints, for a before/after check of a change to ``curate/ingest``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir

import curate.ingest.fast as aa
from curate.ingest import read as cio

REAL = aa.adapt_table


def timed(fn, vectorised: bool):
    aa.adapt_table = REAL if vectorised else (lambda *a, **k: None)
    try:
        t0 = time.perf_counter()
        out = fn()
        return time.perf_counter() - t0, out
    finally:
        aa.adapt_table = REAL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one round per mode; print only, write no results")
    add_record_flag(ap)
    a = ap.parse_args()
    if a.quick:
        a.repeats = 1
    data = data_dir() / "instruct"
    files = a.files or ([data / "alpaca_44k.json", data / "dolly_15k.json"] if a.quick else [data / "alpaca_44k.json"])
    rows = []
    for f in files:
        records = json.loads(f.read_text()) if f.suffix == ".json" else [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        for label, fn in ((f"read_input({f.name})", lambda f=f: cio.read_input(f)),
                          (f"from_records(list of {len(records)} dicts)", lambda r=records: cio.from_records(r))):
            times = {"per_row": [], "vectorised": []}
            outs = {}
            for _ in range(a.repeats):
                for mode in ("per_row", "vectorised"):
                    t, outs[mode] = timed(fn, mode == "vectorised")
                    times[mode].append(t)
            same = (outs["per_row"].table.equals(outs["vectorised"].table, check_metadata=True)
                    and outs["per_row"].quarantine == outs["vectorised"].quarantine
                    and outs["per_row"].record_counts == outs["vectorised"].record_counts)
            rows.append({"input": label, "rows": outs["vectorised"].table.num_rows,
                         "quarantined": len(outs["vectorised"].quarantine), "per_row_s": min(times["per_row"]),
                         "vectorised_s": min(times["vectorised"]), "all_s": times,
                         "speedup": min(times["per_row"]) / min(times["vectorised"]), "identical_output": same})
    md = ["# Ingest: vectorised Arrow adapters vs the per-row path (same run)", "",
          f"Best of {a.repeats} alternating rounds; outputs (table, quarantine, record counts) compared in the same run.", "",
          "| input | rows kept | quarantined | per-row s | vectorised s | speed-up | identical output |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['input']} | {r['rows']} | {r['quarantined']} | {r['per_row_s']:.3f} | {r['vectorised_s']:.3f} | "
                  f"{r['speedup']:.2f}x | {r['identical_output']} |")
    print("\n".join(md))
    if a.quick:
        return
    res = output_dir(a)
    (res / "ingest_speed.json").write_text(json.dumps(rows, indent=2))
    (res / "ingest_speed.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
