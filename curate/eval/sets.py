"""Held-out evaluation sets: prompts with reference answers, read from files in several layouts.

Layouts detected per row: ``instruction``/``input``/``output`` (AlpacaEval, Alpaca), ``question``/
``answer`` (GSM8K), self-instruct's ``instruction`` + ``instances[0].input/output``, ``prompt``/
``completion`` or ``prompt``/``canonical_solution`` (HumanEval), ``prompt``/``response`` (IFEval
prompts with GPT-4 responses). A reference style (e.g. ``human``,
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
    if "prompt" in row and "response" in row:
        return row["prompt"], "", row["response"] or ""
    raise ValueError(f"eval row has none of the known layouts (instruction/output, question/answer, "
                     f"instances, prompt/canonical_solution, prompt/response): keys {sorted(row)}")


def sample_rows(rows: list[dict], n: int | None, seed: int, stratify: str | None = None,
                candidates=None) -> np.ndarray:
    """Sorted row indices of a seeded sample of ``n`` rows (all when ``n`` is None or too large).

    Args:
        rows: the file's rows.
        n: rows wanted (default None = all candidates).
        seed: sampling seed.
        stratify: a row field to stratify by: proportional allocation, largest remainder.
        candidates: row indices to draw from (default None = every row; the draw is then the one
            eval sets have always made, so existing samples keep their rows).
    """
    cand = np.arange(len(rows)) if candidates is None else np.sort(np.asarray(candidates, dtype=np.int64))
    if n is None or n >= len(cand):
        return cand
    rng = np.random.default_rng(seed)
    if stratify:
        groups: dict = {}
        for i in cand:
            groups.setdefault(rows[i].get(stratify), []).append(int(i))
        keys = sorted(groups, key=str)
        # proportional allocation, rounding by largest remainder
        quota = np.array([len(groups[k]) for k in keys]) * n / len(cand)
        take = np.floor(quota).astype(int)
        take[np.argsort(-(quota - take))[: n - take.sum()]] += 1
        return np.sort(np.concatenate([rng.choice(groups[k], size=t, replace=False) for k, t in zip(keys, take)]))
    if candidates is None:
        return np.sort(rng.choice(len(rows), size=n, replace=False))
    return np.sort(rng.choice(cand, size=n, replace=False))


def normalize_prompt(text: str) -> str:
    """Lower case, whitespace runs collapsed: the key under which two prompts are "the same".

    AlpacaEval's self-instruct prompts join instruction and input with a blank line, the
    self-instruct file keeps them apart; both normalise to the same key.
    """
    return " ".join(text.split()).lower()


def load_eval_set(path, *, name: str | None = None, style: str = "", n: int | None = None, seed: int = 0,
                  strip_calculator: bool = False, max_response_tokens: int | None = None,
                  stratify: str | None = None, exclude_rows=None) -> EvalSet:
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
        exclude_rows: row indices (0-based) never drawn, e.g. the rows kept as selection queries
            (default None: every row is a candidate).

    ``meta["rows"]`` holds the file's row indices that were drawn, in order.
    """
    path = Path(path)
    rows = _read_rows(path)
    cand = None
    if exclude_rows is not None:
        cand = np.setdiff1d(np.arange(len(rows)), np.asarray(list(exclude_rows), dtype=np.int64))
    idx = sample_rows(rows, n, seed, stratify, cand)
    return rows_to_set(rows, idx, path, name=name or path.name.split(".")[0], style=style, seed=seed,
                       strip_calculator=strip_calculator, max_response_tokens=max_response_tokens)


def read_rows(path) -> list[dict]:
    """The rows of a JSON array, JSONL or ``.gz`` eval file."""
    return _read_rows(Path(path))


def rows_to_set(rows: list[dict], idx, path: Path, *, name: str, style: str = "", seed: int = 0,
                strip_calculator: bool = False, max_response_tokens: int | None = None) -> EvalSet:
    """The :class:`EvalSet` of rows ``idx`` of a file (ids: the row's ``id``, else ``<file>:<line>``)."""
    ids, I, X, R = [], [], [], []
    for i in idx:
        a, x, o = _fields(rows[i])
        if strip_calculator:
            o = GSM8K_CALC.sub("", o)
        ids.append(str(rows[i].get("id", f"{path.name}:{i + 1}")))
        I.append(a)
        X.append(x)
        R.append(o)
    return EvalSet(name, ids, I, X, R, style, max_response_tokens,
                   {"path": str(path), "n_file": len(rows), "seed": seed, "rows": [int(i) for i in idx]})
