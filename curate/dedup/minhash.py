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
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import ID
from curate.core.stage import Selection, Selector, StageContext
from curate.dedup.lsh import band_edges, connected_components, representatives
from curate.dedup.minhash_core import optimal_param, pair_jaccard, shingle_hashes
from curate.dedup.minhash_index import (
    MinHashIndex,
    compute_band_keys,
    index_for_against,
    reference_fingerprint,
    signature_params,
)

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
_ALL_PAIRS_MAX = 64  # candidate clusters up to this size get all pairs checked, larger ones their LSH edges


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
        batch_size: rows per shard (default 10,000; execution only).
        num_proc: worker processes for signatures (default 1; execution only).

    Extras in the Selection: ``dup_of`` (object, id of the kept row of the cluster, or None) and
    ``dup_cluster`` (int64 cluster id shared by every member, -1 for rows in no cluster).
    """

    name = "minhash_dedup"
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
                 preset: str | None = None, batch_size: int = 10_000, num_proc: int = 1):
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
        need(isint(num_proc) and num_proc >= 1, "num_proc", num_proc, "a positive int")
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

    def _verify(self, src: np.ndarray, dst: np.ndarray, n_nodes: int, text_of, params: dict,
                batch_rows: int = 50_000):
        """Exact-Jaccard check: all pairs in small candidate clusters, LSH edges in large ones.

        Components are checked in batches of about ``batch_rows`` rows, so only one batch's
        texts and shingle sets are in memory at a time (all at once peaked at 7.6 GB for 1M rows).
        """
        lab = connected_components(n_nodes, src, dst)
        members = np.flatnonzero(np.bincount(lab, minlength=n_nodes)[lab] > 1)
        if len(members) == 0:
            return src, dst
        order = members[np.argsort(lab[members], kind="stable")]
        comps = np.split(order, np.flatnonzero(np.diff(lab[order])) + 1)
        kept_src, kept_dst, n_pairs = [], [], 0
        start = 0
        while start < len(comps):
            stop, size = start, 0
            while stop < len(comps) and (size == 0 or size + len(comps[stop]) <= batch_rows):
                size += len(comps[stop])
                stop += 1
            batch = comps[start:stop]
            start = stop
            rows = np.sort(np.concatenate(batch))
            sh, off = shingle_hashes(text_of(rows), ngram=params["ngram"], shingle=params["shingle"],
                                     normalize=params["normalize"], ngram_unspaced=params["ngram_unspaced"])
            pairs = []
            for comp in batch:
                if len(comp) <= _ALL_PAIRS_MAX:
                    i, j = np.triu_indices(len(comp), 1)
                    pairs.append(np.stack([comp[i], comp[j]], 1))
                else:
                    m = np.isin(src, comp)
                    pairs.append(np.stack([src[m], dst[m]], 1))
            pairs = np.concatenate(pairs)
            # rows is sorted, so searchsorted maps node ids to rows of (sh, off)
            sim = pair_jaccard(sh, off, np.searchsorted(rows, pairs[:, 0]), np.searchsorted(rows, pairs[:, 1]))
            ok = sim >= self.threshold
            kept_src.append(pairs[ok, 0])
            kept_dst.append(pairs[ok, 1])
            n_pairs += len(pairs)
        src, dst = np.concatenate(kept_src), np.concatenate(kept_dst)
        log.info("minhash_dedup: exact Jaccard kept %d of %d candidate pairs", len(src), n_pairs)
        return src, dst

    def _priority(self, table: pa.Table, texts: pa.Array) -> np.ndarray | None:
        if self.keep == "first":
            return None
        if self.keep == "longest":
            import pyarrow.compute as pc

            return np.nan_to_num(pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.float64))
        col = self.keep.split(":", 1)[1]
        if col not in table.column_names:
            raise ValueError(f"keep={self.keep!r}: column {col!r} not in table; have {table.column_names}")
        arr = table.column(col)
        if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type)):
            raise ValueError(f"keep={self.keep!r}: column {col!r} has type {arr.type}, expected numeric")
        return arr.cast(pa.float64()).to_numpy(zero_copy_only=False)

    # -- the stage ---------------------------------------------------------------------------
    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        if self.text_column not in table.column_names:
            raise ValueError(f"text_column={self.text_column!r} not in table; have {table.column_names}")
        texts = table.column(self.text_column)  # chunked: > 2 GiB of text cannot be one string array
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise ValueError(f"text_column={self.text_column!r} has type {texts.type}, expected strings")
        ids = np.array(table.column(ID).to_pylist(), dtype=object)
        n = len(ids)
        params = self.signature_params()
        b, r = params["bands"], params["rows"]
        log.info("minhash_dedup: %d rows, threshold %.2f, %d bands x %d rows of %d perms", n, self.threshold, b, r,
                 self.num_perm)
        keys, valid = compute_band_keys(texts, params, batch_size=int(self.batch_size), num_proc=int(self.num_proc),
                                        work_dir=ctx.work_dir, show_progress=ctx.show_progress)
        idx = None
        m = 0
        if self.against is not None:
            idx = index_for_against(self.against, params, batch_size=int(self.batch_size), num_proc=int(self.num_proc),
                                    show_progress=ctx.show_progress)
            m = len(idx)
        same = np.zeros(n, dtype=bool)
        if m:
            same, in_input = _rows_in_reference(idx, ids, texts)
        all_keys = np.concatenate([np.asarray(idx.keys), keys]) if m else keys
        # a reference row that is itself in the input stands in through its input copy
        all_valid = np.concatenate([idx.valid & ~in_input, valid]) if m else valid
        src, dst = band_edges(all_keys, all_valid)
        new_edge = (src >= m) | (dst >= m)  # curated rows are already deduplicated among themselves
        src, dst = src[new_edge], dst[new_edge]
        if self.check_false_positives and len(src):
            if m and idx.texts is None:
                raise ValueError(f"against={str(self.against)!r}: index holds no texts, needed by "
                                 "check_false_positives=True; rebuild it with texts or set check_false_positives=false")

            def text_of(nodes: np.ndarray) -> pa.Array:
                parts = [idx.texts.take(pa.array(nodes[nodes < m]))] if m else []
                parts.append(texts.take(pa.array(nodes[nodes >= m] - m)))
                chunks = [c.cast(pa.large_string()) for p in parts
                          for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
                return pa.chunked_array(chunks, pa.large_string()).combine_chunks()

            src, dst = self._verify(src, dst, m + n, text_of, params)
        labels = connected_components(m + n, src, dst)
        pr_new = self._priority(table, texts)
        if m:
            pr_new = np.zeros(n) if pr_new is None else pr_new
            pr = np.concatenate([np.full(m, np.inf), np.where(same, np.inf, pr_new)])  # curated rows win
        else:
            pr = pr_new
        rep = representatives(labels, pr)
        sizes = np.bincount(labels, minlength=m + n)
        node = np.arange(m, m + n)
        in_cluster = sizes[labels[node]] > 1
        rep_new = rep[node]
        dropped = in_cluster & (rep_new != node)
        rep_is_curated = (rep_new < m) | same[np.clip(rep_new - m, 0, max(n - 1, 0))] if n else rep_new < m
        curated = dropped & rep_is_curated
        reason = np.full(n, None, dtype=object)
        reason[dropped & ~curated] = "near_duplicate"
        reason[curated] = "duplicate_of_curated"
        dup_of = np.full(n, None, dtype=object)
        in_ref = dropped & (rep_new < m)
        if in_ref.any():
            dup_of[in_ref] = idx.ids[rep_new[in_ref]]
        local = dropped & (rep_new >= m)
        dup_of[local] = ids[rep_new[local] - m]
        cluster = np.full(n, -1, dtype=np.int64)
        if in_cluster.any():
            _, cid = np.unique(labels[node][in_cluster], return_inverse=True)
            cluster[in_cluster] = cid
        keep = ~dropped
        log.info("minhash_dedup: %d clusters, %d near-duplicates, %d duplicates of curated rows, largest cluster %d",
                 int(cluster.max() + 1) if n else 0, int((dropped & ~curated).sum()), int(curated.sum()),
                 int(sizes.max()) if len(sizes) else 0)
        if self.save_index and ctx.artifact_dir is not None:
            kept = np.flatnonzero(keep)
            MinHashIndex(ids[kept], keys[kept], valid[kept], params, texts.take(pa.array(kept))).save(
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
