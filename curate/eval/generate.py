"""Generation-based eval: greedy answers to an eval set's prompts, scored 0/1 per example.

An eval set with a ``generate`` option (see :class:`curate.eval.config.GenerateConfig`) is, after
each unit's training and for the base model, answered greedily by the model with the very prompt
tokens the trainer and the loss use, and each answer is scored against the reference:

* ``gsm8k_exact_match``: the final number of the generation equals the reference's ``####``
  number (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems", arXiv 2110.14168,
  whose answers end in ``#### N``). The generation's number is the one after its last ``####``,
  else the last number in the text; both are normalised (commas dropped, ``18.0`` -> ``18``).
* ``reference_contains``: the normalised reference (lower case, punctuation dropped, whitespace
  collapsed) is a substring of the normalised generation; for short-answer sets.

Per-example scores (higher is better) go through the same paired difference and bootstrap as the
losses (:mod:`curate.eval.stats`). At 135M, GSM8K exact match is at the floor (0.2-0.8% on the Open LLM leaderboard):
expect near-zero accuracies and wide intervals; the metric is there for larger models and as a
check that a selection does not break answering.

Importing this module does not import torch.
"""
from __future__ import annotations

import json
import re
import string
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np

GEN_METRICS = ("gsm8k_exact_match", "reference_contains")
HIGHER_IS_BETTER = frozenset(GEN_METRICS)  # losses: lower is better
N_SAMPLE = 5  # generations per set written to a unit's generations_sample.md

# a minus right after a digit is a subtraction ("10-3" ends in 3), not a sign
_NUMBER = re.compile(r"(?<![\d.])(?:-?\d(?:[\d,]*\d)?(?:\.\d+)?|-?\.\d+)")
_AFTER_HASHES = re.compile(r"####\s*\$?\s*(-?\d(?:[\d,]*\d)?(?:\.\d+)?|-?\.\d+)")
_PUNCT = str.maketrans("", "", string.punctuation)


def greedy_generate(lm, tokenizer, prompts: list, *, max_new_tokens: int, batch_size: int = 8,
                    eos_token_id=None) -> tuple[list[str], np.ndarray]:
    """Greedy (deterministic) continuations of ``prompts``, batched with left padding.

    Args:
        lm: causal LM (a peft model's base model or a plain model); its device is used.
        tokenizer: its tokenizer (pad and eos ids, decoding).
        prompts: n prompt texts (tokenised without special tokens) or n token-id sequences
            (used as given: pass the trainer's own prompt ids to match training exactly).
        max_new_tokens: at most this many new tokens per prompt (>= 1).
        batch_size: prompts per ``generate`` call (default 8). Left padding with an attention
            mask keeps each row's positions those of the unpadded prompt.
        eos_token_id: int or list of ints that stop a row (default ``tokenizer.eos_token_id``).

    Returns:
        (texts, n_new): n decoded continuations (special tokens skipped, stripped) and an (n,)
        int64 array of tokens generated per row (up to and including the stop token).
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    device = next(lm.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    stops = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if prompts and isinstance(prompts[0], str):
        prompts = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    texts, n_new = [], []
    for lo in range(0, len(prompts), batch_size):
        rows = [list(map(int, p)) for p in prompts[lo:lo + batch_size]]
        L = max(len(r) for r in rows)
        x = torch.full((len(rows), L), pad, dtype=torch.long)
        att = torch.zeros((len(rows), L), dtype=torch.long)
        for j, r in enumerate(rows):  # left padding: every row's last prompt token is at L-1
            x[j, L - len(r):] = torch.tensor(r, dtype=torch.long)
            att[j, L - len(r):] = 1
        with torch.inference_mode():
            g = lm.generate(input_ids=x.to(device), attention_mask=att.to(device), max_new_tokens=max_new_tokens,
                            do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=list(stops) or None)
        for row in g[:, L:].cpu().tolist():
            k = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            n_new.append(k)
            texts.append(tokenizer.decode(row[:k], skip_special_tokens=True).strip())
    return texts, np.asarray(n_new, dtype=np.int64)


def normalise_number(s: str) -> str | None:
    """Canonical text of a number: ``"1,000"`` -> ``"1000"``, ``"18.0"`` -> ``"18"``, ``".5"`` -> ``"0.5"``.

    Returns None when ``s`` is not a number.
    """
    try:
        d = Decimal(s.replace(",", "").replace("$", "").strip())
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The final numeric answer of a GSM8K-style text, normalised (see :func:`normalise_number`).

    The number right after the last ``####`` when there is one (GSM8K's gold format), else the
    last number anywhere in the text; None when there is no number.
    """
    hashes = _AFTER_HASHES.findall(text)
    if hashes:
        return normalise_number(hashes[-1])
    nums = _NUMBER.findall(text)
    return normalise_number(nums[-1]) if nums else None


def normalise_text(s: str) -> str:
    """Lower case, ASCII punctuation removed, whitespace collapsed (for ``reference_contains``)."""
    return " ".join(s.lower().translate(_PUNCT).split())


def score(metric: str, generations: list[str], references: list[str]) -> np.ndarray:
    """Per-example scores, 1.0 = correct, 0.0 = wrong, NaN = undefined.

    Args:
        metric: ``gsm8k_exact_match`` or ``reference_contains``.
        generations: n generated texts.
        references: n reference answers (GSM8K: the gold solution ending in ``#### N``).

    Returns:
        (n,) float64. NaN where the reference has no number (exact match) or normalises to ""
        (contains): such examples are dropped from the paired comparison.
    """
    if metric not in GEN_METRICS:
        raise ValueError(f"metric must be one of {GEN_METRICS}, got {metric!r}")
    if len(generations) != len(references):
        raise ValueError(f"generations ({len(generations)}) and references ({len(references)}) differ in length")
    out = np.full(len(references), np.nan)
    for i, (g, r) in enumerate(zip(generations, references)):
        if metric == "gsm8k_exact_match":
            want = extract_answer(r)
            if want is not None:
                out[i] = float(extract_answer(g) == want)
        else:
            want = normalise_text(r)
            if want:
                out[i] = float(want in normalise_text(g))
    return out


def generate_and_score(lm, tokenizer, prompts: list, references: list[str], ids: list[str], *, metric: str,
                       max_new_tokens: int, batch_size: int = 8, eos_token_id=None) -> tuple[dict, list, dict]:
    """Generate greedily for one eval set and score each example.

    Args:
        lm, tokenizer, prompts, max_new_tokens, batch_size, eos_token_id: as in :func:`greedy_generate`.
        references: n reference answers; ids: n example ids (for the records).
        metric: one of :data:`GEN_METRICS`.

    Returns:
        ({metric: (n,) float64 scores}, n record dicts (id, generation, n_new_tokens, extracted
        answer or None, score), {metric, seconds, mean_new_tokens, hit_max_new_tokens}).
    """
    t0 = time.perf_counter()
    texts, n_new = greedy_generate(lm, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                   eos_token_id=eos_token_id)
    sc = score(metric, texts, references)
    ext = [extract_answer(x) for x in texts] if metric == "gsm8k_exact_match" else [None] * len(texts)
    records = [{"id": i, "generation": x, "n_new_tokens": int(k), "extracted": e, "score": float(v)}
               for i, x, k, e, v in zip(ids, texts, n_new, ext, sc)]
    meta = {"metric": metric, "seconds": time.perf_counter() - t0, "mean_new_tokens": float(n_new.mean()) if len(n_new) else 0.0,
            "hit_max_new_tokens": int((n_new >= max_new_tokens).sum())}
    return {metric: sc}, records, meta


def write_generations(udir, records: dict, sets: list) -> None:
    """Write a unit's generations: ``generations.jsonl`` (all) and ``generations_sample.md``.

    Args:
        udir: the unit folder (Path or str).
        records: {set name: record list from :func:`generate_and_score`}.
        sets: the :class:`curate.eval.sets.EvalSet` list (prompts and references for the sample).
    """
    udir = Path(udir)
    with open(udir / "generations.jsonl", "w") as f:
        for name, rows in records.items():
            for r in rows:
                f.write(json.dumps({"set": name, **r}) + "\n")
    by_name = {s.name: s for s in sets}
    lines = [f"# First {N_SAMPLE} generations per set (greedy)", ""]
    for name, rows in records.items():
        s = by_name[name]
        prompts = s.prompts()
        for j, r in enumerate(rows[:N_SAMPLE]):
            lines += [f"## {name} #{j} ({r['id']}): score {r['score']}, extracted {r['extracted']!r}, "
                      f"{r['n_new_tokens']} new tokens", "", "**prompt**", "", prompts[j], "",
                      "**reference**", "", s.reference[j], "", "**generation**", "", r["generation"], ""]
    (udir / "generations_sample.md").write_text("\n".join(lines))
