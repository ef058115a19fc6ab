"""Refit the shipped quality scorer on the canonical ``text`` and check it through ``curate.select``.

Why: the scorer used to embed CaR's "Instruction: … Response: …" string with torch MiniLM, so a
pool that already had an ``embedding`` column was embedded a second time. Refitted on the
canonical ``text`` with the ``embed`` stage's default backend, ``quality_model`` reuses the
pool's column (issue 12). Same recipe as before: features embedding + heuristics, logistic
regression on car_ape_score_train.csv (4,064 rows), C from the same grid by pairwise accuracy on
car_ape_pairs_valid.csv, test read once.

Check: pairwise accuracy on the 254 APE test pairs through the public API,
``curate.select(records, method="quality_model", model_path=...)``, for the previous asset (from
git, or ``--old``) and the new one, in the same run.

    python benchmarks/refit_quality_asset.py [DATA_DIR] [--save] [--old OLD.npz] [--record]

Writes runs/bench/refit_quality_asset/quality_asset.{md,json} (``--record``: benchmarks/results/).
``--save --record`` (or ``--save --force``) overwrites the shipped curate/assets/quality_car_ape.npz;
``--save`` alone is refused before any work.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir
from score_common import load_pairs, load_scores, pairwise_accuracy  # noqa: E402

from curate.score.quality_model import QualityModel, default_model_path  # noqa: E402

C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
log = logging.getLogger("refit")


def records(f) -> list[dict]:
    return [{"instruction": a, "input": x, "output": o} for a, x, o in zip(f.instruction, f.input, f.output)]


def select_accuracy(pos, neg, model_path: str) -> tuple[float, float]:
    """Pairwise accuracy of the ``quality`` column that curate.select writes; (accuracy, seconds)."""
    import curate

    recs = records(pos) + records(neg)
    t0 = time.perf_counter()
    ds = curate.select(recs, method="quality_model", model_path=model_path, schema="canonical")
    secs = time.perf_counter() - t0
    q = np.asarray(ds["quality"], dtype=np.float64)
    assert len(q) == len(recs)
    n = len(pos)
    return pairwise_accuracy(q[:n], q[n:]), secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--save", action="store_true", help="overwrite the shipped scorer (needs --record or --force)")
    ap.add_argument("--force", action="store_true", help="with --save: overwrite the shipped asset without --record")
    ap.add_argument("--old", type=Path, default=None, help="previous asset (default: the committed one, from git)")
    add_record_flag(ap)
    args = ap.parse_args()
    if args.force and not args.save:
        ap.error("--force only applies to --save")
    if args.save and not (args.record or args.force):
        # the shipped scorer sets every user's quality_model scores: refuse before minutes of fitting
        ap.error(f"--save would overwrite the shipped scorer {default_model_path().relative_to(REPO)}; "
                 "add --record (or --force) to do that on purpose")
    out = output_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    tmp = Path(tempfile.mkdtemp(prefix="refit-"))
    old = args.old
    if old is None:
        old = tmp / "old.npz"
        old.write_bytes(subprocess.run(["git", "show", "HEAD:curate/assets/quality_car_ape.npz"], cwd=REPO,
                                       check=True, capture_output=True).stdout)
    train_f, y = load_scores(args.data, "train")
    pv, nv = load_pairs(args.data, "valid")
    pt, nt = load_pairs(args.data, "test")
    base = QualityModel(features=("embedding", "heuristics"))  # embedding_text "text", embed defaults
    t0 = time.perf_counter()
    Xtr, Xpv, Xnv = base.featurize(train_f), base.featurize(pv), base.featurize(nv)
    feat_s = time.perf_counter() - t0
    grid = []
    for C in C_GRID:
        m = QualityModel(features=base.features, C=C).fit(Xtr, y)
        grid.append((pairwise_accuracy(m.decision(Xpv), m.decision(Xnv)), C))
    va, C = max(grid)
    new = QualityModel(features=base.features, C=C).fit(
        Xtr, y, info={"labels": "car_ape_score_train.csv", "layout": "rows", "n": len(y), "C_grid": list(C_GRID),
                      "valid": "car_ape_pairs_valid.csv", "valid_pairwise_accuracy": va,
                      "embedding_text": "text", "embed_params": base.resolved_embed_params()})
    new_path = new.save(tmp / "new.npz")
    acc_new, s_new = select_accuracy(pt, nt, str(new_path))
    acc_old, s_old = select_accuracy(pt, nt, str(old))
    new.info_["test_pairwise_accuracy_via_select"] = acc_new
    res = {"C": C, "valid_acc": va, "valid_grid": {str(c): a for a, c in grid}, "embed_params": base.resolved_embed_params(),
           "featurize_seconds_train_valid": feat_s, "test_acc_via_select": {"new": acc_new, "old": acc_old},
           "select_seconds": {"new": s_new, "old": s_old}, "test_pairs": len(pt.instruction)}
    if args.save:
        new.save(default_model_path())
        res["saved"] = str(default_model_path().relative_to(REPO))
    (out / "quality_asset.json").write_text(json.dumps(res, indent=2))
    md = ["# Shipped quality scorer: refit on the canonical text (reuses the pool's embedding column)", "",
          f"Features embedding + heuristics; embedder: MiniLM via the `embed` stage defaults "
          f"{base.resolved_embed_params()}; C = {C} (valid pairwise accuracy {100 * va:.1f}%).", "",
          "| scorer | APE test pairwise accuracy via `curate.select` (254 pairs) | select seconds (508 rows) |",
          "|---|---|---|",
          f"| previous asset (CaR string, torch MiniLM) | {100 * acc_old:.1f}% | {s_old:.1f} |",
          f"| refit asset (canonical text, embed defaults) | {100 * acc_new:.1f}% | {s_new:.1f} |", "",
          "95% interval at 254 pairs: about ±3.8 points."]
    (out / "quality_asset.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
