"""Seconds per step and tokens/s of curate's LoRA trainer with and without each speed trick, in one run.

Every configuration trains the same rows (a seeded Alpaca sample), the same number of steps and
the same batch size on SmolLM2-135M-Instruct (fp32, CPU threads as set by torch), one after the
other in one process, so the ratios are like for like. Configurations (EVALUATION.md §2):

* ``pilot``: LoRA on attention (q,k,v,o) of all 30 blocks, plain forward, shuffled batches;
* ``top8``: LoRA on all 7 linear modules of the top 8 blocks (the protocol's adapter), plain;
* ``+group``: + length-grouped batches (trick 4);
* ``+resp_logits``: + logits only at response positions (trick 1);
* ``+prefix``: + cached input of block 22 (trick 3), cache build time reported separately and
  included in the "incl. cache" rate.

Eval: reference losses on held-out rows with and without the prefix cache. Token rates count real
(non-pad) tokens. Results: runs/bench/train_speed/train_speed.{json,md}
(``--record``: benchmarks/results/).

Usage: python benchmarks/train_speed.py [--pool PATH] [--steps 6] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir

CONFIGS = [
    ("pilot", dict(layers=None, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), group_by_length=False,
                   response_logits_only=False, prefix_cache=False)),
    ("top8", dict(layers=8, group_by_length=False, response_logits_only=False, prefix_cache=False)),
    ("top8+group", dict(layers=8, group_by_length=True, response_logits_only=False, prefix_cache=False)),
    ("top8+group+resp_logits", dict(layers=8, group_by_length=True, response_logits_only=True, prefix_cache=False)),
    ("top8+group+resp_logits+prefix", dict(layers=8, group_by_length=True, response_logits_only=True, prefix_cache=True)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", default=str(data_dir() / "instruct" / "alpaca_44k.json"),
                    help="default: $CURATE_DATA/instruct/alpaca_44k.json (docs/data.md)")
    ap.add_argument("--eval", default=str(ROOT / "sample_eval" / "self_instruct_60.jsonl"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", default=None, help="comma-separated config names")
    add_record_flag(ap)
    args = ap.parse_args()
    out_dir = output_dir(args)

    import torch

    from curate.eval.losses import reference_losses
    from curate.eval.sets import load_eval_set
    from curate.ingest import read as cio
    from curate.train.encode import encode_texts, render_prompt
    from curate.train.forward import prefix_states
    from curate.train.lora import LoRATrainer

    n = args.steps * args.batch_size
    pool = cio.read_input(args.pool).table
    rows = pool.take(np.sort(np.random.default_rng(0).choice(len(pool), size=n, replace=False)))
    t0 = time.perf_counter()
    base = LoRATrainer(show_progress=False).base()
    load_s = time.perf_counter() - t0
    out = {"rows": n, "steps": args.steps, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
           "model_load_seconds": load_s, "train": {}, "eval": {}}
    names = args.only.split(",") if args.only else [c[0] for c in CONFIGS]
    for name, kw in CONFIGS:
        if name not in names:
            continue
        tr = LoRATrainer(model=base, batch_size=args.batch_size, epochs=1, max_steps=args.steps,
                         show_progress=False, max_length=512, **kw)
        tr.fit(rows, seed=0)
        real, tgt = tr.tokens_["real"], tr.tokens_["target"]
        r = {"s_per_step": tr.seconds_ / tr.steps_, "real_tok_per_s": real / tr.seconds_,
             "target_tok_per_s": tgt / tr.seconds_, "prefix_cache_s": tr.prefix_seconds_,
             "real_tok_per_s_incl_cache": real / (tr.seconds_ + tr.prefix_seconds_),
             "tokens": tr.tokens_, "final_loss": float(tr.losses_[-1]), "trainable_layers": len(tr.layers_)}
        out["train"][name] = r
        print(f"{name:<32} {r['s_per_step']:6.2f} s/step  {r['real_tok_per_s']:7.1f} real tok/s "
              f"(incl. cache {r['real_tok_per_s_incl_cache']:7.1f})  padded {tr.tokens_['padded']}", flush=True)
    # eval: the same adapted top-8 model with and without the prefix cache
    lm, tok = base
    es = load_eval_set(args.eval, n=48)
    prompts = [render_prompt(tok, a, x) for a, x in zip(es.instruction, es.input)]
    enc = encode_texts(tok, prompts, es.reference, max_length=512)
    tr = LoRATrainer(model=base, layers=8, show_progress=False)
    m = tr.new_model(0).get_base_model()
    t0 = time.perf_counter()
    plain = reference_losses(m, tok, enc, batch_size=16)
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    st = prefix_states(lm, enc.ids, tr.layers_[0], tok.pad_token_id, 16)
    t_cache = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = reference_losses(m, tok, enc, states=st, start=tr.layers_[0], batch_size=16)
    t_fast = time.perf_counter() - t0
    toks = int(enc.lengths.sum())
    out["eval"] = {"rows": len(enc), "tokens": toks, "plain_s": t_plain, "prefix_build_s": t_cache, "cached_s": t_fast,
                   "max_abs_diff_full": float(np.nanmax(np.abs(plain["full"] - fast["full"])))}
    print(f"eval {len(enc)} rows / {toks} tokens: plain {t_plain:.1f} s, cache build {t_cache:.1f} s (once, shared by all "
          f"arms), cached {t_fast:.1f} s; max |diff| {out['eval']['max_abs_diff_full']:.2e}", flush=True)
    ref = out["train"].get("top8", {}).get("s_per_step")
    pilot = out["train"].get("pilot", {}).get("s_per_step")
    (out_dir / "train_speed.json").write_text(json.dumps(out, indent=1))
    lines = [f"# LoRA trainer speed (SmolLM2-135M-Instruct fp32, {out['threads']} threads, {args.steps} steps x "
             f"{args.batch_size} rows of alpaca_44k, same rows for every config)", "",
             "| config | s/step | real tok/s | real tok/s incl. prefix cache | speed-up vs top8 plain | vs pilot |",
             "|---|---|---|---|---|---|"]
    for name, r in out["train"].items():
        lines.append(f"| {name} | {r['s_per_step']:.2f} | {r['real_tok_per_s']:.1f} | {r['real_tok_per_s_incl_cache']:.1f} | "
                     f"{(ref / r['s_per_step']) if ref else float('nan'):.2f}x | {(pilot / r['s_per_step']) if pilot else float('nan'):.2f}x |")
    e = out["eval"]
    lines += ["", f"Eval ({e['rows']} self-instruct rows, {e['tokens']} tokens): plain {e['plain_s']:.1f} s, with prefix cache "
              f"{e['cached_s']:.1f} s ({e['plain_s'] / e['cached_s']:.2f}x; cache build {e['prefix_build_s']:.1f} s once per eval "
              f"set, shared by all arms); max |Δ loss| {e['max_abs_diff_full']:.1e}. Model load {load_s:.1f} s."]
    (out_dir / "train_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
