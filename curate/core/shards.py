"""One task per shard: a dispatch hook for ``StageContext.map_shards`` (Prefect + Dask).

``map_shards`` asks :func:`active_executor` whether an executor is installed in the current
context (a ``ContextVar``; none in plain ``curate run``). The Prefect flow installs a
:class:`PrefectShardExecutor` around a stage when it runs on prefect-dask's ``DaskTaskRunner``
(``curate_flow(dask=True)``): every shard of embed / LM scoring / the quality model / MinHash
signatures becomes one Prefect task, run by whichever Dask worker is free. Nothing else changes:

* a shard is the same rows ``[start, stop)`` and the same ``fn`` as in the local loop, saved to
  the same file (``<work_dir>/shards/<start>-<stop>.npz``, written to a temp name then renamed),
  and the parts are concatenated in row order: the output equals the single-process run's
  as long as ``fn`` is deterministic for a shard (CPU embeddings are; see docs/operations.md);
* a shard whose task fails is retried (``retries``, default 2) before the stage fails;
* a killed run resumes: finished shard files are skipped by either executor.

Workers must see the cache folder (one machine, or a shared filesystem). The closure ``fn``
(the stage and its texts) is pickled with each shard task by cloudpickle.

This module imports Prefect only inside :class:`PrefectShardExecutor`.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

_ACTIVE: ContextVar = ContextVar("curate_shard_executor", default=None)


def active_executor():
    """The shard executor installed by :func:`use_executor` in this context, or None."""
    return _ACTIVE.get()


@contextmanager
def use_executor(executor):
    """Install ``executor`` for ``map_shards`` calls inside the ``with`` block."""
    token = _ACTIVE.set(executor)
    try:
        yield executor
    finally:
        _ACTIVE.reset(token)


def shard_path(work_dir: Path, start: int, stop: int) -> Path:
    """The file of rows [start, stop) (the same name ``StageContext.map_shards`` uses)."""
    return Path(work_dir) / "shards" / f"{start:012d}-{stop:012d}.npz"


def compute_shard(fn: Callable[[int, int], dict], path: str, start: int, stop: int) -> str:
    """Compute one shard and save it atomically with its checksum (skipped when a sound copy
    exists; a damaged one is moved aside and recomputed); returns its path."""
    p = Path(path)
    if p.exists() and load_shard(p) is not None:
        return str(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_shard(p, fn(start, stop))
    return str(p)


def load_shards(paths: list[Path], finished: dict[Path, dict] | None = None) -> dict[str, np.ndarray]:
    """Concatenate shards in ``paths`` order; those in ``finished`` (already loaded and checked)
    are not read again. Each other one is checked against its checksum: a damaged one is an error
    (it was sound when its task returned)."""
    finished = finished or {}
    parts = []
    for p in paths:
        got = finished[p] if p in finished else load_shard(p)
        if got is None:
            raise RuntimeError(f"shard {p} was damaged after its task finished; rerun to recompute it")
        parts.append(got)
    return concat_shards(parts)


def concat_shards(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Shards' arrays joined along rows, in the given order (``{}`` when there is nothing)."""
    if not parts or not parts[0]:
        return {}
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}


def save_shard(path: Path, result: dict[str, np.ndarray]) -> None:
    """Write ``result`` to ``path`` (.npz) with a size + xxh3-128 sidecar (``.sum.json``).

    The shard appears (os.replace) only when whole; :func:`load_shard` checks it. Used by every
    resumable shard folder (stage shards, Dask shard tasks, MinHash band keys).
    """
    import xxhash

    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # per process: two writers of one shard never share a temp
    np.savez(tmp, **result)
    data = tmp.read_bytes()
    side = path.with_suffix(".sum.json")
    side_tmp = path.with_suffix(f".{os.getpid()}.sum.tmp")
    side_tmp.write_text(json.dumps({"size": len(data), "xxh3_128": xxhash.xxh3_128_hexdigest(data)}))
    os.replace(side_tmp, side)
    os.replace(tmp, path)  # a shard is either whole or absent


def load_shard(path: Path) -> dict[str, np.ndarray] | None:
    """A finished shard's arrays, or None (moved to ``shards/damaged/``) if it fails its checksum."""
    import xxhash

    side = path.with_suffix(".sum.json")
    problem = None
    try:
        data = path.read_bytes()
        if not side.exists():  # written before checksums (or by hand): used if it loads, as cache entries are
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        want = json.loads(side.read_text())
        if len(data) != want["size"]:
            problem = f"{len(data)} bytes, expected {want['size']}"
        elif xxhash.xxh3_128_hexdigest(data) != want["xxh3_128"]:
            problem = "checksum mismatch"
        else:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # bad zip, bad JSON, truncated
        problem = f"unreadable ({type(e).__name__}: {str(e)[:80]})"
    aside = path.parent / "damaged"
    aside.mkdir(exist_ok=True)
    for p in (path, side):
        if p.exists():
            os.replace(p, aside / p.name)
    log.warning("shard %s is damaged (%s): moved to %s and recomputed", path, problem, aside)
    return None


def map_shards(work_dir: Path, n_rows: int, fn: Callable[[int, int], dict[str, np.ndarray]], *,
               shard_size: int = 4096, desc: str = "shards", show_progress: bool = True,
               executor=None) -> dict[str, np.ndarray]:
    """Run ``fn(start, stop)`` over row shards of ``n_rows``; each result is saved under
    ``work_dir/shards/`` so a killed run resumes from the last finished shard.

    Args:
        work_dir: the stage's scratch folder (kept after a kill).
        n_rows: rows to cover.
        fn: computes arrays for rows [start, stop); returns {name: array with first dim stop-start}.
        shard_size: rows per shard (default 4096).
        desc: progress-bar label.
        show_progress: draw a progress bar (default True).
        executor: runs the unfinished shards elsewhere (``executor.map_shards``, e.g. one Prefect
            task per shard on Dask); None runs them here, in order.

    Returns:
        {name: array concatenated over shards along axis 0}.
    """
    from tqdm.auto import tqdm

    if executor is not None:
        from types import SimpleNamespace

        ctx = SimpleNamespace(work_dir=Path(work_dir), show_progress=show_progress)
        return executor.map_shards(ctx, n_rows, fn, shard_size=shard_size, desc=desc)
    starts = list(range(0, n_rows, shard_size)) or [0]
    paths = [shard_path(work_dir, a, min(a + shard_size, n_rows)) for a in starts]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    done = sum(p.exists() for p in paths)
    if done:
        log.info("%s: resuming, %d of %d shards already finished", desc, done, len(starts))
    parts: list[dict[str, np.ndarray]] = []
    for start, path in tqdm(list(zip(starts, paths)), desc=desc, disable=not show_progress, unit="shard"):
        stop = min(start + shard_size, n_rows)
        if path.exists():
            got = load_shard(path)
            if got is not None:
                parts.append(got)
                continue
        result = fn(start, stop)
        save_shard(path, result)
        parts.append(result)
    return concat_shards(parts)
