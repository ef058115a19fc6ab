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

import logging
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
    from curate.stage import load_shard, save_shard

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
    from curate.stage import concat_shards, load_shard

    finished = finished or {}
    parts = []
    for p in paths:
        got = finished[p] if p in finished else load_shard(p)
        if got is None:
            raise RuntimeError(f"shard {p} was damaged after its task finished; rerun to recompute it")
        parts.append(got)
    return concat_shards(parts)


class PrefectShardExecutor:
    """Submit one Prefect task per unfinished shard to the running flow's task runner.

    Args:
        retries: attempts after a failure, per shard (default 2).
        retry_delay_seconds: wait between attempts (default 1).
    """

    def __init__(self, retries: int = 2, retry_delay_seconds: float = 1.0):
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds

    def map_shards(self, ctx, n_rows: int, fn: Callable[[int, int], dict], shard_size: int = 4096,
                   desc: str = "shards") -> dict[str, np.ndarray]:
        """Same contract as ``StageContext.map_shards``; runs inside a flow (or task) run."""
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        starts = list(range(0, n_rows, shard_size)) or [0]
        paths = [shard_path(ctx.work_dir, a, min(a + shard_size, n_rows)) for a in starts]
        from curate.stage import load_shard

        # a finished shard is reused only when it passes its checksum (a damaged one is moved
        # aside); the ones that pass are kept for the concatenation, not read a second time
        finished = {p: got for p in paths if p.exists() and (got := load_shard(p)) is not None}
        todo = [(a, p) for a, p in zip(starts, paths) if p not in finished]
        if len(todo) < len(starts):
            log.info("%s: resuming, %d of %d shards already finished", desc, len(starts) - len(todo), len(starts))
        t = task(compute_shard, name=f"shard {desc}", retries=self.retries,
                 retry_delay_seconds=self.retry_delay_seconds, cache_policy=NO_CACHE)
        futures = [t.with_options(task_run_name=f"{desc} rows {a}-{min(a + shard_size, n_rows)}").submit(
            fn, str(p), a, min(a + shard_size, n_rows)) for a, p in todo]
        for f in futures:
            f.result()  # raises the shard's error once its retries are spent
        return load_shards(paths, finished)
