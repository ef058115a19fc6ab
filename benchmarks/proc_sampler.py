"""Peak memory of a process tree and peak disk of a folder, sampled from /proc (standard library only,
so the datatrove benchmark's own virtualenv can import it too).

``TreeSampler`` polls every ``interval`` seconds in a thread: the resident memory (VmRSS) and its
anonymous part (RssAnon: what the processes hold themselves, not the pages of memory-mapped
files, which the kernel drops under pressure) of this process and all its descendants (worker
processes, Dask workers), summed; and the bytes under ``folder``. ``peak_*`` are the largest
totals seen. ru_maxrss is not used: a spawned child's includes pages it shared before exec.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path


def _status_kb(pid: int) -> tuple[int, int]:
    rss = anon = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("RssAnon:"):
                anon = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return rss, anon


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def tree_memory_mb(root: int | None = None) -> tuple[float, float]:
    """(VmRSS, RssAnon) of ``root`` (default this process) and its descendants, MiB."""
    rss = anon = 0
    for p in tree_pids(root or os.getpid()):
        r, a = _status_kb(p)
        rss += r
        anon += a
    return rss / 1024, anon / 1024


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class TreeSampler:
    """Samples memory (every ``interval`` s) and ``folder``'s size (every ``disk_every`` samples).

    ``timeline`` keeps every sample as (seconds since start, RSS MiB, anon MiB), so a caller
    that knows when each phase ran can say which one peaked (:meth:`peaks_between`).
    """

    def __init__(self, folder: Path | None = None, interval: float = 0.5, disk_every: int = 4):
        import time

        self.folder, self.interval, self.disk_every = folder, interval, disk_every
        self.peak_rss_mb, self.peak_anon_mb = tree_memory_mb()
        self.t0 = time.monotonic()
        self.timeline: list[tuple[float, float, float]] = [(0.0, self.peak_rss_mb, self.peak_anon_mb)]
        self.peak_disk_bytes = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import time

        k = 0
        while not self._stop.wait(self.interval):
            rss, anon = tree_memory_mb()
            self.timeline.append((round(time.monotonic() - self.t0, 2), round(rss, 1), round(anon, 1)))
            self.peak_rss_mb, self.peak_anon_mb = max(self.peak_rss_mb, rss), max(self.peak_anon_mb, anon)
            if self.folder is not None and k % self.disk_every == 0:
                self.peak_disk_bytes = max(self.peak_disk_bytes, folder_bytes(self.folder))
            k += 1

    def peaks_between(self, spans: dict[str, tuple[float, float]]) -> dict[str, float]:
        """Peak anonymous memory (MiB) sampled inside each named (start, end) span of seconds."""
        return {name: max((a for t, _, a in self.timeline if lo <= t <= hi), default=0.0)
                for name, (lo, hi) in spans.items()}

    def stop(self) -> dict:
        self._stop.set()
        self._t.join()
        if self.folder is not None:
            self.peak_disk_bytes = max(self.peak_disk_bytes, folder_bytes(self.folder))
        return {"peak_rss_mb": round(self.peak_rss_mb, 1), "peak_anon_mb": round(self.peak_anon_mb, 1),
                "peak_disk_mb": round(self.peak_disk_bytes / 2**20, 1)}
