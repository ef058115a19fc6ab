"""Process pools that work wherever Python runs: scripts, ``python -`` (stdin), ``python -c``,
notebooks, and scripts without an ``if __name__ == "__main__":`` guard.

The ``spawn`` start method (used because Arrow's thread pools make ``fork`` unsafe) normally
re-runs the parent's ``__main__`` in every worker: from standard input that is ``<stdin>``,
which does not exist as a file (``BrokenProcessPool``), and an unguarded script would start its
own work again in each worker. curate's workers only run functions of the ``curate`` package,
so they never need ``__main__``: :func:`process_pool` starts spawn workers whose preparation
data leaves the main module out (the standard library's ``popen_spawn_posix.Popen``, with the
two ``init_main_*`` entries removed for the processes it launches, and only for those).

:class:`ProcessShardExecutor` is the shard executor of :func:`curate.core.shards.map_shards` on
such a pool: this process and ``num_proc - 1`` workers compute the unfinished shards.
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import spawn

from curate.core.shards import (
    LocalShardExecutor,
    Shard,
    ShardFn,
    compute_shard,
    fn_for_rows,
    save_shard,
)

_PATCH = threading.Lock()


def _without_main(data: dict) -> dict:
    data.pop("init_main_from_path", None)
    data.pop("init_main_from_name", None)
    return data


if sys.platform != "win32":
    from multiprocessing import popen_spawn_posix

    class _NoMainPopen(popen_spawn_posix.Popen):
        def _launch(self, process_obj):
            me = threading.get_ident()
            with _PATCH:
                orig = spawn.get_preparation_data

                def prep(name, _orig=orig):  # only this thread's launch loses __main__
                    data = _orig(name)
                    return _without_main(data) if threading.get_ident() == me else data

                spawn.get_preparation_data = prep
                try:
                    super()._launch(process_obj)
                finally:
                    spawn.get_preparation_data = orig

    class _NoMainProcess(mp.context.SpawnProcess):
        _start_method = "spawn"

        @staticmethod
        def _Popen(process_obj):
            return _NoMainPopen(process_obj)

    class _NoMainContext(mp.context.SpawnContext):
        _name = "spawn"
        Process = _NoMainProcess

    def mp_context() -> mp.context.BaseContext:
        """A spawn context whose workers do not import the parent's ``__main__``."""
        return _NoMainContext()
else:  # pragma: no cover - Windows has its own spawn Popen; keep the standard behaviour
    def mp_context() -> mp.context.BaseContext:
        return mp.get_context("spawn")


def process_pool(n_workers: int) -> ProcessPoolExecutor:
    """A ``ProcessPoolExecutor`` of ``n_workers`` spawn workers that do not re-run ``__main__``.

    Args:
        n_workers: worker processes (>= 1).
    """
    return ProcessPoolExecutor(max_workers=n_workers, mp_context=mp_context())


class ProcessShardExecutor:
    """Shard executor of :func:`curate.core.shards.map_shards` on ``num_proc`` processes.

    This process is one of them: ``num_proc - 1`` spawned workers (:func:`process_pool`) take
    shards from the front of the list, and this process computes shards from the back in
    between, so no process idles while the workers start. At most 2 shards per worker are in
    flight: each submitted shard carries ``fn_for_rows(fn, start, stop)`` (only that shard's
    data when ``fn`` defines ``for_rows``), so memory stays bounded by a few shards. A worker
    saves its shard itself; ``map_shards`` reads it back. ``fn`` must be picklable (a function
    or object of an importable module, not a lambda).

    Args:
        num_proc: processes computing shards, this one included (>= 1; 1 or a single unfinished
            shard: everything runs here, no pool is started).
        on_idle: called once when this process has no shard left to compute and waits for the
            workers' last shards (e.g. to import what the next step needs); default None.
    """

    def __init__(self, num_proc: int, on_idle: Callable[[], None] | None = None):
        if int(num_proc) < 1:
            raise ValueError(f"num_proc={num_proc!r}: need at least 1 process")
        self.num_proc = int(num_proc)
        self.on_idle = on_idle

    def run(self, fn: ShardFn, todo: list[Shard], desc: str = "shards") -> Iterator[tuple[Shard, dict | None]]:
        """See :mod:`curate.core.shards`; yields each shard as it is saved (with its arrays when
        this process computed it)."""
        if self.num_proc == 1 or len(todo) <= 1:
            yield from LocalShardExecutor().run(fn, todo, desc)
            return
        n_workers = self.num_proc - 1
        queue = deque(todo)
        pending: deque = deque()  # (shard, future), in submission order
        idle_called = False
        with process_pool(n_workers) as ex:
            while queue or pending:
                while queue and len(pending) < 2 * n_workers:
                    s = queue.popleft()
                    pending.append((s, ex.submit(compute_shard, fn_for_rows(fn, s.start, s.stop), str(s.path),
                                                 s.start, s.stop)))
                while pending and pending[0][1].done():
                    s, fut = pending.popleft()
                    fut.result()  # raises the worker's error
                    yield s, None
                if not queue and pending and pending[-1][1].cancel():  # not started yet: do it here
                    queue.append(pending.pop()[0])
                if queue:
                    s = queue.pop()
                    result = fn(s.start, s.stop)
                    save_shard(s.path, result)
                    yield s, result
                elif pending:
                    if self.on_idle is not None and not idle_called:
                        self.on_idle()
                        idle_called = True
                    s, fut = pending.popleft()
                    fut.result()
                    yield s, None
