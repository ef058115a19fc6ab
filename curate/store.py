"""Content-addressed stage cache with atomic commits.

Layout under ``root`` (default ``$CURATE_CACHE`` or ``~/.cache/curate``)::

    <key>/table.arrow      the stage's output (Arrow IPC file, read back memory-mapped)
    <key>/artifacts/       extra files the stage wrote (centroids, indexes, quarantine)
    <key>/manifest.json    written last: a key folder without it does not exist
    <key>.work/            scratch of a stage in progress (resumable shards); kept after a kill

A commit writes everything into ``tmp-<key>-<uuid>/``, manifest last, then renames it to
``<key>/`` in one step, so a crash never leaves a half stage that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.stage import Stage

MANIFEST = "manifest.json"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def stable_hash(obj: Any, n: int = 20) -> str:
    """sha256 of canonical JSON of ``obj`` (sorted keys), first ``n`` hex chars."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def stage_key(parent_key: str, stage: Stage) -> str:
    """Key of ``stage`` applied to the output ``parent_key``: parent, name, version, params."""
    return stable_hash({"parent": parent_key, "name": stage.name, "version": stage.version,
                        "params": stage.cache_params()})


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a table (its Parquet bytes from one chunk, so chunking does not matter)."""
    import pyarrow.parquet as pq
    import xxhash

    sink = pa.BufferOutputStream()
    pq.write_table(table.combine_chunks(), sink)
    return xxhash.xxh3_128_hexdigest(sink.getvalue().to_pybytes())


class StageStore:
    """Content-addressed store of stage outputs (see module docstring).

    Args:
        root: cache folder (default ``default_cache_dir()``).
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.root / key / MANIFEST).is_file()

    def work_dir(self, key: str) -> Path:
        return self.root / f"{key}.work"

    def artifacts(self, key: str) -> Path:
        return self.root / key / "artifacts"

    def manifest(self, key: str) -> dict:
        return json.loads((self.root / key / MANIFEST).read_text())

    def load_table(self, key: str) -> pa.Table:
        """The committed table, memory-mapped (no copy until touched)."""
        with pa.memory_map(str(self.root / key / "table.arrow")) as source:
            return pa.ipc.open_file(source).read_all()

    def commit(self, key: str, table: pa.Table, meta: dict | None = None) -> None:
        """Atomically store ``table`` (+ the work dir's ``artifacts/``) under ``key``."""
        if self.has(key):
            return
        tmp = self.root / f"tmp-{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            with pa.OSFile(str(tmp / "table.arrow"), "wb") as sink:
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table, max_chunksize=65536)
            staged = self.work_dir(key) / "artifacts"
            if staged.is_dir():
                shutil.copytree(staged, tmp / "artifacts")
            manifest = {"key": key, "rows": len(table), "columns": table.column_names,
                        "created": time.time(), **(meta or {})}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
            dest = self.root / key
            if dest.exists():  # a half-written folder from an old crash: never trust it
                shutil.rmtree(dest)
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(self.work_dir(key), ignore_errors=True)
