"""``curate cache ls|gc|verify``: see, bound and check the stage cache.

* ``ls``: every entry with its size, last use, the stage that made it, the recipe runs whose
  latest result needs it, and whether a running process holds it. Work dirs (resumable shards
  of an unfinished stage), entries moved aside as damaged and temporary leftovers are listed too.
* ``gc``: removes entries by age (``--older-than 7d``), keeps only the most recently used
  (``--keep-last N``) and/or trims least-recently-used entries until the cache fits
  (``--max-size 20GB``). It never removes an entry a running process holds (the key's lock is
  taken without waiting; a held key is skipped) nor one the latest run of any recipe (output
  dir) used. ``--dry-run`` prints what it would remove.
* ``verify``: checksums every entry (``StageStore.verify``); damaged ones are moved aside.

Sizes: ``20GB`` = 20e9 bytes, ``20GiB`` = 20 * 2**30 (also K/M/T); durations: ``30m``, ``12h``,
``7d``, ``2w``.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer

from curate.cache.gc import gc, human, list_entries, parse_age, parse_size
from curate.cache.store import StageStore

app = typer.Typer(add_completion=False, no_args_is_help=True, help="See, bound and verify the stage cache.")


def _store(cache_dir: Optional[Path]) -> StageStore:
    return StageStore(cache_dir) if cache_dir else StageStore()


def _ago(t: float) -> str:
    s = time.time() - t
    return f"{s / 86400:.1f}d" if s > 86400 else f"{s / 3600:.1f}h" if s > 3600 else f"{s / 60:.0f}m"


@app.command("ls")
def ls_command(cache_dir: Optional[Path] = typer.Option(None, help="cache dir (default $CURATE_CACHE or ~/.cache/curate)"),
               as_json: bool = typer.Option(False, "--json", help="print JSON")):
    """List cache entries: size, last use, stage, recipes that need them, held by a running process."""
    store = _store(cache_dir)
    entries = list_entries(store)
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], indent=1))
        return
    typer.echo(f"{'key':<22} {'kind':<8} {'size':>9} {'used':>6}  {'stage':<22} {'held':<4}  recipes")
    for e in entries:
        typer.echo(f"{e.key:<22} {e.kind:<8} {human(e.size):>9} {_ago(e.last_use):>6}  {(e.stage or '-')[:22]:<22} "
                   f"{'yes' if e.in_use else '-':<4}  {'; '.join(e.recipes) or '-'}")
    typer.echo(f"{len(entries)} folders, {human(sum(e.size for e in entries))} in {store.root}")


@app.command("gc")
def gc_command(keep_last: Optional[int] = typer.Option(None, "--keep-last", help="keep the N most recently used entries"),
               older_than: Optional[str] = typer.Option(None, "--older-than", help="remove entries unused for this long, e.g. 7d"),
               max_size: Optional[str] = typer.Option(None, "--max-size", help="trim least-recently-used entries to fit, e.g. 20GB"),
               dry_run: bool = typer.Option(False, "--dry-run", help="print what would be removed, remove nothing"),
               cache_dir: Optional[Path] = typer.Option(None, help="cache dir (default $CURATE_CACHE or ~/.cache/curate)")):
    """Remove cache entries (never one a running process holds or a recipe's latest run needs)."""
    try:
        res = gc(_store(cache_dir), keep_last, parse_age(older_than) if older_than else None,
                 parse_size(max_size) if max_size else None, dry_run=dry_run)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    verb = "would remove" if dry_run else "removed"
    for e in res["removed"]:
        typer.echo(f"{verb} {e['kind']:<8} {e['key']}  {human(e['size'])}")
    for e in res["skipped_in_use"]:
        typer.echo(f"skipped  {e['kind']:<8} {e['key']}  (held by a running process)")
    typer.echo(f"{verb} {len(res['removed'])} folders, {human(res['freed'])}; {human(res['kept_size'])} kept")


@app.command("verify")
def verify_command(cache_dir: Optional[Path] = typer.Option(None, help="cache dir (default $CURATE_CACHE or ~/.cache/curate)")):
    """Checksum every entry; damaged ones are moved to .damaged/ (and recomputed by the next run)."""
    rows = _store(cache_dir).verify()
    for r in rows:
        if r["status"] != "ok":
            typer.echo(f"{r['status']:<8} {r['key']}  {r['problem']}")
    bad = sum(r["status"] != "ok" for r in rows)
    typer.echo(f"{len(rows)} entries checked, {len(rows) - bad} ok, {bad} damaged")
    if bad:
        raise typer.Exit(1)
