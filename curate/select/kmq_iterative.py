"""Iterative kMQ: select in rounds, re-weighting clusters by what a model still has to learn.

Yu, Chen, Ahmadian and Fadaee, "Diversify and Conquer" (arXiv 2409.11378), Algorithm 1 and
Eqs. 4-6; authors' code for-ai/iterative-data-selection (``methods/kmeansiter.py``,
``selection/iter.py``). Per round r = 1..R (R = ``rounds``, default 3):

1. draw b/R new rows with kMQ: cluster j gets a share of the round in proportion to its weight
   w_j (initially its size, as kMQ's proportional allocation; ``allocation="equal"`` starts
   uniform), quality-weighted sampling inside the cluster among rows not yet selected;
2. except after the last round, call ``feedback(selected, cluster_ids)`` on the cumulative
   selection; it returns a score s_j per cluster (higher = the cluster still has more to teach;
   the paper: mean over the cluster's selected rows of reward(x + y_gold) - reward(x + y_gen)
   after fine-tuning on the selection), and update the weights by the paper's multiplicative
   rule w_j <- (s_j / sum_c s_c) w_j (with memory). The code's memoryless w = softmax(s) is
   ``weight_update="softmax"``.

The paper is silent on negative s_j (a cluster whose gold answers are worse than the model's
own): by default (``negative="shift"``), when some s_j <= 0 all scores are shifted so the lowest
becomes a small positive number (1% of the score range), keeping their order; ``"clip"`` sets
them to 0, which removes the cluster from later rounds for good (the rule has memory). Clusters
the callback does not score keep the mean of the returned scores (neutral).

The selector never imports a trainer: ``feedback`` is any callable, or a string
``"package.module:factory"`` whose factory is called with ``feedback_params`` (the evaluation
package provides ``curate.eval.feedback:lora_feedback``). Each finished round is saved in the
stage's work dir, so a killed run resumes at its next round without calling the feedback again.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import re

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.schema import TOKENS_COLUMN, score_column
from curate.core.stage import StageContext
from curate.select.base import Picks
from curate.select.kmq import DEFAULT_K_GRID, QUOTA_REASON, ClusterSampler, allocate

log = logging.getLogger(__name__)

WEIGHT_UPDATES = ("multiplicative", "softmax")
NEGATIVE_RULES = ("shift", "clip")
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
FEEDBACK_HINT = ("set feedback to a callable feedback(selected: pyarrow.Table, cluster_ids: numpy.ndarray) -> "
                 "{cluster: score} (Python) or to a 'package.module:factory' string whose factory is called "
                 "with feedback_params (YAML), e.g. feedback: curate.eval.feedback:lora_feedback")


def feedback_key(feedback) -> str:
    """Stable cache-key form of ``feedback``: a string spec as given, a callable by module:qualname."""
    if isinstance(feedback, str):
        return feedback
    mod = getattr(feedback, "__module__", None) or type(feedback).__module__
    qual = getattr(feedback, "__qualname__", None) or type(feedback).__qualname__
    return f"{mod}:{qual}"


def feedback_factory(feedback: str):
    """The factory a ``"package.module:factory"`` spec names, imported but not called.

    Raises:
        ImportError: the module cannot be imported.
        AttributeError: the module has no such attribute.
        TypeError: the attribute is not callable.
    """
    module, _, attr = feedback.partition(":")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"feedback={feedback!r}: cannot import module {module!r} ({e})") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"feedback={feedback!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"feedback={feedback!r}: {attr!r} is a {type(obj).__name__}, not a factory")
    return obj


def resolve_feedback(feedback, params: dict | None):
    """The feedback callable: ``feedback`` itself, or ``factory(**params)`` for a string spec."""
    if callable(feedback):
        return feedback
    fn = feedback_factory(feedback)(**(params or {}))
    if not callable(fn):
        raise TypeError(f"feedback={feedback!r}: the factory returned {type(fn).__name__}, not a callable")
    return fn


def update_weights(w: np.ndarray, s: np.ndarray, rule: str = "multiplicative", negative: str = "shift") -> np.ndarray:
    """One weight update from per-cluster feedback (Yu et al. 2024, Eq. 6, or the code's softmax).

    Args:
        w: (K,) current weights (sum 1).
        s: (K,) finite per-cluster feedback scores.
        rule: ``"multiplicative"`` (paper): w_j <- s_j / sum(s) * w_j, renormalised;
            ``"softmax"`` (code): w = softmax(s), memoryless.
        negative: for the multiplicative rule when some s_j <= 0: ``"shift"`` (s - min(s) +
            1% of the range, or 1 when all are equal) or ``"clip"`` (max(s, 0)).

    Returns:
        (K,) new weights summing to 1 (the old ones when every clipped score is 0).
    """
    s = np.asarray(s, np.float64)
    if rule == "softmax":
        e = np.exp(s - s.max())
        return e / e.sum()
    if (s <= 0).any():
        if negative == "clip":
            s = np.maximum(s, 0.0)
        else:
            span = float(s.max() - s.min())
            s = s - s.min() + (0.01 * span if span > 0 else 1.0)
    new = s * np.asarray(w, np.float64)
    return new / new.sum() if new.sum() > 0 else np.asarray(w, np.float64)


@register
class KMQIterative(ClusterSampler):
    """Iterative kMQ (Yu et al. 2024, arXiv 2409.11378, Alg. 1): rounds of kMQ with feedback.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required); each
            round takes about budget / rounds (a token budget: its share of the tokens).
        feedback: required: a callable ``feedback(selected: pa.Table, cluster_ids: (m,) int
            ndarray) -> {cluster_id: s_j}`` (``selected`` = the cumulative selection, all its
            columns) or a ``"package.module:factory"`` string (YAML). A string is the cache key
            as given; a callable is keyed by its module:qualname, so change its name when you
            change what it does.
        feedback_params: keyword arguments for the factory of a string ``feedback`` (default
            none); not allowed with a callable.
        rounds: R (default 3, the paper's).
        weight_update: ``"multiplicative"`` (default, paper Eq. 6) or ``"softmax"`` (code).
        negative: handling of s_j <= 0 under the multiplicative rule: ``"shift"`` (default)
            or ``"clip"`` (see module docstring).
        k, k_grid, allocation, replacement, temperature, score, cluster_column,
            embedding_column, niter, silhouette_sample: as in ``kmq`` (allocation sets the
            initial weights: cluster sizes or uniform).
        seed: seed of k-means and of each round's sampling (default 0).
        show_progress: progress bar over rounds (execution-only).

    Ledger: ``kmq_iterative_score`` = the quality score; ``kmq_iterative_cluster``; ``round`` (1..R, -1
    when not selected); ``cluster_weight`` = the row's cluster weight after the last update.
    Artifact ``kmq_iterative.json``: k, round sizes, feedback and weights per round.
    """

    name = "kmq_iterative"
    reasons = {QUOTA_REASON: "not drawn within its cluster's quota in any round"}

    def __init__(self, *, budget, feedback=None, feedback_params: dict | None = None, rounds: int = 3,
                 weight_update: str = "multiplicative", negative: str = "shift",
                 k: int | str | None = "silhouette", k_grid=DEFAULT_K_GRID, allocation: str = "proportional",
                 replacement: bool | None = None, temperature: float = 1.0, score: str | None = "quality",
                 cluster_column: str | None = None, embedding_column: str = "embedding", niter: int = 50,
                 silhouette_sample: int = 10000, seed: int = 0, show_progress: bool = True):
        if feedback is None:
            raise ValueError(f"feedback is required: {FEEDBACK_HINT}")
        if isinstance(feedback, str):
            if not _SPEC.match(feedback):
                raise ValueError(f"feedback must look like 'package.module:factory', got {feedback!r}")
            try:  # at build time, so a typo fails before the upstream stages run (the factory is called later)
                feedback_factory(feedback)
            except (ImportError, AttributeError, TypeError) as e:
                raise ValueError(str(e)) from None
        elif not callable(feedback):
            raise ValueError(f"feedback must be a callable or a 'package.module:factory' string, got {feedback!r}")
        if feedback_params is not None:
            if not isinstance(feedback_params, dict):
                raise ValueError(f"feedback_params must be a mapping, got {feedback_params!r}")
            if not isinstance(feedback, str) and feedback_params:
                raise ValueError(f"feedback_params={feedback_params!r} only applies to a string feedback spec "
                                 "(the factory's arguments); bind them into the callable instead")
        check_real(rounds, "rounds", 1, integer=True)
        if weight_update not in WEIGHT_UPDATES:
            raise ValueError(f"weight_update must be one of {WEIGHT_UPDATES}, got {weight_update!r}")
        if negative not in NEGATIVE_RULES:
            raise ValueError(f"negative must be one of {NEGATIVE_RULES}, got {negative!r}")
        self._init_cluster_params(budget=budget, k=k, k_grid=k_grid, allocation=allocation,
                                  replacement=replacement, temperature=temperature, score=score,
                                  cluster_column=cluster_column, embedding_column=embedding_column,
                                  niter=niter, silhouette_sample=silhouette_sample, seed=seed)
        self.feedback, self.feedback_params, self.rounds = feedback, feedback_params, rounds
        self.weight_update, self.negative, self.show_progress = weight_update, negative, show_progress

    def cache_params(self) -> dict:
        params = super().cache_params()
        params["feedback"] = feedback_key(self.feedback)
        return params

    # -- budgets -------------------------------------------------------------------------------
    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        def round_size(r: int, order: np.ndarray, draw) -> int:
            return k * (r + 1) // self.rounds - len(order)

        return self._run_rounds(table, ctx, round_size, f"rows{k}")

    def _pick_tokens(self, table: pa.Table, ctx, limit: int) -> tuple[Picks, int]:
        """Each round fills its share of the token budget (the largest draw that fits, by bisection)."""
        if TOKENS_COLUMN not in table.column_names:
            raise KeyError(f"{self.name}: a token budget needs the {TOKENS_COLUMN!r} column "
                           "(the token_count stage adds it)")
        tokens = table.column(TOKENS_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64)

        def round_size(r: int, order: np.ndarray, draw) -> int:
            room = limit * (r + 1) // self.rounds - int(tokens[order].sum())
            lo, hi = 0, draw.capacity
            while lo < hi:  # largest m whose draw fits the round's tokens
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if tokens[draw(mid)].sum() <= room else (lo, mid - 1)
            return lo

        picks = self._run_rounds(table, ctx, round_size, f"tokens{limit}")
        return picks, int((picks.extras["round"] > 0).sum())

    # -- the rounds ----------------------------------------------------------------------------
    def _run_rounds(self, table: pa.Table, ctx: StageContext | None, round_size, tag: str) -> Picks:
        from tqdm.auto import tqdm

        n = len(table)
        labels = self._clusters(table)
        logits = self._logits(table)
        K = self.k_
        sizes = np.bincount(labels, minlength=K)
        w = (sizes / max(n, 1)) if self.allocation == "proportional" else np.full(K, 1.0 / K)
        state = {"order": np.zeros(0, np.int64), "round_of": np.zeros(0, np.int64),
                 "weights": w[None, :].copy(), "feedback": np.zeros((0, K)), "done": 0}
        folder = None if ctx is None else ctx.work_dir / "kmq_iterative" / tag
        if folder is not None:
            state = _load_state(folder, labels) or state
            if state["done"]:
                log.info("%s: resuming after round %d of %d", self.name, state["done"], self.rounds)
        fn = None
        show = bool(self.show_progress and (ctx is None or ctx.show_progress))
        for r in tqdm(range(state["done"], self.rounds), desc=self.name, disable=not show, unit="round"):
            available = np.ones(n, bool)
            available[state["order"]] = False
            capacity = np.bincount(labels[available], minlength=K)
            weights = state["weights"][-1]

            def draw(m: int, r=r, available=available, capacity=capacity, weights=weights) -> np.ndarray:
                quota = allocate(weights, capacity, m)
                return self._draw(np.random.default_rng([self.seed, r]), labels, logits, quota, available)

            draw.capacity = int(capacity.sum())
            m = max(0, min(round_size(r, state["order"], draw), draw.capacity))
            new = draw(m)
            state["order"] = np.concatenate([state["order"], new])
            state["round_of"] = np.concatenate([state["round_of"], np.full(len(new), r + 1)])
            # the weights after the last round would never be used; an empty selection (budget
            # below the number of rounds) has nothing to score
            if r + 1 < self.rounds and len(state["order"]):
                fn = fn or resolve_feedback(self.feedback, self.feedback_params)
                s = self._feedback_vector(fn, table, state["order"], labels)
                new_w = update_weights(weights, s, self.weight_update, self.negative)
            elif r + 1 < self.rounds:
                s, new_w = np.full(K, np.nan), weights
            if r + 1 < self.rounds:
                state["feedback"] = np.vstack([state["feedback"], s])
                state["weights"] = np.vstack([state["weights"], new_w])
                log.info("%s: round %d took %d rows; weights now max %.3f (cluster %d), min %.3f",
                         self.name, r + 1, len(new), new_w.max(), int(new_w.argmax()), new_w.min())
            state["done"] = r + 1
            if folder is not None:
                _save_state(folder, state, labels)
        self.weights_, self.feedback_ = state["weights"], state["feedback"]
        if ctx is not None and ctx.artifact_dir is not None:
            self._write_artifact(ctx, state)
        rnd = np.full(n, -1, np.int64)
        rnd[state["order"]] = state["round_of"]
        score = score_column(table, self.score, self.name) if self.score else None
        return Picks(order=state["order"], score=score,
                     extras={f"{self.name}_cluster": self.cluster_ids_, "round": rnd,
                             "cluster_weight": state["weights"][-1][labels]},
                     reasons=np.full(n, QUOTA_REASON, dtype=object))

    def _feedback_vector(self, fn, table: pa.Table, order: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Call the feedback on the cumulative selection; (K,) scores in label space."""
        got = fn(table.take(pa.array(order)), self.cluster_ids_[order])
        if not isinstance(got, dict):
            raise TypeError(f"feedback={feedback_key(self.feedback)!r} returned {type(got).__name__}, "
                            "expected a dict {cluster_id: score}")
        to_label = dict(zip(self.cluster_ids_.tolist(), labels.tolist()))
        s = np.full(self.k_, np.nan)
        for cid, v in got.items():
            if int(cid) not in to_label:
                raise ValueError(f"feedback returned a score for unknown cluster {cid!r}")
            if not np.isfinite(float(v)):
                raise ValueError(f"feedback returned a non-finite score {v!r} for cluster {cid!r}")
            s[to_label[int(cid)]] = float(v)
        if np.isnan(s).all():
            raise ValueError(f"feedback={feedback_key(self.feedback)!r} returned no cluster scores")
        return np.where(np.isnan(s), np.nanmean(s), s)  # unscored clusters: neutral

    def _write_artifact(self, ctx: StageContext, state: dict) -> None:
        ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
        rounds = np.bincount(state["round_of"], minlength=self.rounds + 1)[1:]
        meta = {"k": int(self.k_), "silhouette": {str(k): v for k, v in self.silhouette_.items()},
                "rows_per_round": rounds.tolist(), "weights": state["weights"].tolist(),
                "feedback": [[None if np.isnan(v) else v for v in row] for row in state["feedback"].tolist()],
                "feedback_spec": feedback_key(self.feedback)}
        (ctx.artifact_dir / "kmq_iterative.json").write_text(json.dumps(meta))


def _save_state(folder, state: dict, labels: np.ndarray) -> None:
    """Write the state after a round atomically (a half-written round file never exists)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"round_{state['done']:03d}.npz"
    tmp = folder / f"round_{state['done']:03d}.tmp.npz"
    np.savez(tmp, order=state["order"], round_of=state["round_of"], weights=state["weights"],
             feedback=state["feedback"], labels=labels)
    os.replace(tmp, path)


def _load_state(folder, labels: np.ndarray) -> dict | None:
    """The latest saved round, or None (also when it was made from other clusters)."""
    files = sorted(folder.glob("round_[0-9][0-9][0-9].npz")) if folder.is_dir() else []
    if not files:
        return None
    with np.load(files[-1], allow_pickle=False) as z:
        if not np.array_equal(z["labels"], labels):
            log.warning("kmq_iterative: saved rounds in %s used other clusters; starting over", folder)
            return None
        done = int(files[-1].stem.split("_")[1])
        return {"order": z["order"], "round_of": z["round_of"], "weights": z["weights"],
                "feedback": z["feedback"], "done": done}
