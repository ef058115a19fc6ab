"""``minhash_dedup``: near-duplicate removal with MinHash-LSH and union-find.

Method: MinHash (Broder 1997, "On the resemblance and containment of documents") over word
n-gram (or character n-gram) shingles of datatrove-normalised text; LSH banding with b x r
chosen by minimising the weighted false-positive + false-negative area under the S-curve
(Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets", ch. 3; datasketch/text-dedup
``optimal_param``); connected components of all band collisions; optional exact-Jaccard check
of candidate pairs; deterministic keep rule. See docs/dedup.md.
"""
from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.registry import register
from curate.core.schema import ID
from curate.core.shards import active_executor
from curate.core.stage import EXECUTION_PARAMS, Selection, Selector, StageContext
from curate.dedup.minhash_clusters import take_rows
from curate.dedup.minhash_core import optimal_param
from curate.dedup.minhash_index import (
    MinHashIndex,
    index_for_against,
    reference_fingerprint,
    signature_params,
)
from curate.dedup.minhash_plan import MinHashPlan, plan_minhash
from curate.dedup.minhash_run import band_keys_of_rows, find_clusters

log = logging.getLogger(__name__)

_KEEP = re.compile(r"^(first|longest|highest:.+)$")
# Named parameter sets. FineWeb (Penedo et al. 2024; datatrove examples/fineweb.py and
# pipeline/dedup/minhash.py): word 5-grams of normalised text, 14 buckets x 8 hashes = 112
# permutations, every bucket collision is a duplicate (no exact-Jaccard check), one document kept
# per cluster; threshold is the S-curve's midpoint (1/14)^(1/8) ~ 0.72, unused once bands/rows
# are fixed. Differences that remain are in docs/pretraining.md (32-bit values, normalisation).
PRESETS: dict[str, dict] = {
    "fineweb": {"num_perm": 112, "bands": 14, "rows": 8, "ngram": 5, "threshold": 0.72,
                "check_false_positives": False, "keep": "first"},
}
# num_proc=None: both cores (all, up to 8) for the signatures from this much text on; below it a
# worker's start-up (spawn + imports, ~0.7 s, more on a loaded machine) costs more than it saves
# (64k instruction rows, 31 MB: 1.8x slower with 2 processes on the loaded 2-core machine).
AUTO_PARALLEL_BYTES = 256 * 2**20


@register
class MinHashDedup(Selector):
    """Drop rows whose text near-duplicates another row's (estimated Jaccard >= threshold).

    Args:
        threshold: Jaccard similarity t in (0, 1) above which two texts are duplicates
            (default 0.8). Sets the band choice and the exact check's cut.
        num_perm: MinHash permutations P (default 128).
        bands: LSH bands b; None (default) picks b and r by the FP/FN integral.
        rows: rows per band r; set together with ``bands`` (b * r <= num_perm).
        false_positive_weight: w_fp in the band optimiser (default 0.1).
        false_negative_weight: w_fn in the band optimiser (default 0.9). Recall-leaning: with
            (0.5, 0.5) and P=128 the curve passes t=0.8 at only 40% candidate probability
            (9 x 13); with (0.1, 0.9) it is 14 x 9 and 87%, and the exact check removes the
            extra candidates below t (benchmarks/results/minhash_quality.md).
        ngram: word n-gram length (default 5). Texts with fewer words get one shingle of all
            their words (so short instructions still dedup); empty texts get none.
        char_ngram: if an int, use character n-grams of that length instead of words
            (default None). NeMo Curator uses 24.
        ngram_unspaced: shingle length for rows holding characters of a script written without
            spaces (Chinese, Japanese, Thai, ...), where each such character is a word
            (:mod:`curate.core.text_units`); default 3: on 1,200 real Chinese/Japanese pairs it
            finds 88% of edited copies at t=0.8 (5: 76%) with no different paragraph above
            0.46 (docs/dedup.md "Languages"). None: ``ngram`` for every row.
        normalize: datatrove ``simplify_text``-style folding before shingling (default True).
        seed: seeds the permutations (default 42).
        check_false_positives: compute the exact Jaccard of candidate pairs and drop those
            below ``threshold`` before taking components (default True).
        keep: which row of a cluster survives: ``"first"`` (lowest input position),
            ``"longest"`` (most characters; ties first) or ``"highest:<column>"`` (largest
            value of a numeric column; NaN lowest; ties first). Default ``"first"``.
        against: path to a saved index (``MinHashIndex.save``) or a previous curate run's
            output dir; rows near-duplicating a row there are dropped as
            ``duplicate_of_curated`` with ``dup_of`` = that curated row's id. A row of the input
            with the same id and text as a reference row *is* that curated row (a refresh
            re-reads the whole pool): it is kept, and rows near-duplicating it are dropped as
            ``duplicate_of_curated``. The reference's content hash is part of the cache key.
            Default None.
        save_index: also write the kept rows' index (band keys, ids, texts) to the stage's
            artifact dir (default False: it copies the kept texts; ``against`` a run dir builds
            and caches the index on first use instead).
        backend: ``"rensa"`` (default) or ``"numpy"`` signatures (see ``minhash_signatures``).
        text_column: column to read (default ``"text"``).
        preset: a named parameter set (:data:`PRESETS`): ``"fineweb"`` is FineWeb's MinHash
            (112 permutations as 14 bands x 8 rows, word 5-grams, no exact check, keep first).
            Its values replace the defaults; setting one of its parameters to another value
            than the preset's is an error. Default None.
        batch_size: rows per signature shard (default 10,000; execution only; lowered when a
            shard of long documents would not fit ``memory_gb``).
        num_proc: processes computing signatures, this one included (default None: every core,
            up to 8, once the texts hold 256 MiB or more, else 1; execution only).
        memory_gb: bound in GiB on the step's resident memory, all processes together (default
            None: half of the machine's memory). The stage sizes its shards, band partitions
            and check batches to stay under it (:mod:`curate.dedup.minhash_plan`; ``curate
            plan`` prints the estimate) and refuses to start when the per-row part alone
            cannot fit. Execution only: the result is the same for every value.

    Work: signatures and band keys are written per shard to the stage's work folder, candidate
    pairs come from band files partitioned by key range, clusters from a union-find over the
    rows that have a link (:mod:`curate.dedup.minhash_run`); every phase runs through the
    installed shard executor (a Dask cluster under ``curate_flow(dask=True)``), and a killed
    run resumes from the last finished task.

    Extras in the Selection: ``dup_of`` (object, id of the kept row of the cluster, or None) and
    ``dup_cluster`` (int64 cluster id shared by every member, -1 for rows in no cluster).
    """

    name = "minhash_dedup"
    execution_params = EXECUTION_PARAMS + ("memory_gb",)  # same result for every bound: not in the key
    version = "3"  # 3: NFKD folding, unspaced-script characters are words (SHINGLE_HASH_VERSION 3)
    reasons = {
        "near_duplicate": "MinHash-LSH near-duplicate of a kept row of this input (dup_of names it)",
        "duplicate_of_curated": "near-duplicate of an already curated row in `against` (dup_of names it)",
    }

    def __init__(self, *, threshold: float = 0.8, num_perm: int = 128, bands: int | None = None,
                 rows: int | None = None, false_positive_weight: float = 0.1, false_negative_weight: float = 0.9,
                 ngram: int = 5, char_ngram: int | None = None, ngram_unspaced: int | None = 3,
                 normalize: bool = True, seed: int = 42,
                 check_false_positives: bool = True, keep: str = "first", against: str | None = None,
                 save_index: bool = False, backend: str = "rensa", text_column: str = "text",
                 preset: str | None = None, batch_size: int = 10_000, num_proc: int | None = None,
                 memory_gb: float | None = None):
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}")
            given = dict(threshold=threshold, num_perm=num_perm, bands=bands, rows=rows, ngram=ngram,
                         check_false_positives=check_false_positives, keep=keep)
            defaults = {k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()}
            for k, v in PRESETS[preset].items():
                if given[k] not in (defaults[k], v):
                    raise ValueError(f"{k}={given[k]!r} conflicts with preset={preset!r} ({k}={v!r})")
            threshold, num_perm, bands, rows, ngram = (PRESETS[preset].get(k, given[k]) for k in
                                                       ("threshold", "num_perm", "bands", "rows", "ngram"))
            check_false_positives, keep = PRESETS[preset]["check_false_positives"], PRESETS[preset]["keep"]
        def need(cond: bool, name: str, value, what: str) -> None:
            if not cond:
                raise ValueError(f"{name} must be {what}, got {value!r}")

        isint = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
        need(isinstance(threshold, (int, float)) and 0 < threshold < 1, "threshold", threshold, "in (0, 1)")
        need(isint(num_perm) and num_perm >= 1, "num_perm", num_perm, "a positive int")
        need((bands is None) == (rows is None), "bands/rows", (bands, rows), "both set or both None")
        if bands is not None:
            need(isint(bands) and bands >= 1, "bands", bands, "a positive int")
            need(isint(rows) and rows >= 1, "rows", rows, "a positive int")
            need(bands * rows <= num_perm, "bands*rows", bands * rows, f"<= num_perm ({num_perm})")
        for nm, w in (("false_positive_weight", false_positive_weight), ("false_negative_weight", false_negative_weight)):
            need(isinstance(w, (int, float)) and w >= 0, nm, w, "a number >= 0")
        need(isint(ngram) and ngram >= 1, "ngram", ngram, "a positive int")
        need(char_ngram is None or (isint(char_ngram) and char_ngram >= 1), "char_ngram", char_ngram,
             "None or a positive int")
        need(ngram_unspaced is None or (isint(ngram_unspaced) and ngram_unspaced >= 1), "ngram_unspaced",
             ngram_unspaced, "None or a positive int")
        need(isinstance(normalize, bool), "normalize", normalize, "true or false")
        need(isint(seed), "seed", seed, "an int")
        need(isinstance(check_false_positives, bool), "check_false_positives", check_false_positives, "true or false")
        need(isinstance(keep, str) and bool(_KEEP.match(keep)), "keep", keep, "'first', 'longest' or 'highest:<column>'")
        need(against is None or isinstance(against, (str, Path)), "against", against, "None or a path")
        need(isinstance(save_index, bool), "save_index", save_index, "true or false")
        need(backend in ("rensa", "numpy"), "backend", backend, "'rensa' or 'numpy'")
        need(isinstance(text_column, str), "text_column", text_column, "a column name")
        need(isint(batch_size) and batch_size >= 1, "batch_size", batch_size, "a positive int")
        need(num_proc is None or (isint(num_proc) and num_proc >= 1), "num_proc", num_proc, "None or a positive int")
        need(memory_gb is None or (isinstance(memory_gb, (int, float)) and not isinstance(memory_gb, bool)
                                   and memory_gb > 0), "memory_gb", memory_gb, "None or a number > 0")
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands = bands
        self.rows = rows
        self.false_positive_weight = false_positive_weight
        self.false_negative_weight = false_negative_weight
        self.ngram = ngram
        self.char_ngram = char_ngram
        self.ngram_unspaced = ngram_unspaced
        self.normalize = normalize
        self.seed = seed
        self.check_false_positives = check_false_positives
        self.keep = keep
        self.against = against
        self.save_index = save_index
        self.backend = backend
        self.text_column = text_column
        self.preset = preset
        self.batch_size = batch_size
        self.num_proc = num_proc
        self.memory_gb = memory_gb

    # -- helpers -----------------------------------------------------------------------------
    def required_columns(self) -> list[str]:
        """``text_column``, ``id`` (``dup_of`` names rows by it) and a ``keep="highest:<column>"`` column."""
        cols = [self.text_column, ID]
        if self.keep.startswith("highest:"):
            cols.append(self.keep.split(":", 1)[1])
        return cols

    def cache_params(self) -> dict:
        """Parameters plus ``against_content``: the content hash of the reference (not its path),
        so a reference re-curated in place reruns this stage instead of hitting a stale cache."""
        p = super().cache_params()
        if self.against is not None:
            p["against_content"] = reference_fingerprint(self.against)
        return p

    def band_shape(self) -> tuple[int, int]:
        """(bands, rows): the explicit ones, or the FP/FN-integral optimum."""
        if self.bands is not None:
            return self.bands, self.rows
        return optimal_param(float(self.threshold), int(self.num_perm), float(self.false_positive_weight),
                             float(self.false_negative_weight))

    def signature_params(self) -> dict:
        """Parameters an index must share with this stage to be comparable."""
        b, r = self.band_shape()
        return signature_params(num_perm=int(self.num_perm), bands=b, rows=r,
                                ngram=int(self.char_ngram or self.ngram),
                                shingle="char" if self.char_ngram else "word",
                                normalize=self.normalize, seed=int(self.seed), backend=self.backend,
                                ngram_unspaced=None if self.ngram_unspaced is None else int(self.ngram_unspaced))

    def processes(self, text_bytes: int) -> int:
        """Processes for the signatures: ``num_proc``, or (None) every core up to 8 from
        :data:`AUTO_PARALLEL_BYTES` of text on."""
        if self.num_proc is not None:
            return int(self.num_proc)
        return min(os.cpu_count() or 1, 8) if text_bytes >= AUTO_PARALLEL_BYTES else 1

    def plan(self, n_rows: int, text_bytes: int) -> MinHashPlan:
        """Shard, partition and batch sizes for ``memory_gb`` and the estimated peak memory and
        disk of running this stage on ``n_rows`` rows holding ``text_bytes`` bytes of text."""
        b, _ = self.band_shape()
        return plan_minhash(n_rows, text_bytes, bands=b, num_perm=int(self.num_perm), batch_size=int(self.batch_size),
                            num_proc=self.processes(text_bytes), memory_gb=self.memory_gb,
                            check=bool(self.check_false_positives))

    def estimate_resources(self, n_rows: int, text_bytes: int) -> dict:
        """What ``curate plan`` prints for this step: ``{"memory_gb", "disk_gb", ...}`` (see :meth:`plan`)."""
        return self.plan(n_rows, text_bytes).as_dict()

    def _priority_column(self, table: pa.Table) -> pa.ChunkedArray | None:
        if not self.keep.startswith("highest:"):
            return None
        col = self.keep.split(":", 1)[1]
        if col not in table.column_names:
            raise ValueError(f"keep={self.keep!r}: column {col!r} not in table; have {table.column_names}")
        arr = table.column(col)
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
            raise ValueError(f"keep={self.keep!r}: column {col!r} has type {arr.type}, expected numeric")
        return arr

    def _priority_of(self, table: pa.Table, texts, n_ref: int, same: np.ndarray):
        """``priority_of(nodes)`` for :func:`find_clusters`: the keep rule's value of each node
        (reference rows and input rows that are reference rows first: +inf)."""
        col = self._priority_column(table)

        def priority_of(nodes: np.ndarray) -> np.ndarray | None:
            rows = nodes[nodes >= n_ref] - n_ref
            if self.keep == "first":
                if not n_ref:
                    return None
                pr = np.zeros(len(rows))
            elif self.keep == "longest":
                pr = np.nan_to_num(pc.utf8_length(take_rows(texts, rows)).to_numpy(zero_copy_only=False)
                                   .astype(np.float64))
            else:
                pr = take_rows(col, rows).cast(pa.float64()).to_numpy(zero_copy_only=False)
            if n_ref:
                pr = np.concatenate([np.full(int((nodes < n_ref).sum()), np.inf), np.where(same[rows], np.inf, pr)])
            return pr

        return priority_of

    # -- the stage ---------------------------------------------------------------------------
    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        if self.text_column not in table.column_names:
            raise ValueError(f"text_column={self.text_column!r} not in table; have {table.column_names}")
        texts = table.column(self.text_column)  # chunked (memory-mapped from the cache): read a shard at a time
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise ValueError(f"text_column={self.text_column!r} has type {texts.type}, expected strings")
        self._priority_column(table)  # a bad keep column fails before any compute
        n = len(table)
        params = self.signature_params()
        b, r = params["bands"], params["rows"]
        text_bytes = int(pc.sum(pc.binary_length(texts)).as_py() or 0) if n else 0
        plan = self.plan(n, text_bytes)
        log.info("minhash_dedup: %d rows, threshold %.2f, %d bands x %d rows of %d perms; plan %s", n, self.threshold,
                 b, r, self.num_perm, plan.as_dict())
        idx, m, same = None, 0, np.zeros(n, dtype=bool)
        ref = {}
        if self.against is not None:
            idx = index_for_against(self.against, params, batch_size=int(self.batch_size), num_proc=plan.num_proc,
                                    show_progress=ctx.show_progress)
            m = len(idx)
        if m:
            same, in_input = _rows_in_reference(idx, np.array(table.column(ID).to_pylist(), dtype=object), texts)
            if self.check_false_positives and idx.texts is None:
                raise ValueError(f"against={str(self.against)!r}: index holds no texts, needed by "
                                 "check_false_positives=True; rebuild it with texts or set check_false_positives=false")
            # a reference row that is itself in the input stands in through its input copy
            ref = {"ref_keys": idx.keys, "ref_valid": idx.valid & ~in_input, "ref_texts": idx.texts}
        cl = find_clusters(texts, params, Path(ctx.work_dir), plan, threshold=float(self.threshold),
                           check=bool(self.check_false_positives), priority_of=self._priority_of(table, texts, m, same),
                           executor=active_executor(), show_progress=ctx.show_progress, **ref)
        # rows of the input in a cluster (every touched node is in one of >= 2 rows)
        new = cl.nodes >= m
        rows, lab, rep = cl.nodes[new] - m, cl.labels[new], cl.rep[new]
        dropped = rep != rows + m
        rep_is_curated = (rep < m) | same[np.clip(rep - m, 0, max(n - 1, 0))] if n else rep < m
        curated = dropped & rep_is_curated
        keep = np.ones(n, dtype=bool)
        keep[rows[dropped]] = False
        reason = np.full(n, None, dtype=object)
        reason[rows[dropped & ~curated]] = "near_duplicate"
        reason[rows[curated]] = "duplicate_of_curated"
        dup_of = np.full(n, None, dtype=object)
        in_ref = dropped & (rep < m)
        if in_ref.any():
            dup_of[rows[in_ref]] = idx.ids[rep[in_ref]]
        local = dropped & (rep >= m)
        if local.any():  # ids of the kept rows only: never every row's id as a Python string
            dup_of[rows[local]] = np.array(take_rows(table.column(ID), rep[local] - m).to_pylist(), dtype=object)
        cluster = np.full(n, -1, dtype=np.int64)
        if len(rows):
            cluster[rows] = np.unique(lab, return_inverse=True)[1]
        sizes = np.unique(cl.labels, return_counts=True)[1] if len(cl.labels) else np.zeros(1, np.int64)
        log.info("minhash_dedup: %d candidate links, %d clusters, %d near-duplicates, %d duplicates of curated rows, "
                 "largest cluster %d", cl.candidates, int(cluster.max() + 1) if n else 0,
                 int((dropped & ~curated).sum()), int(curated.sum()), int(sizes.max()))
        if self.save_index and ctx.artifact_dir is not None:
            kept = np.flatnonzero(keep)
            MinHashIndex(np.array(take_rows(table.column(ID), kept).to_pylist(), dtype=object),
                         band_keys_of_rows(cl, kept, b), cl.valid[kept], params, take_rows(texts, kept)).save(
                Path(ctx.artifact_dir) / "minhash_index")
        return Selection(keep=keep, reason=reason, extras={"dup_of": dup_of, "dup_cluster": cluster})


def _rows_in_reference(idx: MinHashIndex, ids: np.ndarray, texts) -> tuple[np.ndarray, np.ndarray]:
    """Input rows identical (same id, and same text when the index holds texts) to a reference row.

    Returns:
        ((n,) bool over the input rows, (m,) bool over the reference rows).
    """
    pos = {k: i for i, k in enumerate(idx.ids.tolist())}
    j = np.fromiter((pos.get(k, -1) for k in ids.tolist()), dtype=np.int64, count=len(ids))
    cand = np.flatnonzero(j >= 0)
    if len(cand) and idx.texts is not None:
        a = texts.take(pa.array(cand)).to_pylist()
        b = idx.texts.take(pa.array(j[cand])).to_pylist()
        cand = cand[np.fromiter((x == y for x, y in zip(a, b)), dtype=bool, count=len(cand))]
    same = np.zeros(len(ids), dtype=bool)
    same[cand] = True
    in_input = np.zeros(len(idx), dtype=bool)
    in_input[j[cand]] = True
    return same, in_input
