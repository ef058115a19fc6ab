"""The one resumable shard loop (:func:`map_shards`) and the executors that plug into it.

``map_shards(work_dir, n_rows, fn)`` splits rows ``[0, n_rows)`` into shards of ``shard_size``
rows and owns everything but the computing:

* the shard list and file names: rows ``[start, stop)`` are saved to
  ``<work_dir>/shards/<start:012d>-<stop:012d>.npz`` with a size + xxh3-128 sidecar
  (``.sum.json``), written whole or not at all (:func:`save_shard`);
* resuming: a sound finished shard is reused, a damaged one is moved to ``shards/damaged/`` and
  recomputed (:func:`load_shard`), so a killed run repeats only unfinished shards;
* the progress bar, and the output: each shard's arrays are copied to their rows as the shard
  arrives (one copy of the result in memory), so the output is the shards concatenated in row
  order whatever order they finished in.

An executor computes the unfinished shards. Its one method is::

    executor.run(fn, todo, desc) -> iterable of (shard, arrays or None)

``todo`` is the list of unfinished :class:`Shard` s ``(start, stop, path)`` in row order. The
executor computes each one as ``fn(start, stop)`` and saves it to ``path`` with
:func:`save_shard` (:func:`compute_shard` does both, and skips a shard already saved soundly),
then yields the shard as soon as it is saved, in any order, with its arrays when they are in
this process (``None``: ``map_shards`` reads the file back). A shard's error is raised from the
iteration. ``desc`` (the progress label) may name the executor's tasks.

Executors: ``None`` computes the shards here, in row order (:class:`LocalShardExecutor`);
``curate.core.parallel.ProcessShardExecutor`` spreads them over a spawn process pool;
``flows.shard_executor.PrefectShardExecutor`` submits one Prefect task per shard (on Dask under
``curate_flow(dask=True)``). A function sent to another process is pickled with its shard; when
``fn`` holds all rows' data it may define ``fn.for_rows(start, stop)``, a function equal to
``fn`` on rows ``[start, stop)`` that holds only their data, which is sent instead
(:func:`fn_for_rows`). The output equals the in-process run's as long as ``fn`` is deterministic
for a shard; worker processes must see ``work_dir``.

:func:`use_executor` installs an executor for the current context (a ``ContextVar``; none in
plain ``curate run``) and ``StageContext.map_shards`` passes :func:`active_executor` on. This
module imports nothing of Prefect.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

_ACTIVE: ContextVar = ContextVar("curate_shard_executor", default=None)

ShardFn = Callable[[int, int], dict[str, np.ndarray]]


class Shard(NamedTuple):
    """Rows ``[start, stop)`` of a :func:`map_shards` call and the file they are saved to."""

    start: int
    stop: int
    path: Path


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
    """The file of rows [start, stop): ``<work_dir>/shards/<start:012d>-<stop:012d>.npz``."""
    return Path(work_dir) / "shards" / f"{start:012d}-{stop:012d}.npz"


def fn_for_rows(fn: ShardFn, start: int, stop: int) -> ShardFn:
    """``fn`` to send to another process for rows [start, stop).

    Args:
        fn: the shard function of :func:`map_shards`.
        start: first row of the shard.
        stop: row after the last one.

    Returns:
        ``fn.for_rows(start, stop)`` when ``fn`` defines it (a function holding only these rows'
        data, so a task pickles one shard's bytes, not every row's), else ``fn`` itself.
    """
    for_rows = getattr(fn, "for_rows", None)
    return for_rows(start, stop) if for_rows is not None else fn


def compute_shard(fn: ShardFn, path: str, start: int, stop: int) -> str:
    """Compute one shard and save it atomically with its checksum (skipped when a sound copy
    exists; a damaged one is moved aside and recomputed); returns its path. What a shard task
    runs in another process."""
    p = Path(path)
    if p.exists() and load_shard(p) is not None:
        return str(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_shard(p, fn(start, stop))
    return str(p)


def load_finished_shard(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a shard that a task reported saved, checked against its checksum.

    Raises:
        RuntimeError: the file is damaged (moved aside by :func:`load_shard`): it was sound when
            its task returned, so something changed it since; a rerun recomputes it.
    """
    got = load_shard(Path(path))
    if got is None:
        raise RuntimeError(f"shard {path} was damaged after its task finished; rerun to recompute it")
    return got


def load_shards(paths: list[Path], finished: dict[Path, dict] | None = None) -> dict[str, np.ndarray]:
    """Concatenate shard files in ``paths`` order (for shard tasks run outside :func:`map_shards`).

    Args:
        paths: the shards' files, in row order.
        finished: arrays already loaded and checked, by path (not read again); default None.

    Returns:
        {name: array concatenated along axis 0} ({} when there is nothing).

    Raises:
        RuntimeError: a file is damaged (see :func:`load_finished_shard`).
    """
    finished = finished or {}
    parts = [finished[p] if p in finished else load_finished_shard(p) for p in paths]
    if not parts or not parts[0]:
        return {}
    return {k: np.concatenate([part[k] for part in parts], axis=0) for k in parts[0]}


def save_shard(path: Path, result: dict[str, np.ndarray]) -> None:
    """Write ``result`` to ``path`` (.npz) with a size + xxh3-128 sidecar (``.sum.json``).

    The shard appears (os.replace) only when whole; :func:`load_shard` checks it. Every shard of
    :func:`map_shards` is written this way, whichever executor computes it.
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


class LocalShardExecutor:
    """Computes the shards in this process, one after the other in row order (the default)."""

    def run(self, fn: ShardFn, todo: list[Shard], desc: str = "shards") -> Iterator[tuple[Shard, dict]]:
        """See the module docstring; yields every shard with its arrays."""
        for shard in todo:
            result = fn(shard.start, shard.stop)
            save_shard(shard.path, result)
            yield shard, result


class _RowOrder:
    """The output of :func:`map_shards`, filled as shards arrive: each shard is copied to its rows
    and dropped, so memory holds one copy of the result (not every shard plus their
    concatenation), in row order whatever order the shards finish in."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.arrays: dict[str, np.ndarray] | None = None

    def put(self, shard: Shard, part: dict[str, np.ndarray]) -> None:
        if self.arrays is None:  # names, dtypes and row shapes of the first shard to arrive
            self.arrays = {k: np.empty((self.n_rows, *np.shape(v)[1:]), np.asarray(v).dtype) for k, v in part.items()}
        for k, out in self.arrays.items():
            v = np.asarray(part[k])
            if v.ndim == 0 or len(v) != shard.stop - shard.start or v.shape[1:] != out.shape[1:]:
                raise ValueError(f"shard rows [{shard.start}, {shard.stop}): {k!r} has shape {v.shape}, expected "
                                 f"({shard.stop - shard.start}, {', '.join(map(str, out.shape[1:]))})")
            if v.dtype != out.dtype:  # promoted as np.concatenate would (e.g. longer strings)
                out = self.arrays[k] = out.astype(np.result_type(out.dtype, v.dtype))
            out[shard.start:shard.stop] = v


def map_shards(work_dir: Path, n_rows: int, fn: ShardFn, *, shard_size: int = 4096, desc: str = "shards",
               show_progress: bool = True, executor=None) -> dict[str, np.ndarray]:
    """Run ``fn(start, stop)`` over row shards of ``n_rows``; each result is saved under
    ``work_dir/shards/`` so a killed run resumes from the shards it finished.

    Args:
        work_dir: the stage's scratch folder (kept after a kill).
        n_rows: rows to cover (0: one empty shard ``[0, 0)``).
        fn: computes arrays for rows [start, stop); returns {name: array with first dim
            stop - start}, the same names and row shapes for every shard.
        shard_size: rows per shard (default 4096).
        desc: progress-bar label (default "shards").
        show_progress: draw a progress bar (default True).
        executor: computes the unfinished shards (``executor.run``, see the module docstring),
            e.g. in a process pool or one Prefect task per shard; None (default) computes them
            here, in row order.

    Returns:
        {name: (n_rows, ...) array, the shards' arrays in row order} ({} when ``fn`` returns {}).

    Raises:
        ValueError: ``shard_size`` < 1, ``n_rows`` < 0, or ``fn`` returned an array whose shape
            does not fit its shard.
        RuntimeError: a shard saved by another process was damaged before it was read back.
    """
    from tqdm.auto import tqdm

    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size!r}: need at least 1 row per shard")
    if n_rows < 0:
        raise ValueError(f"n_rows={n_rows!r}: need a row count >= 0")
    shards = [Shard(a, min(a + shard_size, n_rows), shard_path(work_dir, a, min(a + shard_size, n_rows)))
              for a in (range(0, n_rows, shard_size) or [0])]
    shards[0].path.parent.mkdir(parents=True, exist_ok=True)
    out = _RowOrder(n_rows)
    todo = []
    for s in shards:  # a sound finished shard is reused; a damaged one is moved aside and recomputed
        got = load_shard(s.path) if s.path.exists() else None
        if got is None:
            todo.append(s)
        else:
            out.put(s, got)
    if len(todo) < len(shards):
        log.info("%s: resuming, %d of %d shards already finished", desc, len(shards) - len(todo), len(shards))
    bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc=desc, disable=not show_progress, unit="shard")
    try:
        if todo:
            for shard, result in (executor or LocalShardExecutor()).run(fn, todo, desc):
                out.put(shard, result if result is not None else load_finished_shard(shard.path))
                bar.update()
    finally:
        bar.close()
    return out.arrays or {}
