"""``curate eval CONFIG``: LoRA per (arm, seed), held-out reference losses, paired comparison with random.

Mounted on the typer app in :mod:`curate.cli.main` as ``app.command("eval")(eval_command)``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def eval_command(config: Path = typer.Argument(..., help="eval config YAML (see configs/eval/)"),
                 output: Optional[Path] = typer.Option(None, "--output", "-o", help="output dir (overrides `output:`)"),
                 device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when present)"),
                 max_new_units: Optional[int] = typer.Option(None, "--max-new-units", help="train at most N new (arm, seed) units, write a partial report and stop (rerun to resume)"),
                 arms: Optional[str] = typer.Option(None, "--arms", help="comma-separated arm names to run (the reference arm is always run)"),
                 seeds: Optional[str] = typer.Option(None, "--seeds", help="comma-separated seeds to train now (e.g. 0 first for a quick one-seed table)"),
                 progress: bool = typer.Option(True, help="show progress bars"),
                 verbose: bool = typer.Option(True, help="log each unit")):
    """Train a LoRA per (arm, seed) on equal budgets and compare held-out losses with random."""
    from curate.cli.common import fail, quiet_progress_bars, setup_logging

    quiet_progress_bars(progress)
    from curate.core.errors import ConfigError, InputError
    from curate.eval.runner import run_eval

    setup_logging(verbose)
    try:
        res = run_eval(config, output=str(output) if output else None, device=device, show_progress=progress,
                       max_new_units=max_new_units, arms=arms.split(",") if arms else None,
                       seeds=[int(x) for x in seeds.split(",")] if seeds else None)
    except (ConfigError, InputError) as e:
        fail(str(e))
    n_cached = sum(u["cached"] for u in res["units"])
    typer.echo(res["report_md"])
    out = res["output_dir"]
    state = "complete" if res.get("complete", True) else "PARTIAL (rerun to resume)"
    typer.echo(f"units: {len(res['units'])} ({n_cached} cached), {state}; wall {res['wall_seconds']:.0f} s")
    typer.echo(f"output: {out}/report.md, {out}/results.json" + "".join(f", {p}" for p in res["plots"]))
