"""Compact markdown tables of an evaluation's paired differences, for docs.

Reads the ``results.json`` that ``curate eval`` (or ``benchmarks/eval_assemble_report.py``) writes
and prints, for every reference arm of the comparison (``reference_arm`` and ``compare_also``) and
every metric asked for, one table: arm × eval set, each cell ``delta [lo, hi]`` (arm − reference,
95% CI, 3 decimals), then the arm's seeds, the verdict over the verdict sets and the out-of-target
verdict. The report itself has the same numbers at 4 decimals with every column; this is the
summary docs/evaluation.md quotes, so the docs' figures are copied by a program, not by hand.

Usage:
    python benchmarks/eval_summary_tables.py runs/eval_alpaca_1k_wins/results.json --metrics full content
"""
from __future__ import annotations

import argparse
import json
from collections import Counter


def cell(stat: dict | None) -> str:
    """``+0.012 [-0.003, +0.027]`` from one paired-difference record (empty when missing)."""
    if not stat:
        return ""
    lo, hi = stat["ci"]
    return f"{stat['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def tables(results: dict, metrics: list[str]) -> str:
    """The markdown tables (one per reference and metric) of ``results``."""
    seeds = Counter(u["arm"] for u in results["units"])
    out = []
    for comp in results["comparisons"]:
        ref, verdict_sets, oot = comp["reference"], comp["verdict_sets"], comp.get("out_of_target", [])
        arms = comp["arms"]
        sets = list(dict.fromkeys(s for a in arms.values() for s in a["sets"]))
        for metric in metrics:
            n_ref = seeds.get(ref, 0)
            out.append(f"**{metric} loss, arm − {ref}** ({n_ref} seed{'' if n_ref == 1 else 's'} of {ref}; 95% CI)\n")
            head = ["arm", "seeds", *sets, f"verdict ({', '.join(verdict_sets)})"]
            if oot:
                head.append(f"out of target ({', '.join(oot)})")
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            for name, a in arms.items():
                row = [name, str(seeds.get(name, 0)), *(cell(a["sets"][s].get(metric)) for s in sets),
                       a.get("verdict", {}).get(metric, "")]
                if oot:
                    row.append(a.get("verdict_out_of_target", {}).get(metric, ""))
                out.append("| " + " | ".join(row) + " |")
            out.append("")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="results.json of an evaluation")
    ap.add_argument("--metrics", nargs="+", default=["full", "content"], help="loss kinds (default: full content)")
    args = ap.parse_args(argv)
    with open(args.results) as f:
        print(tables(json.load(f), args.metrics))


if __name__ == "__main__":
    main()
