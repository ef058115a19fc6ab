"""Held-out evaluation sets: prompts with reference answers, read from files in several layouts.

Layouts detected per row: ``instruction``/``input``/``output`` (AlpacaEval, Alpaca), ``question``/
``answer`` (GSM8K), self-instruct's ``instruction`` + ``instances[0].input/output``, ``prompt``/
``completion`` or ``prompt``/``canonical_solution`` (HumanEval). A reference style (e.g. ``human``,
``davinci003``, ``gpt4``) is a label for the report: the same prompts scored under several
reference styles separate "better data" from "matching the reference's style" (docs/evaluation.md).
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def answer_span(reference: str) -> tuple[int, int] | None:
    """Character span ``[start, end)`` of a GSM8K solution's final answer line (``#### 72``).

    From the last ``####`` to the end of its line, trailing whitespace excluded (GSM8K puts it on
    a line of its own; a ``####`` inside a line is accepted too); None when there is none.
    Used for the answer-line NLL (docs/evaluation.md): the span is mapped to tokens by the
    tokenizer's offset mapping (:func:`curate.train.encode.encode_texts`), so the tokens are
    exactly those of the scored sequence, not of a re-tokenised substring.
    """
    i = reference.rfind("####")
    if i < 0:
        return None
    j = reference.find("\n", i)
    line = reference[i:] if j < 0 else reference[i:j]
    return i, i + len(line.rstrip())


@dataclass
class EvalSet:
    """n held-out examples.

    Attributes:
        name: set name (report key). style: reference style label.
        ids, instruction, input, reference: lists of n str.
        max_response_tokens: score only the first k reference tokens (None = all).
    """

    name: str
    ids: list
    instruction: list
    input: list
    reference: list
    style: str = ""
    max_response_tokens: int | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def prompts(self) -> list[str]:
        """Prompt texts (instruction, then input) used for decontamination."""
        return [a if not x.strip() else f"{a}\n{x}" for a, x in zip(self.instruction, self.input)]


def _read_rows(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        return json.loads(stripped)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _fields(row: dict) -> tuple[str, str, str]:
    if "instances" in row and row["instances"]:
        inst = row["instances"][0]
        return row.get("instruction", ""), inst.get("input", "") or "", inst.get("output", "") or ""
    if "question" in row and "answer" in row:
        return row["question"], "", row["answer"]
    if "instruction" in row and "output" in row:
        return row["instruction"], row.get("input", "") or "", row["output"]
    if "prompt" in row and ("canonical_solution" in row or "completion" in row):
        return row["prompt"], "", row.get("canonical_solution", row.get("completion", ""))
    raise ValueError(f"eval row has none of the known layouts (instruction/output, question/answer, "
                     f"instances, prompt/canonical_solution): keys {sorted(row)}")


def load_eval_set(path, *, name: str | None = None, style: str = "", n: int | None = None, seed: int = 0,
                  strip_calculator: bool = False, max_response_tokens: int | None = None,
                  stratify: str | None = None) -> EvalSet:
    """Read an eval file and (optionally) draw a seeded sample.

    Args:
        path: JSON array, JSONL or ``.gz`` file.
        name: set name (default the file stem).
        style: reference style label (e.g. ``human``, ``davinci003``, ``gpt4``).
        n: sample this many rows (seeded, without replacement; default all). With the same
            ``n``/``seed`` two files with the same prompts in the same order (AlpacaEval's
            davinci-003 and GPT-4 files) give the same prompts.
        seed: sampling seed (default 0).
        strip_calculator: remove GSM8K ``<<...>>`` calculator annotations (the targeted GSM8K sanity run, docs/evaluation.md).
        max_response_tokens: score only the first k reference tokens (e.g. 256 for GPT-4).
        stratify: a row field to stratify the sample by (e.g. AlpacaEval's ``dataset``).
    """
    path = Path(path)
    rows = _read_rows(path)
    idx = np.arange(len(rows))
    if n is not None and n < len(rows):
        rng = np.random.default_rng(seed)
        if stratify:
            groups: dict = {}
            for i, r in enumerate(rows):
                groups.setdefault(r.get(stratify), []).append(i)
            keys = sorted(groups, key=str)
            # proportional allocation, rounding by largest remainder
            quota = np.array([len(groups[k]) for k in keys]) * n / len(rows)
            take = np.floor(quota).astype(int)
            take[np.argsort(-(quota - take))[: n - take.sum()]] += 1
            idx = np.sort(np.concatenate([rng.choice(groups[k], size=t, replace=False) for k, t in zip(keys, take)]))
        else:
            idx = np.sort(rng.choice(len(rows), size=n, replace=False))
    ids, I, X, R = [], [], [], []
    for i in idx:
        a, x, o = _fields(rows[i])
        if strip_calculator:
            o = GSM8K_CALC.sub("", o)
        ids.append(str(rows[i].get("id", f"{path.name}:{i + 1}")))
        I.append(a)
        X.append(x)
        R.append(o)
    return EvalSet(name or path.name.split(".")[0], ids, I, X, R, style, max_response_tokens,
                   {"path": str(path), "n_file": len(rows), "seed": seed})
