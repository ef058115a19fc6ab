"""How ``minhash_dedup`` splits its work for a memory bound, and what it will need (memory, disk).

:func:`plan_minhash` is called twice with the same inputs: by the stage before it computes
anything (it sizes the shards, band partitions and check batches from ``memory_gb``), and by
``curate plan`` (:func:`curate.engine.pipeline.plan`) to print the estimated peak memory and disk
of the step from the row count and the text's bytes, before any compute.

The model (peak resident memory, RSS, of all processes; constants measured on this project's
2-core machine with ``benchmarks/minhash_scale.py``: :data:`BASE_BYTES` directly, the others
fitted to the per-phase peaks of the 1M (two settings), 3M and 10M short-document runs in
docs/dedup.md, so the estimate matches those by construction; the 1M web-length run is the
out-of-sample check):

* fixed: the interpreter with numpy, pyarrow, rensa and scipy (:data:`BASE_BYTES`), and the pages
  of the memory-mapped input that RSS counts while they are read (:data:`MAPPED_BYTES`, at most
  the text's size);
* the largest of the phases, which never overlap (each phase's arrays are freed before the
  next; measured per phase, the 1.0-1.2 GiB of the 10M run's components phase is not added to
  its 0.9 GiB of decision arrays):

  - signatures: each extra worker process of ``num_proc`` (:data:`WORKER_BYTES`) and one shard
    per process, ~:data:`SHARD_BYTES_PER_TEXT_BYTE` per byte of its text plus rensa's
    Python-list digests (:data:`SHARD_BYTES_PER_ROW`);
  - a band partition: :data:`curate.dedup.minhash_bands.BAND_TASK_BYTES_PER_ROW` per row it holds;
  - components: :data:`curate.dedup.minhash_clusters.COMPONENT_BYTES_PER_NODE` per touched
    row (``2 * dup_fraction * n``) plus one chunk of links
    (:data:`curate.dedup.minhash_clusters.COMPONENT_BYTES_PER_LINK` each) merged at a time;
    links in all ~ ``dup_fraction * n * bands * LINK_SHARE`` (a near-duplicate at Jaccard
    0.8-0.9 shares 20-50% of the bands with its original at r = 8-9);
  - the exact check: one batch of components (at most the touched rows), its texts and
    shingles;
  - the decision: the (n,) arrays that the engine keeps (keep, reason, ``dup_of``,
    ``dup_cluster`` and their Arrow copies; :data:`ROW_BYTES` per row).

Disk (in the stage's work folder, removed when the step is committed): the sorted band files,
12 bytes per row and band, and the links (16 bytes each).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from curate.dedup.minhash_bands import BAND_TASK_BYTES_PER_ROW, partitions_per_band
from curate.dedup.minhash_clusters import COMPONENT_BYTES_PER_LINK, COMPONENT_BYTES_PER_NODE

GIB = 2**30
BASE_BYTES = 110 * 2**20  # interpreter + numpy + pyarrow + rensa + scipy + curate: 103 MiB RSS, measured
MAPPED_BYTES = 128 * 2**20  # resident pages of the memory-mapped input (RSS - anonymous: 104-175 MiB at 1M-10M)
WORKER_BYTES = 210 * 2**20  # one signature worker: its imports and what it keeps after its shards (fitted)
ROW_BYTES = 96  # decision arrays over n in the stage and the engine's Arrow copy (10M: 0.96 GiB after, measured)
SHARD_BYTES_PER_TEXT_BYTE = 14  # normalised buffer, token flags, starts/ends, n-gram hashes
SHARD_BYTES_PER_ROW = 128 * 4 * 3  # rensa digests as Python lists of 4,096 rows, per permutation
VERIFY_BYTES_PER_TEXT_BYTE = 18  # texts taken + shingle hashes + pair_jaccard's sort keys (fitted at 1M)
DEFAULT_DUP_FRACTION = 0.25  # planning only: rows assumed to have a near-duplicate
LINK_SHARE = 0.4  # share of the bands a near-duplicate collides in (planning only)
MIN_VERIFY_ROWS = 2_000


def default_memory_gb() -> float:
    """Half of this machine's physical memory, in GiB (the bound when ``memory_gb`` is None)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB / 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 8.0


@dataclass
class MinHashPlan:
    """What ``minhash_dedup`` will do for ``n_rows`` rows, and its estimated needs.

    Attributes:
        n_rows: input rows.
        batch_rows: rows per signature shard (``batch_size``, lowered when a shard would not fit).
        num_proc: processes computing signatures.
        partitions: key ranges per band (band tasks = bands * partitions).
        verify_rows: rows per batch of the exact check.
        chunk_links: candidate links merged into the components at once.
        memory_gb: estimated peak resident memory of the step, all processes, GiB.
        disk_gb: estimated peak disk in the work folder, GiB.
        phases_gb: each phase's estimated working set on top of the fixed part, GiB.
    """

    n_rows: int
    batch_rows: int
    num_proc: int
    partitions: int
    verify_rows: int
    chunk_links: int
    memory_gb: float
    disk_gb: float
    phases_gb: dict

    def as_dict(self) -> dict:
        """Plain dict (JSON-ready), rounded for display."""
        d = asdict(self)
        d["memory_gb"], d["disk_gb"] = round(self.memory_gb, 2), round(self.disk_gb, 2)
        d["phases_gb"] = {k: round(v, 3) for k, v in self.phases_gb.items()}
        return d


def plan_minhash(n_rows: int, text_bytes: int, *, bands: int, num_perm: int, batch_size: int, num_proc: int,
                 memory_gb: float | None, check: bool, dup_fraction: float = DEFAULT_DUP_FRACTION) -> MinHashPlan:
    """Shard, partition and batch sizes for a memory bound, and the estimated peak memory and disk.

    Args:
        n_rows: rows of the input.
        text_bytes: UTF-8 bytes of the text column over all rows.
        bands: LSH bands b.
        num_perm: permutations P.
        batch_size: requested rows per signature shard.
        num_proc: processes computing signatures (this one included).
        memory_gb: the bound, GiB (None: :func:`default_memory_gb`).
        check: the exact-Jaccard check runs (``check_false_positives``).
        dup_fraction: share of rows assumed to have a near-duplicate, for the link count
            (default 0.25, more than the 10-24% of the benchmarks).

    Returns:
        :class:`MinHashPlan`.

    Raises:
        ValueError: ``memory_gb`` cannot hold the fixed part and the per-row decision arrays, or
            the fixed part and the signature workers (the message says the least that would do).
    """
    budget = (memory_gb if memory_gb is not None else default_memory_gb()) * GIB
    n = max(int(n_rows), 0)
    avg = text_bytes / n if n else 0.0
    fixed = BASE_BYTES + min(MAPPED_BYTES, text_bytes)
    workers = WORKER_BYTES * (num_proc - 1)
    room = budget - fixed
    least = max(ROW_BYTES * n, workers) + 64 * 2**20
    if room <= least:
        raise ValueError(f"memory_gb={memory_gb!r} is too small for {n:,} rows: the stage needs at least "
                         f"{(fixed + least) / GIB:.2f} GiB (fixed part, signature workers and per-row "
                         f"decision arrays)")

    def shard_bytes(rows: int) -> float:
        return rows * (avg * SHARD_BYTES_PER_TEXT_BYTE + SHARD_BYTES_PER_ROW * num_perm / 128)

    batch = max(1, min(int(batch_size), n or 1))
    while batch > 256 and workers + shard_bytes(batch) * num_proc > room:  # a shard per process must fit
        batch //= 2
    partitions = partitions_per_band(n, room)
    verify_rows = max(MIN_VERIFY_ROWS, min(50_000, int(room / 2 / max(avg * VERIFY_BYTES_PER_TEXT_BYTE, 1.0))))
    links = dup_fraction * n * bands * LINK_SHARE
    forest = COMPONENT_BYTES_PER_NODE * 2 * dup_fraction * n
    chunk_links = int(max(1_000_000, min(links, (room - forest) / COMPONENT_BYTES_PER_LINK)))
    phases = {
        "signatures": workers + shard_bytes(batch) * num_proc,
        "bands": BAND_TASK_BYTES_PER_ROW * n / partitions,
        "components": forest + COMPONENT_BYTES_PER_LINK * min(links, chunk_links),
        "check": min(verify_rows, forest / COMPONENT_BYTES_PER_NODE) * avg * VERIFY_BYTES_PER_TEXT_BYTE
        if check else 0.0,
        "decision": ROW_BYTES * n,
    }
    peak = fixed + max(phases.values())
    disk = n * bands * 12 + links * 16 + n * 2  # band files, links, shard npz files
    return MinHashPlan(n_rows=n, batch_rows=batch, num_proc=num_proc, partitions=partitions, verify_rows=verify_rows,
                       chunk_links=chunk_links, memory_gb=peak / GIB, disk_gb=disk / GIB,
                       phases_gb={k: v / GIB for k, v in phases.items()})
