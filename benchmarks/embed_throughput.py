"""Throughput of the ``embed`` stage versus a bare ``SentenceTransformer.encode`` on the same texts.

Same model object, same batch size, same texts (alpaca_44k rows, "instruction\\ninput"), in one
run; runs alternate (bare, stage, bare, stage, ...) and the best of each is compared, so a noisy
shared machine hurts both alike. The stage's time includes building texts from the Arrow table,
sharded resumable writes to its work dir and building the Arrow output column.

    python benchmarks/embed_throughput.py [DATA_DIR] [--n 1000] [--repeats 2]

Writes runs/bench/embed_throughput/embed_throughput.{md,json}
(``--record``: benchmarks/results/). GPU: not measured here (no GPU was lent
to the session that wrote this); on a GPU machine run the same command.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import MAX_LENGTH, alpaca_texts  # noqa: E402
from results_io import add_record_flag, data_dir, output_dir


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    add_record_flag(ap)
    a = ap.parse_args()
    out_dir = output_dir(a)
    import torch

    from curate.core.schema import embedding_matrix
    from curate.core.stage import StageContext
    from curate.embed.stage import Embed
    from curate.models.loading import load_sentence_transformer, pick_device

    ids, texts = alpaca_texts(Path(a.data), n=a.n, seed=1)
    device = pick_device(None)
    st = load_sentence_transformer("all-MiniLM-L6-v2", device)  # the stage reuses this cached object
    st.encode(texts[:32])  # warm-up
    table = pa.table({"id": ids, "text": texts})
    bare_t, stage_t = [], []
    for _ in range(a.repeats):
        st.max_seq_length = MAX_LENGTH
        t0 = time.perf_counter()
        ref = st.encode(texts, batch_size=a.batch_size, normalize_embeddings=True, convert_to_numpy=True)
        bare_t.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            ctx = StageContext(work_dir=Path(tmp) / "w", artifact_dir=Path(tmp) / "a", show_progress=False)
            t0 = time.perf_counter()
            out = Embed(backend="sentence_transformers", max_length=MAX_LENGTH, batch_size=a.batch_size).annotate(table, ctx)
            stage_t.append(time.perf_counter() - t0)
        x = embedding_matrix(out, "embedding")
        max_diff = float(np.abs(x - ref).max())
    bare, stage = min(bare_t), min(stage_t)
    pair_ratios = [s_ / b_ for b_, s_ in zip(bare_t, stage_t)]
    # the stage's own work (texts from Arrow, shard files, output column) with the encoder
    # replaced by a lookup of the embeddings computed above: noise-free overhead
    with tempfile.TemporaryDirectory() as tmp:
        stage_obj = Embed(backend="sentence_transformers", max_length=MAX_LENGTH, batch_size=a.batch_size)
        pos = {t: i for i, t in enumerate(texts)}
        stage_obj.encode = lambda ts, show_progress=False: ref[[pos[t] for t in ts]]
        ctx = StageContext(work_dir=Path(tmp) / "w", artifact_dir=Path(tmp) / "a", show_progress=False)
        t0 = time.perf_counter()
        stage_obj.annotate(table, ctx)
        own = time.perf_counter() - t0
    res = {"device": device, "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
           "texts": len(texts), "batch_size": a.batch_size, "max_length": MAX_LENGTH,
           "bare_encode_s": bare, "embed_stage_s": stage, "bare_texts_per_s": len(texts) / bare,
           "stage_texts_per_s": len(texts) / stage, "overhead_ratio_best": stage / bare,
           "paired_ratios": pair_ratios, "overhead_ratio_median_paired": float(np.median(pair_ratios)),
           "stage_own_work_s": own, "stage_own_work_fraction_of_bare": own / bare,
           "max_abs_diff_vs_bare": max_diff, "all_bare_s": bare_t, "all_stage_s": stage_t,
           "gpu": "not measured: no GPU lent this session" if device == "cpu" else device}
    (out_dir / "embed_throughput.json").write_text(json.dumps(res, indent=2))
    md = ["# embed stage vs bare SentenceTransformer.encode", "",
          f"{len(texts)} alpaca_44k texts, all-MiniLM-L6-v2, batch {a.batch_size}, max_length {MAX_LENGTH}, "
          f"device {device} ({torch.get_num_threads()} torch threads), best of {a.repeats} alternating runs.", "",
          "| path | seconds | texts/s | ratio vs bare |", "|---|---|---|---|",
          f"| bare `SentenceTransformer.encode` | {bare:.2f} | {len(texts) / bare:.1f} | 1.00 |",
          f"| `embed` stage (shards, Arrow column) | {stage:.2f} | {len(texts) / stage:.1f} | {stage / bare:.3f} |", "",
          f"Paired ratios (stage / bare, each pair run back to back): {', '.join(f'{r:.3f}' for r in pair_ratios)}; "
          f"median {np.median(pair_ratios):.3f}. All runs (s): bare {', '.join(f'{t:.1f}' for t in bare_t)}; "
          f"stage {', '.join(f'{t:.1f}' for t in stage_t)}. The machine is shared with other jobs, so single "
          "timings are noisy.", "",
          f"The stage's own work (texts from Arrow, shard file, Arrow column; encoder replaced by a lookup): "
          f"{own:.3f} s = {own / bare:.1%} of the bare encode time.", "",
          f"Largest |difference| between the two embeddings: {max_diff:.2e}.", "",
          f"GPU: {res['gpu']}."]
    (out_dir / "embed_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
