"""D4 at 50% and 25% keep on real alpaca embeddings: time, cluster-size histograms, diversity.

Embeddings: all-MiniLM-L6-v2 of a seeded alpaca_44k subset (see embed_cache.py). Pipeline as in a
recipe: ``kmeans`` (k = floor(sqrt(n/2))) then ``d4`` (dedup_ratio 0.75). Peer in the same run: a
seeded random subset of the same size. For both we report the cluster-size spread in the first
clustering (coefficient of variation: lower = more even coverage) and the mean cosine similarity
of each kept row to its nearest other kept row (lower = fewer near-duplicates kept).

    python benchmarks/d4_alpaca.py [DATA_DIR] [--cache-dir DIR]

Writes d4_alpaca.{md,json} and d4_cluster_sizes_{50,25}.png under runs/bench/d4_alpaca/
(``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import DEFAULT_CACHE, alpaca_texts, embed_cached  # noqa: E402
from results_io import add_record_flag, data_dir, output_dir


def nn_similarity(x: np.ndarray) -> float:
    """Mean over rows of the cosine to the nearest other row (exact, FAISS inner product)."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    sims, _ = index.search(x, 2)
    return float(sims[:, 1].mean())


def cv(cid: np.ndarray, k: int) -> float:
    sizes = np.bincount(cid, minlength=k).astype(float)
    return float(sizes.std() / sizes.mean())


def main() -> None:
    import tempfile

    from curate.cluster.faiss_utils import plot_cluster_sizes
    from curate.cluster.kmeans import KMeans
    from curate.core.schema import embedding_column
    from curate.core.stage import StageContext
    from curate.dedup.d4 import D4

    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    add_record_flag(ap)
    a = ap.parse_args()
    out_dir = output_dir(a)
    ids, texts = alpaca_texts(Path(a.data))
    x = embed_cached(texts, Path(a.cache_dir))
    n = len(x)
    table = pa.table({"id": ids, "embedding": embedding_column(x)})
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    km = KMeans()
    km_out = km.annotate(table, StageContext(work_dir=tmp / "km", artifact_dir=tmp / "km" / "a", show_progress=False))
    t_km = time.perf_counter() - t0
    cid0 = km_out.column("cluster_id").to_numpy()
    k = km.k_
    for name in km_out.column_names:
        table = table.append_column(name, km_out.column(name))
    res = {"rows": n, "k": k, "kmeans_seconds": t_km, "before": {"cluster_size_cv": cv(cid0, k),
                                                                 "nn_similarity": nn_similarity(x)}, "runs": []}
    md = ["# D4 on alpaca (all-MiniLM-L6-v2)", "",
          f"{n} alpaca_44k rows (seeded subset), k = {k}, kmeans {t_km:.1f} s. dedup_ratio = 0.75; re-cluster k = "
          "floor(sqrt(n'/2)); global prototype ranking. Peer: seeded random subset of the same size.", "",
          f"Before selection: cluster-size CV {res['before']['cluster_size_cv']:.3f}, mean nearest-neighbour "
          f"cosine {res['before']['nn_similarity']:.3f}.", "",
          "| keep | D4 seconds | kept | dropped semantic_duplicate | dropped prototypical | eps solved | "
          "cluster CV D4 | CV random | CV ratio | NN cos D4 | NN cos random |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for budget in (0.5, 0.25):
        st = D4(budget=budget)
        t0 = time.perf_counter()
        sel = st.select(table, StageContext(work_dir=tmp / f"d4{budget}", artifact_dir=tmp / f"d4{budget}" / "a",
                                            show_progress=False))
        secs = time.perf_counter() - t0
        rnd = np.zeros(n, bool)
        rnd[rng.choice(n, sel.n_kept, replace=False)] = True
        row = {"budget": budget, "seconds": secs, "kept": sel.n_kept, "eps": st.eps_,
               "semantic_duplicate": int((sel.reason == "semantic_duplicate").sum()),
               "prototypical": int((sel.reason == "prototypical").sum()),
               "cv_d4": cv(cid0[sel.keep], k), "cv_random": cv(cid0[rnd], k),
               "nn_d4": nn_similarity(x[sel.keep]), "nn_random": nn_similarity(x[rnd])}
        res["runs"].append(row)
        png = out_dir / f"d4_cluster_sizes_{int(budget * 100)}.png"
        plot_cluster_sizes(cid0, cid0[sel.keep], png, title=f"D4 keep {budget:.0%}: rows per first-pass cluster",
                           labels=("before D4", f"after D4 ({budget:.0%})"))
        md.append(f"| {budget:.0%} | {secs:.2f} | {sel.n_kept} | {row['semantic_duplicate']} | {row['prototypical']} | "
                  f"{st.eps_:.4f} | {row['cv_d4']:.3f} | {row['cv_random']:.3f} | {row['cv_d4'] / row['cv_random']:.2f} | "
                  f"{row['nn_d4']:.3f} | {row['nn_random']:.3f} |")
    md += ["", "Histograms: `d4_cluster_sizes_50.png`, `d4_cluster_sizes_25.png` (rows per first-pass cluster, "
           "before and after)."]
    (out_dir / "d4_alpaca.json").write_text(json.dumps(res, indent=2))
    (out_dir / "d4_alpaca.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
