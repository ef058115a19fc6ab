"""AUC of the whole-text scores against DCLM's human quality labels (web text, label 1 = good).

Scores: SmolLM2 ``ppl_text`` (on a seeded random sample, ``--lm-rows``, because a 2-core CPU
scores few long web pages per second), every ``h_*`` heuristic, and the shipped learned scorer
``quality`` (fitted on instruction data, so out of domain here). No tuning is done on DCLM: a
score's direction is fixed beforehand (lower perplexity = better; heuristics are reported
as raw AUC, where < 0.5 means lower values go with good text); AUC ``max(a, 1-a)`` would
select the direction on the test data itself, so it is not reported.

Usage: python benchmarks/score_dclm.py [DATA_DIR] [--record]

Writes runs/bench/score_dclm/score_dclm.{md,json} (``--record``: benchmarks/results/).
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
from results_io import add_record_flag, data_dir, output_dir
from score_common import auc, lm_losses, load_dclm, pair_sample, subset  # noqa: E402

from curate.score.heuristics import HEURISTIC_COLUMNS, heuristics_matrix  # noqa: E402
from curate.score.quality_model import QualityModel, default_model_path  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir())
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/curate_score_bench"))
    ap.add_argument("--lm-rows", type=int, default=60, help="agreement rows scored by SmolLM2 (seeded sample)")
    ap.add_argument("--no-quality", action="store_true", help="skip the learned scorer (MiniLM embeddings)")
    add_record_flag(ap)
    args = ap.parse_args()
    out_dir = output_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.time()
    results = {}
    for name in ("agreement", "majority"):
        f, y = load_dclm(args.data, name)
        H = heuristics_matrix(f.text)
        res = {c: auc(H[:, j], y) for j, c in enumerate(HEURISTIC_COLUMNS)}
        if not args.no_quality:
            qpath = args.cache_dir / f"dclm_{name}_quality.npy"  # MiniLM on 780 pages is minutes on a CPU
            if qpath.exists():
                q = np.load(qpath)
            else:
                q = QualityModel.load(default_model_path()).score(f)
                args.cache_dir.mkdir(parents=True, exist_ok=True)
                np.save(qpath, q)
            res["quality"] = auc(q, y)
        res["_n"] = len(y)
        res["_pos"] = int(y.sum())
        if name == "agreement" and args.lm_rows:
            idx = pair_sample(len(y), args.lm_rows)
            out = lm_losses(subset(f, idx), args.cache_dir / f"dclm_agreement_n{len(idx)}")
            res["-ppl_text (LM sample)"] = auc(-np.exp(out["all"]), y[idx])
            res["_lm_n"] = len(idx)
            for j, c in enumerate(HEURISTIC_COLUMNS):
                res[f"{c} (LM sample)"] = auc(H[idx, j], y[idx])
            if "quality" in res:
                res["quality (LM sample)"] = auc(q[idx], y[idx])
        results[name] = res
    (out_dir / "score_dclm.json").write_text(json.dumps({"results": results, "seconds": time.time() - t0}, indent=2))
    a, m = results["agreement"], results["majority"]
    lines = [f"AUC against DCLM human quality labels (agreement: {a['_n']} rows, {a['_pos']} good; majority: "
             f"{m['_n']} rows, {m['_pos']} good). 0.5 = chance; < 0.5 = lower values go with good text.", "",
             "| score | AUC agreement | AUC majority | AUC on LM sample |", "|---|---|---|---|"]
    keys = [k for k in a if not k.startswith("_") and "(LM sample)" not in k]
    if "-ppl_text (LM sample)" in a:
        lines.append(f"| -ppl_text (SmolLM2) | - | - | {a['-ppl_text (LM sample)']:.3f} (n={a['_lm_n']}) |")
    for k in sorted(keys, key=lambda k: -abs(a[k] - 0.5)):
        lm = a.get(f"{k} (LM sample)")
        lines.append(f"| {k} | {a[k]:.3f} | {m[k]:.3f} | {'-' if lm is None else f'{lm:.3f}'} |")
    (out_dir / "score_dclm.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
