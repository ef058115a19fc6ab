"""Time the clustering/baseline selection methods given their annotations (no model runs).

Methods: ``longest``, ``kcenter``, ``car``, ``kmq`` (k by silhouette and k = 64), ``kmq_iterative``
(k = 64, a constant feedback callback, so only the selector's own work is timed). Peers timed in
the same run: ``random``, ``top_k`` on quality, and one ``kmeans`` stage fit at its defaults
(spherical, k = floor(sqrt(n/2))) on the same embeddings; the table reports each method's time
as a ratio to that k-means fit.

Annotations come from benchmarks/select_annotate.py's output (``shard_*.npz`` or
``annotations.npz``: ids, MiniLM(CAR_TEMPLATE) embeddings, shipped-scorer quality), i.e.
computed once; the pool file gives the responses (for ``longest``). ``--scale N`` adds a planted
pool of N rows made from the real ones (resampled with replacement, Gaussian noise sd 0.02 on the
unit embeddings, renormalised; each copy keeps its row's quality and text) to time the full
size before the real annotations exist; it is labelled "planted" in the output. Its quality and
coverage columns describe duplicated rows: use them for timing only.

    flock /work/heavy.lock python benchmarks/select_cluster_timing.py \\
        --annotations DIR --pool "$CURATE_DATA"/instruct/alpaca_44k.json --budgets 1000 5000 \\
        [--scale 44657] [--record]

Writes select_cluster_timing.{json,md} under runs/bench/select_cluster_timing/ (``--record``:
benchmarks/results/; ``--out OUT`` writes OUT.json and OUT.md).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's curate
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, output_dir


def load_annotations(folder: Path) -> dict[str, np.ndarray]:
    """ids / embedding / quality from annotations.npz, else every consecutive shard_*.npz."""
    if (folder / "annotations.npz").exists():
        files = [folder / "annotations.npz"]
    else:
        files = sorted(folder.glob("shard_[0-9][0-9][0-9].npz"))
        keep = [f for i, f in enumerate(files) if f.name == f"shard_{i:03d}.npz"]  # a prefix, no gaps
        files = keep
    if not files:
        raise SystemExit(f"no annotations in {folder}")
    parts = []
    for f in files:
        with np.load(f) as z:
            parts.append({k: z[k] for k in ("ids", "embedding", "quality")})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build_table(pool: str, ann: dict[str, np.ndarray]):
    import pyarrow as pa

    from curate.core.schema import embedding_column
    from curate.ingest.read import read_input

    table = read_input(pool).table
    m = len(ann["ids"])
    if table.column("id").to_pylist()[:m] != ann["ids"].tolist():
        raise SystemExit("annotation ids are not the pool's first rows (another pool?)")
    t = table.slice(0, m).select(["id", "text", "instruction", "input", "output", "source"])
    t = t.append_column("embedding", embedding_column(ann["embedding"].astype(np.float32)))
    return t.append_column("quality", pa.array(ann["quality"].astype(np.float64)))


def planted(table, n: int, seed: int = 0):
    """N rows resampled from ``table`` with noisy embeddings (see module docstring)."""
    import pyarrow as pa

    from curate.core.schema import embedding_column, embedding_matrix

    rng = np.random.default_rng(seed)
    idx = rng.integers(len(table), size=n)
    x = embedding_matrix(table, "embedding")[idx] + 0.02 * rng.normal(size=(n, 384)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = table.column("quality").to_numpy()[idx]  # each copy keeps its row's quality
    t = table.take(pa.array(idx)).drop_columns(["embedding", "quality"])
    t = t.set_column(0, "id", pa.array([f"p{i}" for i in range(n)]))
    return t.append_column("embedding", embedding_column(x)).append_column("quality", pa.array(q))


def constant_feedback(selected, cluster_ids):
    return {int(c): 1.0 for c in np.unique(cluster_ids)}


def methods(budget: int) -> list[tuple[str, dict]]:
    return [
        ("random", {"type": "random", "budget": budget}),
        ("top_k quality", {"type": "top_k", "score": "quality", "budget": budget}),
        ("longest", {"type": "longest", "budget": budget}),
        ("kcenter", {"type": "kcenter", "budget": budget, "show_progress": False}),
        ("car", {"type": "car", "budget": budget}),
        ("kmq (k=silhouette)", {"type": "kmq", "budget": budget}),
        ("kmq (k=64)", {"type": "kmq", "budget": budget, "k": 64}),
        ("kmq_iterative (k=64, R=3)", {"type": "kmq_iterative", "budget": budget, "k": 64,
                                       "feedback": constant_feedback, "show_progress": False}),
    ]


def time_pool(label: str, table, budgets: list[int]) -> list[dict]:
    from curate.cluster.kmeans import KMeans
    from curate.core.schema import embedding_matrix
    from curate.engine.config import build_stage

    n = len(table)
    x = embedding_matrix(table, "embedding")
    t0 = time.perf_counter()
    km = KMeans(use_gpu=False)
    ref, _ = km.fit_predict(x)
    t_km = time.perf_counter() - t0
    q = table.column("quality").to_numpy()
    rows = [{"pool": label, "n": n, "budget": None, "method": f"peer: kmeans stage (k={km.k_})",
             "seconds": t_km, "ratio_to_kmeans": 1.0}]
    print(f"{label}: n={n}, kmeans peer {t_km:.2f}s (k={km.k_})", flush=True)
    for b in budgets:
        if b > n:
            continue
        for name, spec in methods(b):
            st = build_stage(dict(spec))
            t0 = time.perf_counter()
            sel = st.select(table, None)
            dt = time.perf_counter() - t0
            assert sel.n_kept == b, (name, sel.n_kept)
            extra = {"k": getattr(st, "k_", None), "silhouette": getattr(st, "silhouette_", None) or None}
            r = {"pool": label, "n": n, "budget": b, "method": name, "seconds": dt, "ratio_to_kmeans": dt / t_km,
                 "mean_quality": float(q[sel.keep].mean()),
                 "ref_clusters_covered": int(len(np.unique(ref[sel.keep]))), "ref_k": int(km.k_),
                 **{k: v for k, v in extra.items() if v is not None}}
            rows.append(r)
            print(f"  b={b:5d} {name:28s} {dt:8.2f}s  x{dt / t_km:6.2f} kmeans  q={r['mean_quality']:.3f} "
                  f"clusters {r['ref_clusters_covered']}/{km.k_}"
                  + (f"  k={r['k']}" if r.get("k") else ""), flush=True)
    return rows


def to_markdown(rows: list[dict], pool: str) -> str:
    out = [f"# Selection time given annotations (pool {pool})", "",
           "Time of `Selector.select` on a table that already has `embedding` (MiniLM of CAR_TEMPLATE) "
           "and `quality` (shipped scorer); ratio = seconds / one `kmeans` stage fit (defaults) in the same run. "
           "`kmq_iterative` uses a constant feedback callback: its LoRA training is not included. "
           "Quality = mean shipped-scorer log-odds of the selection; clusters = reference k-means clusters covered.",
           "", "| pool | n | budget | method | seconds | x kmeans | mean quality | clusters covered |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cov = f"{r['ref_clusters_covered']}/{r['ref_k']}" if "ref_k" in r else ""
        mq = f"{r['mean_quality']:.3f}" if "mean_quality" in r else ""
        method = r["method"] + (f" (chose k={r['k']})" if r.get("silhouette") else "")
        out.append(f"| {r['pool']} | {r['n']} | {r['budget'] or ''} | {method} | {r['seconds']:.2f} | "
                   f"{r['ratio_to_kmeans']:.2f} | {mq} | {cov} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--annotations", required=True, type=Path)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--budgets", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--scale", type=int, default=None, help="also time a planted pool of this many rows")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md (default: see --record)")
    add_record_flag(ap)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ann = load_annotations(a.annotations)
    table = build_table(a.pool, ann)
    rows = time_pool(f"real ({Path(a.pool).name}, first {len(table)} rows)", table, a.budgets)
    if a.scale:
        rows += time_pool(f"planted ({a.scale} rows from the real ones)", planted(table, a.scale), a.budgets)
    out = a.out or output_dir(a) / "select_cluster_timing"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    out.with_suffix(".md").write_text(to_markdown(rows, a.pool))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
