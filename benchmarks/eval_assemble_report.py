"""Write an eval's report from its finished unit records alone: no pool, selection or training step.

`curate eval CONFIG --max-new-units 0` also reports without training, but it first rebuilds every
arm's selection to check each unit's key, which can mean re-embedding the pool (minutes to
hours on a CPU). This script trusts the unit records in ``<output>/units/`` (each ``unit.json`` +
``losses.npz``, e.g. copied from ``benchmarks/results/<name>/units``) and runs only the report step
(paired differences, CIs, verdicts, plots). Use it for records of this checkout's config; a unit
trained under another config would be reported as if it were this one's.

    python benchmarks/eval_assemble_report.py configs/eval/targeted_gsm8k.yaml [--output DIR] [--end-cut]

``--end-cut`` fills ``rows_end_cut`` (training rows whose end token ``max_length`` cut) for records
written before that field existed, from each unit's ``selected_ids.parquet`` and
``<output>/pool/pool.parquet`` with the config's trainer settings (loads the model's tokenizer).
Arms that rewrite rows (``shuffled_responses``) stay n/a.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fill_end_cut(cfg, out: Path, units: list[dict]) -> None:
    """Add ``rows_end_cut`` to the records without it, re-encoding their selected pool rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.train.lora import LoRATrainer

    rewrites = {a["name"] for a in cfg.arms if a.get("method") == "shuffled_responses"}
    need = [u for u in units if "rows_end_cut" not in u and u["arm"] not in rewrites]
    if not need:
        return
    pool_file = out / "pool" / "pool.parquet"
    if not pool_file.is_file():  # only pool.json is committed with the records
        raise SystemExit(f"--end-cut needs {pool_file} (the decontaminated pool's rows) for {len(need)} records "
                         f"without rows_end_cut; it is not committed with the records. Rebuild it with "
                         f"`curate eval CONFIG --output {out} --max-new-units 0` (runs decontamination once), "
                         f"or leave out --end-cut (those records then show n/a)")
    pool = pq.read_table(pool_file)
    trainer = LoRATrainer(**cfg.train)
    for u in need:
        ids = pq.read_table(out / "units" / u["arm"] / f"seed{u['seed']}" / "selected_ids.parquet").column("id")
        rows = pool.filter(pc.is_in(pool.column("id"), value_set=ids))
        if len(rows) != u["rows"]:
            raise SystemExit(f"{u['arm']}/seed{u['seed']}: {len(rows)} of its {u['rows']} ids are in the pool")
        u["rows_end_cut"] = int((~trainer.encode(rows).has_end).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--output", default=None, help="eval output dir (default: the config's `output:`)")
    ap.add_argument("--end-cut", action="store_true", help="count rows_end_cut for records older than that field")
    a = ap.parse_args()
    from curate.eval.config import load_eval_config
    from curate.eval.report import write_report
    from curate.eval.runner import EvalRun, _versions, read_unit

    cfg = load_eval_config(a.config)
    run = EvalRun(cfg, a.output, show_progress=False)
    units, missing = [], []
    for arm in cfg.arms:
        if arm.get("selection_only"):  # built only as another arm's length match; never trained
            continue
        for s in arm.get("seeds") or cfg.seeds:
            u = read_unit(run.out / "units" / arm["name"] / f"seed{s}")
            if u is None:
                missing.append(f"{arm['name']}/seed{s}")
            else:
                units.append({**u, "cached": True})  # reported as a finished (cached) unit
    if a.end_cut:
        fill_end_cut(cfg, run.out, units)
    pool_json = run.out / "pool" / "pool.json"
    if not pool_json.is_file():
        raise SystemExit(f"{pool_json} is missing: copy it with the unit records (e.g. "
                         f"`cp -r benchmarks/results/<name>/{{units,pool}} {run.out}/`)")
    pool = json.loads(pool_json.read_text())["report"]
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
