"""curate.ops.versions"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

class RefreshError(ValueError):
    """A refresh recipe or versions folder problem (names the key or path)."""


import json
import os
import uuid
from pathlib import Path

LATEST = "latest"


MARKER = "refresh.json"


def latest(versions_dir: str | Path) -> str | None:
    """Name of the version ``latest`` points at, or None before the first version."""
    link = Path(versions_dir) / LATEST
    return os.readlink(link) if link.is_symlink() else None


def point_latest(versions_dir: Path, version: str) -> None:
    tmp = versions_dir / f".{LATEST}-{uuid.uuid4().hex[:8]}"
    os.symlink(version, tmp)
    os.replace(tmp, versions_dir / LATEST)  # atomic: readers see the old or the new target


def list_versions(versions_dir: str | Path) -> list[dict]:
    """One dict per complete version (oldest first): version, created, counts, added/removed, latest."""
    vdir = Path(versions_dir)
    cur = latest(vdir)
    out = []
    for d in sorted(vdir.glob("v[0-9][0-9][0-9][0-9]")):
        m = d / MARKER
        if not m.is_file():
            continue
        info = json.loads(m.read_text())
        out.append({"version": d.name, "created": info.get("created"), "counts": info.get("counts", {}),
                    "added": info.get("added", 0), "removed": info.get("removed", 0),
                    "output_hash": info.get("output_hash"), "latest": d.name == cur})
    return out


def rollback(versions_dir: str | Path, version: str) -> str:
    """Point ``latest`` at an existing complete ``version``; returns the previous target."""
    vdir = Path(versions_dir)
    if not (vdir / version / MARKER).is_file():
        have = [v["version"] for v in list_versions(vdir)]
        raise RefreshError(f"version={version!r}: no complete version of that name in {vdir}; have {have}")
    old = latest(vdir)
    point_latest(vdir, version)
    log.info("latest: %s -> %s", old, version)
    return old
