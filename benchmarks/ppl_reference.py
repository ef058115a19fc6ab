"""Recompute the shipped CCNet-style perplexity cut-offs (curate/assets/ppl_cutoffs_smollm2.json).

Steps:
  1. ``--build-reference DATA``: rebuild the reference corpus from DATA/instruct/dolly_15k.json
     (the ``input`` contexts: stripped, exact duplicates dropped, >= 200 characters, 1,000 drawn
     with numpy's default_rng(0)) into the run folder (``--record``: over the shipped
     curate/assets/ppl_reference_dolly_wiki.jsonl.gz; ``--reference`` any file). Without it the
     shipped corpus is read (and its hash checked against the cut-offs file).
  2. SmolLM2 ``ppl_text`` of every reference text through the ``perplexity`` stage itself
     (float32, 512 tokens), saved shard by shard under ``--work-dir``: a killed run resumes.
  3. The 30th / 60th percentiles, the per-text perplexities, the corpus hash and the model
     fingerprint written to ``--out`` (default runs/bench/ppl_reference/ppl_cutoffs_smollm2.json;
     ``--record``: over the shipped asset).

``--compare-dtype bfloat16 --compare-rows 64`` instead scores a seeded sample of the reference
texts with another dtype and reports how far those perplexities and buckets are from the
asset's (a ``ppl_text`` computed earlier with bf16 weights is bucketed as it is), written to
``ppl_buckets_<dtype>.json`` in the run folder (``--record``: benchmarks/results/).

Run in the background on a shared CPU:
  nice -n 10 .venv/bin/python benchmarks/ppl_reference.py --record > /tmp/ppl_reference.log 2>&1 &
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, output_dir

from curate.score.perplexity_bucket import (
    assets_dir,
    corpus_hash,
    cutoffs_spec,
    default_cutoffs_path,
    read_reference,
    reference_perplexities,
    write_reference,
)

log = logging.getLogger("benchmarks.ppl_reference")

REFERENCE_FILE = "ppl_reference_dolly_wiki.jsonl.gz"
MIN_CHARS = 200
N_REFERENCE = 1000
SEED = 0


def build_reference(data: Path, n: int = N_REFERENCE, seed: int = SEED, min_chars: int = MIN_CHARS) -> list[dict]:
    """Draw ``n`` distinct Dolly-15k contexts of at least ``min_chars`` characters (in file order)."""
    rows = json.loads((data / "instruct" / "dolly_15k.json").read_text())
    seen, cands = set(), []
    for i, r in enumerate(rows):
        t = (r.get("input") or "").strip()
        if len(t) >= min_chars and t not in seen:
            seen.add(t)
            cands.append({"dolly_index": i, "text": t})
    if len(cands) < n:
        raise ValueError(f"{data}: only {len(cands)} Dolly contexts of >= {min_chars} chars, asked for n={n}")
    pick = np.sort(np.random.default_rng(seed).choice(len(cands), n, replace=False))
    return [cands[i] for i in pick]


def compare_dtype(args) -> None:
    """Perplexities of ``--compare-rows`` seeded reference texts under ``--compare-dtype`` vs the asset."""
    from curate.score.perplexity_bucket import assign_buckets, load_cutoffs

    spec = load_cutoffs(args.out or default_cutoffs_path())  # the shipped cut-offs unless --out
    texts = [r["text"] for r in read_reference(args.reference or assets_dir() / REFERENCE_FILE)]
    idx = np.sort(np.random.default_rng(SEED).choice(len(texts), args.compare_rows, replace=False))
    sub = [texts[i] for i in idx]
    work = args.work_dir / f"compare-{corpus_hash(sub)[:16]}-L{args.max_length}-{args.compare_dtype}"
    t0 = time.time()
    got, settings = reference_perplexities(sub, work, max_length=args.max_length, dtype=args.compare_dtype)
    ref = np.array(spec["ppl"])[idx]
    rel = np.abs(got / ref - 1)
    flips = int((assign_buckets(got, spec["cutoffs"]) != assign_buckets(ref, spec["cutoffs"])).sum())
    # the cut-offs as the other dtype would have set them, scaled by the sample's median ratio
    out = {"dtype": args.compare_dtype, "resolved": settings, "n": len(idx), "seconds": round(time.time() - t0, 1),
           "rel_diff_median": float(np.median(rel)), "rel_diff_max": float(rel.max()),
           "ratio_median": float(np.median(got / ref)), "bucket_changes": flips,
           "spearman": float(np.corrcoef(np.argsort(np.argsort(got)), np.argsort(np.argsort(ref)))[0, 1])}
    path = output_dir(args) / f"ppl_buckets_{args.compare_dtype}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    log.info("%s", out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-reference", type=Path, default=None, metavar="DATA",
                    help="rebuild the reference corpus from DATA/instruct/dolly_15k.json")
    ap.add_argument("--reference", type=Path, default=None,
                    help="reference corpus (default the shipped one; --build-reference writes it to the run folder, "
                         "or over the shipped one with --record)")
    ap.add_argument("--out", type=Path, default=None,
                    help="cut-offs file (default the run folder's; --record: the shipped asset)")
    ap.add_argument("--work-dir", type=Path, default=Path("/tmp/curate_ppl_reference"))
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--source", default=None, help="describe another --reference corpus (default: the Dolly one)")
    ap.add_argument("--licence", default="CC BY-SA 3.0", help="the --reference corpus's licence")
    ap.add_argument("--compare-dtype", default=None, help="only compare the asset with this dtype's perplexities")
    ap.add_argument("--compare-rows", type=int, default=64)
    add_record_flag(ap)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.compare_dtype:
        compare_dtype(args)
        return
    # the shipped assets are read by every user's ppl_bucket stage: overwrite them only under --record
    shipped_ref = assets_dir() / REFERENCE_FILE
    if args.reference is None:
        fresh = args.build_reference is not None and not args.record
        args.reference = output_dir(args) / REFERENCE_FILE if fresh else shipped_ref
    if args.out is None:
        args.out = default_cutoffs_path() if args.record else output_dir(args) / default_cutoffs_path().name
    t0 = time.time()
    if args.build_reference is not None:
        rows = build_reference(args.build_reference)
        write_reference(rows, args.reference)
        log.info("wrote %d reference texts to %s", len(rows), args.reference)
    rows = read_reference(args.reference)
    texts = [r["text"] for r in rows]
    digest = corpus_hash(texts)
    if args.out.is_file():
        old = json.loads(args.out.read_text()).get("reference", {})
        if old.get("xxh3_128") not in (None, digest):
            log.warning("reference corpus hash %s differs from the one in %s (%s)", digest, args.out,
                            old.get("xxh3_128"))
    # the shard cache is only valid for this exact corpus and these settings
    work = args.work_dir / f"{digest[:16]}-L{args.max_length}-{args.dtype}"
    ppl, settings = reference_perplexities(texts, work, max_length=args.max_length, dtype=args.dtype)
    source = args.source or ("databricks-dolly-15k `context` (curate's dolly_15k.json `input`): mostly Wikipedia "
                             f"passages; stripped, exact duplicates dropped, >= {MIN_CHARS} chars, {N_REFERENCE} "
                             f"drawn with numpy default_rng({SEED})")
    reference = {"file": args.reference.name, "n": len(texts), "xxh3_128": digest, "source": source,
                 "licence": args.licence}
    spec = cutoffs_spec(ppl, settings, reference)
    args.out.write_text(json.dumps(spec, indent=1) + "\n")
    q = np.percentile(ppl, [10, 30, 50, 60, 90])
    log.info("cut-offs %s (p10 %.2f, p50 %.2f, p90 %.2f) over %d texts in %.0f s -> %s", spec["cutoffs"],
                 q[0], q[2], q[4], len(ppl), time.time() - t0, args.out)


if __name__ == "__main__":
    main()
