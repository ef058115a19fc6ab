"""LESS's warm-up: a short LoRA fit on a random 5% of the pool, with a checkpoint per epoch.

Xia et al., "LESS: Selecting Influential Data for Targeted Instruction Tuning" (ICML 2024, arXiv
2402.04333; authors' code princeton-nlp/LESS, ``less/scripts/train/warmup_lora_train.sh``): train
LoRA on a random 5% of the pool for 4 epochs and keep, after every epoch, the adapter and Adam's
moments; the gradient features of every row are then taken at each of these checkpoints and
weighted by the epoch's mean learning rate.

The checkpoints are a model artifact derived from content only (the trainer's settings, the base
weights, the warm-up rows and the seed), so they are stored under the model cache
(:func:`curate.models.loading.model_cache_dir`, ``less_warmup/<key>/``), where the pool's feature
stage and the target stage both find them by that key. About 24 MB for SmolLM2-135M with rank 16
on q/k/v/o of 8 blocks. A killed warm-up resumes from its last finished epoch
(``less_warmup/<key>.work/``).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.hashing import stable_hash
from curate.train.checkpoints import (
    adam_moments,
    load_state,
    save_state,
    training_state,
)

log = logging.getLogger(__name__)

WARMUP_VERSION = "1"


def warmup_rows(structured: np.ndarray, fraction: float, seed: int, min_rows: int = 1) -> np.ndarray:
    """The warm-up sample: a seeded random ``fraction`` of the instruction rows (sorted indices).

    Args:
        structured: (n,) bool, rows with an instruction and a response.
        fraction: share of those rows (LESS: 0.05), rounded; at least ``min_rows``.
        seed: seed of the draw.
        min_rows: smallest sample (default 1).

    Returns:
        (m,) int64 sorted row indices.
    """
    cand = np.flatnonzero(structured)
    m = min(len(cand), max(min_rows, int(round(fraction * len(cand)))))
    return np.sort(np.random.default_rng(seed).choice(cand, size=m, replace=False)).astype(np.int64)


def warmup_key(trainer, table: pa.Table, rows: np.ndarray, seed: int) -> str:
    """Content key of a warm-up: trainer settings, base weights, the warm-up rows' text, the seed."""
    from curate.models.loading import proxy_lm_fingerprint
    from curate.score.rows import row_fields

    f = row_fields(table.take(pa.array(rows)))
    weights = proxy_lm_fingerprint(trainer.model) if isinstance(trainer.model, str) else "object"
    return stable_hash({"v": WARMUP_VERSION, "trainer": trainer.fingerprint(), "weights": weights, "seed": seed,
                        "rows": [f.instruction, f.input, f.output]}, n=24)


def warmup_dir(key: str) -> Path:
    """Where the warm-up with this key lives (``<model cache>/less_warmup/<key>``)."""
    from curate.models.loading import model_cache_dir

    return model_cache_dir() / "less_warmup" / key


def epoch_weights(lrs: np.ndarray, steps_per_epoch: int, epochs: int) -> np.ndarray:
    """LESS's checkpoint weights: each epoch's mean learning rate, normalised to sum to 1.

    Args:
        lrs: (steps,) learning rate of every step.
        steps_per_epoch: steps in one epoch.
        epochs: checkpoints (epochs).

    Returns:
        (epochs,) float64 weights.
    """
    lrs = np.asarray(lrs, np.float64)
    means = np.array([lrs[e * steps_per_epoch:(e + 1) * steps_per_epoch].mean() for e in range(epochs)])
    return means / means.sum()


def load_checkpoints(folder: Path) -> tuple[dict, list[dict]]:
    """``(meta, [checkpoint per epoch])``; each checkpoint has ``adapter``, ``m``, ``v``."""
    meta = json.loads((folder / "meta.json").read_text())
    return meta, [load_state(folder / f"ckpt_{e}.pt") for e in range(1, meta["epochs"] + 1)]


def run_warmup(trainer, table: pa.Table, rows: np.ndarray, seed: int, key: str) -> Path:
    """Train the warm-up (or resume it, or find it done) and return its folder.

    Args:
        trainer: the :class:`~curate.train.lora.LoRATrainer` (its ``epochs`` = checkpoints).
        table: the pool.
        rows: warm-up row indices (:func:`warmup_rows`).
        seed: LoRA init and batch order.
        key: :func:`warmup_key` of these.

    Returns:
        the folder with ``meta.json`` (learning-rate weights, epochs, rows) and ``ckpt_<e>.pt``.
    """
    final = warmup_dir(key)
    if (final / "meta.json").exists():
        return final
    work = final.with_name(key + ".work")
    work.mkdir(parents=True, exist_ok=True)
    enc = trainer.encode(table.take(pa.array(rows)))
    steps = math.ceil(len(enc) / trainer.batch_size)
    done = max([e for e in range(1, trainer.epochs) if (work / f"state_{e}.pt").exists()], default=0)

    def at_epoch(info) -> None:
        e = info.epochs_done
        if e == 0:
            return
        m, v = adam_moments(info.model, info.optimizer)
        adapter = {n: p.detach().cpu().clone() for n, p in info.model.named_parameters() if p.requires_grad}
        save_state({"adapter": adapter, "m": m, "v": v, "lrs": list(info.lrs[(e - 1) * steps:e * steps])},
                   work / f"ckpt_{e}.pt")
        if e < trainer.epochs:
            save_state(training_state(info), work / f"state_{e}.pt")
            (work / f"state_{e - 1}.pt").unlink(missing_ok=True)
        log.info("less warm-up: epoch %d of %d saved", e, trainer.epochs)

    if done:
        log.info("less warm-up: resuming after epoch %d of %d", done, trainer.epochs)
    log.info("less warm-up: %d rows, %d epochs of %d steps", len(enc), trainer.epochs, steps)
    trainer.fit(enc, seed=seed, epoch_callback=at_epoch,
                resume=load_state(work / f"state_{done}.pt") if done else None)
    w = epoch_weights(trainer.lrs_, steps, trainer.epochs)
    meta = {"epochs": trainer.epochs, "weights": w.tolist(), "rows": len(enc), "steps_per_epoch": steps,
            "trainer": trainer.fingerprint(), "seed": seed, "final_loss": float(trainer.losses_[-1])}
    for f in work.glob("state_*.pt"):
        f.unlink()
    (work / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    try:
        os.rename(work, final)  # complete checkpoints appear in one step
    except OSError:
        if not (final / "meta.json").exists():  # not another process finishing the same warm-up first
            raise
        shutil.rmtree(work, ignore_errors=True)
    return final
