"""MinHash band keys on disk: per-shard sorted band files, and candidate pairs per band partition.

The in-memory LSH (:func:`curate.dedup.lsh.band_edges`) holds the (n, b) uint64 band keys of
every row and argsorts each band over all rows. At tens of millions of rows this module does the
same work out of core, in two phases that any shard executor can spread over processes or a
Dask cluster (:mod:`curate.dedup.phases`):

1. **Signatures** (:class:`SortedBandShard`, one task per row shard through
   :func:`curate.core.shards.map_shards`): a shard's texts -> band keys (``text_band_keys``) ->
   for every band, the keys of the rows that have a signature sorted ascending (stable, so equal
   keys keep row order), written next to the shard's checksummed ``.npz`` as two ``.npy`` files
   read back memory-mapped::

       <start:012d>-<stop:012d>.keys.npy   (b, m) uint64, each band's keys sorted
       <start:012d>-<stop:012d>.rows.npy   (b, m) uint32, the row (within the shard) of each key

2. **Band partitions** (:func:`band_partition_edges`, one task per band and key range): the
   rows of one band whose key falls in ``[lo, hi)`` are gathered from every shard's sorted file
   (two binary searches and one contiguous read per shard: a partition reads only its part),
   sorted by key (stable: rows stay in input order inside a bucket), and each row is linked to
   the next row of its bucket. Key ranges split every bucket's rows into the same partition, so
   the union of the partitions' links is exactly ``band_edges``' (same chains, same order).

Pages of a memory-mapped input are given back after each shard
(:func:`curate.cache.store.release_mapped_pages`), so resident memory does not grow with the
text. Peak memory of a partition task is about 48 bytes per row it holds; :func:`partitions_per_band`
picks how many key ranges a band needs for a memory bound.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.cache.store import release_mapped_pages
from curate.dedup.minhash_core import text_band_keys

_U64 = np.uint64
BAND_TASK_BYTES_PER_ROW = 96  # key 8 + row 8 gathered, argsort 8, sorted copies 16; 87-139 B measured (allocator)


def band_files(shards_dir: Path, start: int, stop: int) -> tuple[Path, Path]:
    """(keys, rows) file paths of the shard of rows [start, stop) in ``shards_dir``."""
    stem = Path(shards_dir) / f"{start:012d}-{stop:012d}"
    return stem.with_suffix(".keys.npy"), stem.with_suffix(".rows.npy")


def save_npy(path: Path, arr: np.ndarray) -> None:
    """Write ``arr`` to ``path`` (.npy) whole or not at all (temp file per process, then rename)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def write_sorted_bands(keys: np.ndarray, valid: np.ndarray, keys_path: Path, rows_path: Path) -> int:
    """Sort each band's keys of the valid rows and save them with their rows (see module docstring).

    Args:
        keys: (k, b) uint64 band keys of a shard's rows.
        valid: (k,) bool, rows with a signature (the others are left out).
        keys_path, rows_path: where the (b, m) keys and uint32 rows go.

    Returns:
        m, the number of valid rows written.
    """
    rows = np.flatnonzero(valid).astype(np.uint32)
    kv = np.ascontiguousarray(keys[rows].T)  # (b, m)
    order = np.argsort(kv, axis=1, kind="stable")
    save_npy(keys_path, np.take_along_axis(kv, order, axis=1))
    save_npy(rows_path, rows[order])
    return len(rows)


def check_band_files(keys_path: Path, rows_path: Path, bands: int, m: int) -> str | None:
    """None when both files hold (bands, m) arrays of the right types, else what is wrong."""
    for p, dt in ((keys_path, np.uint64), (rows_path, np.uint32)):
        try:
            a = np.load(p, mmap_mode="r")
        except (OSError, ValueError) as e:
            return f"{p.name} unreadable ({type(e).__name__})"
        if a.shape != (bands, m) or a.dtype != dt:
            return f"{p.name} holds {a.dtype} {a.shape}, expected {np.dtype(dt)} {(bands, m)}"
    return None


class SortedBandShard:
    """The shard function of phase 1: rows [start, stop) -> sorted band files + ``{"valid"}``.

    Args:
        texts: Arrow string array (or chunked) holding rows [offset, offset + len(texts)).
        kw: signature parameters (``minhash_index.SIGNATURE_PARAMS`` keys).
        shards_dir: the folder of :func:`curate.core.shards.map_shards`' shard files (as str).
        offset: row number of ``texts[0]`` (default 0; :meth:`for_rows` copies hold one shard).
    """

    def __init__(self, texts: pa.Array | pa.ChunkedArray, kw: dict[str, Any], shards_dir: str, offset: int = 0):
        self.texts = texts
        self.kw = kw
        self.shards_dir = str(shards_dir)
        self.offset = offset

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        part = self.texts.slice(start - self.offset, stop - start)
        keys, valid = text_band_keys(part, **self.kw)
        write_sorted_bands(keys, valid, *band_files(Path(self.shards_dir), start, stop))
        release_mapped_pages([part])  # a memory-mapped input does not stay resident shard after shard
        return {"valid": valid}

    def for_rows(self, start: int, stop: int) -> SortedBandShard:
        """The same function holding only rows [start, stop) (copied: a pickled slice may carry
        its whole parent buffers)."""
        part = self.texts.slice(start - self.offset, stop - start)
        copy = part.take(pa.array(np.arange(stop - start)))
        release_mapped_pages([part])
        return SortedBandShard(copy, self.kw, self.shards_dir, offset=start)


def key_ranges(k: int) -> list[tuple[int, int | None]]:
    """``k`` equal ranges of the uint64 key space as (lo, hi) ints; the last hi is None (2^64)."""
    bounds = [(p << 64) // k for p in range(k)] + [None]
    return list(itertools.pairwise(bounds))


def partitions_per_band(n_rows: int, budget_bytes: float) -> int:
    """Key ranges per band so that one partition task's rows fit ``budget_bytes`` (at least 1).

    Keys are well-mixed 64-bit hashes, so a range of 1/k of the key space holds ~n/k rows; the
    factor 1.25 leaves room for the fluctuation and for large buckets.
    """
    need = n_rows * BAND_TASK_BYTES_PER_ROW * 1.25
    return max(1, int(np.ceil(need / max(budget_bytes, 1.0))))


def band_partition_edges(arg: tuple) -> dict[str, np.ndarray]:
    """Phase 2 task: the bucket chains of one band's key range over every shard.

    Args:
        arg: ``(band, lo, hi, files, n_ref, n_nodes)``: band index; key range [lo, hi) as ints
            (hi None = 2^64); ``files`` = [(keys_path, rows_path, base)] in node order, where a
            file's row r is node ``base + r``; links whose both ends are below ``n_ref`` are
            dropped (rows of an already deduplicated reference); ``n_nodes`` bounds node ids.

    Returns:
        {"src", "dst"}: (e,) int64 links, src < dst, unique, sorted by (src, dst).
    """
    band, lo, hi, files, n_ref, n_nodes = arg
    lo_k = _U64(lo)
    ks, rs = [], []
    for kp, rp, base in files:
        keys = np.load(kp, mmap_mode="r")
        if keys.shape[1] == 0:
            continue
        col = keys[band]
        a = int(np.searchsorted(col, lo_k, side="left"))
        b = len(col) if hi is None else int(np.searchsorted(col, _U64(hi), side="left"))
        if b > a:
            ks.append(np.array(col[a:b]))
            rs.append(np.load(rp, mmap_mode="r")[band, a:b].astype(np.int64) + int(base))
    if not ks:
        return {"src": np.zeros(0, np.int64), "dst": np.zeros(0, np.int64)}
    k, r = np.concatenate(ks), np.concatenate(rs)
    del ks, rs
    # files come in node order and each is sorted by key with rows ascending inside a key, so a
    # stable sort keeps every bucket's rows ascending (as band_edges' stable argsort does)
    order = np.argsort(k, kind="stable")
    k = k[order]
    r = r[order]
    del order
    same = np.flatnonzero(k[1:] == k[:-1])
    src, dst = r[same], r[same + 1]
    if n_ref:
        new = dst >= n_ref  # src < dst: the link touches a new row iff dst does
        src, dst = src[new], dst[new]
    code = np.unique(src * np.int64(n_nodes) + dst)
    return {"src": code // n_nodes, "dst": code % n_nodes}
