"""Per-key inter-process locks for the stage cache (POSIX ``flock``).

One lock file per key; each process opens it once (one file descriptor per process and key,
because ``flock`` locks on two descriptors of one process would conflict with each other) and
keeps counts of its shared holders and exclusive depth:

* :func:`exclusive` (compute-and-commit, gc, moving aside): ``LOCK_EX``, re-entrant within a
  thread; a shared hold of this process is upgraded and restored afterwards.
* :func:`share` / :func:`unshare`: ``LOCK_SH`` held while a run uses the key.

The kernel drops every lock of a process when it exits, SIGKILL included, so nothing stale is
left. Without ``fcntl`` (Windows) a warning is logged once and nothing is locked.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from typing import Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

_PROC_MUTEX = threading.Lock()
_PROC_FDS: dict[str, list] = {}  # lock path -> [fd, shared holders, exclusive depth]; one fd per process and key
_THREAD_LOCKS: dict[str, threading.RLock] = {}
_warned_no_fcntl = False


def _fd(path: str) -> int:
    with _PROC_MUTEX:
        if path not in _PROC_FDS:
            _PROC_FDS[path] = [os.open(path, os.O_RDWR | os.O_CREAT, 0o644), 0, 0]
        return _PROC_FDS[path][0]


def _thread_lock(path: str) -> threading.RLock:
    with _PROC_MUTEX:
        return _THREAD_LOCKS.setdefault(path, threading.RLock())


def _flock(fd: int, mode: int) -> bool:
    global _warned_no_fcntl
    if fcntl is None:  # pragma: no cover - Windows
        if not _warned_no_fcntl:
            log.warning("no fcntl on this system: cache keys are not locked between processes")
            _warned_no_fcntl = True
        return True
    try:
        fcntl.flock(fd, mode)
        return True
    except BlockingIOError:
        return False


def _release_if_unused(path: str) -> None:
    with _PROC_MUTEX:
        entry = _PROC_FDS.get(path)
        if entry and entry[1] == 0 and entry[2] == 0:
            if fcntl is not None:
                fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])
            del _PROC_FDS[path]


@contextlib.contextmanager
def exclusive(path: str, blocking: bool = True) -> Iterator[bool]:
    """Hold the lock file ``path`` exclusively; yields False when ``blocking`` is False and
    another process holds it (shared or exclusive)."""
    with _thread_lock(path):
        fd = _fd(path)
        entry = _PROC_FDS[path]
        if entry[2]:  # re-entered in this thread: already exclusive
            got = True
        else:
            got = _flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)) if fcntl else _flock(fd, 0)
        if got:
            entry[2] += 1
        try:
            yield got
        finally:
            if got:
                entry[2] -= 1
                if entry[2] == 0 and fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_SH if entry[1] > 0 else fcntl.LOCK_UN)
            _release_if_unused(path)


def share(path: str) -> None:
    """Add a shared hold on ``path`` (blocks while another process holds it exclusively)."""
    with _thread_lock(path):
        fd = _fd(path)
        entry = _PROC_FDS[path]
        entry[1] += 1
        if fcntl is not None and not entry[2]:  # inside an exclusive section it turns shared on exit
            fcntl.flock(fd, fcntl.LOCK_SH)


def unshare(path: str) -> None:
    """Drop one shared hold on ``path``; the lock is released when nothing of this process holds it."""
    with _thread_lock(path):
        if path in _PROC_FDS:
            _PROC_FDS[path][1] -= 1
        _release_if_unused(path)
