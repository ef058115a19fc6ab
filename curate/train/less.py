"""LESS's two annotators: the pool's gradient features and the targets' influence score.

Xia et al., "LESS: Selecting Influential Data for Targeted Instruction Tuning" (ICML 2024, arXiv
2402.04333); the method and where curate differs are in :mod:`curate.select.less` and
docs/methods/less.md. Why two stages: the pool's features (warm-up, then one gradient per row and
checkpoint) are the cost, and they do not depend on the targets, so they are one cached stage
(``less_gradients``, resumable shard by shard); the targets' gradients and the score are a cheap
second stage (``less_influence``), so a new target set reuses the pool's features.

Both take the same feature parameters (:class:`LESSGradients`); ``less_influence`` finds the
warm-up checkpoints by the key ``less_gradients`` wrote (column ``less_ckpt``), retraining the
warm-up from the rows marked ``less_warmup`` if the model cache lost them.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import embedding_column, embedding_matrix
from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)

LESS_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")  # LESS adapts the attention projections
GRAD_SHARD_ROWS = 256  # rows per resumable shard of pool gradients


@register
class LESSGradients(Annotator):
    """Warm-up LoRA checkpoints and every row's projected Adam gradient at each (LESS step 1-2).

    Columns: ``less_grads``: (C * d) float16 per row, C = ``epochs`` blocks of the unit-norm
    projected Adam direction at each checkpoint (zeros for plain-text rows); ``less_warmup``:
    the row was in the warm-up sample; ``less_ckpt``: the warm-up's key (the same on every row).

    Args:
        model: proxy LM alias, HF id, folder or ``.gguf`` path (default "SmolLM2-135M-Instruct").
        warmup_fraction: share of the instruction rows in the warm-up (default 0.05, the paper's).
        epochs: warm-up epochs = checkpoints (default 4, the paper's).
        r, alpha: LoRA rank and alpha (default 16 and 32, the evaluation trainer's; the paper: 128, 512).
        target_modules: adapted modules (default q/k/v/o projections, the paper's).
        layers: adapted blocks: int K = the top K (default 8, the evaluation trainer's; the paper: all).
        lr: peak learning rate (default 5e-4, the trainer's cosine schedule with 5% warmup; the
            paper: 2e-5, linear, 3% warmup, on a 7B model).
        batch_size: warm-up rows per step (default 8; the paper: 32 by accumulation).
        max_length: tokens per row (default 512; the paper: 2048).
        template: ``"chat"`` (default, the evaluation's) or ``"alpaca"``.
        proj_dim: projected dimension d (default 8192, the paper's; the cost of a row grows with d).
        eps_inside_sqrt: False (default, the paper's Adam direction m / (sqrt(v) + eps)); True for
            the authors' code's m / sqrt(v + eps).
        seed: warm-up sample, LoRA init, batch order and projection (default 0, the paper's).
        grad_batch_size: rows per per-example-gradient batch (default 8; execution-only).
        device: torch device (execution-only; None = CUDA when present: written, not yet run on a GPU).
        show_progress: progress bars (execution-only).
    """

    name = "less_gradients"
    version = "1"
    execution_params = ("grad_batch_size", "device", "show_progress")

    def __init__(self, *, model: str = "SmolLM2-135M-Instruct", warmup_fraction: float = 0.05, epochs: int = 4,
                 r: int = 16, alpha: int = 32, target_modules=LESS_MODULES, layers: int = 8, lr: float = 5e-4,
                 batch_size: int = 8, max_length: int = 512, template: str = "chat", proj_dim: int = 8192,
                 eps_inside_sqrt: bool = False, seed: int = 0, grad_batch_size: int = 8,
                 device: str | None = None, show_progress: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a model alias, HF id or path, got {model!r}")
        if isinstance(warmup_fraction, bool) or not isinstance(warmup_fraction, (int, float)) \
                or not 0 < warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be a number in (0, 1], got {warmup_fraction!r}")
        for name, v, low in (("epochs", epochs, 1), ("r", r, 1), ("alpha", alpha, 1), ("layers", layers, 1),
                             ("batch_size", batch_size, 1), ("max_length", max_length, 8), ("proj_dim", proj_dim, 1),
                             ("seed", seed, 0), ("grad_batch_size", grad_batch_size, 1)):
            check_real(v, name, low=low, integer=True)
        check_real(lr, "lr", low=0.0)
        if template not in ("chat", "alpaca"):
            raise ValueError(f"template must be 'chat' or 'alpaca', got {template!r}")
        if isinstance(target_modules, str) or not target_modules or not all(isinstance(m, str) for m in target_modules):
            raise ValueError(f"target_modules must be a list of module names, got {target_modules!r}")
        if not isinstance(eps_inside_sqrt, bool):
            raise ValueError(f"eps_inside_sqrt must be true or false, got {eps_inside_sqrt!r}")
        self.model, self.warmup_fraction, self.epochs, self.r, self.alpha = model, warmup_fraction, epochs, r, alpha
        self.target_modules, self.layers, self.lr, self.batch_size = target_modules, layers, lr, batch_size
        self.max_length, self.template, self.proj_dim, self.eps_inside_sqrt = max_length, template, proj_dim, eps_inside_sqrt
        self.seed, self.grad_batch_size, self.device, self.show_progress = seed, grad_batch_size, device, show_progress

    def output_columns(self) -> list[str]:
        return ["less_grads", "less_warmup", "less_ckpt"]

    def feature_params(self) -> dict:
        """This stage's parameters, as ``less_influence`` takes them."""
        return self.get_params()

    def trainer(self):
        """The warm-up :class:`~curate.train.lora.LoRATrainer` (also runs the gradient forward passes)."""
        from curate.train.lora import LoRATrainer

        return LoRATrainer(model=self.model, template=self.template, max_length=self.max_length, r=self.r,
                           alpha=self.alpha, target_modules=tuple(self.target_modules), layers=self.layers, lr=self.lr,
                           batch_size=self.batch_size, epochs=self.epochs, device=self.device,
                           show_progress=self.show_progress)

    def cache_params(self) -> dict:
        from curate.models.loading import proxy_lm_fingerprint

        params = super().cache_params()
        params["target_modules"] = list(self.target_modules)
        return {**params, "resolved": {"trainer": self.trainer().fingerprint(),
                                       "weights": proxy_lm_fingerprint(self.model)}}

    # -- the warm-up ---------------------------------------------------------------------
    def warmup(self, table: pa.Table, rows: np.ndarray | None = None):
        """``(trainer, key, folder)`` of this pool's warm-up, trained if not in the model cache."""
        from curate.score.rows import row_fields
        from curate.train.less_warmup import run_warmup, warmup_key, warmup_rows

        tr = self.trainer()
        if rows is None:
            rows = warmup_rows(row_fields(table).structured, self.warmup_fraction, self.seed)
        key = warmup_key(tr, table, rows, self.seed)
        return tr, key, run_warmup(tr, table, rows, self.seed, key)

    def features(self, tr, ckpts: list[dict], enc, idx: np.ndarray, adam: bool, states=None):
        """(len(idx), C * d) float32: per checkpoint, the projected, unit-norm gradient of each row.

        Args:
            tr: the trainer; ckpts: loaded checkpoints; enc: encoded rows; idx: rows of ``enc``.
            adam: Adam direction with the checkpoint's moments (pool rows) or the plain gradient
                (target rows, as LESS takes them).
            states: prefix-cache block inputs of ``enc`` (or None).
        """
        import torch

        from curate.train.grads import (
            adam_direction,
            example_gradients,
            rademacher_project,
            unit_rows,
        )

        model = tr.new_model(self.seed)
        blocks = []
        for c in ckpts:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if p.requires_grad:
                        p.copy_(c["adapter"][n])
            g = torch.cat([example_gradients(tr, model, enc, idx[lo:lo + self.grad_batch_size], states)
                           for lo in range(0, len(idx), self.grad_batch_size)])
            if adam:
                g = adam_direction(g, c["m"], c["v"], eps_inside_sqrt=self.eps_inside_sqrt)
            blocks.append(unit_rows(rademacher_project(g, self.proj_dim, self.seed)))
        return torch.cat(blocks, dim=1).numpy()

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.score.rows import row_fields
        from curate.train.forward import prefix_states
        from curate.train.less_warmup import load_checkpoints, warmup_rows
        from curate.train.lora import resolve_layers

        n = len(table)
        structured = row_fields(table).structured
        rows = np.flatnonzero(structured)
        warm = warmup_rows(structured, self.warmup_fraction, self.seed)
        tr, key, folder = self.warmup(table, warm)
        meta, ckpts = load_checkpoints(folder)
        enc = tr.encode(table.take(pa.array(rows)))
        base, tok = tr.base()
        width = len(ckpts) * self.proj_dim
        start_block = resolve_layers(self.layers, base.config.num_hidden_layers)[0]

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            sub = enc.take(np.arange(start, stop))
            # blocks below the adapted ones are frozen: their output serves every checkpoint
            states = prefix_states(base, sub.ids, start_block, tok.pad_token_id or 0, self.grad_batch_size) \
                if tr.prefix_cache else None
            return {"g": self.features(tr, ckpts, sub, np.arange(len(sub)), adam=True, states=states).astype(np.float16)}

        out = ctx.map_shards(len(rows), fn, shard_size=GRAD_SHARD_ROWS, desc="less_gradients")
        g = np.zeros((n, width), np.float16)
        g[rows] = out["g"] if len(rows) else g[rows]
        is_warm = np.zeros(n, bool)
        is_warm[warm] = True
        log.info("less_gradients: %d rows x %d checkpoints x d=%d (warm-up %s: %d rows, weights %s)", len(rows),
                 len(ckpts), self.proj_dim, key, meta["rows"], np.round(meta["weights"], 3).tolist())
        return pa.table({"less_grads": embedding_column(g), "less_warmup": pa.array(is_warm),
                         "less_ckpt": pa.array([key] * n, pa.string())})



@register
class LESSInfluence(LESSGradients):
    """Targets' gradients at the warm-up checkpoints and every row's LESS score (steps 3-5).

    Reads ``less_grads`` / ``less_warmup`` / ``less_ckpt`` (from ``less_gradients`` with the
    same parameters). Target rows get the plain gradient (no Adam direction), projected and
    normalised like the pool's; the score is :func:`curate.select.less.less_scores`.

    Columns: ``less_score`` (NaN for plain-text rows), ``less_task`` (the task attaining the
    max), ``less_targets`` (the targets' content hash, the same on every row: the selector checks
    it matches its own targets).

    Args:
        targets: target rows, a path, or ``{task: rows_or_path}`` (required; as for ``rds``).
        The rest: as :class:`LESSGradients` (they must be the values it ran with).
    """

    name = "less_influence"
    version = "1"

    def __init__(self, *, targets, model: str = "SmolLM2-135M-Instruct", warmup_fraction: float = 0.05,
                 epochs: int = 4, r: int = 16, alpha: int = 32, target_modules=LESS_MODULES, layers: int = 8,
                 lr: float = 5e-4, batch_size: int = 8, max_length: int = 512, template: str = "chat",
                 proj_dim: int = 8192, eps_inside_sqrt: bool = False, seed: int = 0, grad_batch_size: int = 8,
                 device: str | None = None, show_progress: bool = True):
        from curate.select.targets import validate_targets_spec

        validate_targets_spec(targets)
        self.targets = targets
        super().__init__(model=model, warmup_fraction=warmup_fraction, epochs=epochs, r=r, alpha=alpha,
                         target_modules=target_modules, layers=layers, lr=lr, batch_size=batch_size,
                         max_length=max_length, template=template, proj_dim=proj_dim,
                         eps_inside_sqrt=eps_inside_sqrt, seed=seed, grad_batch_size=grad_batch_size,
                         device=device, show_progress=show_progress)

    def required_columns(self) -> list[str]:
        return ["less_grads", "less_warmup", "less_ckpt"]

    def output_columns(self) -> list[str]:
        return ["less_score", "less_task", "less_targets"]

    def feature_params(self) -> dict:
        return {k: v for k, v in self.get_params().items() if k != "targets"}

    def prerequisites(self, columns: list[str]) -> list:
        need = [c for c in ("less_grads", "less_warmup", "less_ckpt") if c not in columns]
        return [LESSGradients(**self.feature_params())] if need else []

    def cache_params(self) -> dict:
        from curate.select.targets import targets_key

        return {**super().cache_params(), **targets_key(self.targets)}

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.score.rows import row_fields
        from curate.select.less import less_scores
        from curate.select.targets import read_targets, targets_sha
        from curate.train.less_warmup import load_checkpoints, warmup_dir

        n = len(table)
        key = table.column("less_ckpt")[0].as_py() if n else None
        if key is not None and not (warmup_dir(key) / "meta.json").exists():
            warm = np.flatnonzero(table.column("less_warmup").to_numpy(zero_copy_only=False))
            log.warning("less_influence: warm-up %s is not in the model cache; training it again from the %d rows "
                        "marked less_warmup", key, len(warm))
            _, again, _ = self.warmup(table, warm)
            if again != key:
                raise ValueError(f"less_influence: the rows and parameters here give warm-up {again}, the features "
                                 f"were computed with {key}: give less_influence the parameters of less_gradients")
        meta, ckpts = load_checkpoints(warmup_dir(key))
        pool = embedding_matrix(table, "less_grads")
        if pool.shape[1] != len(ckpts) * self.proj_dim:
            raise ValueError(f"less_influence: less_grads has {pool.shape[1]} values per row, {len(ckpts)} checkpoints "
                             f"x proj_dim={self.proj_dim} expected: give it the parameters of less_gradients")
        tr = self.trainer()
        tasks = read_targets(self.targets)
        feats = {}
        for task, t in tasks.items():
            enc = tr.encode(t)
            feats[task] = self.features(tr, ckpts, enc, np.arange(len(enc)), adam=False)
        score, which = less_scores(pool, feats, np.asarray(meta["weights"]))
        plain = ~row_fields(table).structured
        score[plain] = np.nan
        names = np.array(list(tasks), dtype=object)[which]
        log.info("less_influence: %d target rows in %d task(s); checkpoint weights %s", sum(len(t) for t in tasks.values()),
                 len(tasks), np.round(meta["weights"], 3).tolist())
        return pa.table({"less_score": pa.array(score, pa.float64()), "less_task": pa.array(names.tolist(), pa.string()),
                         "less_targets": pa.array([targets_sha(self.targets)] * n, pa.string())})
