"""The ``curate`` command: run, plan, report, stages (and train-scorer when scoring is installed)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from curate.cli.common import fail, quiet_progress_bars, setup_logging

app = typer.Typer(add_completion=False, no_args_is_help=True, help="curate: dedup, embed, cluster, score and select LLM training data.")




_INPUT_HELP = "input pool: file, folder or glob (overrides input.path)"
_SET_HELP = "override a recipe value, KEY.PATH=VALUE (YAML value; numbers index lists: stages.8.budget=1000); repeatable"


def _overrides(input_path: Optional[str], sets: Optional[list[str]]) -> list[str]:
    return ([f"input.path={input_path}"] if input_path else []) + list(sets or [])


@app.command()
def run(config: Path = typer.Argument(..., help="recipe YAML"),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="output dir (overrides output.dir)"),
        input_path: Optional[str] = typer.Option(None, "--input", "-i", help=_INPUT_HELP),
        sets: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP),
        cache_dir: Optional[Path] = typer.Option(None, help="stage cache dir (overrides cache_dir)"),
        progress: bool = typer.Option(True, help="show progress bars"),
        verbose: bool = typer.Option(True, help="log each step")):
    """Run a recipe end to end and write the output directory."""
    quiet_progress_bars(progress)
    from curate.core.errors import ConfigError, InputError
    from curate.engine.execute import run as run_recipe

    setup_logging(verbose)
    try:
        res = run_recipe(config, output_dir=str(output) if output else None, show_progress=progress,
                         cache_dir=str(cache_dir) if cache_dir else None, overrides=_overrides(input_path, sets))
    except (ConfigError, InputError) as e:
        fail(str(e))
    c = res.counts
    typer.echo(f"{c['n_input']} in -> {c['n_selected']} selected, {c['n_dropped']} dropped, "
               f"{c['n_quarantined']} quarantined")
    for s in res.report["stages"]:
        typer.echo(f"  {s['label']:<24} {s['rows_in']:>8} -> {s['rows_out']:<8} {'cached' if s['cached'] else format(s['seconds'], '.2f') + 's'}")
    typer.echo(f"output: {res.output_dir}  hash {res.output_hash}{'' if res.did_work else '  (up to date: no work done)'}")


@app.command()
def plan(config: Path = typer.Argument(..., help="recipe YAML"),
         output: Optional[Path] = typer.Option(None, "--output", "-o"),
         input_path: Optional[str] = typer.Option(None, "--input", "-i", help=_INPUT_HELP),
         sets: Optional[list[str]] = typer.Option(None, "--set", help=_SET_HELP)):
    """Show each step's cache key, whether it is cached, and the estimated peak memory and disk of each
    dedup step that will run (nothing is computed)."""
    from curate.core.errors import ConfigError, InputError
    from curate.engine.pipeline import plan as plan_recipe

    try:
        rows = plan_recipe(config, str(output) if output else None, _overrides(input_path, sets))
    except (ConfigError, InputError) as e:
        fail(str(e))
    for r in rows:
        typer.echo(f"{'cached ' if r['cached'] else 'will run'}  {r['step']:<28} {r['key']}"
                   + (f"  (damaged: {r['damaged']}; will be moved aside and recomputed)" if r.get("damaged") else ""))
        if r.get("estimate"):  # dedup stages: estimated before any compute (curate/dedup/minhash_plan.py)
            e = r["estimate"]
            typer.echo(f"{'':9}  est. peak memory {e['memory_gb']:.2f} GiB, disk {e['disk_gb']:.2f} GiB "
                       f"for {r['estimate_basis']}")
    todo = sum(not r["cached"] for r in rows)
    typer.echo(f"{len(rows) - todo}/{len(rows)} steps cached; {todo} to run")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run's output dir"),
           dups: Optional[str] = typer.Option(None, "--dups", help="print duplicate cluster(s): a dup_cluster id, a row id, or 'top'"),
           limit: int = typer.Option(3, help="clusters to print with --dups top"),
           whatif: Optional[list[str]] = typer.Option(None, "--whatif", help="STAGE.PARAM=VALUE: decide a rule "
                                                      "filter's step again with a changed threshold, from provenance")):
    """Print a run's report, the members of duplicate clusters, or what a changed threshold would do."""
    if not (run_dir / "report.md").exists():
        fail(f"{run_dir}: no report.md (not a curate run output?)")
    if whatif:
        from curate.report.whatif import render
        from curate.report.whatif import whatif as decide_again

        for spec in whatif:
            try:
                typer.echo(render(decide_again(run_dir, spec)))
            except ValueError as e:
                fail(str(e))
        return
    if dups is None:
        typer.echo((run_dir / "report.md").read_text())
        return
    from curate.report.dup_view import print_dup_clusters

    typer.echo(print_dup_clusters(run_dir, dups, limit))


@app.command()
def stages():
    """List the stage types a recipe may use, with their parameters."""
    from curate.core.registry import get_stage, known_stages

    for name in known_stages():
        cls = get_stage(name)
        typer.echo(f"{name:<16} {cls.__name__:<20} params: {', '.join(cls.param_names())}")


def _mount_optional() -> None:
    try:
        from curate.cli.train_scorer import train_doc_quality_command, train_scorer_command
    except ImportError:
        return
    app.command("train-scorer")(train_scorer_command)
    app.command("train-doc-quality")(train_doc_quality_command)


_mount_optional()
from curate.cli.compare import compare_command

app.command("compare")(compare_command)

from curate.cli.cache import app as _cache_app  # noqa: E402  (curate cache ls|gc|verify)

app.add_typer(_cache_app, name="cache")

from curate.cli.eval import eval_command  # noqa: E402  (`curate eval CONFIG`)

app.command("eval")(eval_command)

from curate.cli.ops import mount as _mount_ops  # noqa: E402  (serve, refresh, versions, rollback)

_mount_ops(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
