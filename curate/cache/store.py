"""Content-addressed stage cache: atomic commits, checksums, per-key locks.

Layout under ``root`` (default ``$CURATE_CACHE`` or ``~/.cache/curate``)::

    <key>/table.arrow      the stage's output (Arrow IPC file, read back memory-mapped)
    <key>/artifacts/       extra files the stage wrote (centroids, indexes, quarantine)
    <key>/manifest.json    written last: a key folder without it does not exist. Holds each
                           file's size and xxh3-128 checksum, the store format and the curate
                           version that wrote it
    <key>.work/            scratch of a stage in progress (resumable shards); kept after a kill
    .locks/<key>.lock      per-key lock file (see below)
    .damaged/<key>-<time>  entries that failed verification, moved aside (never deleted blindly)
    .runs/<id>.json        the keys the latest run of each output dir used (``curate cache gc``
                           keeps them)

A commit writes everything into ``tmp-<key>-<uuid>/``, manifest last, then renames it to
``<key>/`` in one step, so a crash never leaves a half stage that looks complete; a complete
entry is never removed by a commit.

Concurrency (POSIX ``flock``): computing a key holds its lock exclusively, so a second process
that needs the same key waits and then reuses the first's result; a run holds a shared lock on
every key it loaded or committed until it ends, so ``curate cache gc`` (which needs the
exclusive lock) never removes an entry a running process holds. Locks die with their process,
SIGKILL included, so nothing stale is left behind.

Verification: every load checks the manifest and each file's size; the checksum too when the
entry is at most ``verify_max_bytes`` (default 1 GiB, ``$CURATE_VERIFY_MAX_BYTES``), and always
in :meth:`StageStore.verify` (``curate cache verify``). A damaged or unreadable entry is logged
with its key, moved to ``.damaged/`` and recomputed.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator

import pyarrow as pa

from curate.cache import locks
from curate.core.hashing import file_checksum, stable_hash

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STORE_FORMAT = 2  # 2: manifests carry per-file sizes and xxh3-128 checksums
DAMAGED, LOCKS, RUNS = ".damaged", ".locks", ".runs"


def default_cache_dir() -> Path:
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def dir_files(folder: Path) -> dict[str, dict]:
    """{relative path: {"size", "xxh3_128"}} of every file under ``folder`` except the manifest."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not (p.parent == folder and p.name == MANIFEST):
            out[p.relative_to(folder).as_posix()] = {"size": p.stat().st_size, "xxh3_128": file_checksum(p)}
    return out


def _curate_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("curate")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout without install
        return None


_PAGE = 4096
_MADV_DONTNEED = 4


def _read_only_file_maps() -> list[tuple[int, int]]:
    """(start, end) of this process's read-only mappings of files (``/proc/self/maps``)."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[4] != "0" and parts[5].startswith("/") and "w" not in parts[1]:
                    a, b = parts[0].split("-")
                    out.append((int(a, 16), int(b, 16)))
    except OSError:
        return []
    return sorted(out)


def release_mapped_pages(arrays) -> int:
    """Drop this process's resident pages of the memory-mapped bytes of string arrays.

    A stage reading a memory-mapped cache entry shard by shard leaves every page it touched
    resident (and counted in its RSS) until the mapping goes, so a 10M-document table would
    show its whole text as resident memory. After a shard, ``madvise(MADV_DONTNEED)`` on the
    shard's bytes gives those pages back to the page cache: a later read faults them in again
    from the file. Only bytes inside read-only mappings of files are touched (such pages hold
    nothing that is not in the file); arrays in ordinary memory are left alone. Linux only; a
    no-op elsewhere.

    Args:
        arrays: string/large_string arrays or chunked arrays (other types are skipped).

    Returns:
        bytes released.
    """
    import ctypes
    import sys
    from bisect import bisect_right

    if not sys.platform.startswith("linux"):
        return 0
    ranges = []
    for arr in arrays:
        for c in (arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]):
            if not (pa.types.is_string(c.type) or pa.types.is_large_string(c.type)) or len(c) == 0:
                continue
            bufs = c.buffers()
            width = 8 if pa.types.is_large_string(c.type) else 4
            offs = bufs[1]
            first = int.from_bytes(offs[c.offset * width:(c.offset + 1) * width].to_pybytes(), "little", signed=True)
            last = int.from_bytes(offs[(c.offset + len(c)) * width:(c.offset + len(c) + 1) * width].to_pybytes(),
                                  "little", signed=True)
            ranges.append((offs.address + c.offset * width, (len(c) + 1) * width))
            if bufs[2] is not None and last > first:
                ranges.append((bufs[2].address + first, last - first))
    if not ranges:
        return 0
    maps = _read_only_file_maps()
    starts = [a for a, _ in maps]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    for addr, size in ranges:
        i = bisect_right(starts, addr) - 1
        if i < 0 or addr + size > maps[i][1]:
            continue  # not (wholly) inside a read-only file mapping
        lo = -(-addr // _PAGE) * _PAGE  # whole pages inside the range only
        hi = (addr + size) // _PAGE * _PAGE
        if hi > lo and libc.madvise(lo, hi - lo, _MADV_DONTNEED) == 0:
            released += hi - lo
    return released


class CacheDamaged(Exception):
    """A cache entry failed verification (message says which file and how)."""


class StageStore:
    """Content-addressed store of stage outputs (see module docstring).

    Args:
        root: cache folder (default ``default_cache_dir()``).
        verify_max_bytes: entries up to this size are checksummed on every load; larger ones
            only have their sizes checked (default ``$CURATE_VERIFY_MAX_BYTES`` or 1 GiB).
    """

    def __init__(self, root: str | Path | None = None, verify_max_bytes: int | None = None):
        self.root = Path(root) if root else default_cache_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        env = os.environ.get("CURATE_VERIFY_MAX_BYTES")
        self.verify_max_bytes = verify_max_bytes if verify_max_bytes is not None else int(env) if env else 1 << 30
        self._held: set[str] = set()

    # ------------------------------------------------------------ paths
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

    def _lock_path(self, key: str) -> str:
        d = self.root / LOCKS
        d.mkdir(exist_ok=True)
        return str(d / f"{key}.lock")

    # ------------------------------------------------------------ locks
    @contextlib.contextmanager
    def lock(self, key: str, blocking: bool = True) -> Iterator[bool]:
        """Hold ``key`` exclusively (compute-and-commit, gc, moving aside); yields False if
        ``blocking`` is False and another process holds it (see :mod:`curate.cache.locks`)."""
        with locks.exclusive(self._lock_path(key), blocking) as got:
            yield got

    def hold(self, key: str) -> None:
        """Take a shared lock on ``key`` until :meth:`release` (a running run's claim on it)."""
        if key not in self._held:
            locks.share(self._lock_path(key))
            self._held.add(key)

    def __del__(self) -> None:  # a dropped store (e.g. after curate.select) lets go of its keys
        with contextlib.suppress(Exception):
            self.release()

    def release(self) -> None:
        """Drop every shared hold this store took (the end of a run)."""
        for key in list(self._held):
            locks.unshare(self._lock_path(key))
        self._held.clear()

    def in_use(self, key: str) -> bool:
        """True when another process holds ``key`` (shared or exclusive)."""
        with self.lock(key, blocking=False) as got:
            return not got

    # ------------------------------------------------------------ verification
    def check(self, key: str, deep: bool | None = None) -> str | None:
        """Return None if entry ``key`` is intact, else a one-line description of the problem.

        Args:
            key: the entry.
            deep: checksum every file (True), only sizes (False), or checksum when the entry is
                at most ``verify_max_bytes`` (None, the default).
        """
        folder = self.root / key
        try:
            m = self.manifest(key)
        except (OSError, ValueError) as e:
            return f"unreadable manifest ({type(e).__name__})"
        files = m.get("checksums")
        if files is None:  # written by store format 1 (no checksums): at least it must open
            try:
                self._open(key)
            except (OSError, pa.ArrowInvalid) as e:
                return f"table.arrow unreadable ({str(e).splitlines()[0][:120]})"
            return None
        total = sum(f["size"] for f in files.values())
        if deep is None:
            deep = total <= self.verify_max_bytes
        for rel, f in files.items():
            p = folder / rel
            if not p.is_file():
                return f"{rel} is missing"
            if p.stat().st_size != f["size"]:
                return f"{rel} has {p.stat().st_size} bytes, manifest says {f['size']}"
        if deep:
            for rel, f in files.items():
                if file_checksum(folder / rel) != f["xxh3_128"]:
                    return f"{rel} checksum mismatch (content changed after commit)"
        return None

    def move_aside(self, key: str, problem: str) -> Path:
        """Move a damaged entry to ``.damaged/`` (never deleted blindly) and log it with its key."""
        dest = self.root / DAMAGED / f"{key}-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        dest.parent.mkdir(exist_ok=True)
        os.rename(self.root / key, dest)
        log.warning("cache entry %s is damaged (%s): moved aside to %s; it will be recomputed", key, problem, dest)
        return dest

    def verify(self, keys: list[str] | None = None, move: bool = True) -> list[dict]:
        """Checksum every (or the given) committed entry; damaged ones are moved aside when ``move``.

        Returns:
            One dict per entry: ``key``, ``status`` (``ok``/``damaged``/``in_use``), ``problem``.
        """
        out = []
        for key in keys if keys is not None else self.keys():
            problem = self.check(key, deep=True)
            status = "ok" if problem is None else "damaged"
            if problem is not None and move:
                with self.lock(key, blocking=False) as got:
                    if got and self.has(key):
                        self.move_aside(key, problem)
                    elif not got:
                        status = "in_use"
            out.append({"key": key, "status": status, "problem": problem})
        return out

    def keys(self) -> list[str]:
        """Committed entry keys (folders holding a manifest), sorted."""
        return sorted(p.parent.name for p in self.root.glob(f"*/{MANIFEST}") if not p.parent.name.startswith(("tmp-", ".")))

    # ------------------------------------------------------------ read and write
    def _open(self, key: str) -> pa.Table:
        with pa.memory_map(str(self.root / key / "table.arrow")) as source:
            return pa.ipc.open_file(source).read_all()

    def load_table(self, key: str) -> pa.Table:
        """The committed table, memory-mapped (no copy until touched); no verification."""
        return self._open(key)

    def touch(self, key: str) -> None:
        """Record a use of ``key`` (its folder's mtime is the "last use" of ``curate cache ls``)."""
        with contextlib.suppress(OSError):
            os.utime(self.root / key)

    def fetch(self, key: str) -> pa.Table | None:
        """Verified load: the table, or None when absent or damaged (a damaged entry is moved aside)."""
        if not self.has(key):
            return None
        problem = self.check(key)
        table = None
        if problem is None:
            try:
                table = self._open(key)
                m = self.manifest(key)
                if m.get("rows") is not None and m["rows"] != table.num_rows:
                    problem, table = f"table.arrow has {table.num_rows} rows, manifest says {m['rows']}", None
            except (OSError, pa.ArrowInvalid) as e:
                problem = f"table.arrow unreadable ({str(e).splitlines()[0][:120]})"
        if problem is None:
            self.touch(key)
            return table
        with self.lock(key):
            if self.has(key) and self.check(key) is not None:
                self.move_aside(key, problem)
        return None

    def get_or_compute(self, key: str, compute: Callable[[], pa.Table], meta: dict | None = None,
                       meta_fn: Callable[[], dict] | None = None) -> tuple[pa.Table, bool]:
        """Load ``key`` if cached and intact, else compute and commit it under the key's lock.

        A second process asking for the same key while the first computes waits for the lock
        and then reuses the first's committed result. The key stays held (shared) until
        :meth:`release`.

        Args:
            key: cache key.
            compute: returns the table to commit (it may write files to ``work_dir(key)/artifacts``).
            meta: extra manifest fields.
            meta_fn: called after ``compute`` for manifest fields known only then.

        Returns:
            (table, cached): the table (memory-mapped from the cache) and whether it was reused.
        """
        self.hold(key)  # shared from before the first look: gc cannot remove it under us
        table = self.fetch(key)
        if table is not None:
            return table, True
        with self.lock(key):
            table = self.fetch(key)  # another process may have committed it while we waited
            if table is not None:
                return table, True
            out = compute()
            self.commit(key, out, {**(meta or {}), **(meta_fn() if meta_fn else {})})
            return self._open(key), False

    def get_or_compute_batches(self, key: str, schema: pa.Schema, batches: Callable[[], Iterable[pa.RecordBatch]],
                               meta: dict | None = None) -> tuple[pa.Table, bool]:
        """:meth:`get_or_compute` for a table written batch by batch (never whole in memory).

        Args:
            key: cache key.
            schema: the table's schema.
            batches: returns the record batches to write, in order (called once, under the lock).
            meta: extra manifest fields.

        Returns:
            (table, cached): memory-mapped from the cache, and whether it was reused.
        """
        self.hold(key)
        table = self.fetch(key)
        if table is not None:
            return table, True
        with self.lock(key):
            table = self.fetch(key)
            if table is not None:
                return table, True
            self.commit_batches(key, schema, batches(), meta)
            return self._open(key), False

    def commit(self, key: str, table: pa.Table, meta: dict | None = None) -> None:
        """Atomically store ``table`` (+ the work dir's ``artifacts/``) under ``key``.

        A complete entry already under ``key`` (another process committed it first) is kept and
        this one discarded; a folder without a manifest is moved aside, never deleted.
        """
        def write(writer) -> int:
            writer.write_table(table, max_chunksize=65536)
            return len(table)

        self._commit(key, table.schema, write, meta)

    def commit_batches(self, key: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                       meta: dict | None = None) -> None:
        """:meth:`commit` of a table given as record batches, written one at a time (Arrow IPC,
        uncompressed), so memory holds one batch whatever the table's size."""
        def write(writer) -> int:
            n = 0
            for b in batches:
                writer.write_batch(b)
                n += b.num_rows
            return n

        self._commit(key, schema, write, meta)

    def _commit(self, key: str, schema: pa.Schema, write: Callable, meta: dict | None) -> None:
        with self.lock(key):
            if (self.root / key / MANIFEST).is_file():  # checked under the lock, not before it
                shutil.rmtree(self.work_dir(key), ignore_errors=True)
                return
            tmp = self.root / f"tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
            try:
                with pa.OSFile(str(tmp / "table.arrow"), "wb") as sink:
                    with pa.ipc.new_file(sink, schema) as writer:
                        n_rows = write(writer)
                staged = self.work_dir(key) / "artifacts"
                if staged.is_dir():
                    shutil.copytree(staged, tmp / "artifacts")
                manifest = {"key": key, "rows": n_rows, "columns": schema.names, "created": time.time(),
                            "store_format": STORE_FORMAT, "curate_version": _curate_version(),
                            **(meta or {}), "checksums": dir_files(tmp)}
                with open(tmp / MANIFEST, "w") as f:
                    f.write(json.dumps(manifest, indent=1, default=str))
                    f.flush()
                    os.fsync(f.fileno())
                dest = self.root / key
                if dest.exists():  # no manifest: a foreign or pre-atomic leftover, kept for inspection
                    self.move_aside(key, "folder without a manifest")
                os.rename(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(self.work_dir(key), ignore_errors=True)

    # ------------------------------------------------------------ runs (for gc)
    def record_run(self, output_dir: str | Path, keys: list[str], name: str | None = None) -> None:
        """Remember the keys the latest run writing ``output_dir`` used (gc keeps them)."""
        out = str(Path(output_dir).resolve())
        d = self.root / RUNS
        d.mkdir(exist_ok=True)
        rec = {"output_dir": out, "name": name, "keys": list(keys), "finished": time.time()}
        tmp = d / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, d / f"{stable_hash(out, 16)}.json")

    def runs(self) -> list[dict]:
        """The recorded latest run of each output dir."""
        out = []
        for p in sorted((self.root / RUNS).glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(p.read_text()))
        return out
