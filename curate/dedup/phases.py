"""Run a list of independent tasks through a shard executor, resumably (the phases of a dedup).

The band, component and verification steps of ``minhash_dedup`` and the hash partitions of
``exact_dedup`` are lists of independent tasks whose outputs have no fixed row shape (edge
lists, cluster labels), so they do not fit :func:`curate.core.shards.map_shards`. They reuse its
executor protocol and its files instead: task ``i`` is the "shard" ``[i, i + 1)``, computed by
whichever executor is installed (in this process by default, a process pool, or one Prefect or
Dask task per task under ``curate_flow(dask=True)`` / ``flows.dask_dedup``), and saved with a
checksum to ``<folder>/<i:06d>.npz`` (:func:`curate.core.shards.save_shard`). A killed run
finds the finished tasks there and computes only the others; a damaged file is moved aside and
recomputed. Workers on other machines must see ``folder`` (the cache folder).

A task function is a module-level function ``fn(arg) -> {name: array}`` (picklable); its
argument list is held by :class:`TaskList`, which sends one argument per task to a worker
(``for_rows``), or builds it then (``make_arg``), so a phase whose arguments are large (texts)
never holds all of them at once when the executor submits tasks as workers free up.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.core.shards import (
    LocalShardExecutor,
    Shard,
    load_finished_shard,
    load_shard,
)

log = logging.getLogger(__name__)

TaskFn = Callable[[Any], dict[str, np.ndarray]]


class TaskList:
    """``fn(start, stop)`` of the shard protocol over a list of task arguments.

    Args:
        fn: module-level function computing one task: ``fn(arg) -> {name: array}``.
        args: one argument per task (any picklable values), or None with ``make_arg``.
        make_arg: builds task ``i``'s argument when it is computed or sent (default None:
            ``args[i]``); not pickled itself, only what it returns.
        n: number of tasks when ``args`` is None.
        offset: index of the first task this list holds (default 0; :meth:`for_rows` copies).
    """

    def __init__(self, fn: TaskFn, args: Sequence | None = None, *, make_arg: Callable[[int], Any] | None = None,
                 n: int | None = None, offset: int = 0):
        if args is None and (make_arg is None or n is None):
            raise ValueError("TaskList: give args, or make_arg and n")
        self.fn = fn
        self.args = args
        self.make_arg = make_arg
        self.n = len(args) if args is not None else int(n)
        self.offset = offset

    def arg(self, i: int) -> Any:
        """The argument of task ``i``."""
        if self.args is not None:
            return self.args[i - self.offset]
        return self.make_arg(i)

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if stop != start + 1:
            raise ValueError(f"TaskList computes one task at a time, got [{start}, {stop})")
        return self.fn(self.arg(start))

    def for_rows(self, start: int, stop: int) -> TaskList:
        """Only tasks [start, stop), with their arguments built: what goes to another process."""
        return TaskList(self.fn, [self.arg(i) for i in range(start, stop)], offset=start)


def task_path(folder: Path, i: int) -> Path:
    """The result file of task ``i``: ``<folder>/<i:06d>.npz``."""
    return Path(folder) / f"{i:06d}.npz"


def run_phase(folder: Path, tasks: TaskList, *, desc: str, executor=None, load: bool = True) -> list:
    """Compute every unfinished task of ``tasks``; return the results in task order.

    Args:
        folder: where the task results are saved (created); a finished, sound result there is
            reused (resume), a damaged one moved to ``folder/damaged`` and recomputed.
        tasks: the phase's :class:`TaskList`.
        desc: the phase's name (progress, task names on Prefect/Dask).
        executor: a shard executor (``executor.run(fn, todo, desc)``, see
            :mod:`curate.core.shards`); None (default): in this process, in order.
        load: return each task's arrays (default True); False returns the result paths, for
            results too large to hold together (the caller reads one at a time).

    Returns:
        list of ``{name: array}`` (``load``) or of ``Path``, one per task.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = [Shard(i, i + 1, task_path(folder, i)) for i in range(tasks.n)]
    out: list = [None] * tasks.n
    todo = []
    for s in shards:
        got = load_shard(s.path) if s.path.exists() else None
        if got is None:
            todo.append(s)
        else:
            out[s.start] = got if load else s.path
    if len(todo) < len(shards):
        log.info("%s: resuming, %d of %d tasks already finished", desc, len(shards) - len(todo), len(shards))
    if todo:
        for s, result in (executor or LocalShardExecutor()).run(tasks, todo, desc):
            if load:
                out[s.start] = result if result is not None else load_finished_shard(s.path)
            else:
                out[s.start] = s.path
    return out
