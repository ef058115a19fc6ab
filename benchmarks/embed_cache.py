"""Shared helpers for the embedding/clustering/dedup benchmarks: real data loaders and an
on-disk embedding cache (so kmeans_*, semdedup_* and d4_* reuse one embedding pass).

Run directly to pre-compute every embedding the benchmarks need:

    python benchmarks/embed_cache.py [DATA_DIR] [--cache-dir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import data_dir

DEFAULT_CACHE = Path("/tmp/curate-bench-cache")
log = logging.getLogger("bench")

# Subsample sizes: this machine has 2 shared CPU cores, where MiniLM embeds ~30 short texts/s.
ALPACA_ROWS = 12000
QQP_QUESTIONS = 6000
MAX_LENGTH = 128


def alpaca_texts(data: Path, n: int = ALPACA_ROWS, seed: int = 0) -> tuple[list[str], list[str]]:
    """(ids, texts) of a seeded random subset of alpaca_44k: "instruction\\ninput"."""
    rows = json.loads((data / "instruct" / "alpaca_44k.json").read_text())
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False))
    texts = [(rows[i]["instruction"] + ("\n" + rows[i]["input"] if rows[i].get("input") else "")) for i in idx]
    return [f"alpaca:{i}" for i in idx], texts


def qqp_subset(data: Path, n: int = QQP_QUESTIONS, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """(texts, gold cluster) for whole gold clusters sampled until ~n questions."""
    rows = [json.loads(line) for line in (data / "dedup" / "qqp_clusters.jsonl").read_text().splitlines()]
    clusters = np.array([r["cluster"] for r in rows])
    uniq = np.random.default_rng(seed).permutation(np.unique(clusters))
    sizes = dict(zip(*np.unique(clusters, return_counts=True)))
    chosen, total = set(), 0
    for c in uniq:
        if total >= n:
            break
        chosen.add(int(c))
        total += int(sizes[c])
    keep = [r for r in rows if r["cluster"] in chosen]
    return [r["text"] for r in keep], np.array([r["cluster"] for r in keep])


def mrpc_pairs(data: Path, split: str = "test") -> tuple[list[str], np.ndarray, np.ndarray]:
    """(unique sentences, pair index (m, 2), label (m,)) of MRPC; the test copy is repaired
    (docs/data.md; csv with tab delimiter and '"' quotes, then ' \\t ' -> ', ')."""
    import csv

    path = data / "dedup" / f"mrpc_{split}.tsv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar='"'))[1:]
    sents: dict[str, int] = {}
    pairs, labels = [], []
    for r in rows:
        if len(r) < 5:
            continue
        a, b = (s.replace(" \t ", ", ").strip() for s in r[3:5])
        pairs.append((sents.setdefault(a, len(sents)), sents.setdefault(b, len(sents))))
        labels.append(int(r[0]))
    return list(sents), np.array(pairs), np.array(labels)


def toolformer(data: Path) -> tuple[list[dict], dict[str, list[dict]]]:
    """(the 7,673-row pool, {"0.9": reference kept rows, ...})."""
    pool = json.loads((data / "instruct" / "gpteacher_toolformer_dedupe_only.json").read_text())
    refs = {s: json.loads((data / "instruct" / f"gpteacher_toolformer_sim{s}.json").read_text())
            for s in ("0.9", "0.8", "0.7", "0.6")}
    return pool, refs


def row_text(r: dict) -> str:
    return f"{r['instruction']}\n{r.get('input') or ''}\n{r['output']}"


def embed_cached(texts: list[str], cache_dir: Path = DEFAULT_CACHE, max_length: int = MAX_LENGTH,
                 model: str = "all-MiniLM-L6-v2") -> np.ndarray:
    """(n, 384) float32 MiniLM embeddings, cached on disk by a hash of (model, max_length, texts)."""
    from curate.embed.sentence import encode_sentences

    h = hashlib.sha256(json.dumps([model, max_length, texts]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"emb-{h}.npy"
    if path.exists():
        return np.load(path)
    t0 = time.perf_counter()
    x = encode_sentences(texts, model, max_length=max_length, batch_size=64, device="cpu")
    log.info("embedded %d texts in %.1fs", len(texts), time.perf_counter() - t0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), x)
    Path(path.with_suffix(".tmp.npy")).replace(path)
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", nargs="?", default=str(data_dir()), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    ap.add_argument("--only", default="alpaca,qqp,mrpc,toolformer")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data, cache = Path(a.data), Path(a.cache_dir)
    want = a.only.split(",")
    if "alpaca" in want:
        embed_cached(alpaca_texts(data)[1], cache)
    if "qqp" in want:
        embed_cached(qqp_subset(data)[0], cache)
    if "mrpc" in want:
        embed_cached(mrpc_pairs(data)[0], cache)
    if "toolformer" in want:
        embed_cached([row_text(r) for r in toolformer(data)[0]], cache)


if __name__ == "__main__":
    main()
