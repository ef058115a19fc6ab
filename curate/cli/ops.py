"""Operations commands: ``curate serve`` (Prefect), ``curate refresh``, ``curate versions``, ``curate rollback``.

Mounted on the main app by :func:`mount` (one line in curate/cli/main.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from curate.cli.common import fail, quiet_progress_bars, setup_logging


def serve(port: int = typer.Option(4200, help="API/UI port on 127.0.0.1 (0 = a free one)"),
          state_dir: Optional[Path] = typer.Option(None, help="PIDs, logs and the Prefect DB "
                                                   "(default $CURATE_SERVE_DIR or ~/.curate/serve)"),
          status: bool = typer.Option(False, "--status", help="say what is running and where"),
          stop: bool = typer.Option(False, "--stop", help="stop the server and worker this command started"),
          timeout: float = typer.Option(180.0, help="seconds to wait for the server to answer")):
    """Start a local Prefect server + process work pool + worker and deploy prefect.yaml (curate/...)."""
    from curate.ops import serve as srv

    if status and stop:
        fail("--status and --stop: pass one of them")
    if status:
        st = srv.status(state_dir)
        if not st["running"]:
            typer.echo("not running" + (f" (stale state in {st.get('state_dir')})" if "pids" in st else ""))
            raise typer.Exit(1)
        alive = ", ".join(f"{k} pid {st['pids'][k]} {'up' if v else 'DOWN'}" for k, v in st["alive"].items())
        typer.echo(f"running: {alive}; API {'answers' if st['healthy'] else 'does NOT answer'} at {st['api_url']}")
        typer.echo(f"UI {st['ui_url']}  state {st['state_dir']}")
        typer.echo(f"export PREFECT_API_URL={st['api_url']}")
        return
    if stop:
        done = srv.stop(state_dir)
        typer.echo("stopped " + ", ".join(done) if done else "nothing to stop")
        return
    setup_logging(fmt="%(message)s")
    typer.echo("starting the Prefect server, work pool, deployments and worker ...")
    try:
        st = srv.start(port=port, state_dir=state_dir, timeout=timeout)
    except srv.ServeError as e:
        fail(str(e))
    typer.echo(f"ready in {st['seconds']}s\n")
    typer.echo(srv.banner(st))


def refresh(config: Path = typer.Argument(..., help="refresh recipe YAML (with a refresh: block)"),
            source: Optional[str] = typer.Option(None, help="overrides refresh.source"),
            versions_dir: Optional[Path] = typer.Option(None, help="overrides refresh.versions_dir"),
            progress: bool = typer.Option(True, help="show progress bars")):
    """Write the next version (v0001, v0002, ...) with a changelog, or say the source is unchanged."""
    quiet_progress_bars(progress)
    from curate.core.errors import ConfigError, InputError
    from curate.ops.refresh import run_refresh
    from curate.ops.versions import RefreshError

    setup_logging()
    try:
        r = run_refresh(config, source, str(versions_dir) if versions_dir else None, show_progress=progress)
    except (ConfigError, InputError, RefreshError) as e:
        fail(str(e))
    typer.echo(r.message)
    if not r.noop:
        typer.echo(f"output: {r.path}  hash {r.output_hash}  changelog: {r.path / 'changelog.md'}")


def versions(versions_dir: Path = typer.Argument(..., help="a refresh's versions folder"),
             as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """List the versions of a refreshed dataset with their counts; * marks `latest`."""
    from curate.ops.versions import list_versions

    rows = list_versions(versions_dir)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        fail(f"{versions_dir}: no versions (v0001/... with refresh.json)")
    typer.echo(f"  {'version':<8} {'created':<21} {'input':>7} {'selected':>8} {'added':>6} {'removed':>7}  hash")
    for v in rows:
        c = v["counts"]
        typer.echo(f"{'*' if v['latest'] else ' '} {v['version']:<8} {v['created'] or '':<21} {c.get('n_input', 0):>7} "
                   f"{c.get('n_selected', 0):>8} {v['added']:>6} {v['removed']:>7}  {v['output_hash']}")


def rollback(versions_dir: Path = typer.Argument(..., help="a refresh's versions folder"),
             version: str = typer.Argument(..., help="version to point `latest` at, e.g. v0001")):
    """Move `latest` back (or forward) to an existing version, atomically."""
    from curate.ops.versions import RefreshError
    from curate.ops.versions import rollback as do_rollback

    try:
        old = do_rollback(versions_dir, version)
    except RefreshError as e:
        fail(str(e))
    typer.echo(f"latest: {old} -> {version}")


def mount(app: typer.Typer) -> None:
    """Add serve / refresh / versions / rollback to the ``curate`` app."""
    app.command()(serve)
    app.command()(refresh)
    app.command()(versions)
    app.command()(rollback)
