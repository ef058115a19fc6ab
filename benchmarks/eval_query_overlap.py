"""How far the selection queries of an eval config are from its scored examples.

``curate eval`` refuses a split where a query is a scored row or has a scored example's prompt
(:func:`curate.eval.queries.check_disjoint`: exact match after lower-casing and collapsing
whitespace). This script shows the split from the outside, for docs: per query set, how many of
its rows share an id or a normalised prompt with a scored example of any set (both must be 0),
and the nearest scored prompt by character 5-gram Jaccard similarity (the shingles and exact
Jaccard of the MinHash dedup stage: :func:`curate.dedup.minhash_core.shingle_hashes`,
:func:`curate.dedup.minhash_jaccard.jaccard`), so a near-duplicate (a paraphrase with a changed
word) would show as a high maximum. Reads the data files only; no model.

Usage:
    CURATE_DATA=~/data/curate python benchmarks/eval_query_overlap.py configs/eval/alpaca_1k_wins.yaml
"""
from __future__ import annotations

import argparse
from itertools import pairwise

import numpy as np
import pyarrow as pa

from curate.dedup.minhash_core import shingle_hashes
from curate.dedup.minhash_jaccard import jaccard
from curate.eval.config import load_eval_config
from curate.eval.queries import build_sets
from curate.eval.sets import normalize_prompt

NGRAM = 5
NEAR = 0.5  # Jaccard at or above which a pair is counted as a near-duplicate


def shingle_sets(prompts: list[str]) -> list[np.ndarray]:
    """Each prompt's unique character ``NGRAM``-gram hashes, as the dedup stage shingles it."""
    h, off = shingle_hashes(pa.array(prompts, pa.string()), ngram=NGRAM, shingle="char")
    return [np.unique(h[a:b]) for a, b in pairwise(off)]


def overlap_rows(config) -> list[dict]:
    """One record per query set: sizes, shared ids/prompts, nearest-scored-prompt similarity.

    Args:
        config: an eval config (YAML path or dict, as :func:`curate.eval.config.load_eval_config`).
    """
    cfg = load_eval_config(config)
    sets, queries = build_sets(cfg.eval_sets)
    scored_ids = {i for s in sets for i in s.ids}
    scored_prompts = [p for s in sets for p in s.prompts()]
    scored_keys = {normalize_prompt(p) for p in scored_prompts}
    scored_sh = shingle_sets(scored_prompts)
    out = []
    for name, q in queries.items():
        prompts = q.prompts()
        best = np.array([max(jaccard(qs, s) for s in scored_sh) for qs in shingle_sets(prompts)])
        out.append({"set": name, "queries": len(q), "scored_all_sets": len(scored_prompts),
                    "shared_ids": sum(i in scored_ids for i in q.ids),
                    "shared_prompts": sum(normalize_prompt(p) in scored_keys for p in prompts),
                    "nearest_median": float(np.median(best)), "nearest_max": float(best.max()),
                    "near_duplicates": int((best >= NEAR).sum())})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="an eval config with selection queries")
    args = ap.parse_args(argv)
    print(f"| query set | queries | scored examples (all sets) | shared ids | shared prompts | "
          f"nearest scored prompt, {NGRAM}-gram Jaccard: median / max | queries with one >= {NEAR} |")
    print("|---|---|---|---|---|---|---|")
    for r in overlap_rows(args.config):
        print(f"| {r['set']} | {r['queries']} | {r['scored_all_sets']} | {r['shared_ids']} | {r['shared_prompts']} | "
              f"{r['nearest_median']:.2f} / {r['nearest_max']:.2f} | {r['near_duplicates']} |")


if __name__ == "__main__":
    main()
