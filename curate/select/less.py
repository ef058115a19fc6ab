"""LESS: the rows whose gradients align best with the target task's (Xia et al., ICML 2024).

"LESS: Selecting Influential Data for Targeted Instruction Tuning" (Xia, Malladi, Gururangan,
Arora, Chen; ICML 2024, arXiv 2402.04333; authors' code princeton-nlp/LESS,
``less/data_selection/{collect_grad_reps,matching,write_selected_data}.py``):

1. warm-up LoRA training on a random 5% of the pool for 4 epochs, a checkpoint per epoch;
2. for every pool row z and checkpoint i: the LoRA gradient of z's loss, turned into Adam's
   update direction with the checkpoint's moments, Rademacher-projected to d = 8192 and
   L2-normalised: Gamma_i(z);
3. for every target (validation) row z': the plain gradient, projected and normalised alike:
   grad_i(z');
4. influence Inf(z, z') = sum_i eta_i <Gamma_i(z), grad_i(z')>, eta_i = epoch i's mean learning
   rate, the weights renormalised to sum to 1;
5. a row's score: the mean influence over each task's target rows, then the max over tasks;
6. keep the top rows by score (the paper: 5% of the pool).

Steps 1-4 train and take gradients, so they live in the train layer as two annotators
(:mod:`curate.train.less`): ``less_gradients`` (the warm-up and the pool's features, cached and
resumable shard by shard: a second selection over the same pool costs nothing) and
``less_influence`` (the targets' gradients and the score). This module holds the scoring rule
(:func:`less_scores`) and the selector, which reads the ``less_score`` column and adds the two
stages (found by name in the registry) when it is missing.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.registry import get_stage, register
from curate.core.schema import score_column
from curate.core.stage import StageContext
from curate.select.base import BudgetSelector, Picks, pick_order_from_scores
from curate.select.targets import targets_key, targets_sha, validate_targets_spec

log = logging.getLogger(__name__)

REASON = "below_top_influence"


def less_scores(pool: np.ndarray, targets: dict[str, np.ndarray], weights: np.ndarray,
                chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """LESS's score of every pool row: per task the mean weighted influence, then the max over tasks.

    Args:
        pool: (n, C * d) features, C checkpoint blocks of d values (each block unit-norm).
        targets: {task: (m_t, C * d)} target features in the same layout.
        weights: (C,) checkpoint weights eta_i (summing to 1).
        chunk: pool rows per matrix product (default 4096; memory only).

    Returns:
        ``(score, task)``: (n,) float64 max over tasks of the mean over the task's rows of
        sum_i eta_i <pool_i, target_i>; (n,) int64 index of the task attaining it.
    """
    w = np.asarray(weights, np.float64)
    C = len(w)
    n, D = pool.shape
    if D % C:
        raise ValueError(f"pool features have {D} values, not a multiple of {C} checkpoints")
    d = D // C
    scale = np.repeat(w, d).astype(np.float32)
    # the mean over a task's rows commutes with the dot product: one weighted mean vector per task
    means = []
    for task, t in targets.items():
        if t.shape[1] != D:
            raise ValueError(f"targets[{task!r}] have {t.shape[1]} values per row, the pool {D}")
        means.append((np.asarray(t, np.float32) * scale).mean(axis=0))
    q = np.stack(means).T  # (D, T)
    per_task = np.empty((n, len(means)), np.float64)
    for lo in range(0, n, chunk):
        per_task[lo:lo + chunk] = np.asarray(pool[lo:lo + chunk], np.float32) @ q
    return per_task.max(axis=1), per_task.argmax(axis=1).astype(np.int64)


@register
class LESS(BudgetSelector):
    """Top rows by LESS influence on target examples (Xia et al., ICML 2024, arXiv 2402.04333).

    Reads ``less_score`` (and ``less_task``); when missing, adds ``less_gradients`` (warm-up +
    pool features; skipped when ``less_grads`` is already there) and ``less_influence``
    (targets' gradients + score), both with the ``features`` parameters.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required). The paper
            keeps 5% of the pool.
        targets: target (validation) rows: rows, a path, or ``{task: rows_or_path}`` (required;
            the forms of ``rds``, :mod:`curate.select.targets`).
        features: parameters of ``less_gradients`` / ``less_influence`` (default None = their
            defaults: SmolLM2-135M-Instruct, 5% warm-up, 4 epochs, rank 16 on q/k/v/o of the
            top 8 blocks, d = 8192).

    Ledger: ``less_score`` (also ``less_score`` of this stage: the influence), ``less_task``
    (the task attaining the max). Unselected rows: ``below_top_influence``. Deterministic.
    """

    name = "less"
    reasons = {REASON: "influence on the targets not within the budget's highest"}

    def __init__(self, *, budget, targets, features: dict | None = None):
        self._init_budget(budget, 0)
        del self.seed  # the features carry their own seed
        validate_targets_spec(targets)
        if features is not None and not isinstance(features, dict):
            raise ValueError(f"features must be a mapping of less_gradients parameters or null, got {features!r}")
        self.targets, self.features = targets, features

    def cache_params(self) -> dict:
        return {**super().cache_params(), **targets_key(self.targets)}

    def required_columns(self) -> list[str]:
        return ["less_score"] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        if "less_score" in columns:
            return []
        feats = dict(self.features or {})
        steps = [] if "less_grads" in columns else [get_stage("less_gradients")(**feats)]
        return steps + [get_stage("less_influence")(targets=self.targets, **feats)]

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        if "less_targets" in table.column_names:
            made_for = table.column("less_targets")[0].as_py() if len(table) else None
            mine = targets_sha(self.targets)
            if made_for is not None and made_for != mine:
                raise ValueError(f"less: the less_score column was computed for other targets ({made_for}) than this "
                                 f"stage's ({mine}); give both stages the same targets, or let `less` add its own")
        s = score_column(table, "less_score", self.name)
        extras = {}
        if "less_task" in table.column_names:
            extras["less_task"] = np.array(table.column("less_task").to_pylist(), dtype=object)
        return Picks(order=pick_order_from_scores(s), score=s, extras=extras,
                     reasons=np.full(len(s), REASON, dtype=object))
