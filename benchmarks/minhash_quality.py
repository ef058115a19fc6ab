"""Labelled near-duplicate benchmark for ``minhash_dedup`` built from real rows.

Corpus: all 59,646 dolly_15k + alpaca_44k rows (rendered canonical text) plus one perturbed
copy of ``--per-type`` disjoint source rows (>= 20 words, >= 2 sentences) for each perturbation:
case/whitespace, punctuation, 2% and 7% word typos, sentence shuffle, 10% and 30% truncation,
an Alpaca template wrapper, appended boilerplate. The perturbation is the pair's label.

Metrics, per perturbation type and overall, at thresholds 0.7 / 0.8 / 0.9:

* ``J>=t`` share: labelled pairs whose exact word-5-gram Jaccard (after normalisation) is >= t:
  the perturbations that keep Jaccard >= t.
* recall(label): labelled pairs that end in the same duplicate cluster.
* P / R / F1 (Jaccard truth): a predicted pair (two rows in one cluster) is correct when its
  exact Jaccard is >= t; the positives are the labelled pairs with J >= t plus every correct
  predicted pair (so natural near-duplicates of the real data count as found, not as errors).
  Recall is over the labelled J >= t pairs (unlabelled true pairs that were never predicted are
  unknowable without all-pairs Jaccard). Per type, precision uses the predicted pairs that
  contain that type's copies.

Configurations compared in the same run: curate's default (FP/FN weights 0.1/0.9, exact check
on), the same without the exact check, and the equal-weights band choice datasketch makes by
default (0.5/0.5, no check), which is what loses recall.

Usage: python benchmarks/minhash_quality.py [DATA] [--per-type 500] [--record]

Writes runs/bench/minhash_quality/minhash_quality.{md,json} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minhash_common import PERTURBATIONS, build_labelled, load_real_texts  # noqa: E402
from results_io import add_record_flag, data_dir, write_results

from curate.core.stage import StageContext  # noqa: E402
from curate.dedup.minhash import MinHashDedup  # noqa: E402
from curate.dedup.minhash_core import jaccard, optimal_param, shingle_hashes  # noqa: E402


class Sets:
    def __init__(self, corpus: list[str]):
        self.sh, self.off = shingle_hashes(pa.array(corpus, pa.string()), ngram=5)
        self.cache: dict[int, np.ndarray] = {}

    def j(self, a: int, b: int) -> float:
        return jaccard(self.sh[self.off[a]:self.off[a + 1]], self.sh[self.off[b]:self.off[b + 1]])


def evaluate(cluster: np.ndarray, pairs, pair_j: np.ndarray, sets: Sets, t: float, copy_type: dict[int, str]):
    members = defaultdict(list)
    for i in np.flatnonzero(cluster >= 0):
        members[int(cluster[i])].append(int(i))
    pred_ok = defaultdict(lambda: [0, 0])  # type -> [correct, total]; "all" overall
    biggest = 0
    for ms in members.values():
        biggest = max(biggest, len(ms))
        ms = ms[:200]  # all pairs of a cluster; clusters are small here (largest reported)
        for x in range(len(ms)):
            for y in range(x + 1, len(ms)):
                a, b = ms[x], ms[y]
                ok = sets.j(a, b) >= t
                for key in {"all", copy_type.get(a), copy_type.get(b)} - {None}:
                    pred_ok[key][0] += ok
                    pred_ok[key][1] += 1
    same = np.array([cluster[s] >= 0 and cluster[s] == cluster[c] for s, c, _ in pairs])
    types = np.array([p[2] for p in pairs])
    rows = []
    for name in list(PERTURBATIONS) + ["all"]:
        m = np.ones(len(pairs), bool) if name == "all" else types == name
        pos = m & (pair_j >= t)
        rec_label = same[m].mean()
        rec = same[pos].mean() if pos.any() else float("nan")
        c, tot = pred_ok[name]
        prec = c / tot if tot else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else float("nan")
        rows.append({"type": name, "pairs": int(m.sum()), "median_J": float(np.median(pair_j[m])),
                     "share_J_ge_t": float((pair_j[m] >= t).mean()), "recall_label": float(rec_label),
                     "precision": prec, "recall": rec, "f1": f1})
    return rows, biggest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--per-type", type=int, default=500)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.7, 0.8, 0.9])
    ap.add_argument("--num-perm", type=int, default=128)
    add_record_flag(ap)
    args = ap.parse_args()
    texts = load_real_texts(Path(args.data))
    corpus, pairs = build_labelled(texts, args.per_type)
    copy_type = {c: name for _, c, name in pairs}
    sets = Sets(corpus)
    pair_j = np.array([sets.j(s, c) for s, c, _ in pairs])
    table = pa.table({"id": [f"r{i}" for i in range(len(corpus))], "text": corpus})
    print(f"{len(corpus)} rows ({len(texts)} real + {len(pairs)} perturbed copies)")
    out, md = [], []
    for t in args.thresholds:
        b_eq, r_eq = optimal_param(t, args.num_perm, 0.5, 0.5)
        configs = {
            "curate default (w 0.1/0.9, exact check)": MinHashDedup(threshold=t, num_perm=args.num_perm, save_index=False),
            "curate, no exact check": MinHashDedup(threshold=t, num_perm=args.num_perm, check_false_positives=False,
                                                   save_index=False),
            f"equal weights {b_eq}x{r_eq} (datasketch default), no check": MinHashDedup(
                threshold=t, num_perm=args.num_perm, bands=b_eq, rows=r_eq, check_false_positives=False,
                save_index=False),
        }
        for label, st in configs.items():
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                sel = st.select(table, StageContext(work_dir=Path(d), show_progress=False))
                secs = time.perf_counter() - t0
            rows, biggest = evaluate(sel.extras["dup_cluster"], pairs, pair_j, sets, t, copy_type)
            b, r = st.band_shape()
            out.append({"threshold": t, "config": label, "bands": b, "rows": r, "seconds": secs,
                        "dropped": int((~sel.keep).sum()), "largest_cluster": biggest, "metrics": rows})
            md += [f"### t = {t}: {label} ({b} bands x {r} rows; {secs:.1f}s; {int((~sel.keep).sum()):,} rows "
                   f"dropped; largest cluster {biggest})", "",
                   "| perturbation | pairs | median J | share J>=t | recall (label) | precision | recall (J>=t) | F1 |",
                   "|---|---|---|---|---|---|---|---|"]
            md += [f"| {x['type']} | {x['pairs']} | {x['median_J']:.2f} | {x['share_J_ge_t']:.2f} | "
                   f"{x['recall_label']:.3f} | {x['precision']:.3f} | {x['recall']:.3f} | {x['f1']:.3f} |" for x in rows]
            md.append("")
            allrow = rows[-1]
            print(f"t={t} {label}: P={allrow['precision']:.3f} R={allrow['recall']:.3f} F1={allrow['f1']:.3f} "
                  f"recall(label)={allrow['recall_label']:.3f} ({secs:.1f}s)", flush=True)
    head = [f"## minhash_dedup on labelled perturbations of real rows ({len(texts):,} dolly+alpaca rows + "
            f"{len(pairs):,} perturbed copies, {args.per_type} per type; num_perm={args.num_perm}, word 5-grams)", ""]
    write_results("minhash_quality", out, "\n".join(head + md), indent=1)


if __name__ == "__main__":
    main()
