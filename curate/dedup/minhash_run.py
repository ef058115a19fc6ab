"""The out-of-core driver of ``minhash_dedup``: five resumable phases, any executor.

:func:`find_clusters` runs, each phase through the installed shard executor (one Prefect/Dask
task per task under ``curate_flow(dask=True)`` or ``flows.dask_dedup``; a process pool for the
signatures with ``num_proc > 1``; else this process), with every result saved under
``<work_dir>/minhash/`` so a killed run resumes where it stopped:

1. signatures, one task per row shard -> per-shard sorted band files
   (:class:`curate.dedup.minhash_bands.SortedBandShard`);
2. candidate links, one task per band and key range
   (:func:`curate.dedup.minhash_bands.band_partition_edges`);
3. candidate components, one task (:func:`curate.dedup.minhash_clusters.components_task`);
4. with the exact check: one task per batch of components
   (:func:`curate.dedup.minhash_clusters.verify_task`), then the components of the links that
   passed;
5. the representative of every row in a cluster (:func:`curate.dedup.minhash_clusters.decide_task`).

What this process holds at once: the (n,) bool ``valid`` flags, one phase's task results, and
the touched nodes and links of phases 3-5 (their size grows with the near-duplicates, not with
n). Memory and disk per phase: :mod:`curate.dedup.minhash_plan`.

Nodes: rows of a reference index (``against``) are nodes ``0..n_ref-1``, input row i is node
``n_ref + i``; links between two reference rows are ignored.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.cache.store import release_mapped_pages
from curate.core.shards import map_shards, shard_path
from curate.dedup.minhash_bands import (
    SortedBandShard,
    band_files,
    band_partition_edges,
    check_band_files,
    key_ranges,
    write_sorted_bands,
)
from curate.dedup.minhash_clusters import (
    components_task,
    decide_task,
    text_getter,
    verify_batches,
    verify_task,
)
from curate.dedup.minhash_plan import MinHashPlan
from curate.dedup.phases import TaskList, run_phase

log = logging.getLogger(__name__)

SIGNATURE_KEYS = ("num_perm", "bands", "rows", "ngram", "shingle", "normalize", "seed", "backend", "ngram_unspaced")
PARALLEL_BANDS_ROWS = 2_000_000  # band tasks go to the process pool from this many rows (start-up pays)


@dataclass
class Clusters:
    """The result of :func:`find_clusters`.

    Attributes:
        nodes: (k,) int64 sorted nodes that are in a cluster of >= 2.
        labels: (k,) int64 the smallest node of each one's cluster.
        rep: (k,) int64 the node kept for each one's cluster.
        valid: (n,) bool input rows that have a signature.
        shards: [(start, stop)] of the signature shards; their band files are in ``shards_dir``.
        shards_dir: folder of the signature shards and band files.
        checked: candidate pairs the exact check compared (0 without the check).
        seconds: wall time of each phase.
        candidates: candidate links found by the bands (a pair linked in several bands counts
            once per band).
    """

    nodes: np.ndarray
    labels: np.ndarray
    rep: np.ndarray
    valid: np.ndarray
    shards: list
    shards_dir: Path
    checked: int = 0
    candidates: int = 0
    seconds: dict | None = None


def _executor_for(executor, num_proc: int):
    if executor is not None or num_proc <= 1:
        return executor
    from curate.core.parallel import ProcessShardExecutor
    from curate.dedup.lsh import warm_up

    return ProcessShardExecutor(num_proc, on_idle=warm_up)


def signatures(texts: pa.Array | pa.ChunkedArray, params: dict, work_dir: Path, plan: MinHashPlan, *,
               executor=None, show_progress: bool = False) -> tuple[np.ndarray, list, Path]:
    """Phase 1: sorted band files of every shard; returns ((n,) bool valid, shards, shards dir).

    A shard whose ``.npz`` is sound but whose band files are missing or damaged (a file removed
    or truncated after the shard finished) is recomputed.
    """
    n = len(texts)
    kw = {k: params[k] for k in SIGNATURE_KEYS}
    root = Path(work_dir) / "minhash" / f"sign-{plan.batch_rows}"
    shards_dir = root / "shards"
    fn = SortedBandShard(texts, kw, str(shards_dir))
    shards = [(a, min(a + plan.batch_rows, n)) for a in range(0, n, plan.batch_rows)]
    for attempt in range(2):
        valid = map_shards(root, n, fn, shard_size=plan.batch_rows, desc="minhash", show_progress=show_progress,
                           executor=_executor_for(executor, plan.num_proc))["valid"]
        bad = []
        for a, b in shards:
            problem = check_band_files(*band_files(shards_dir, a, b), params["bands"], int(valid[a:b].sum()))
            if problem is not None:
                bad.append((a, b, problem))
        if not bad:
            return valid, shards, shards_dir
        for a, b, problem in bad:
            log.warning("minhash: band files of rows [%d, %d) are damaged (%s): recomputing the shard", a, b, problem)
            p = shard_path(root, a, b)
            for f in (p, p.with_suffix(".sum.json")):
                f.unlink(missing_ok=True)
    raise RuntimeError(f"minhash: band files under {shards_dir} are still damaged after recomputing them")


def find_clusters(texts: pa.Array | pa.ChunkedArray, params: dict, work_dir: Path, plan: MinHashPlan, *,
                  threshold: float, check: bool, priority_of: Callable[[np.ndarray], np.ndarray | None],
                  ref_keys: np.ndarray | None = None, ref_valid: np.ndarray | None = None,
                  ref_texts: pa.Array | None = None, executor=None, show_progress: bool = False) -> Clusters:
    """Run the five phases (module docstring) over ``texts``.

    Args:
        texts: (n,) Arrow string array (chunked or not; memory-mapped is fine: a shard at a time
            is read).
        params: signature parameters (``MinHashDedup.signature_params()``).
        work_dir: the stage's scratch folder (kept after a kill; workers must see it).
        plan: sizes from :func:`curate.dedup.minhash_plan.plan_minhash`.
        threshold: Jaccard cut of the exact check.
        check: run the exact check.
        priority_of: ``priority_of(nodes)`` -> (k,) float64 priorities of sorted nodes (larger
            kept), or None to keep the lowest node.
        ref_keys: (m, b) uint64 band keys of a reference index (``against``), or None.
        ref_valid: (m,) bool reference rows that take part (with a signature, not in the input).
        ref_texts: the reference's texts (for the exact check), or None.
        executor: a shard executor for every phase (default None: this process, and a process
            pool of ``plan.num_proc`` for the signatures).
        show_progress: progress bar for the signatures (default False).

    Returns:
        :class:`Clusters`.
    """
    n = len(texts)
    n_ref = 0 if ref_keys is None else len(ref_keys)
    n_nodes = n_ref + n
    root = Path(work_dir) / "minhash"
    seconds, t0 = {}, time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        seconds[name] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()

    if n:
        valid, shards, shards_dir = signatures(texts, params, work_dir, plan, executor=executor,
                                               show_progress=show_progress)
    else:
        valid, shards, shards_dir = np.zeros(0, bool), [], root / "empty"
    files = [(str(k), str(r), n_ref + a) for a, b in shards for k, r in [band_files(shards_dir, a, b)]]
    if n_ref:
        ref_dir = root / "reference"
        ref_dir.mkdir(parents=True, exist_ok=True)
        kp, rp = band_files(ref_dir, 0, n_ref)
        write_sorted_bands(np.asarray(ref_keys), np.asarray(ref_valid, bool), kp, rp)
        files.insert(0, (str(kp), str(rp), 0))
    lap("signatures")
    tag = f"b{plan.batch_rows}-k{plan.partitions}"
    band_args = [(i, lo, hi, files, n_ref, n_nodes) for i in range(int(params["bands"]))
                 for lo, hi in key_ranges(plan.partitions)]
    band_ex = executor if executor is not None else _executor_for(None, plan.num_proc if n >= PARALLEL_BANDS_ROWS else 1)
    link_files = run_phase(root / f"bands-{tag}", TaskList(band_partition_edges, band_args), desc="minhash bands",
                           executor=band_ex, load=False)
    lap("bands")
    comp = run_phase(root / f"candidates-{tag}-l{plan.chunk_links}",
                     TaskList(components_task, [([str(p) for p in link_files], n_nodes, plan.chunk_links, check)]),
                     desc="minhash candidates", executor=executor)[0]
    lap("candidates")
    candidates, checked = int(comp["links"][0]), 0
    if check and len(comp["nodes"]):
        batches = verify_batches(comp["nodes"], comp["labels"], comp["src"], comp["dst"], plan.verify_rows)
        del comp
        text_of = text_getter(texts, ref_texts, n_ref)
        kw = {k: params[k] for k in ("ngram", "shingle", "normalize", "ngram_unspaced")}

        def make_arg(i: int) -> tuple:
            rows, pairs = batches[i]
            got = text_of(rows)  # a copy
            release_mapped_pages([texts] + ([ref_texts] if n_ref and ref_texts is not None else []))
            return rows, got, pairs, kw, float(threshold)

        vtag = f"{tag}-v{plan.verify_rows}"
        kept = run_phase(root / f"check-{vtag}", TaskList(verify_task, make_arg=make_arg, n=len(batches)),
                         desc="minhash check", executor=executor, load=False)
        del batches
        checked = sum(int(np.load(p)["checked"][0]) for p in kept)
        comp = run_phase(root / f"clusters-{vtag}-l{plan.chunk_links}",
                         TaskList(components_task, [([str(p) for p in kept], n_nodes, plan.chunk_links, False)]),
                         desc="minhash clusters", executor=executor)[0]
        log.info("minhash_dedup: exact Jaccard kept %d of %d candidate pairs", int(comp["links"][0]), checked)
        lap("check")
    nodes, labels = comp["nodes"], comp["labels"]
    del comp
    rep = run_phase(root / f"decide-{tag}-c{int(check)}-v{plan.verify_rows}",
                    TaskList(decide_task, [(nodes, labels, priority_of(nodes))]), desc="minhash decide",
                    executor=executor)[0]["rep"]
    lap("decide")
    log.info("minhash_dedup: phase seconds %s", seconds)
    return Clusters(nodes, labels, rep, valid, shards, shards_dir, checked=checked, candidates=candidates,
                    seconds=seconds)


def band_keys_of_rows(clusters: Clusters, rows: np.ndarray, bands: int) -> np.ndarray:
    """(len(rows), bands) uint64 band keys of input rows (sorted ascending), read back from the
    band files; rows without a signature get zeros (their ``valid`` flag is False)."""
    out = np.zeros((len(rows), bands), np.uint64)
    for a, b in clusters.shards:
        lo, hi = np.searchsorted(rows, a), np.searchsorted(rows, b)
        if lo == hi:
            continue
        kp, rp = band_files(clusters.shards_dir, a, b)
        keys, local = np.load(kp), np.load(rp).astype(np.int64)  # (b, m) each
        full = np.zeros((b - a, bands), np.uint64)
        for i in range(bands):
            full[local[i], i] = keys[i]
        out[lo:hi] = full[rows[lo:hi] - a]
    return out

