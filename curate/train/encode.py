"""Rows -> token ids with a response mask, identical for training and evaluation.

A row is rendered as the model's chat template with one user turn (instruction, plus "\\n\\n" and
the input when there is one) followed by the reference response and the template's end-of-turn
token (``<|im_end|>`` for SmolLM2), or as the Stanford Alpaca prompt followed by the response and
``eos_token``. Prompt and response are tokenised separately and concatenated, so the response mask
is exact (no character-offset guessing) and the end token is part of the response: the loss covers
the assistant tokens including ``<|im_end|>`` (docs/evaluation.md, "What is trained").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.score.lm import build_prompt
from curate.score.rows import row_fields

TEMPLATES = ("chat", "alpaca")


@dataclass
class Encoded:
    """Token ids of n rows and which of their tokens are response (target) tokens.

    Attributes:
        ids: list of n (L_i,) int64 arrays.
        target: list of n (L_i,) bool arrays; True for response tokens (end token included).
        n_prompt: (n,) int64 prompt tokens per row (after truncation).
        has_end: (n,) bool; False when truncation cut the response's end token.
        span: None, or list of n (L_i,) bool arrays marking the response tokens that overlap a
            character span of the response (e.g. GSM8K's ``#### N`` line; see ``spans`` in
            :func:`encode_texts`). A subset of ``target``.
    """

    ids: list
    target: list
    n_prompt: np.ndarray
    has_end: np.ndarray
    span: list | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx) -> "Encoded":
        """The rows at ``idx`` (int array), in that order."""
        return Encoded([self.ids[i] for i in idx], [self.target[i] for i in idx], self.n_prompt[idx], self.has_end[idx],
                       None if self.span is None else [self.span[i] for i in idx])

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)

    @property
    def n_target(self) -> np.ndarray:
        """(n,) response tokens that are predicted (a token at position 0 is never predicted)."""
        return np.array([int(m[1:].sum()) for m in self.target], dtype=np.int64)


def end_of_turn(tokenizer, template: str) -> str:
    """The text that closes an assistant turn (``<|im_end|>`` for ChatML, else ``eos_token``)."""
    if template == "chat" and getattr(tokenizer, "chat_template", None):
        probe = "\x00PROBE\x00"
        full = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
        tail = full[full.index(probe) + len(probe):].strip()
        if tail:
            return tail
    return tokenizer.eos_token or ""


def render_prompt(tokenizer, instruction: str, input: str, template: str = "chat",
                  system_prompt: str | None = None) -> str:
    """The prompt text before the response.

    Args:
        tokenizer: the model's tokenizer (its chat template for ``chat``).
        instruction, input: the row's fields ("" when absent).
        template: ``chat`` (default) or ``alpaca``.
        system_prompt: None keeps the template's default system turn (SmolLM2 adds one);
            "" or a string puts that system message first.
    """
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    if template == "alpaca":
        return build_prompt(instruction, input, "alpaca")
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("template='chat' needs a tokenizer with a chat template; use template='alpaca'")
    user = instruction if not (input or "").strip() else f"{instruction}\n\n{input}"
    msgs = ([] if system_prompt is None else [{"role": "system", "content": system_prompt}]) + \
        [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def encode_texts(tokenizer, prompts: list[str], responses: list[str], *, template: str = "chat",
                 max_length: int = 512, max_response_tokens: int | None = None,
                 spans: list | None = None) -> Encoded:
    """Tokenise prompt/response pairs; responses get the end-of-turn token appended.

    Args:
        tokenizer: the model's tokenizer.
        prompts: n rendered prompts (see :func:`render_prompt`).
        responses: n responses (without end token).
        template: decides the end token (see :func:`end_of_turn`).
        max_length: tokens per row; longer rows are cut from the right (default 512).
        max_response_tokens: keep only the first k response tokens (the end token is then cut
            too), e.g. 256 for GPT-4 references (docs/evaluation.md). Default None.
        spans: None (default), or n items, each None or a character span ``(start, end)`` of
            the response; the response tokens whose offsets overlap it are marked in
            ``Encoded.span`` (a fast tokenizer's offset mapping of this very tokenisation, so
            no substring is re-tokenised). A token straddling a span edge counts as inside; a
            span that truncation cuts short is dropped whole (no tokens marked).

    Returns:
        :class:`Encoded`.
    """
    end = end_of_turn(tokenizer, template)
    p_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if spans is not None and len(spans) != len(responses):
        raise ValueError(f"spans must have one item per response ({len(responses)}), got {len(spans)}")
    r_enc = tokenizer([r + end for r in responses], add_special_tokens=False, return_offsets_mapping=spans is not None)
    r_ids = r_enc["input_ids"]
    r_span = None
    if spans is not None:  # token k of the response is in the span when its char range overlaps [a, b)
        r_span = [np.array([sp is not None and s < sp[1] and e > sp[0] for s, e in offs], dtype=bool)
                  for sp, offs in zip(spans, r_enc["offset_mapping"])]
    bos = [tokenizer.bos_token_id] if (template == "alpaca" and tokenizer.bos_token_id is not None
                                       and getattr(tokenizer, "add_bos_token", False)) else []
    ids, tgt, n_p, ends, sp = [], [], [], [], []
    for j, (p, r) in enumerate(zip(p_ids, r_ids)):
        p = bos + list(p)
        full = len(r)
        r = list(r)[:max_response_tokens] if max_response_tokens else list(r)
        ends.append(len(r) == full and len(p) + len(r) <= max_length)
        x = np.asarray(p + r, dtype=np.int64)[:max_length]
        m = np.zeros(len(x), dtype=bool)
        m[len(p):] = True
        ids.append(x)
        tgt.append(m)
        n_p.append(min(len(p), len(x)))
        if r_span is not None:  # cut exactly like the ids; a span cut short is dropped whole
            m_sp = np.concatenate([np.zeros(len(p), dtype=bool), r_span[j][:len(r)]])[:max_length]
            sp.append(m_sp if m_sp.sum() == r_span[j].sum() else np.zeros_like(m_sp))
    return Encoded(ids, tgt, np.asarray(n_p, dtype=np.int64), np.asarray(ends, dtype=bool),
                   sp if r_span is not None else None)


def encode_table(tokenizer, table: pa.Table, *, template: str = "chat", system_prompt: str | None = None,
                 max_length: int = 512, max_response_tokens: int | None = None) -> Encoded:
    """Encode a canonical table (instruction/input/output or messages columns).

    Rows without an instruction/response pair (plain text) are encoded with an empty response
    and therefore contribute no loss; callers should drop them first (the eval harness does).
    """
    f = row_fields(table)
    prompts = [render_prompt(tokenizer, a, x, template, system_prompt) for a, x in zip(f.instruction, f.input)]
    return encode_texts(tokenizer, prompts, f.output, template=template, max_length=max_length,
                        max_response_tokens=max_response_tokens)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                           group_size: int = 64, group_by_length: bool = True) -> list[np.ndarray]:
    """One epoch of batches (row indices), each row exactly once.

    Rows are shuffled, cut into mega-batches of ``group_size`` rows, sorted by length inside each
    (so a batch holds rows of similar length and little padding), cut into batches of
    ``batch_size``, and the batch order is shuffled (HF ``group_by_length``'s idea). The number of
    batches is ceil(n / batch_size) whatever the lengths, so arms with equal rows get equal steps.

    Args:
        lengths: (n,) token lengths.
        batch_size: rows per batch.
        rng: numpy Generator (seeded by the caller: common random numbers across arms).
        group_size: rows per mega-batch (default 64; rounded up to a multiple of batch_size).
        group_by_length: False gives plain shuffled batches.

    Returns:
        list of ceil(n / batch_size) int64 arrays.
    """
    n = len(lengths)
    perm = rng.permutation(n)
    if not group_by_length:
        return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    g = max(batch_size, -(-group_size // batch_size) * batch_size)
    batches = []
    for lo in range(0, n, g):
        mega = perm[lo:lo + g]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]
