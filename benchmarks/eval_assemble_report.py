"""Write an eval's report from its finished unit records alone: no pool, selection or training step.

`curate eval CONFIG --max-new-units 0` also reports without training, but it first rebuilds every
arm's selection to check each unit's key, which can mean re-embedding the pool (minutes to
hours on a CPU). This script trusts the unit records in ``<output>/units/`` (each ``unit.json`` +
``losses.npz``, e.g. copied from ``benchmarks/results/<name>/units``) and runs only the report step
(paired differences, CIs, verdicts, plots). Use it for records of this checkout's config; a unit
trained under another config would be reported as if it were this one's.

    python benchmarks/eval_assemble_report.py configs/eval/targeted_gsm8k.yaml [--output DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--output", default=None, help="eval output dir (default: the config's `output:`)")
    a = ap.parse_args()
    from curate.eval.config import load_eval_config
    from curate.eval.report import write_report
    from curate.eval.runner import EvalRun, _versions, read_unit

    cfg = load_eval_config(a.config)
    run = EvalRun(cfg, a.output, show_progress=False)
    units, missing = [], []
    for arm in cfg.arms:
        for s in arm.get("seeds") or cfg.seeds:
            u = read_unit(run.out / "units" / arm["name"] / f"seed{s}")
            if u is None:
                missing.append(f"{arm['name']}/seed{s}")
            else:
                units.append({**u, "cached": True})  # reported as a finished (cached) unit
    pool = json.loads((run.out / "pool" / "pool.json").read_text())["report"] if (run.out / "pool" / "pool.json").exists() else {}
    res = {"base": read_unit(run.out / "units" / "base" / "base"), "units": units, "complete": not missing,
           "decontamination": pool, "pool_rows": pool.get("n_pool", 0) - pool.get("dropped", 0),
           "wall_seconds": sum(u.get("train_seconds", 0) + u.get("prefix_seconds", 0) + u.get("eval_seconds", 0)
                               for u in units), "versions": _versions()}
    write_report(cfg, run.out, res, run.eval_sets())
    md = run.out / "report.md"  # the report's wall-time line speaks of one invocation; say what this is
    md.write_text(md.read_text().replace(
        f"Wall time of this invocation {res['wall_seconds']:.0f} s.",
        f"Assembled from the unit records by benchmarks/eval_assemble_report.py; the units' own train + prefix + "
        f"eval time: {res['wall_seconds']:.0f} s (base eval {res['base'].get('eval_seconds', 0):.0f} s)."))
    print(f"{len(units)} units reported; missing: {', '.join(missing) or 'none'}; {run.out / 'report.md'}")


if __name__ == "__main__":
    main()
