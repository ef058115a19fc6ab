"""curate.cli.compare"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.report.compare import compare, render_markdown


def compare_command(
        runs: list[Path] = typer.Argument(..., help="run output dirs to compare"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="write compare.md/.json and overlap.png here"),
        plots: bool = typer.Option(True, help="draw overlap.png")) -> None:
    """Print (and with --out, save and plot) the overlap and coverage/quality of runs' selections."""
    try:
        res = compare(runs, out, plots=plots)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(render_markdown(res))
    if out is not None:
        typer.echo(f"wrote {Path(out) / 'compare.md'}, compare.json{', overlap.png' if res.get('plots') else ''}")
