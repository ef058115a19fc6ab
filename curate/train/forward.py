"""Per-token NLL of response tokens: the plain path and the exact speed tricks (docs/evaluation.md).

* **plain**: the model's own forward, logits at every position, cross-entropy on response
  positions (labels -100 elsewhere).
* **response-only logits** (trick 1): run the decoder, apply the LM head only at positions that
  predict a response token. Same numbers, fewer LM-head FLOPs.
* **prefix cache** (trick 3): with LoRA only on blocks k..N-1 and no dropout below them, the input
  of block k does not depend on the adapter, so it is computed once per row (``prefix_states``)
  and the trained model runs only blocks k..N-1 on it (``nll_from_prefix``). Supported for
  decoders built like Llama (``embed_tokens``, ``layers``, ``norm``, ``rotary_emb``): llama,
  mistral, qwen2, qwen3; others raise instead of silently running a different computation.

All functions take right-padded batches. Losses are float32 whatever the model dtype.
"""
from __future__ import annotations

import numpy as np

PREFIX_CACHE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")


def pad_batch(ids: list, target: list, pad_id: int):
    """Right-pad rows; returns (input_ids (B, L) int64, attention (B, L) int64, need (B, L-1) bool).

    ``need[b, t]`` is True where position t predicts a response token (token t+1 is a target).
    """
    import torch

    L = max(len(x) for x in ids)
    B = len(ids)
    x = np.full((B, L), pad_id, dtype=np.int64)
    att = np.zeros((B, L), dtype=np.int64)
    tgt = np.zeros((B, L), dtype=bool)
    for j, (r, m) in enumerate(zip(ids, target)):
        x[j, :len(r)] = r
        att[j, :len(r)] = 1
        tgt[j, :len(r)] = m
    need = tgt[:, 1:] & att[:, 1:].astype(bool)
    return torch.from_numpy(x), torch.from_numpy(att), torch.from_numpy(need)


def _cap_logits(lm, logits):
    import torch

    cap = getattr(lm.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def nll_plain(lm, input_ids, attention_mask, need):
    """Reference path: full logits from the model's forward; (k,) NLL at ``need`` positions (flat, row-major)."""
    import torch

    logits = lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = logits[:, :-1].float()
    labels = input_ids[:, 1:].clone()
    labels[~need] = -100
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            reduction="none", ignore_index=-100)
    return nll[need.reshape(-1)]


def nll_response_only(lm, input_ids, attention_mask, need):
    """Trick 1: decoder once, LM head only where a response token is predicted; same output as :func:`nll_plain`."""
    import torch

    hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    h = hidden[:, :-1][need]
    logits = _cap_logits(lm, lm.get_output_embeddings()(h)).float()
    return torch.nn.functional.cross_entropy(logits, input_ids[:, 1:][need], reduction="none")


def _check_prefix_supported(lm) -> None:
    mt = getattr(lm.config, "model_type", "")
    dec = lm.get_decoder()
    if mt not in PREFIX_CACHE_TYPES or not all(hasattr(dec, a) for a in ("layers", "norm", "rotary_emb")):
        raise ValueError(f"prefix_cache needs a Llama-like decoder ({', '.join(PREFIX_CACHE_TYPES)}); "
                         f"model_type={mt!r}: set prefix_cache=False")


def run_blocks(lm, hidden, attention_mask, start: int, stop: int | None = None, final_norm: bool = True):
    """Run decoder blocks ``start..stop-1`` on ``hidden`` (B, L, d), as the model's own forward does.

    Mirrors ``LlamaModel.forward`` (transformers 5.x): causal mask from ``create_causal_mask``,
    rotary embeddings from positions 0..L-1, then the blocks, then the final norm.
    """
    import torch
    from transformers.masking_utils import create_causal_mask

    _check_prefix_supported(lm)
    dec = lm.get_decoder()
    pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=dec.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=pos)
    pe = dec.rotary_emb(hidden, position_ids=pos)
    for layer in dec.layers[start:stop]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=pe, position_ids=pos,
                       past_key_values=None, use_cache=False)
    return dec.norm(hidden) if final_norm else hidden


def prefix_states(lm, ids: list, start: int, pad_id: int, batch_size: int = 8,
                  show_progress: bool = False, desc: str = "prefix cache") -> list:
    """Input of block ``start`` for every row, computed once (no grad): list of (L_i, d) float32 arrays.

    Rows are batched by length; padding does not change real positions' states (right padding,
    causal attention), so each row's states are what an unpadded forward would give.
    """
    import torch
    from tqdm.auto import tqdm

    _check_prefix_supported(lm)
    dec = lm.get_decoder()
    device = next(lm.parameters()).device
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(-lengths, kind="stable")
    out: list = [None] * len(ids)
    batches = [order[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    for b in tqdm(batches, desc=desc, disable=not show_progress, unit="batch", leave=False):
        x, att, _ = pad_batch([ids[i] for i in b], [np.zeros(len(ids[i]), bool) for i in b], pad_id)
        x, att = x.to(device), att.to(device)
        with torch.inference_mode():
            h = dec.embed_tokens(x)
            if start > 0:
                h = run_blocks(lm, h, att, 0, start, final_norm=False)
            h = h.float().cpu().numpy()
        for j, i in enumerate(b):
            out[i] = np.ascontiguousarray(h[j, :lengths[i]])
    return out


def nll_from_prefix(lm, states: list, ids: list, target: list, start: int, pad_id: int, device=None):
    """Trick 3: NLL at response positions running only blocks ``start``.. on cached block inputs.

    Args:
        lm: the (LoRA-wrapped) causal LM's base model.
        states: per-row (L_i, d) cached inputs of block ``start`` (from :func:`prefix_states`).
        ids, target: the rows' token ids and response masks (for labels and positions).
        start: first block to run.
        pad_id: pad token id.

    Returns:
        (k,) float32 NLL tensor, in the same order as :func:`nll_plain`.
    """
    import torch

    device = device or next(lm.parameters()).device
    x, att, need = pad_batch(ids, target, pad_id)
    B, L = x.shape
    d = states[0].shape[1]
    h = np.zeros((B, L, d), dtype=np.float32)
    for j, s in enumerate(states):
        h[j, :len(s)] = s
    dtype = next(p for p in lm.parameters()).dtype
    hidden = torch.from_numpy(h).to(device=device, dtype=dtype)
    x, att, need = x.to(device), att.to(device), need.to(device)
    hidden = run_blocks(lm, hidden, att, start)
    hsel = hidden[:, :-1][need]
    logits = _cap_logits(lm, lm.get_output_embeddings()(hsel)).float()
    return torch.nn.functional.cross_entropy(logits, x[:, 1:][need], reduction="none")
