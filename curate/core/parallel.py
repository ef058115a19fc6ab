"""Process pools that work wherever Python runs: scripts, ``python -`` (stdin), ``python -c``,
notebooks, and scripts without an ``if __name__ == "__main__":`` guard.

The ``spawn`` start method (used because Arrow's thread pools make ``fork`` unsafe) normally
re-runs the parent's ``__main__`` in every worker: from standard input that is ``<stdin>``,
which does not exist as a file (``BrokenProcessPool``), and an unguarded script would start its
own work again in each worker. curate's workers only run functions of the ``curate`` package,
so they never need ``__main__``: :func:`process_pool` starts spawn workers whose preparation
data leaves the main module out (the standard library's ``popen_spawn_posix.Popen``, with the
two ``init_main_*`` entries removed for the processes it launches, and only for those).
"""
from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import spawn

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
