"""``rds``: RDS+ targeted selection by embedding similarity to target examples.

RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning", arXiv 2503.01807;
code hamishivi/automated-instruction-selection): embed every pool row and every target ("query")
example the same way, score S[q, t] = cosine(e_q, e_t), and fill the budget round-robin so that
every query (or task) gets its share of nearest neighbours:

* ``mode="max"`` (the paper's single-task rule): each query sorts the pool by similarity; in
  round r every query in turn proposes its r-th nearest row, which is taken unless already taken
  (a duplicate proposal adds nothing that round).
* ``mode="rrmax"`` (the paper's multi-task rule): each task scores every row by the max over its
  queries, then tasks take turns taking their best remaining row.
* ``mode="auto"`` (default): ``max`` for one target set, ``rrmax`` for several.

Embeddings: the paper's RDS+ uses position-weighted mean pooling of the fine-tuned base model's
last hidden layer (``backend="lm_pooling"``, our proxy LM SmolLM2-135M here); the default here is
MiniLM through the ``embed`` stage's default backend (``onnx``; ``sentence_transformers`` gives the
same vectors to float rounding in torch), because it is several times cheaper on a CPU than
lm_pooling (measured in docs/methods/rds.md) and a recipe's ``embedding`` column usually exists.
Targets are embedded with exactly the pool's backend, model, template and max_length (the same
:class:`~curate.embed.stage.Embed` settings), never a different encoder.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.hashing import stable_hash
from curate.core.registry import register
from curate.core.schema import embedding_matrix
from curate.core.stage import StageContext
from curate.embed.stage import DEFAULT_BACKEND, Embed, build_texts
from curate.select.base import BudgetSelector, Picks
from curate.select.targets import read_targets, targets_fingerprint, targets_key, validate_targets_spec

log = logging.getLogger(__name__)

MODES = ("auto", "max", "rrmax")
OFF_TARGET = "off_target"
_TARGET_CACHE: dict[tuple, np.ndarray] = {}  # (embed params, targets hash) -> (m, d); one process


def round_robin(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interleave per-query (or per-task) rankings, keeping each row's first proposal.

    Round r visits the lists in order and each proposes its r-th entry; a row already taken is
    skipped (that list adds nothing this round), as in RDS+'s ``get_top_influences.py``.

    Args:
        ranks: (m, L) int array; row q is list q's candidates, best first (L <= n).

    Returns:
        ``(order, by, rnd)``: (u,) unique rows in pick order, (u,) the list that claimed each,
        and (u,) the round it was claimed in.
    """
    m, depth = ranks.shape
    flat = ranks.T.reshape(-1)  # round-major: round 0 of every list, then round 1, ...
    _, first = np.unique(flat, return_index=True)
    first = np.sort(first)
    return flat[first].astype(np.int64), (first % m).astype(np.int64), (first // m).astype(np.int64)


def rds_order(sims: list[np.ndarray], mode: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """RDS+ pick order from per-task similarity matrices.

    Args:
        sims: one (m_t, n) float array per task: cosine of each query to each pool row.
        mode: ``"max"`` (round-robin over every query of every task) or ``"rrmax"`` (per-task
            max over queries, round-robin over tasks).
        k: rows needed; the order returned has at least ``min(k, n)`` rows.

    Returns:
        ``(order, task)``: (u,) int64 rows in pick order and (u,) the index of the task whose
        query claimed each.
    """
    n = sims[0].shape[1]
    if mode == "max":
        mat = np.concatenate(sims, axis=0)
        owner = np.concatenate([np.full(len(s), t) for t, s in enumerate(sims)])
    else:
        mat = np.stack([s.max(axis=0) for s in sims])
        owner = np.arange(len(sims))
    # each list needs at most k proposals (every round takes >= 1 new row); stable ties by index
    depth = n if k >= n else min(n, k)
    if depth < n:
        part = np.argpartition(-mat, depth - 1, axis=1)[:, :depth]
        keyed = np.take_along_axis(-mat, part, axis=1)
        ranks = np.take_along_axis(part, np.lexsort((part, keyed), axis=1), axis=1)
    else:
        ranks = np.argsort(-mat, axis=1, kind="stable")
    order, by, _ = round_robin(ranks)
    return order, owner[by]


@register
class RDS(BudgetSelector):
    """RDS+: take the pool rows nearest to target examples, round-robin over queries/tasks.

    Ivison et al. 2025, arXiv 2503.01807 (§"RDS+"); see the module docstring for the rule.

    Args:
        budget: rows (int), fraction (float in (0, 1]) or ``{tokens: N}`` (required).
        targets: target examples: rows (list of dicts), a path, or ``{task: rows_or_path}`` for
            several tasks (required). Read like the pool (see :mod:`curate.select.targets`).
        mode: ``"auto"`` (default: ``max`` for one task, ``rrmax`` for several), ``"max"`` or
            ``"rrmax"``.
        backend: embedding backend, ``"onnx"`` (default, MiniLM through onnxruntime, the ``embed``
            stage's default), ``"sentence_transformers"`` (the same MiniLM in torch) or
            ``"lm_pooling"`` (the paper's position-weighted mean of the proxy LM's last layer).
        model: embedding model (default None = the backend's default).
        embedding_column: pool embedding column (default None = ``"embedding"`` for
            the MiniLM backends, ``"embedding_lm"`` for lm_pooling, so the two never mix).
            When missing, an ``embed`` stage with these settings is added automatically.
        text_column: column embedded when ``template`` is None (default ``"text"``).
        template: ``str.format`` template over columns (default None), applied to pool and targets.
        max_length: token limit of the embedder (default None = the backend's default).

    Ledger extras: ``target_sim`` (max cosine to any target row), ``task`` (the task whose query
    claimed the row in the round-robin); ``rds_score`` = ``target_sim``. Unselected rows:
    ``off_target``. Deterministic (no randomness; ties by input position).

    Learned: ``tasks_`` (task names), ``n_targets_`` (rows per task).
    """

    name = "rds"
    reasons = {OFF_TARGET: "not claimed by any target query/task within the budget (farther from the targets)"}

    def __init__(self, *, budget, targets, mode: str = "auto", backend: str = DEFAULT_BACKEND,
                 model: str | None = None, embedding_column: str | None = None, text_column: str = "text",
                 template: str | None = None, max_length: int | None = None):
        self._init_budget(budget, 0)
        del self.seed  # deterministic: nothing random to seed
        validate_targets_spec(targets)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if embedding_column is not None and (not isinstance(embedding_column, str) or not embedding_column):
            raise ValueError(f"embedding_column must name a column or be null, got {embedding_column!r}")
        self.targets = targets
        self.mode = mode
        self.backend = backend
        self.model = model
        self.embedding_column = embedding_column
        self.text_column = text_column
        self.template = template
        self.max_length = max_length
        self._embedder()  # validates backend/template/max_length with Embed's own checks

    # -- embedding settings shared by pool and targets ---------------------------------------
    @property
    def column_(self) -> str:
        if self.embedding_column is not None:
            return self.embedding_column
        return "embedding_lm" if self.backend == "lm_pooling" else "embedding"

    def _embedder(self) -> Embed:
        return Embed(backend=self.backend, model=self.model, column=self.column_, text_column=self.text_column,
                     template=self.template, max_length=self.max_length, show_progress=False)

    def cache_params(self) -> dict:
        return {**super().cache_params(), **targets_key(self.targets)}

    def required_columns(self) -> list[str]:
        return [self.column_] + super().required_columns()

    def method_prerequisites(self, columns: list[str]) -> list:
        return [] if self.column_ in columns else [self._embedder()]

    def target_embeddings(self) -> dict[str, np.ndarray]:
        """Embed every task's target rows with the pool's settings: ``{task: (m_t, d) float32}``."""
        tasks = read_targets(self.targets)
        emb = self._embedder()
        out = {}
        for task, t in tasks.items():
            key = (stable_hash(emb.cache_params()), targets_fingerprint({task: t}))
            if key not in _TARGET_CACHE:
                _TARGET_CACHE[key] = emb.encode(build_texts(t, self.text_column, self.template))
            out[task] = _TARGET_CACHE[key]
        self.tasks_ = list(out)
        self.n_targets_ = {k: len(v) for k, v in out.items()}
        return out

    def pick(self, table: pa.Table, ctx: StageContext | None, k: int) -> Picks:
        x = embedding_matrix(table, self.column_)
        targets = self.target_embeddings()
        dims = {task: q.shape[1] for task, q in targets.items()}
        if any(d != x.shape[1] for d in dims.values()):
            raise ValueError(f"rds: pool column {self.column_!r} has {x.shape[1]}-d vectors but backend="
                             f"{self.backend!r} model={self.model!r} gives {dims}; embed the pool with the same "
                             "settings (or set embedding_column to a column made by them)")
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = []
        for q in targets.values():
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            sims.append((q.astype(np.float32) @ x.T).astype(np.float64))
        mode = self.mode if self.mode != "auto" else ("max" if len(sims) == 1 else "rrmax")
        order, task_idx = rds_order(sims, mode, k)
        names = np.array(list(targets), dtype=object)
        target_sim = np.max(np.concatenate(sims, axis=0), axis=0)
        task = np.full(len(table), None, dtype=object)
        task[order] = names[task_idx]
        unclaimed = np.array([t is None for t in task], dtype=bool)
        if unclaimed.any():  # beyond the round-robin's depth: label with the nearest task
            nearest = np.argmax(np.stack([s.max(axis=0) for s in sims]), axis=0)
            task[unclaimed] = names[nearest[unclaimed]]
        log.info("rds: %d target rows in %d task(s), mode=%s, backend=%s", sum(map(len, targets.values())),
                 len(sims), mode, self.backend)
        return Picks(order=order, score=target_sim, extras={"target_sim": target_sim, "task": task},
                     reasons=np.full(len(table), OFF_TARGET, dtype=object))

