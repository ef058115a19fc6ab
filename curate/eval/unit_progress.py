"""An unfinished evaluation unit's saved progress, so a killed unit resumes where it stopped.

A LoRA unit takes 10-60 min on a 2-core CPU (training, then per-example losses on every eval
set). Finished units were always kept (``<output>/units/``); this keeps the progress of the one
in flight under ``<output>/partial/<arm>/seed<s>/``:

* ``train_state.pt``: the fit's adapter, AdamW moments, schedule, losses and token counts after
  every ``TRAIN_CHECKPOINT_EVERY`` steps and after the last step
  (:func:`curate.train.checkpoints.training_state`); the resumed fit continues from the next batch
  and ends with the same adapter as an uninterrupted one (batch order depends on (seed, epoch)
  only; dropout is 0 under the prefix cache).
* ``eval_<set>.npz``: one eval set's per-example losses of the trained adapter, written as each
  set finishes.

Every file carries the unit's key (selection hash, trainer, seed, eval sets): progress of another
selection or setting is ignored and overwritten, never mixed in. A damaged file (a kill during the
write cannot leave one: writes are atomic; a disk fault can) is reported and its work redone.
The folder is removed once the unit's record is committed.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TRAIN_CHECKPOINT_EVERY = 25
"""Steps between training checkpoints: ~15 MB each for the default adapter (8 blocks, r 16), a few
minutes of CPU training apart, so a kill loses at most that much."""


class UnitProgress:
    """Saved progress of one unit (``<output>/partial/<arm>/seed<s>/``), checked against its key.

    Args:
        folder (Path): the unit's partial folder (created on first save).
        key (str): the unit's key; files written under another key are ignored.

    Attributes:
        resumed_eval_seconds (float): evaluation seconds of the sets :meth:`eval_losses` returned
            from disk (added to the unit's ``eval_seconds``, so a resumed unit reports its whole cost).
    """

    def __init__(self, folder: Path, key: str):
        self.folder = Path(folder)
        self.key = key
        self.resumed_eval_seconds = 0.0

    # -- training
    def train_state(self) -> dict | None:
        """The last saved training state of this unit, or None (none, another key, or damaged)."""
        from curate.train.checkpoints import load_state

        f = self.folder / "train_state.pt"
        if not f.exists():
            return None
        try:
            state = load_state(f)
        except Exception as e:  # noqa: BLE001 - any unreadable file means: train again
            log.warning("%s is damaged (%s: %s); training this unit from the start", f, type(e).__name__, e)
            return None
        if state.get("unit_key") != self.key:
            log.info("%s belongs to another selection or setting; training this unit from the start", f)
            return None
        log.info("resuming unit at step %d (%s)", len(state.get("losses", [])), f)
        return state

    def save_train_state(self, info) -> None:
        """``checkpoint_callback`` for :meth:`curate.train.lora.LoRATrainer.fit`: save ``info`` with the key."""
        from curate.train.checkpoints import save_state, training_state

        save_state({**training_state(info), "unit_key": self.key}, self.folder / "train_state.pt")

    # -- evaluation, one set at a time
    def eval_losses(self, name: str) -> dict[str, np.ndarray] | None:
        """Set ``name``'s saved ``{metric: (n,) array}``, or None (not yet, another key, or damaged)."""
        f = self.folder / f"eval_{name}.npz"
        if not f.exists():
            return None
        try:
            with np.load(f) as z:
                if str(z["__key__"]) != self.key:
                    return None
                self.resumed_eval_seconds += float(z["__seconds__"])
                return {k: z[k] for k in z.files if k not in ("__key__", "__seconds__")}
        except Exception as e:  # noqa: BLE001 - any unreadable file means: evaluate again
            log.warning("%s is damaged (%s: %s); evaluating set %r again", f, type(e).__name__, e, name)
            return None

    def save_eval_losses(self, name: str, losses: dict[str, np.ndarray], seconds: float) -> None:
        """Save set ``name``'s per-example losses and the seconds they took, atomically
        (temporary file, then rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        f = self.folder / f"eval_{name}.npz"
        tmp = f.with_name(f".{f.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, __key__=np.array(self.key), __seconds__=np.array(seconds), **losses)
        os.replace(tmp, f)

    def clear(self) -> None:
        """Remove the folder (after the unit's record is committed)."""
        shutil.rmtree(self.folder, ignore_errors=True)
