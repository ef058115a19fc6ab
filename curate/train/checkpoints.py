"""LoRA checkpoints: what a fit looks like after an epoch (or any step), saved and restored.

LESS (Xia et al., ICML 2024) needs the adapter *and* Adam's moments at the end of every warm-up
epoch; learning percentage (Mekala et al., ACL Findings 2024) needs the model after every epoch,
and both are long enough on a CPU that a killed run must resume from the last finished epoch.
:meth:`curate.train.lora.LoRATrainer.fit` calls ``epoch_callback(EpochInfo)``; this module turns
that into a plain dict of tensors (:func:`training_state`), writes it atomically
(:func:`save_state`), reads it back (:func:`load_state`) and restores it into a fresh fit
(:func:`restore_training_state`, used by ``fit(resume=...)``). ``fit``'s ``checkpoint_callback``
receives the same :class:`EpochInfo` every few steps, so an evaluation unit killed mid-epoch
resumes at its last saved step (:mod:`curate.eval.runner`).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EpochInfo:
    """What ``fit``'s ``epoch_callback`` receives.

    Attributes:
        epochs_done: 0 before the first step, e after epoch e (1-based count of epochs done).
        batches_done: batches of epoch ``epochs_done + 1`` already trained (default 0: an epoch
            boundary; > 0 only for a mid-epoch ``checkpoint_callback``).
        model: the peft model being trained.
        optimizer: its ``torch.optim.AdamW`` (``optimizer.state[p]`` holds ``exp_avg``/``exp_avg_sq``).
        scheduler: the learning-rate schedule (``LambdaLR``).
        states: the prefix-cache block inputs of the training rows (list), or None.
        losses: mean response-token NLL of every step so far.
        lrs: learning rate of every step so far.
        tokens: ``{"target", "real", "padded"}`` token counts of the steps so far.
        seconds: training seconds so far (prefix cache excluded), across resumed segments.
    """

    epochs_done: int
    model: Any
    optimizer: Any
    scheduler: Any
    states: list | None
    losses: list
    lrs: list
    batches_done: int = 0
    tokens: dict | None = None
    seconds: float = 0.0


def trainable(model) -> list[tuple[str, Any]]:
    """``(name, parameter)`` of the parameters that require grad (the LoRA matrices), in model order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def training_state(info: EpochInfo) -> dict:
    """A resumable snapshot of a fit at ``info.epochs_done`` (CPU tensors and plain lists).

    Returns:
        ``{"epochs_done", "batches_done", "adapter": {name: tensor}, "optimizer": state_dict,
        "scheduler": state_dict, "losses": list, "lrs": list, "tokens": dict, "seconds": float}``.
    """
    def cpu(v):
        if hasattr(v, "detach"):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: cpu(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(cpu(x) for x in v)
        return v

    return {"epochs_done": int(info.epochs_done), "batches_done": int(info.batches_done),
            "adapter": {n: p.detach().cpu().clone() for n, p in trainable(info.model)},
            "optimizer": cpu(info.optimizer.state_dict()), "scheduler": dict(info.scheduler.state_dict()),
            "losses": list(info.losses), "lrs": list(info.lrs),
            "tokens": dict(info.tokens or {}), "seconds": float(info.seconds)}


def restore_training_state(model, optimizer, scheduler, state: dict) -> int:
    """Load a :func:`training_state` into a fresh fit's model, optimizer and schedule.

    Returns:
        the epochs already done (training continues in the next one, after its
        ``state["batches_done"]`` first batches).

    Raises:
        ValueError: the adapter's parameter names differ (another trainer configuration).
    """
    import torch

    params = dict(trainable(model))
    if set(params) != set(state["adapter"]):
        raise ValueError("resume: the checkpoint's adapter does not match this trainer's LoRA parameters "
                         f"({len(state['adapter'])} vs {len(params)} tensors)")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state["adapter"][n].to(p.device, p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return int(state["epochs_done"])


def adam_moments(model, optimizer) -> tuple[Any, Any]:
    """Adam's first and second moments of the trainable parameters, flattened in :func:`trainable` order.

    Returns:
        ``(m, v)``: two (P,) float32 CPU tensors (zeros for a parameter never stepped).
    """
    import torch

    ms, vs = [], []
    for _, p in trainable(model):
        st = optimizer.state.get(p, {})
        ms.append(st["exp_avg"].detach().float().cpu().reshape(-1) if "exp_avg" in st else torch.zeros(p.numel()))
        vs.append(st["exp_avg_sq"].detach().float().cpu().reshape(-1) if "exp_avg_sq" in st else torch.zeros(p.numel()))
    return torch.cat(ms), torch.cat(vs)


def save_state(obj: dict, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, then rename): a killed write leaves no file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load_state(path: str | Path) -> dict:
    """Read a :func:`save_state` file (tensors and plain Python values only)."""
    import torch

    return torch.load(Path(path), map_location="cpu", weights_only=True)
