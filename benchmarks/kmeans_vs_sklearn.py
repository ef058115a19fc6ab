"""FAISS k-means (the ``kmeans`` stage's engine) vs scikit-learn KMeans / MiniBatchKMeans.

Same real embeddings (all-MiniLM-L6-v2 of a seeded alpaca_44k subset, L2-normalised), same k
(CaR's floor(sqrt(n/2))), same iteration cap, one initialisation each, in one run. Inertia is
computed the same way for all (sum of squared Euclidean distances of every row to its nearest
centroid), so the ratio is comparable; FAISS runs plain L2 k-means here (``spherical=False``)
to match scikit-learn's objective, plus the spherical variant the stage uses by default.

    python benchmarks/kmeans_vs_sklearn.py [DATA_DIR] [--cache-dir DIR] [--niter 25]

Writes runs/bench/kmeans_vs_sklearn/kmeans_vs_sklearn.{md,json}
(``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import DEFAULT_CACHE, alpaca_texts, embed_cached  # noqa: E402
from results_io import add_record_flag, data_dir, output_dir


def main() -> None:
    from sklearn.cluster import KMeans as SKKMeans
    from sklearn.cluster import MiniBatchKMeans

    from curate.cluster.faiss_utils import assign, default_k, inertia, train_kmeans

    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--niter", type=int, default=25)
    ap.add_argument("--seed", type=int, default=1234)
    add_record_flag(ap)
    a = ap.parse_args()
    out_dir = output_dir(a)
    _, texts = alpaca_texts(Path(a.data))
    x = embed_cached(texts, Path(a.cache_dir))
    n, d = x.shape
    k = default_k(n)
    rows = []

    def record(name, fn, spherical=False):
        t0 = time.perf_counter()
        c = fn()
        secs = time.perf_counter() - t0
        lab, _ = assign(x, c, spherical=spherical)
        # partition inertia: squared distances to the mean of each assigned group, so unit-norm
        # spherical centroids are judged on the partition they induce, like the L2 methods
        means = np.zeros_like(c, dtype=np.float64)
        np.add.at(means, lab, x)
        means /= np.maximum(np.bincount(lab, minlength=len(c)), 1)[:, None]
        rows.append({"method": name, "seconds": secs, "inertia": inertia(x, c, lab),
                     "partition_inertia": inertia(x, means, lab)})

    big = 10 ** 9  # train FAISS on every row, as scikit-learn does
    record("faiss k-means (L2)", lambda: train_kmeans(x, k, spherical=False, niter=a.niter, seed=a.seed,
                                                       max_points_per_centroid=big)[0])
    record("faiss spherical k-means (stage default)", lambda: train_kmeans(
        x, k, spherical=True, niter=a.niter, seed=a.seed, max_points_per_centroid=big)[0], spherical=True)
    record("sklearn KMeans (lloyd, n_init=1)", lambda: SKKMeans(k, n_init=1, max_iter=a.niter, tol=0,
                                                                random_state=a.seed).fit(x).cluster_centers_)
    record("sklearn MiniBatchKMeans (batch 1024, n_init=1)", lambda: MiniBatchKMeans(
        k, n_init=1, max_iter=a.niter, batch_size=1024, random_state=a.seed).fit(x).cluster_centers_)
    base = rows[0]
    for r in rows:
        r["time_ratio_vs_faiss"] = r["seconds"] / base["seconds"]
        r["inertia_ratio_vs_faiss"] = r["inertia"] / base["inertia"]
        r["partition_inertia_ratio_vs_faiss"] = r["partition_inertia"] / base["partition_inertia"]
    res = {"rows": n, "dim": d, "k": k, "niter": a.niter, "results": rows}
    (out_dir / "kmeans_vs_sklearn.json").write_text(json.dumps(res, indent=2))
    md = ["# FAISS k-means vs scikit-learn", "",
          f"{n} alpaca_44k rows (seeded subset), all-MiniLM-L6-v2 {d}-d, k = {k}, {a.niter} iterations, "
          "one initialisation each, CPU (2 shared cores).", "",
          "| method | seconds | time ratio vs faiss | inertia | inertia ratio | partition inertia | ratio |",
          "|---|---|---|---|---|---|---|"]
    md += [f"| {r['method']} | {r['seconds']:.2f} | {r['time_ratio_vs_faiss']:.2f} | {r['inertia']:.1f} | "
           f"{r['inertia_ratio_vs_faiss']:.4f} | {r['partition_inertia']:.1f} | "
           f"{r['partition_inertia_ratio_vs_faiss']:.4f} |" for r in rows]
    md += ["", "Inertia: squared Euclidean distance of every row to its method's own centroids (the spherical "
           "variant's centroids are unit-norm, which inflates it by construction). Partition inertia: to the "
           "mean of the rows each method groups together, comparable across all four."]
    (out_dir / "kmeans_vs_sklearn.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
