"""Semantic-dedup quality of ``semdedup`` against gold paraphrases and a reference tool's output.

1. QQP (gold duplicate clusters, a seeded subset of whole clusters): each row's predicted group is
   its kept representative (``dup_of``, or itself). Pairwise precision / recall / F1 over
   same-group pairs, and the adjusted Rand index, at several eps. Peer in the same run: the same
   rule with no k-means (one cluster: every pair compared, n^2/2 similarities), i.e. what the
   clustering costs in recall and what it saves in time.
2. MRPC test (labelled pairs with negatives): a pair is predicted duplicate when both sentences
   end with the same representative. Peer: thresholding the pair's own cosine at 1 - eps.
3. GPTeacher toolformer: keep-set overlap with the published outputs of another tool's
   similarity dedup at 0.9..0.6 (taken as eps = 1 - sim, and at the same keep ratio).

    python benchmarks/semdedup_quality.py [DATA_DIR] [--cache-dir DIR]

Embeddings: all-MiniLM-L6-v2, max_length 128 (cached by benchmarks/embed_cache.py).
Writes runs/bench/semdedup_quality/semdedup_quality.{md,json} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import (  # noqa: E402
    DEFAULT_CACHE,
    embed_cached,
    mrpc_pairs,
    qqp_subset,
    row_text,
    toolformer,
)
from results_io import add_record_flag, data_dir, write_results

EPS = (0.01, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3)


def groups(x, k, eps_list, seed=1234):
    """{eps: representative row of every row} from one SemDeDup scoring pass (M does not depend on eps)."""
    from curate.cluster.kmeans import KMeans
    from curate.dedup.semantic import resolve_representatives, semdedup_scores

    t0 = time.perf_counter()
    if k == 1:
        cid, dist = np.zeros(len(x), np.int64), 1 - x @ (x.mean(0) / np.linalg.norm(x.mean(0)))
    else:
        cid, dist = KMeans(k=k, seed=seed).fit_predict(x)
    m, match, order = semdedup_scores(x, cid, dist)
    secs = time.perf_counter() - t0
    return {e: resolve_representatives(m <= 1 - e, match, order) for e in eps_list}, secs


def pair_counts(labels):
    _, c = np.unique(labels, return_counts=True)
    return int((c * (c - 1) // 2).sum())


def pairwise_prf(gold, pred):
    both = pair_counts(gold.astype(np.int64) * (int(pred.max()) + 1) + pred)
    p_pairs, g_pairs = pair_counts(pred), pair_counts(gold)
    prec = both / p_pairs if p_pairs else float("nan")
    rec = both / g_pairs if g_pairs else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return prec, rec, f1


def prf(pred, gold):
    tp = int((pred & gold).sum())
    prec = tp / pred.sum() if pred.sum() else float("nan")
    rec = tp / gold.sum()
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0)


def main() -> None:
    from sklearn.metrics import adjusted_rand_score

    from curate.cluster.faiss_utils import default_k

    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    add_record_flag(ap)
    a = ap.parse_args()
    data, cache = Path(a.data), Path(a.cache_dir)
    res: dict = {}
    md = ["# SemDeDup quality", ""]

    # 1. QQP
    texts, gold = qqp_subset(data)
    x = embed_cached(texts, cache)
    k = default_k(len(x))
    g_km, t_km = groups(x, k, EPS)
    g_all, t_all = groups(x, 1, EPS)
    res["qqp"] = {"rows": len(x), "gold_clusters": int(len(np.unique(gold))), "k": k, "seconds_kmeans_semdedup": t_km,
                  "seconds_exhaustive": t_all, "by_eps": []}
    md += [f"## QQP: {len(x)} questions in {len(np.unique(gold))} gold clusters (seeded subset of whole clusters)", "",
           f"SemDeDup with k = {k} clusters ({t_km:.1f} s incl. k-means) vs the exhaustive peer, one cluster "
           f"({t_all:.1f} s): time ratio {t_km / t_all:.2f}.", "",
           "| eps | kept | P | R | F1 | ARI | exhaustive P | R | F1 | ARI | F1 ratio |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in EPS:
        p, r, f = pairwise_prf(gold, g_km[e])
        pa_, ra, fa = pairwise_prf(gold, g_all[e])
        ari, aria = adjusted_rand_score(gold, g_km[e]), adjusted_rand_score(gold, g_all[e])
        kept = int((g_km[e] == np.arange(len(x))).sum())
        res["qqp"]["by_eps"].append({"eps": e, "kept": kept, "precision": p, "recall": r, "f1": f, "ari": ari,
                                     "exhaustive": {"precision": pa_, "recall": ra, "f1": fa, "ari": aria}})
        md.append(f"| {e} | {kept} | {p:.3f} | {r:.3f} | {f:.3f} | {ari:.3f} | {pa_:.3f} | {ra:.3f} | {fa:.3f} | "
                  f"{aria:.3f} | {f / fa if fa else float('nan'):.3f} |")

    # 2. MRPC
    sents, pairs, lab = mrpc_pairs(data, "test")
    x = embed_cached(sents, cache)
    k = default_k(len(x))
    g_km, _ = groups(x, k, EPS)
    cos = np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]])
    gold = lab.astype(bool)
    res["mrpc"] = {"pairs": len(pairs), "positives": int(gold.sum()), "sentences": len(sents), "k": k, "by_eps": []}
    md += ["", f"## MRPC test: {len(pairs)} labelled pairs ({int(gold.sum())} paraphrases), {len(sents)} sentences, k = {k}",
           "", "| eps | SemDeDup P | R | F1 | pair-cosine peer P | R | F1 |", "|---|---|---|---|---|---|---|"]
    for e in EPS:
        pred = g_km[e][pairs[:, 0]] == g_km[e][pairs[:, 1]]
        p, r, f = prf(pred, gold)
        pp, rp, fp = prf(cos > 1 - e, gold)
        res["mrpc"]["by_eps"].append({"eps": e, "precision": p, "recall": r, "f1": f,
                                      "pair_cosine": {"precision": pp, "recall": rp, "f1": fp}})
        md.append(f"| {e} | {p:.3f} | {r:.3f} | {f:.3f} | {pp:.3f} | {rp:.3f} | {fp:.3f} |")

    # 3. toolformer reference outputs
    pool, refs = toolformer(data)
    x = embed_cached([row_text(r) for r in pool], cache)
    key = [(r["instruction"], r.get("input") or "", r["output"]) for r in pool]
    pos = {kk: i for i, kk in enumerate(key)}
    from curate.cluster.kmeans import KMeans
    from curate.dedup.semantic import semdedup_scores, threshold_for_ratio

    k = default_k(len(x))
    cid, dist = KMeans(k=k).fit_predict(x)
    m, _, _ = semdedup_scores(x, cid, dist)
    res["toolformer"] = {"pool": len(pool), "k": k, "by_ref": []}
    md += ["", f"## GPTeacher toolformer: keep-set overlap with the reference tool's outputs ({len(pool)} rows, k = {k})", "",
           "| reference | ref kept | matched in pool | rule | ours kept | Jaccard | ours in ref | ref in ours |",
           "|---|---|---|---|---|---|---|---|"]
    for s, ref in refs.items():
        ref_idx = {pos[kk] for kk in ((r["instruction"], r.get("input") or "", r["output"]) for r in ref) if kk in pos}
        ref_mask = np.zeros(len(pool), bool)
        ref_mask[list(ref_idx)] = True
        for rule, t in ((f"eps = {1 - float(s):.1f}", float(s)),
                        ("same keep ratio", threshold_for_ratio(m, len(ref) / len(pool)))):
            ours = m <= t
            inter = int((ours & ref_mask).sum())
            jac = inter / int((ours | ref_mask).sum())
            row = {"ref": s, "ref_kept": len(ref), "matched": len(ref_idx), "rule": rule, "ours_kept": int(ours.sum()),
                   "jaccard": jac, "ours_in_ref": inter / ours.sum(), "ref_in_ours": inter / max(ref_mask.sum(), 1)}
            res["toolformer"]["by_ref"].append(row)
            md.append(f"| sim{s} | {len(ref)} | {len(ref_idx)} | {rule} | {int(ours.sum())} | {jac:.3f} | "
                      f"{row['ours_in_ref']:.3f} | {row['ref_in_ours']:.3f} |")
    write_results("semdedup_quality", res, "\n".join(md))


if __name__ == "__main__":
    main()
