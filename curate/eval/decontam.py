"""Decontaminate a training pool against evaluation prompts: exact, MinHash and embedding neighbours.

A pool row is contaminated when its prompt (instruction, then input) matches an eval prompt
(AlpacaEval's ``selfinstruct`` prompts are the self-instruct-252 set, and Alpaca descends from
self-instruct seeds; docs/evaluation.md):

* ``exact``: equal after curate's exact-dedup normalisation (case, whitespace);
* ``minhash``: word 5-gram Jaccard >= ``minhash_threshold`` (LSH candidates from curate's MinHash
  band keys, then verified exactly, so no false positives);
* ``embedding``: cosine of all-MiniLM-L6-v2 prompt embeddings >= ``embed_threshold``.

Each removed row is reported with the first rule that caught it, so counts add up.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.score.rows import row_fields

log = logging.getLogger(__name__)


def pool_prompts(table: pa.Table) -> list[str]:
    f = row_fields(table)
    return [(a if not x.strip() else f"{a}\n{x}") if s else t
            for a, x, t, s in zip(f.instruction, f.input, f.text, f.structured)]


def _minhash_hits(pool: list[str], evals: list[str], threshold: float, num_perm: int = 128,
                  ngram: int = 5) -> np.ndarray:
    from curate.dedup.minhash_core import optimal_param, shingle_hashes, text_band_keys
    from curate.dedup.minhash_jaccard import pair_jaccard

    bands, rows = optimal_param(threshold, num_perm)
    texts = pa.array(list(pool) + list(evals), pa.string())
    keys, valid = text_band_keys(texts, num_perm=num_perm, bands=bands, rows=rows, ngram=ngram)
    n = len(pool)
    hit = np.zeros(n, dtype=bool)
    a_all, b_all = [], []
    for j in range(bands):
        ek = {int(k): i for i, k in enumerate(keys[n:, j]) if valid[n + i]}
        if not ek:
            continue
        col = keys[:n, j]
        m = np.flatnonzero(np.isin(col, np.fromiter(ek.keys(), dtype=np.uint64)) & valid[:n])
        a_all.append(m)
        b_all.append(np.array([n + ek[int(col[i])] for i in m], dtype=np.int64))
    if not a_all:
        return hit
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    if len(a) == 0:
        return hit
    sh, off = shingle_hashes(texts, ngram=ngram)
    jac = pair_jaccard(sh, off, a, b)
    hit[a[jac >= threshold]] = True
    return hit


def decontaminate(pool: pa.Table, eval_prompts: list[str], *, exact: bool = True, minhash_threshold: float | None = 0.5,
                  embed_threshold: float | None = 0.9, embedder: str | None = None, embed_backend: str = "onnx",
                  batch_size: int | None = None, show_progress: bool = False) -> tuple[np.ndarray, dict]:
    """Which pool rows to drop.

    Args:
        pool: canonical table.
        eval_prompts: prompts of every eval set.
        exact: drop exact (normalised) prompt matches (default True).
        minhash_threshold: word 5-gram Jaccard threshold (default 0.5; None = off).
        embed_threshold: MiniLM cosine threshold (default 0.9; None = off).
        embedder: embedding model (default all-MiniLM-L6-v2 from its package).
        embed_backend: ``"onnx"`` (default) or ``"sentence_transformers"`` (torch), as the
            ``embed`` stage's ``backend``.
        batch_size: embedding batch size (default None = the backend's default).
        show_progress: progress bars.

    Returns:
        ``(drop, report)``: (n,) bool mask; report with counts per rule (``exact``, ``minhash``,
        ``embedding``: rows caught first by that rule), ``n_pool``, ``n_eval_prompts``, ``dropped_ids``.
    """
    from curate.dedup.exact import normalize_for_exact

    prompts = pool_prompts(pool)
    n = len(prompts)
    drop = np.zeros(n, dtype=bool)
    counts = {}
    if exact:
        ev = {normalize_for_exact(p) for p in eval_prompts}
        m = np.array([normalize_for_exact(p) in ev for p in prompts], dtype=bool)
        counts["exact"] = int(m.sum())
        drop |= m
    if minhash_threshold is not None:
        m = _minhash_hits(prompts, eval_prompts, minhash_threshold) & ~drop
        counts["minhash"] = int(m.sum())
        drop |= m
    if embed_threshold is not None:
        from curate.embed.stage import Embed

        # fp32 on every CPU: an evaluation's pool (and so its committed unit records) must not
        # depend on whether the host has int8 dot products (the onnx default's choice, issue 33)
        enc = Embed(backend=embed_backend, model=embedder, batch_size=batch_size, show_progress=False,
                    precision="float32" if embed_backend == "onnx" else None)
        e_pool = enc.encode(prompts, show_progress=show_progress)
        e_eval = enc.encode(list(eval_prompts))
        best = np.full(n, -1.0, dtype=np.float32)
        for lo in range(0, n, 8192):
            best[lo:lo + 8192] = (e_pool[lo:lo + 8192] @ e_eval.T).max(axis=1)
        m = (best >= embed_threshold) & ~drop
        counts["embedding"] = int(m.sum())
        drop |= m
    ids = pool.column("id").to_pylist()
    report = {"n_pool": n, "n_eval_prompts": len(eval_prompts), "dropped": int(drop.sum()), "by_rule": counts,
              "params": {"exact": exact, "minhash_threshold": minhash_threshold, "embed_threshold": embed_threshold,
                         "embed_backend": embed_backend},
              "dropped_ids": [ids[i] for i in np.flatnonzero(drop)]}
    log.info("decontamination: %d of %d pool rows match an eval prompt (%s)", drop.sum(), n, counts)
    return drop, report
