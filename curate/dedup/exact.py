"""Exact duplicate removal on a normalised-text hash (as datatrove's ExactDedup / NeMo's ExactDuplicates).

Normalisation (``normalize=True``): Unicode NFKC, lowercase, whitespace runs collapsed to one
space, stripped. Two rows are duplicates when the 128-bit xxh3 hashes of their normalised
texts match. The first occurrence (input order) is kept; every later copy is dropped with
reason ``exact_duplicate`` and ``dup_of`` = the kept row's id.

Out of core and on Dask, as a hash shuffle (:mod:`curate.dedup.phases`): each row shard's
hashes are written sorted to the stage's work folder (one task per shard,
:class:`HashShard`), then each range of hash values is grouped from every shard's sorted file
(one task per range, :func:`hash_partition_dups`): inside a group of equal hashes the lowest
row is the first occurrence. Memory: one shard, or one range's hashes (~40 bytes a row), at a
time; the installed shard executor (a Dask cluster under ``curate_flow(dask=True)`` or
``flows.dask_dedup``) runs the tasks.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash

from curate.cache.store import release_mapped_pages
from curate.core.registry import register
from curate.core.schema import ID
from curate.core.shards import active_executor, map_shards
from curate.core.stage import Selection, Selector, StageContext
from curate.dedup.minhash_bands import key_ranges, save_npy
from curate.dedup.minhash_clusters import take_rows
from curate.dedup.phases import TaskList, run_phase

_WS = re.compile(r"\s+")


def normalize_for_exact(text: str) -> str:
    """NFKC, lowercase, collapse whitespace, strip: case/spacing variants hash alike."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_hashes(texts: list[str | None], normalize: bool = True) -> np.ndarray:
    """(n,) array of 128-bit digests as 16-byte ``bytes`` objects (None texts hash as "")."""
    out = np.empty(len(texts), dtype=object)
    for i, t in enumerate(texts):
        t = t or ""
        out[i] = xxhash.xxh3_128_digest((normalize_for_exact(t) if normalize else t).encode("utf-8"))
    return out


def hash_words(texts: list[str | None], normalize: bool = True) -> np.ndarray:
    """(n, 2) uint64: the 128-bit digests of :func:`text_hashes` as (high, low) words."""
    if not texts:
        return np.zeros((0, 2), np.uint64)
    return np.frombuffer(b"".join(text_hashes(texts, normalize)), dtype=">u8").astype(np.uint64).reshape(-1, 2)


def hash_files(shards_dir: Path, start: int, stop: int) -> tuple[Path, Path]:
    """(hashes, rows) files of the shard of rows [start, stop): (2, k) uint64 sorted, (k,) uint32."""
    stem = Path(shards_dir) / f"{start:012d}-{stop:012d}"
    return stem.with_suffix(".hash.npy"), stem.with_suffix(".rows.npy")


class HashShard:
    """Shard function of the hash phase: rows [start, stop) -> sorted hash files + ``{"n"}``.

    Args:
        texts: Arrow string array (or chunked) holding rows [offset, offset + len(texts)).
        normalize: hash the normalised text.
        shards_dir: folder of the shard files (as str).
        offset: row number of ``texts[0]`` (default 0).
    """

    def __init__(self, texts, normalize: bool, shards_dir: str, offset: int = 0):
        self.texts = texts
        self.normalize = normalize
        self.shards_dir = str(shards_dir)
        self.offset = offset

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        part = self.texts.slice(start - self.offset, stop - start)
        h = hash_words(part.to_pylist(), self.normalize)
        release_mapped_pages([part])
        order = np.lexsort((h[:, 1], h[:, 0]))  # by (high, low); stable: rows ascending inside a hash
        hp, rp = hash_files(Path(self.shards_dir), start, stop)
        save_npy(hp, np.ascontiguousarray(h[order].T))
        save_npy(rp, order.astype(np.uint32))
        return {"n": np.ones(stop - start, dtype=bool)}

    def for_rows(self, start: int, stop: int) -> HashShard:
        """Only rows [start, stop), copied (what a task pickles)."""
        part = self.texts.slice(start - self.offset, stop - start).take(pa.array(np.arange(stop - start)))
        return HashShard(part, self.normalize, self.shards_dir, offset=start)


def hash_partition_dups(arg: tuple) -> dict[str, np.ndarray]:
    """One range of hash values over every shard: each later copy and its first occurrence.

    Args:
        arg: ``(lo, hi, files)``: range [lo, hi) of the high hash word (hi None = 2^64) and
            [(hashes_path, rows_path, start)] in row order.

    Returns:
        {"dup": (d,) int64 rows that repeat an earlier row, "first": (d,) int64 that row}.
    """
    lo, hi, files = arg
    hs, rs = [], []
    for hp, rp, start in files:
        h = np.load(hp, mmap_mode="r")
        a = int(np.searchsorted(h[0], np.uint64(lo), side="left"))
        b = h.shape[1] if hi is None else int(np.searchsorted(h[0], np.uint64(hi), side="left"))
        if b > a:
            hs.append(np.array(h[:, a:b]))
            rs.append(np.load(rp, mmap_mode="r")[a:b].astype(np.int64) + int(start))
    if not hs:
        return {"dup": np.zeros(0, np.int64), "first": np.zeros(0, np.int64)}
    h, r = np.concatenate(hs, axis=1), np.concatenate(rs)
    order = np.lexsort((r, h[1], h[0]))
    h, r = h[:, order], r[order]
    head = np.r_[True, (h[0, 1:] != h[0, :-1]) | (h[1, 1:] != h[1, :-1])]
    first = np.maximum.accumulate(np.where(head, np.arange(len(r)), 0))  # index of each group's head
    return {"dup": r[~head], "first": r[first[~head]]}


@register
class ExactDedup(Selector):
    """Drop rows whose (normalised) text exactly repeats an earlier row's.

    Args:
        column: text column to hash (default ``"text"``).
        normalize: fold case, Unicode form and whitespace before hashing (default True).
        batch_size: rows per hash shard (default 100,000; execution only).
        num_proc: processes hashing shards, this one included (default 1; execution only).
    """

    name = "exact_dedup"
    reasons = {"exact_duplicate": "same normalised text as an earlier row (dup_of names it)"}

    def __init__(self, *, column: str = "text", normalize: bool = True, batch_size: int = 100_000, num_proc: int = 1):
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        for nm, v in (("batch_size", batch_size), ("num_proc", num_proc)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{nm} must be a positive int, got {v!r}")
        self.column = column
        self.normalize = normalize
        self.batch_size = batch_size
        self.num_proc = num_proc

    def required_columns(self) -> list[str]:
        return [self.column, ID]  # dup_of names the kept row by its id

    def estimate_resources(self, n_rows: int, text_bytes: int) -> dict:
        """Peak memory and disk for ``curate plan``: the interpreter with its imports (~110 MiB),
        one shard's texts as Python strings and their normalised copies (~2x their bytes, plus
        ~120 bytes of objects a row) per process, and ~40 bytes a row of hashes and decision
        arrays (one partition: all rows). Fitted to 1M 200-word documents (docs/dedup.md: 0.38
        GiB peak RSS measured)."""
        shard = min(int(self.batch_size), max(n_rows, 1))
        avg = text_bytes / n_rows if n_rows else 0.0
        mem = 110 * 2**20 + n_rows * 40 + shard * (2 * avg + 120) * max(int(self.num_proc), 1)
        return {"memory_gb": round(mem / 2**30, 2), "disk_gb": round(n_rows * 20 / 2**30, 2), "n_rows": n_rows}

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = table.column(self.column)
        n = len(texts)
        keep = np.ones(n, dtype=bool)
        dup_of = np.full(n, None, dtype=object)
        if n:
            batch = int(self.batch_size)
            root = Path(ctx.work_dir) / "exact" / f"hash-{batch}"
            shards_dir = root / "shards"
            executor = active_executor()
            if executor is None and int(self.num_proc) > 1:
                from curate.core.parallel import ProcessShardExecutor

                executor = ProcessShardExecutor(int(self.num_proc))
            map_shards(root, n, HashShard(texts, self.normalize, str(shards_dir)), shard_size=batch, desc="exact hash",
                       show_progress=ctx.show_progress, executor=executor)
            files = [(str(hp), str(rp), a) for a in range(0, n, batch)
                     for hp, rp in [hash_files(shards_dir, a, min(a + batch, n))]]
            k = max(1, n // 2_000_000)  # ~80 MB of hashes per range task
            parts = run_phase(Path(ctx.work_dir) / "exact" / f"groups-{batch}-{k}",
                              TaskList(hash_partition_dups, [(lo, hi, files) for lo, hi in key_ranges(k)]),
                              desc="exact groups", executor=active_executor())
            dup = np.concatenate([p["dup"] for p in parts])
            first = np.concatenate([p["first"] for p in parts])
            keep[dup] = False
            if len(dup):
                dup_of[dup] = np.array(take_rows(table.column(ID), first).to_pylist(), dtype=object)
        return Selection.keep_mask(keep, "exact_duplicate", dup_of=dup_of)
