"""Proxy-LM scoring on CPU: curate's perplexity / IFD / lm_pooling against a bare fp32 loop, same run.

Peer (what most users write): batches in input order, fp32, ``model(**enc)`` with full logits
at every position (or every layer's hidden states for pooling), per-row means. For IFD the peer
runs its two passes (prompt + answer, then "### Response:" + answer) the same way.

Candidates, each measured on the same rows in the same process, alternating with the peer:
``fp32`` (curate's length-sorted batches, LM head only where a loss is needed), ``bf16_autocast``
(the same under ``torch.autocast("cpu", bfloat16)``), ``bf16`` (bf16 weights), ``int8``
(``torch.ao.quantization.quantize_dynamic`` of every Linear), ``fp32_onnx`` (curate's fp32 path
with the decoder body in onnxruntime, :mod:`curate.models.lm_onnx`; the export is made before
the timings). ``fp32_onnx_batch32`` the same with 32 rows per call (rows run one by one in onnxruntime, so a
bigger batch only evens out the two workers' loads). ``--variants`` runs a subset (the peer always runs). Agreement with the peer:
Spearman of ppl_response, ppl_text and IFD; for pooling the minimum cosine to the peer's vectors.
Thread setting: torch's default (one per core) and, for the fastest candidate, 1 thread.

    python benchmarks/lm_speed.py [DATA_DIR] [--rows 48] [--batch-size 8]

Writes runs/bench/lm_speed/<--out>.{md,json} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir

from curate.score import lm as lmlib  # noqa: E402

log = logging.getLogger("lm_speed")


def bare_losses(model, tok, prefixes, targets, batch_size, max_length, k=None):
    """Input-order batches, full logits: mean NLL over target tokens and over all tokens."""
    import torch

    ids, masks, _ = lmlib._tokenize(tok, prefixes, targets, max_length, k)
    lt, la = np.full(len(ids), np.nan), np.full(len(ids), np.nan)
    pad = tok.pad_token_id
    for a in range(0, len(ids), batch_size):
        b = list(range(a, min(a + batch_size, len(ids))))
        L = max(len(ids[r]) for r in b)
        x = torch.full((len(b), L), pad, dtype=torch.long)
        att = torch.zeros((len(b), L), dtype=torch.long)
        tm = torch.zeros((len(b), L), dtype=torch.bool)
        for j, r in enumerate(b):
            x[j, :len(ids[r])] = torch.from_numpy(ids[r])
            att[j, :len(ids[r])] = 1
            tm[j, :len(ids[r])] = torch.from_numpy(masks[r])
        with torch.inference_mode():
            logits = model(input_ids=x, attention_mask=att).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
        v, t = att[:, 1:].bool(), tm[:, 1:] & att[:, 1:].bool()
        for j, r in enumerate(b):
            la[r] = nll[j][v[j]].mean().item()
            if t[j].any():
                lt[r] = nll[j][t[j]].mean().item()
    return lt, la


def bare_pool(model, tok, texts, batch_size, max_length):
    import torch

    from curate.embed.lm_pooling import position_weighted_mean

    out = []
    tok.padding_side = "right"
    for a in range(0, len(texts), batch_size):
        enc = tok(texts[a:a + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        with torch.inference_mode():
            hs = model(**enc, output_hidden_states=True).hidden_states[-1]
        out.append(position_weighted_mean(hs, enc["attention_mask"]).numpy())
    return np.concatenate(out)


def run_all(model, tok, prompts, answers, texts, bs, ml, bare: bool, ctx=contextlib.nullcontext):
    """Perplexity, IFD and pooling with the peer's or curate's code; returns (seconds, results)."""
    from curate.embed.lm_pooling import encode_with
    from curate.score.lm import ifd_losses

    secs, res = {}, {}
    with ctx():
        t0 = time.perf_counter()
        if bare:
            res["cond"], res["all"] = bare_losses(model, tok, prompts, answers, bs, ml)
        else:
            r = lmlib.span_losses(model, tok, prompts, answers, max_length=ml, batch_size=bs)
            res["cond"], res["all"] = r["loss_target"], r["loss_all"]
        secs["perplexity"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if bare:
            ids, masks, _ = lmlib._tokenize(tok, prompts, answers, ml, None)
            k = np.array([int(m[1:].sum()) for m in masks])
            c, _ = bare_losses(model, tok, prompts, answers, bs, ml)
            u, _ = bare_losses(model, tok, ["### Response:"] * len(answers), answers, bs, ml, k)
        else:
            r = ifd_losses(model, tok, prompts, answers, "### Response:", max_length=ml, batch_size=bs)
            c, u = r["loss_cond"], r["loss_uncond"]
        res["ifd"] = c / u
        secs["ifd"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res["pool"] = bare_pool(model, tok, texts, bs, ml) if bare else encode_with(model, tok, texts, max_length=ml,
                                                                                     batch_size=bs)
        secs["lm_pooling"] = time.perf_counter() - t0
    return secs, res


def main() -> None:
    import torch
    from scipy.stats import spearmanr

    from curate.ingest.formats import render_text
    from curate.models.loading import load_causal_lm

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--out", default="lm_speed")
    ap.add_argument("--variants", default=None, help="comma-separated subset of the candidates (default all)")
    add_record_flag(ap)
    args = ap.parse_args()
    out_dir = output_dir(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = json.loads((args.data / "instruct" / "alpaca_44k.json").read_text())
    idx = np.sort(np.random.default_rng(0).choice(len(rows), size=args.rows, replace=False))
    rows = [rows[i] for i in idx]
    prompts = [lmlib.build_prompt(r["instruction"], r.get("input"), "alpaca") for r in rows]
    answers = [r["output"] for r in rows]
    texts = [render_text(r["instruction"], r.get("input"), r["output"]) for r in rows]
    t0 = time.perf_counter()
    fp32, tok = load_causal_lm("SmolLM2-135M-Instruct", "cpu", "float32")
    load_s = time.perf_counter() - t0
    from torch.ao.quantization import quantize_dynamic

    models = {"fp32": fp32, "bf16": copy.deepcopy(fp32).to(torch.bfloat16),
              "int8": quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)}
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    bs = args.batch_size
    from curate.models.lm_onnx import onnx_lm

    variants = {"bare_fp32": (fp32, True, contextlib.nullcontext, bs), "fp32": (fp32, False, contextlib.nullcontext, bs),
                "bf16_autocast": (fp32, False, autocast, bs), "bf16": (models["bf16"], False, contextlib.nullcontext, bs),
                "int8": (models["int8"], False, contextlib.nullcontext, bs),
                f"int8_batch{2 * bs}": (models["int8"], False, contextlib.nullcontext, 2 * bs),
                "fp32_onnx": (None, False, contextlib.nullcontext, bs),
                f"fp32_onnx_batch{4 * bs}": (None, False, contextlib.nullcontext, 4 * bs)}
    if args.variants:
        keep = {"bare_fp32", *args.variants.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}
    for k in [k for k in variants if k.startswith("fp32_onnx")]:
        variants[k] = (onnx_lm(fp32, "SmolLM2-135M-Instruct"), *variants[k][1:])
    n_tok = sum(len(x) for x in tok([p + a for p, a in zip(prompts, answers)])["input_ids"])
    for name, (m, bare, ctx, b) in variants.items():  # warm-up
        run_all(m, tok, prompts[:2], answers[:2], texts[:2], 2, args.max_length, bare, ctx)
    secs, res = {}, {}
    for name, (m, bare, ctx, b) in variants.items():
        secs[name], res[name] = run_all(m, tok, prompts, answers, texts, b, args.max_length, bare, ctx)
        log.info("%s: %s", name, secs[name])
    # the fastest candidate once more with one thread (not for onnx: its threads are onnxruntime's),
    # and the peer again (drift check)
    fastest = min((v for v in variants if v != "bare_fp32"), key=lambda v: sum(secs[v].values()))
    threads = torch.get_num_threads()
    if not fastest.startswith("fp32_onnx"):
        torch.set_num_threads(1)
        m, bare, ctx, b = variants[fastest]
        secs[f"{fastest}_1thread"], res[f"{fastest}_1thread"] = run_all(m, tok, prompts, answers, texts, b,
                                                                        args.max_length, bare, ctx)
        torch.set_num_threads(threads)
    secs["bare_fp32_again"], res["bare_fp32_again"] = run_all(fp32, tok, prompts, answers, texts, args.batch_size,
                                                               args.max_length, True)
    ref = res["bare_fp32"]
    out = {"rows": args.rows, "tokens": n_tok, "batch_size": args.batch_size, "max_length": args.max_length,
           "torch_threads": threads, "model_load_s": load_s, "variants": {}}
    for name in secs:
        r = res[name]
        ok = ~np.isnan(ref["cond"]) & ~np.isnan(r["cond"])
        agree = {"spearman_ppl_response": float(spearmanr(ref["cond"][ok], r["cond"][ok])[0]),
                 "spearman_ppl_text": float(spearmanr(ref["all"], r["all"])[0]),
                 "spearman_ifd": float(spearmanr(ref["ifd"][ok], r["ifd"][ok])[0]),
                 "min_cos_pooling": float((ref["pool"] * r["pool"]).sum(1).min())}
        ratio = {k: min(secs["bare_fp32"][k], secs["bare_fp32_again"][k]) / v for k, v in secs[name].items()}
        out["variants"][name] = {"seconds": secs[name], "speedup_vs_bare": ratio, **agree}
    (out_dir / f"{args.out}.json").write_text(json.dumps(out, indent=2))
    md = ["# Proxy-LM scoring on CPU vs a bare transformers fp32 loop (same run)", "",
          f"SmolLM2-135M-Instruct (GGUF dequantised), {args.rows} alpaca_44k rows ({n_tok} tokens, Alpaca template), "
          f"batch {args.batch_size} unless noted, max_length {args.max_length}, {threads} torch threads unless noted. Speed-up = "
          f"the peer's best of its two runs / the candidate's time; agreement against the peer's first run.", "",
          "| variant | perplexity s (x) | ifd s (x) | lm_pooling s (x) | Spearman ppl_response / ppl_text / IFD | "
          "min cos pooling |", "|---|---|---|---|---|---|"]
    for name, v in out["variants"].items():
        s, x = v["seconds"], v["speedup_vs_bare"]
        md.append(f"| {name} | {s['perplexity']:.1f} ({x['perplexity']:.2f}x) | {s['ifd']:.1f} ({x['ifd']:.2f}x) | "
                  f"{s['lm_pooling']:.1f} ({x['lm_pooling']:.2f}x) | {v['spearman_ppl_response']:.4f} / "
                  f"{v['spearman_ppl_text']:.4f} / {v['spearman_ifd']:.4f} | {v['min_cos_pooling']:.4f} |")
    md += ["", f"Model load {load_s:.1f} s (not in the timings)."]
    (out_dir / f"{args.out}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
