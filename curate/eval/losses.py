"""Reference-answer losses of a (LoRA-tuned) causal LM on held-out sets: full, content, end token.

Per example (mean over its reference tokens; docs/evaluation.md):

* ``full``: mean NLL over every reference token including the end-of-turn token;
* ``content``: the same without the first ``content_skip`` (8) tokens and the end token, so
  openers ("Sure! Here's ...") and the length prior do not dominate (URIAL, arXiv 2312.01552);
* ``end``: NLL of the end-of-turn token alone (NaN when truncation removed it);
* ``answer`` (only when the encoding carries a span, e.g. GSM8K sets): mean NLL over the tokens of
  the final ``#### N`` line (docs/evaluation.md; NaN when there is no such line or truncation
  removed it). It isolates the answer from the solution's format (§1.9, §4.2).

Evaluation runs under ``torch.inference_mode`` in fp32 (bf16 autocast on CUDA), rows sorted by
length, logits only at reference positions, and optionally from the cached input of the lowest
adapted block (exact: nothing below it changes with the adapter).
"""
from __future__ import annotations

import numpy as np

from curate.train.encode import Encoded

METRICS = ("full", "content", "end")  # every set
SPAN_METRIC = "answer"                 # sets whose encoding has a span (GSM8K style)


def reference_losses(lm, tokenizer, enc: Encoded, *, states: list | None = None, start: int = 0,
                     batch_size: int = 16, content_skip: int = 8, show_progress: bool = False,
                     desc: str = "eval") -> dict[str, np.ndarray]:
    """Per-example losses of ``enc``'s reference tokens.

    Args:
        lm: causal LM (a peft model's base model, or a plain model).
        tokenizer: its tokenizer (pad id).
        enc: encoded eval rows (see :func:`curate.train.encode.encode_texts`).
        states: optional per-row cached inputs of block ``start`` (trick 3).
        start: first block to run when ``states`` is given.
        batch_size: rows per forward (default 16).
        content_skip: reference tokens excluded at the start of ``content`` (default 8).
        show_progress: tqdm bar.

    Returns:
        ``full``, ``content``, ``end``: (n,) float64 (NaN where undefined); ``n_target`` (n,) int;
        ``answer`` (n,) float64 as well when ``enc.span`` is set.
    """
    import torch
    from tqdm.auto import tqdm

    from curate.train.forward import nll_from_prefix, nll_response_only, pad_batch

    n = len(enc)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(lm.parameters()).device
    lengths = enc.lengths
    order = np.argsort(-lengths, kind="stable")
    out = {m: np.full(n, np.nan) for m in METRICS + ((SPAN_METRIC,) if enc.span is not None else ())}
    n_t = enc.n_target
    ac = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for lo in tqdm(range(0, n, batch_size), desc=desc, disable=not show_progress, unit="batch", leave=False):
        b = order[lo:lo + batch_size]
        ids = [enc.ids[i] for i in b]
        tgt = [enc.target[i] for i in b]
        with torch.inference_mode(), ac:
            if states is not None:
                nll = nll_from_prefix(lm, [states[i] for i in b], ids, tgt, start, pad, device)
            else:
                x, att, need = (t.to(device) for t in pad_batch(ids, tgt, pad))
                nll = nll_response_only(lm, x, att, need)
        nll = nll.double().cpu().numpy()
        off = 0
        for i in b:
            k = int(n_t[i])
            v = nll[off:off + k]
            off += k
            if k == 0:
                continue
            out["full"][i] = v.mean()
            body = v[:-1] if enc.has_end[i] else v
            body = body[content_skip:]
            if len(body):
                out["content"][i] = body.mean()
            if enc.has_end[i]:
                out["end"][i] = v[-1]
            if enc.span is not None:
                # v holds the predicted target positions 1.. in order; pick the span's among them
                on = enc.span[i][1:][enc.target[i][1:]]
                if on.any():
                    out[SPAN_METRIC][i] = v[on].mean()
        assert off == len(nll), "token bookkeeping"
    out["n_target"] = n_t
    return out
