"""curate.cache.gc"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from curate.cache.store import DAMAGED, MANIFEST, StageStore

_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9, "T": 10**12,
          "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``"20GB"`` -> 20_000_000_000; ``"1.5GiB"``; a bare number is bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"--max-size: cannot read {text!r}; write e.g. 20GB, 500MB or 1.5GiB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_age(text: str) -> float:
    """``"7d"`` -> seconds (s, m, h, d, w)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhdw])\s*", str(text))
    if not m:
        raise ValueError(f"--older-than: cannot read {text!r}; write e.g. 7d, 12h, 30m or 2w")
    return float(m.group(1)) * _SECONDS[m.group(2)]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Entry:
    """One folder of the cache."""

    name: str  # folder name under the cache root (or under .damaged/)
    kind: str  # entry | work | damaged | tmp
    key: str
    size: int
    last_use: float
    stage: str | None
    recipes: list[str]
    in_use: bool
    path: str


def _key_of(name: str, kind: str) -> str:
    if kind == "work":
        return name[: -len(".work")]
    if kind == "tmp":
        return name[len("tmp-"):].rsplit("-", 1)[0]
    if kind == "damaged":
        return name.split("-", 1)[0]
    return name


def list_entries(store: StageStore) -> list[Entry]:
    """Every entry, work dir, damaged entry and temporary leftover of ``store``, newest use first."""
    needed: dict[str, list[str]] = {}
    for run in store.runs():
        label = run.get("name") or Path(run["output_dir"]).name
        for k in run.get("keys", []):
            needed.setdefault(k, []).append(f"{label} ({run['output_dir']})")
    out = []
    folders = [(p, "entry") for p in store.root.iterdir() if p.is_dir() and (p / MANIFEST).is_file()
               and not p.name.startswith(("tmp-", "."))]
    folders += [(p, "work") for p in store.root.glob("*.work") if p.is_dir()]
    folders += [(p, "tmp") for p in store.root.glob("tmp-*") if p.is_dir()]
    if (store.root / DAMAGED).is_dir():
        folders += [(p, "damaged") for p in (store.root / DAMAGED).iterdir()]
    for p, kind in folders:
        key = _key_of(p.name, kind)
        stage = None
        if kind in ("entry", "damaged"):
            try:
                stage = json.loads((p / MANIFEST).read_text()).get("stage")
            except (OSError, ValueError):
                stage = None
        in_use = store.in_use(key) if kind != "damaged" else False
        out.append(Entry(p.name, kind, key, _size(p), p.stat().st_mtime, stage, needed.get(key, []), in_use, str(p)))
    return sorted(out, key=lambda e: -e.last_use)


def plan_gc(store: StageStore, keep_last: int | None = None, older_than: float | None = None,
            max_size: int | None = None, now: float | None = None) -> tuple[list[Entry], list[Entry]]:
    """Decide what ``gc`` removes; returns (to_remove, kept).

    An entry is removed if it is older than ``older_than`` seconds or not among the
    ``keep_last`` most recently used entries; then least-recently-used ones go until the cache
    is at most ``max_size`` bytes. ``keep_last`` counts committed entries only (work dirs of
    interrupted stages and damaged entries go by age or size). Protected (never removed): entries a running process holds
    and entries the latest run of any recipe used. Temporary leftovers of dead processes are
    always removed; work dirs and damaged entries follow the same rules as entries.
    """
    if keep_last is None and older_than is None and max_size is None:
        raise ValueError("give at least one of --keep-last N, --older-than AGE, --max-size SIZE")
    if keep_last is not None and keep_last < 0:
        raise ValueError(f"--keep-last must be >= 0, got {keep_last}")
    now = time.time() if now is None else now
    entries = list_entries(store)
    protected = {id(e) for e in entries if e.in_use or (e.kind != "damaged" and e.recipes)}
    remove: list[Entry] = [e for e in entries if e.kind == "tmp" and id(e) not in protected]
    committed = [e for e in entries if e.kind == "entry"]
    recent = {id(e) for e in committed[:keep_last]} if keep_last is not None else None
    for e in entries:
        if id(e) in protected or e.kind == "tmp":
            continue
        old = older_than is not None and now - e.last_use > older_than
        beyond = recent is not None and e.kind == "entry" and id(e) not in recent
        if old or beyond:
            remove.append(e)
    if max_size is not None:
        total = sum(e.size for e in entries) - sum(e.size for e in remove)
        gone = {id(e) for e in remove}
        for e in sorted(entries, key=lambda e: e.last_use):  # least recently used first
            if total <= max_size:
                break
            if id(e) in protected or id(e) in gone:
                continue
            remove.append(e)
            gone.add(id(e))
            total -= e.size
    gone = {id(e) for e in remove}
    return remove, [e for e in entries if id(e) not in gone]


def remove_entry(store: StageStore, e: Entry) -> bool:
    """Remove one folder if its key's lock can be taken without waiting; False if it is held."""
    with store.lock(e.key, blocking=False) as got:
        if not got:
            return False
        path = Path(e.path)
        if not path.exists():
            return True
        trash = store.root / f".trash-{uuid.uuid4().hex[:8]}"
        os.rename(path, trash)  # gone from view in one step, then deleted
        shutil.rmtree(trash, ignore_errors=True)
        return True


def gc(store: StageStore, keep_last: int | None = None, older_than: float | None = None,
       max_size: int | None = None, dry_run: bool = False) -> dict:
    """Apply :func:`plan_gc`; returns {"removed": [...], "skipped_in_use": [...], "freed", "kept_size"}."""
    remove, kept = plan_gc(store, keep_last, older_than, max_size)
    if not dry_run:  # folders a gc killed half-way through deleting
        for p in store.root.glob(".trash-*"):
            shutil.rmtree(p, ignore_errors=True)
    removed, skipped = [], []
    for e in remove:
        if dry_run or remove_entry(store, e):
            removed.append(e)
        else:
            skipped.append(e)
    return {"removed": [asdict(e) for e in removed], "skipped_in_use": [asdict(e) for e in skipped],
            "freed": sum(e.size for e in removed), "kept_size": sum(e.size for e in kept + skipped)}


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
