"""Extraction workers: killable processes, a per-page timeout, results in submission order.

trafilatura can spend seconds (or forever) on a hostile page, and a thread cannot be stopped,
nor can ``signal.alarm`` be used outside the main thread (the Prefect flow runs ingest in a
worker thread). So every page is extracted in a worker process (spawned by
:func:`curate.core.parallel.mp_context`, so it also works from ``python -`` scripts), one page
per worker at a time over a pipe, and a worker still busy ``timeout`` seconds (+ a small grace
for the pipe) after it got its page is killed: the page is ``extraction_timeout`` and a fresh
worker takes its place. A worker also measures its own extraction time and reports a page that
took longer than ``timeout`` as a timeout, so the outcome does not depend on how promptly this
process looked at the pipe. A worker that dies on its own (e.g. killed for memory) makes its
page ``extraction_failed``.

:class:`ExtractPool` is single-threaded by design: work advances while a caller waits in
:meth:`ExtractPool.result` (the readers keep a few pages in flight per worker, so the workers
stay busy while this process adapts rows). :func:`shared_pool` is the process-wide pool the
readers use (guarded by a lock, safe from any thread): workers start on first use (about a
second each, not counted in any page's timeout), an idle worker exits after ``idle_s`` seconds,
and workers die with this process (daemon processes; their pipe closes).
"""
from __future__ import annotations

import atexit
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import wait

from curate.core.parallel import mp_context
from curate.ingest.web.page import Outcome, extract_page

DEFAULT_TIMEOUT = 1.0  # seconds per page (FineWeb's); the recipe's input.extract_timeout
GRACE_S = 0.1  # extra time before a busy worker is killed (pipe and scheduling latency)
IDLE_S = 30.0
START_S = 120.0  # a worker that has not said "ready" by then is killed (counts as a failed start)


def default_workers() -> int:
    """Worker processes by default: the CPUs this process may use, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(n, 8))


def worker_main(conn, idle_s: float) -> None:
    """A worker's loop: warm up, say ready, extract pages until idle for ``idle_s`` seconds."""
    try:
        extract_page(b"<html><body><p>warm up</p></body></html>")
    except BaseException as e:  # noqa: BLE001 - e.g. trafilatura missing: sent to the parent, which raises
        conn.send(("fatal", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready",))
    while True:
        if not conn.poll(idle_s):
            conn.send(("bye",))  # any page sent after this is not read; the parent re-queues it
            return
        try:
            ticket, args = conn.recv()
        except EOFError:  # the parent is gone
            return
        t0 = time.perf_counter()
        try:
            out = extract_page(*args)
        except Exception as e:  # noqa: BLE001 - a bug or a hostile page must not take the worker down
            out = ("error", "extraction_failed", f"{type(e).__name__}: {str(e)[:200]}")
        conn.send(("done", ticket, out, time.perf_counter() - t0))


class _Worker:
    def __init__(self, idle_s: float):
        ctx = mp_context()
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, idle_s), daemon=True, name="curate-extract")
        self.proc.start()
        child.close()
        self.ready = False
        self.started = time.monotonic()
        self.job: tuple | None = None  # (ticket, args, timeout) while busy
        self.deadline = 0.0

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ExtractPool:
    """Extraction worker processes with a per-page timeout (see the module docstring).

    Args:
        n_workers (int | None): worker processes; None (default) = :func:`default_workers`.
        idle_s (float): an idle worker exits after this many seconds; default 30.
    """

    def __init__(self, n_workers: int | None = None, idle_s: float = IDLE_S):
        self.n_workers = int(n_workers) if n_workers is not None else default_workers()
        if self.n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers!r}")
        self.idle_s = float(idle_s)
        self.workers: list[_Worker] = []
        self.queue: deque = deque()      # (ticket, args, timeout) not yet sent
        self.done: dict[int, Outcome] = {}
        self.dropped: set[int] = set()   # discarded while running: their result is thrown away
        self.next_ticket = 0
        self.start_failures = 0

    def submit(self, args: tuple, timeout: float | None) -> int:
        """Queue one page; returns its ticket for :meth:`result`.

        Args:
            args (tuple): :func:`curate.ingest.web.page.extract_page`'s arguments.
            timeout (float | None): seconds this page may take; None = no limit.
        """
        self.next_ticket += 1
        self.queue.append((self.next_ticket, args, timeout))
        self._dispatch()
        return self.next_ticket

    def result(self, ticket: int) -> Outcome:
        """The outcome of ``ticket``, waiting (and advancing every page in flight) until it is there.

        Raises:
            KeyError: ``ticket`` is not pending (never submitted, discarded, or taken already).
        """
        while ticket not in self.done:
            if not any(j[0] == ticket for j in self.queue) and not any(w.job and w.job[0] == ticket for w in self.workers):
                raise KeyError(f"extraction pool: ticket {ticket} is not pending")
            self._step()
        return self.done.pop(ticket)

    def discard(self, ticket: int) -> None:
        """Forget ``ticket``: unsent, it is never sent; running or done, its result is dropped."""
        if self.done.pop(ticket, None) is not None:
            return
        for i, job in enumerate(self.queue):
            if job[0] == ticket:
                del self.queue[i]
                return
        self.dropped.add(ticket)

    def close(self) -> None:
        """Kill every worker and forget pending pages."""
        for w in self.workers:
            w.stop()
        self.workers, self.queue, self.done, self.dropped = [], deque(), {}, set()

    # ------------------------------------------------------------ internals

    def _dispatch(self) -> None:
        for w in list(self.workers):
            if not self.queue:
                return
            if w.ready and w.job is None:
                job = self.queue.popleft()
                try:
                    w.conn.send((job[0], job[1]))
                except OSError:  # it exited idle just now (its "bye" is unread): the page goes back
                    self.queue.appendleft(job)
                    self._remove(w)
                    continue
                w.job = job
                w.deadline = time.monotonic() + job[2] + GRACE_S if job[2] is not None else float("inf")
        if self.queue and len(self.workers) < self.n_workers:
            self.workers += [_Worker(self.idle_s) for _ in range(min(len(self.queue), self.n_workers - len(self.workers)))]

    def _start_failed(self, code) -> None:
        self.start_failures += 1
        if self.start_failures >= 3:  # e.g. a crash while importing: do not respawn forever
            self.close()
            raise RuntimeError(f"extraction workers fail to start (last exit code {code}); is trafilatura installed?")

    def _finish(self, job: tuple, out: Outcome) -> None:
        if job[0] in self.dropped:
            self.dropped.discard(job[0])
        else:
            self.done[job[0]] = out

    def _remove(self, w: _Worker) -> None:
        w.stop()
        self.workers.remove(w)

    def _step(self) -> None:
        """Send queued pages to idle workers, then handle the messages of one wait (or a deadline)."""
        self._dispatch()
        if not self.workers:
            raise RuntimeError("extraction pool: nothing in flight to wait for")
        deadlines = [w.deadline if w.ready else w.started + START_S for w in self.workers if w.job is not None or not w.ready]
        nearest = min((d for d in deadlines if d != float("inf")), default=None)  # None: wait for any message
        for conn in wait([w.conn for w in self.workers], None if nearest is None else max(0.0, nearest - time.monotonic())):
            w = next(x for x in self.workers if x.conn is conn)
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the worker died on its own
                w.proc.join(1)
                if w.job is not None:
                    self._finish(w.job, ("error", "extraction_failed",
                                         f"the extraction worker died (exit code {w.proc.exitcode}), e.g. killed for memory"))
                self._remove(w)
                if not w.ready:
                    self._start_failed(w.proc.exitcode)
                continue
            if msg[0] == "ready":
                w.ready, self.start_failures = True, 0
            elif msg[0] == "done":
                job, w.job = w.job, None
                out, took = msg[2], msg[3]
                if job[2] is not None and took > job[2]:  # the worker's own clock decides
                    out = ("error", "extraction_timeout", f"extraction took {took:.2f} s > timeout {job[2]} s")
                self._finish(job, out)
            elif msg[0] == "bye":  # idle exit; a page sent meanwhile was never read
                if w.job is not None:
                    self.queue.appendleft(w.job)
                self._remove(w)
            elif msg[0] == "fatal":
                self.close()
                raise RuntimeError(f"extraction worker cannot start: {msg[1]} (is trafilatura installed?)")
        now = time.monotonic()
        for w in list(self.workers):
            if w.job is not None and now >= w.deadline:
                msg = f"extraction took longer than timeout {w.job[2]} s (the worker was killed)"
                self._finish(w.job, ("error", "extraction_timeout", msg))
                self._remove(w)
            elif not w.ready and now >= w.started + START_S:
                self._remove(w)
                self._start_failed("none: no answer")


LOCK = threading.RLock()  # guards the shared pool: hold it around every call on shared_pool()
_SHARED: dict[int, ExtractPool] = {}  # pid -> pool: a forked child must not use its parent's pipes


def shared_pool() -> ExtractPool:
    """The process-wide :class:`ExtractPool`; call it and use the pool while holding :data:`LOCK`."""
    pid = os.getpid()
    if pid not in _SHARED:
        _SHARED.clear()
        _SHARED[pid] = ExtractPool()
    return _SHARED[pid]


@atexit.register
def _close_shared() -> None:
    pool = _SHARED.get(os.getpid())
    if pool is not None:
        pool.close()


def extract_in_order(items: Iterator[tuple], timeout: float | None, window: int | None = None) -> Iterator[tuple]:
    """Extract a stream of pages on :func:`shared_pool`, a few in flight, outcomes in input order.

    Args:
        items (Iterator[tuple]): ``(meta, args)`` per page, ``args`` for
            :func:`curate.ingest.web.page.extract_page`; ``(meta, None, outcome)`` for a page
            whose outcome is already known (e.g. ``row_too_large``): it is passed through in order.
        timeout (float | None): seconds per page (None: no limit).
        window (int | None): pages submitted ahead; default 2 per worker + 1.

    Yields:
        (meta, outcome) per item, in input order.
    """
    with LOCK:
        window = window or 2 * shared_pool().n_workers + 1
    pending: deque = deque()  # (meta, ticket or None, outcome or None)
    it = iter(items)
    try:
        while True:
            while len(pending) < window and (item := next(it, None)) is not None:
                if len(item) == 3:
                    pending.append((item[0], None, item[2]))
                else:
                    with LOCK:
                        pending.append((item[0], shared_pool().submit(item[1], timeout), None))
            if not pending:
                return
            meta, ticket, out = pending.popleft()
            if ticket is not None:
                with LOCK:
                    out = shared_pool().result(ticket)
            yield meta, out
    finally:  # the consumer stopped early (or failed): do not leave pages to the workers
        with LOCK:
            for _, ticket, _ in pending:
                if ticket is not None:
                    shared_pool().discard(ticket)
