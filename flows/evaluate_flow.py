"""Prefect flow over ``curate eval`` (thin glue, like :mod:`flows.curate_flow`): the deployment
``curate/evaluate`` (``prefect deployment run curate/evaluate --param config=configs/eval/smoke.yaml``).

One task per seed trains and scores that seed's (arm, seed) units (``run_eval(seeds=[s])``: every
arm, so length-matched controls find the arm they copy), then one task writes the full report
from the cached units. Units are cached and resumable in the eval's output folder, so a crashed
or cancelled flow run resumes at the next unfinished unit when started again, and
``max_new_units`` lets a long evaluation run as short flow runs (each trains at most that many
new units per seed task and writes a partial report).

Every flow run publishes the verdict table as Prefect artifacts under ``curate-eval-<config>``
(:func:`flows.artifacts.publish_eval`), so the UI's artifact history shows the verdicts over time.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

try:
    from flows.artifacts import publish_eval, verdict_rows
except ModuleNotFoundError:  # run as a script (python flows/evaluate_flow.py): flows/ itself is on sys.path
    from artifacts import publish_eval, verdict_rows


def _run_name() -> str:
    cfg = Path(str((flow_run.parameters or {}).get("config") or "eval")).stem
    return f"eval-{cfg}-{time.strftime('%m%d-%H%M%S')}"


def _summary(res: dict) -> dict:
    """What a task returns (and Prefect stores): counts and verdicts, not the per-example losses."""
    verdicts = {c["reference"]: {arm: r["verdict"] for arm, r in c["arms"].items()} for c in res.get("comparisons", [])}
    return {"complete": bool(res.get("complete")), "units": len(res.get("units", [])),
            "output": str(res.get("output_dir", "")), "verdicts": verdicts,
            "table": verdict_rows(res.get("comparisons", []))}


@task(name="eval-units", cache_policy=NO_CACHE)
def units_task(config: str, output: str | None, seed: int, max_new_units: int | None, device: str | None) -> dict:
    from curate.eval.runner import run_eval

    return _summary(run_eval(config, output, device, show_progress=False, max_new_units=max_new_units, seeds=[seed]))


@task(name="eval-report", cache_policy=NO_CACHE)
def report_task(config: str, output: str | None, device: str | None) -> dict:
    from curate.eval.runner import run_eval

    return _summary(run_eval(config, output, device, show_progress=False, max_new_units=0))


@flow(name="curate", flow_run_name=_run_name)
def evaluate_flow(config: str = "configs/eval/smoke.yaml", output: str | None = None,
                  max_new_units: int | None = None, device: str | None = None) -> dict:
    """Train and score every (arm, seed) unit of an eval config, then write its report.

    Args:
        config: eval config YAML (configs/eval/*.yaml; docs/evaluation.md).
        output: output folder (default the config's ``output``).
        max_new_units: per seed task, train at most this many new units (None = all).
        device: torch device (default cuda when present, else cpu).

    Returns:
        dict: ``complete``, ``units`` (reported), ``output``, ``verdicts``, ``table`` (one row
        per reference, arm and metric) and ``artifacts`` (the keys published).
    """
    from curate.eval.config import load_eval_config

    log = get_run_logger()
    cfg = load_eval_config(config)
    recipe = Path(config).stem
    seeds = sorted({s for a in cfg.arms for s in (a.get("seeds") or cfg.seeds)})
    for s in seeds:
        got = units_task.with_options(task_run_name=f"eval {recipe} seed {s}")(config, output, s, max_new_units, device)
        log.info("seed %s: %d units reported, complete=%s", s, got["units"], got["complete"])
    out = report_task.with_options(task_run_name=f"report {recipe}")(config, output, device)
    log.info("report in %s: complete=%s", out["output"], out["complete"])
    out["artifacts"] = publish_eval(recipe, out)
    return out
