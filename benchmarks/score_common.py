"""Shared loading and cached feature computation for the score_* benchmarks.

Expensive per-row features (SmolLM2 losses, MiniLM embeddings) are computed through
``StageContext.map_shards`` into ``--cache-dir`` so a killed benchmark resumes where it stopped.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from curate.core.stage import StageContext
from curate.score import lm as lmlib
from curate.score.rows import RowFields, parse_car_string

log = logging.getLogger("benchmarks.score")
CAR_ACC = 0.8425  # CaR's IQS pairwise accuracy on the APE test split (Ge et al. 2024)


def load_pairs(data: Path, split: str) -> tuple[RowFields, RowFields]:
    """(pos rows, neg rows) of car_ape_pairs_{split}.csv, aligned pair by pair."""
    rows = list(csv.DictReader(open(data / "quality" / f"car_ape_pairs_{split}.csv", newline="")))
    pos, neg = [], []
    for r in rows:
        ins, inp, _ = parse_car_string(r["src"].strip())
        pos.append((ins, inp, parse_car_string(r["pos"])[2]))
        neg.append((ins, inp, parse_car_string(r["neg"])[2]))
    return _fields(pos), _fields(neg)


def load_scores(data: Path, split: str) -> tuple[RowFields, np.ndarray]:
    """Rows and 0/1 labels of car_ape_score_{split}.csv."""
    rows = list(csv.DictReader(open(data / "quality" / f"car_ape_score_{split}.csv", newline="")))
    return _fields([parse_car_string(r["src"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def load_dclm(data: Path, name: str) -> tuple[RowFields, np.ndarray]:
    rows = [json.loads(line) for line in open(data / "quality" / f"dclm_human_quality_{name}.jsonl")]
    t = [r["text"] for r in rows]
    n = len(t)
    return RowFields([""] * n, [""] * n, [""] * n, t, np.zeros(n, bool)), np.array([r["label"] for r in rows])


def _fields(triples) -> RowFields:
    I, X, O = (list(x) for x in zip(*triples))
    return RowFields(I, X, O, [""] * len(I), np.ones(len(I), bool))


def subset(f: RowFields, idx: np.ndarray) -> RowFields:
    return RowFields([f.instruction[i] for i in idx], [f.input[i] for i in idx], [f.output[i] for i in idx],
                     [f.text[i] for i in idx], f.structured[idx])


def lm_losses(f: RowFields, cache: Path, model: str = "SmolLM2-135M-Instruct", max_length: int = 512,
              batch_size: int = 8, shard: int = 8) -> dict[str, np.ndarray]:
    """Per-row s(A|Q), whole-string loss and s(A) (alpaca template), cached and resumable.

    These are exactly the quantities of the ``perplexity`` stage (ppl_response = exp(cond),
    ppl_text = exp(all)) and the ``ifd`` stage (ifd = cond / uncond), computed in 2 passes
    instead of 3 by sharing the conditioned pass.
    """
    from curate.models.loading import load_causal_lm
    state = {}

    def fn(start, stop):
        if "lm" not in state:
            state["lm"] = load_causal_lm(model, None, None)
        lm, tok = state["lm"]
        s = subset(f, np.arange(start, stop))
        if s.structured.all():
            prompts = [lmlib.build_prompt(a, x, "alpaca") for a, x in zip(s.instruction, s.input)]
            cond = lmlib.span_losses(lm, tok, prompts, s.output, max_length=max_length, batch_size=batch_size)
            k = cond["n_target"]  # same answer tokens for s(A), as the ifd stage does
            unc = lmlib.span_losses(lm, tok, ["### Response:"] * len(s), s.output, max_length=max_length,
                                    batch_size=batch_size, max_target_tokens=k, want_all=False)
            r = {"loss_uncond": np.where(k > 0, unc["loss_target"], np.nan)}
            return {"cond": cond["loss_target"], "all": cond["loss_all"], "uncond": r["loss_uncond"]}
        r = lmlib.span_losses(lm, tok, s.text, [""] * len(s), max_length=max_length, batch_size=batch_size)
        nan = np.full(len(s), np.nan)
        return {"cond": nan, "all": r["loss_all"], "uncond": nan}

    ctx = StageContext(work_dir=cache, show_progress=True)
    return ctx.map_shards(len(f), fn, shard_size=shard, desc=f"lm {cache.name}")


def pairwise_accuracy(s_pos: np.ndarray, s_neg: np.ndarray) -> float:
    """Share of pairs where the expert-revised response scores higher (ties and NaN count 1/2)."""
    win = np.where(s_pos > s_neg, 1.0, np.where(s_pos < s_neg, 0.0, 0.5))
    return float(np.mean(win))


def auc(score: np.ndarray, label: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = ~np.isnan(score)
    return float(roc_auc_score(label[ok], score[ok]))


def pair_sample(n_pairs: int, n: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random sample of n pairs (all when n is None or >= n_pairs)."""
    if n is None or n >= n_pairs:
        return np.arange(n_pairs)
    return np.sort(np.random.default_rng(seed).choice(n_pairs, size=n, replace=False))


def lm_pairs(data: Path, split: str, n: int | None, cache_dir: Path) -> tuple[np.ndarray, dict, dict]:
    """(pair indices, pos losses, neg losses) for a sample of n pairs of ``split``."""
    pos, neg = load_pairs(data, split)
    idx = pair_sample(len(pos), n)
    # Interleave pos/neg so every finished shard holds whole pairs.
    both = RowFields(*[[v for i in idx for v in (getattr(pos, a)[i], getattr(neg, a)[i])]
                       for a in ("instruction", "input", "output", "text")], np.ones(2 * len(idx), bool))
    out = lm_losses(both, cache_dir / f"pairs_{split}_n{len(idx)}")
    return idx, {k: v[0::2] for k, v in out.items()}, {k: v[1::2] for k, v in out.items()}
