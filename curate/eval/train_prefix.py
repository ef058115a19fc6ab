"""The training rows' prefix cache kept on disk, so units that train on the same rows build it once.

The trainer's prefix cache (trick 3, :func:`curate.train.forward.prefix_states`) runs the frozen
lower blocks over every training row before the first step: about a fifth of a unit's CPU time
on SmolLM2 (~200 s of ~1,000 s for 1,000 Alpaca rows here). Those states depend on the rows, the
base model and the lowest adapted block only, not on the seed: a deterministic method
(``top_k``, ``rds``, ``deita``, ...) trains its 3 seeds on the same rows, and a unit resumed after a
kill trains on its own rows again. :func:`train_states` computes them exactly as ``fit`` would (same
function, rows, order and batch size, so the same values bit for bit) and keeps the newest
``KEEP`` selections' states in ``<output>/train_cache/<key>.npy`` (float32, rows concatenated:
~0.6 GB for 1,000 random Alpaca rows, ~1 GB for long-response selections), oldest deleted first.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from curate.core.hashing import stable_hash

log = logging.getLogger(__name__)

KEEP = 2
"""Selections whose states stay on disk: a deterministic arm's seeds run one after another, and the
unit in flight must keep its own for a resume."""


def train_states_key(trainer, enc, start: int, extra: dict | None = None) -> str:
    """Key of ``enc``'s block-``start`` inputs: base model, start block, token ids, batch size.

    Args:
        trainer: the :class:`~curate.train.lora.LoRATrainer` (its ``fingerprint()["model"]`` and
            ``batch_size``, which sets the batches the states are computed in).
        enc: :class:`~curate.train.encode.Encoded` training rows, in training order.
        start: the lowest adapted block.
        extra: more key entries (e.g. ``{"autocast": "bfloat16"}`` on CUDA).
    """
    return stable_hash({"model": trainer.fingerprint()["model"], "start": int(start), "batch": trainer.batch_size,
                        "ids": stable_hash([x.tolist() for x in enc.ids]), **(extra or {})})


def train_states(folder: Path, trainer, enc, start: int, key: str,
                 show_progress: bool = False) -> tuple[list, float, bool]:
    """``enc``'s prefix-cache states for ``trainer.fit(enc, states=...)``, from disk when present.

    Args:
        folder (Path): ``<output>/train_cache``.
        trainer: the trainer (its base model, pad token and ``batch_size``).
        enc: :class:`~curate.train.encode.Encoded` training rows.
        start (int): the lowest adapted block.
        key (str): :func:`train_states_key` of these rows.
        show_progress (bool): draw the prefix bar (default False).

    Returns:
        (states, seconds, cached): per-row (L_i, d) float32 arrays (memory-mapped slices when read
        from disk), the seconds spent here, and whether they came from disk.
    """
    from curate.train.forward import prefix_states
    from curate.train.prefix_store import load_flat_states, save_flat_states

    t0 = time.perf_counter()
    folder = Path(folder)
    f = folder / f"{key}.npy"
    states = load_flat_states(f, enc.lengths)
    if states is not None:
        os.utime(f)  # recently used: pruned last
        log.info("training prefix cache: %d rows read from %s", len(enc), f)
        return states, time.perf_counter() - t0, True
    lm, tok = trainer.base()
    states = prefix_states(lm, enc.ids, start, tok.pad_token_id or 0, trainer.batch_size, show_progress)
    save_flat_states(f, states)
    _prune(folder, KEEP)
    return states, time.perf_counter() - t0, False


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used ``*.npy`` files of ``folder``."""
    from curate.train.prefix_store import finished_flat_states

    files = sorted(finished_flat_states(folder), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)
