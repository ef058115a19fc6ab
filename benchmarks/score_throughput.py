"""Rows/s of ``perplexity`` scoring against a bare transformers forward loop on the same rows.

Peer: the loop most users write - batches in input order, ``model(input_ids, attention_mask,
labels)``-style full logits, per-row mean NLL over all tokens. curate's stage sorts by length,
applies the LM head only where a loss is needed and also yields the response-only perplexity.
Both use the same loaded model, batch size, max length and texts (CaR APE valid rows rendered
with the Alpaca template), so the ratio is like for like; the agreement of their ``ppl_text``
is printed as a check. GPU: runs on CUDA when present (not measured in this session).

Usage: python benchmarks/score_throughput.py [DATA_DIR] [--rows 48] [--batch-size 8] [--record]

Writes runs/bench/score_throughput/score_throughput.{md,json} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir
from score_common import load_scores  # noqa: E402

from curate.core.stage import StageContext  # noqa: E402
from curate.score import lm as lmlib  # noqa: E402
from curate.score.stages import Perplexity  # noqa: E402


def bare_loop(model, tok, texts, batch_size, max_length):
    import torch

    out = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length).to(model.device)
        with torch.inference_mode():
            logits = model(**enc).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), enc.input_ids[:, 1:], reduction="none")
        m = enc.attention_mask[:, 1:].float()
        out.append(((nll * m).sum(1) / m.sum(1)).exp().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir())
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None)
    add_record_flag(ap)
    args = ap.parse_args()
    out_dir = output_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from curate.models.loading import load_causal_lm, pick_device

    device = pick_device(args.device)
    f, _ = load_scores(args.data, "valid")
    n = min(args.rows, len(f))
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(f), size=n, replace=False))
    t = pa.table({"id": [str(i) for i in idx], "instruction": [f.instruction[i] for i in idx],
                  "input": [f.input[i] for i in idx], "output": [f.output[i] for i in idx]})
    t_load = time.perf_counter()
    model, tok = load_causal_lm("SmolLM2-135M-Instruct", device, None)
    t_load = time.perf_counter() - t_load
    texts = [lmlib.build_prompt(f.instruction[i], f.input[i], "alpaca") + f.output[i] for i in idx]
    stage = Perplexity(batch_size=args.batch_size, device=device, show_progress=False)
    bare_loop(model, tok, texts[:2], 2, 512)  # warm-up (allocator, kernels)
    res = {}
    for rep in range(2):  # alternate to spread background load evenly between the two
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            out = stage.annotate(t, StageContext(work_dir=Path(d), show_progress=False))
            res.setdefault("curate", []).append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ref = bare_loop(model, tok, texts, args.batch_size, 512)
        res.setdefault("bare", []).append(time.perf_counter() - t0)
    ppl = out.column("ppl_text").to_numpy()
    rel = float(np.max(np.abs(ppl - ref) / ref))
    c, b = min(res["curate"]), min(res["bare"])
    row = {"device": device, "torch_threads": torch.get_num_threads(), "rows": n, "batch_size": args.batch_size,
           "model_load_s": t_load, "curate_rows_per_s": n / c, "bare_rows_per_s": n / b, "ratio": b / c,
           "max_rel_diff_ppl_text": rel, "tokens": int(sum(len(tok(x).input_ids) for x in texts))}
    (out_dir / "score_throughput.json").write_text(json.dumps(row, indent=2))
    lines = [f"Perplexity scoring throughput, SmolLM2-135M-Instruct (GGUF -> fp32), {n} CaR valid rows "
             f"({row['tokens']} tokens), batch {args.batch_size}, device {device}, {row['torch_threads']} torch threads; "
             "best of 2 runs each.", "",
             "| scorer | rows/s | ratio vs bare loop |", "|---|---|---|",
             f"| curate `perplexity` stage (ppl_response + ppl_text) | {row['curate_rows_per_s']:.2f} | {row['ratio']:.2f}x |",
             f"| bare transformers loop (ppl_text only) | {row['bare_rows_per_s']:.2f} | 1.00x |", "",
             f"Max relative difference of ppl_text between the two: {rel:.2e}. Model load: {t_load:.1f} s.",
             "GPU: not measured (no GPU lent this session)."]
    (out_dir / "score_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
