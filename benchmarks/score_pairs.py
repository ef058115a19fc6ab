"""Pairwise accuracy of every curate score on CaR's expert-revised Alpaca pairs.

Task (Ge et al. 2024, CaR): for each instruction, pick the expert-revised response (``pos``) over
the original Alpaca response (``neg``). CaR's 550M IQS scorer reaches 84.25% on the test split.

For each score the direction (higher or lower is better) is chosen on the valid split; the test
split is scored once with that direction. The learned scorer (``quality_model``) is fitted on
car_ape_score_train.csv, its C tuned on valid pairs; ``--save-asset --record`` (or ``--force``)
overwrites the shipped default in curate/assets/. SmolLM2 scores (perplexity, IFD) run on a seeded random
subsample of pairs (``--lm-test-pairs``/``--lm-valid-pairs``) because a 2-core CPU scores only
~0.3 rows/s; every score is also reported on that same subsample for a like-for-like column.

Usage: python benchmarks/score_pairs.py [DATA_DIR] [--save-asset] [--record]

Writes runs/bench/score_pairs/score_pairs.{md,json} (``--record``: benchmarks/results/).
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
from score_common import CAR_ACC, lm_pairs, load_pairs, load_scores, pairwise_accuracy  # noqa: E402

from curate.score.heuristics import HEURISTIC_COLUMNS  # noqa: E402
from curate.score.quality_model import QualityModel, default_model_path  # noqa: E402

log = logging.getLogger("score_pairs")
GROUPS = ("embedding", "heuristics")
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def cached_features(name: str, fields, cache: Path) -> np.ndarray:
    path = cache / f"feat_{name}.npy"
    if path.exists():
        return np.load(path)
    X = QualityModel(features=GROUPS).featurize(fields, show_progress=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def columns_of(groups) -> np.ndarray:
    """Indices of the feature columns of ``groups`` inside the full embedding+heuristics matrix."""
    emb, heu = np.arange(384), 384 + np.arange(len(HEURISTIC_COLUMNS))
    return np.concatenate([emb if "embedding" in groups else [], heu if "heuristics" in groups else []]).astype(int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir())
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/curate_score_bench"))
    ap.add_argument("--lm-test-pairs", type=int, default=64)
    ap.add_argument("--lm-valid-pairs", type=int, default=40)
    ap.add_argument("--no-lm", action="store_true", help="skip the SmolLM2 scores")
    ap.add_argument("--save-asset", action="store_true",
                    help="overwrite the shipped scorer in curate/assets/ (needs --record or --force)")
    ap.add_argument("--force", action="store_true", help="with --save-asset: overwrite it without --record")
    add_record_flag(ap)
    args = ap.parse_args()
    if args.save_asset and not (args.record or args.force):
        ap.error(f"--save-asset would overwrite the shipped scorer {default_model_path()}; "
                 "add --record (or --force) to do that on purpose")
    out_dir = output_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.time()

    train_f, train_y = load_scores(args.data, "train")
    pv, nv = load_pairs(args.data, "valid")
    pt, nt = load_pairs(args.data, "test")
    Xtr = cached_features("train", train_f, args.cache_dir)
    Xpv, Xnv = cached_features("valid_pos", pv, args.cache_dir), cached_features("valid_neg", nv, args.cache_dir)
    Xpt, Xnt = cached_features("test_pos", pt, args.cache_dir), cached_features("test_neg", nt, args.cache_dir)

    # Per-pair scores: {name: (valid_pos, valid_neg, test_pos, test_neg)}, higher = "better" raw.
    scores: dict[str, tuple] = {}
    hidx = {c: 384 + j for j, c in enumerate(HEURISTIC_COLUMNS)}
    for c, j in hidx.items():
        scores[c] = (Xpv[:, j], Xnv[:, j], Xpt[:, j], Xnt[:, j])

    learned = {}
    for label, groups in (("quality (embedding+heuristics)", GROUPS), ("quality (embedding only)", ("embedding",)),
                          ("quality (heuristics only)", ("heuristics",))):
        cols = columns_of(groups)
        grid = []
        for C in C_GRID:
            m = QualityModel(features=groups, C=C).fit(Xtr[:, cols], train_y)
            grid.append((pairwise_accuracy(m.decision(Xpv[:, cols]), m.decision(Xnv[:, cols])), C))
        best_acc, best_C = max(grid)
        m = QualityModel(features=groups, C=best_C).fit(
            Xtr[:, cols], train_y, info={"labels": "car_ape_score_train.csv", "layout": "rows", "n": len(train_y),
                                        "C_grid": list(C_GRID), "valid": "car_ape_pairs_valid.csv",
                                        "valid_pairwise_accuracy": best_acc})
        scores[label] = (m.decision(Xpv[:, cols]), m.decision(Xnv[:, cols]),
                         m.decision(Xpt[:, cols]), m.decision(Xnt[:, cols]))
        learned[label] = {"C": best_C, "valid_grid": {str(C): a for a, C in grid}}
        if groups == GROUPS:
            shipped = m
    if args.save_asset:
        shipped.info_["test_pairwise_accuracy"] = pairwise_accuracy(*scores["quality (embedding+heuristics)"][2:])
        path = shipped.save(default_model_path())
        log.info("wrote %s (%d bytes)", path, path.stat().st_size)

    lm_sub = None
    if not args.no_lm:
        iv, lpv, lnv = lm_pairs(args.data, "valid", args.lm_valid_pairs, args.cache_dir)
        it, lpt, lnt = lm_pairs(args.data, "test", args.lm_test_pairs, args.cache_dir)
        lm_sub = (iv, it)
        with np.errstate(divide="ignore", invalid="ignore"):
            lm_scores = {
                "ppl_response": lambda d: np.exp(d["cond"]),
                "ppl_text": lambda d: np.exp(d["all"]),
                "ifd": lambda d: d["cond"] / d["uncond"],
                "ifd_loss_uncond (s(A))": lambda d: d["uncond"],
            }
            for name, fn in lm_scores.items():
                scores[name] = (fn(lpv), fn(lnv), fn(lpt), fn(lnt), "lm")

    rows = []
    for name, s in scores.items():
        is_lm = len(s) == 5
        vp, vn, tp, tn = s[:4]
        # Direction picked on valid only; the test split is read once with it.
        acc_hi = pairwise_accuracy(vp, vn)
        sign = 1.0 if acc_hi >= 0.5 else -1.0
        row = {"score": name, "better": "higher" if sign > 0 else "lower",
               "valid_acc": max(acc_hi, 1 - acc_hi), "n_valid_pairs": len(vp)}
        if is_lm:
            row["test_acc_subsample"] = pairwise_accuracy(sign * tp, sign * tn)
            row["test_acc"] = None
        else:
            row["test_acc"] = pairwise_accuracy(sign * tp, sign * tn)
            if lm_sub is not None:
                it = lm_sub[1]
                row["test_acc_subsample"] = pairwise_accuracy(sign * tp[it], sign * tn[it])
        row["n_test_pairs"] = len(tp)
        best = row["test_acc"] if row["test_acc"] is not None else row["test_acc_subsample"]
        row["vs_car_pts"] = 100 * (best - CAR_ACC)
        rows.append(row)
    meta = {"car_reference_acc": CAR_ACC, "lm_valid_pairs": None if lm_sub is None else len(lm_sub[0]),
            "lm_test_pairs": None if lm_sub is None else len(lm_sub[1]), "learned": learned,
            "seconds": time.time() - t0}
    (out_dir / "score_pairs.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    n_sub = "-" if lm_sub is None else len(lm_sub[1])
    lines = [f"Pairwise accuracy, CaR APE pairs (pick expert-revised over original). CaR IQS (550M): "
             f"{100 * CAR_ACC:.2f}% on test. Direction chosen on valid. LM scores on a seeded sample of "
             f"{n_sub} test pairs; `test (LM sample)` gives every score on those same pairs.", "",
             "| score | better | valid acc | test acc (254 pairs) | test (LM sample) | vs CaR (pts) |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for r in sorted(rows, key=lambda r: -(r["test_acc"] if r["test_acc"] is not None else r["test_acc_subsample"])):
        lines.append(f"| {r['score']} | {r['better']} | {fmt(r['valid_acc'])} ({r['n_valid_pairs']}) | "
                     f"{fmt(r['test_acc'])} | {fmt(r.get('test_acc_subsample'))} | {r['vs_car_pts']:+.1f} |")
    lines += ["", "Learned scorer C (tuned on valid): " + ", ".join(f"{k}: C={v['C']}" for k, v in learned.items())]
    (out_dir / "score_pairs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
