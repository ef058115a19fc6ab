"""Stage contracts: Annotator (adds columns) and Selector (keeps/drops with reasons).

Manners follow scikit-learn: parameters are keyword arguments stored as given (``get_params``),
learned state ends in ``_``, every random thing takes ``seed``. A stage's cache key hashes its
parent's key, its ``name``, ``version`` and ``cache_params()`` (all parameters except the
execution-only ones in ``execution_params``: batch size, device, workers, progress).

Subclass contract:

* ``Annotator.annotate(table, ctx) -> pa.Table`` returns the *new* columns only, one row per
  input row, same order. It never drops rows.
* ``Selector.select(table, ctx) -> Selection`` decides keep/drop for every input row, with a
  reason code from the class's ``reasons`` mapping for every dropped row.

What a stage reads and writes is declared, not guessed (as scikit-learn's estimator tags):
``required_columns()`` names the input columns a stage reads (checked after ingest, before any
compute; ``prerequisites`` may add the annotators that make them), ``Annotator.output_columns()``
the columns ``annotate`` returns, and ``Annotator.produces`` the score columns a selector may ask
for by name (the annotator is then added automatically). ``tests/test_stage_contract.py`` checks
every registered stage against this contract.
"""
from __future__ import annotations

import inspect
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import pyarrow as pa

from curate.core.shards import active_executor, map_shards

log = logging.getLogger(__name__)

EXECUTION_PARAMS = ("batch_size", "device", "num_workers", "num_proc", "show_progress")


@dataclass
class StageContext:
    """What a running stage may use besides its input table.

    Attributes:
        work_dir: scratch folder that survives a killed run (keyed by the stage's cache key);
            long annotators write finished shards here and skip them on resume.
        seed: run-level seed (a stage's own ``seed`` parameter wins).
        show_progress: whether to draw progress bars.
        artifact_dir: folder whose files are committed with the stage's output in the cache
            (centroids, signature indexes); read it back from ``StageStore.artifacts(key)``.
        store: the run's ``StageStore`` (for stages that read other cached artifacts), or None.
    """

    work_dir: Path
    artifact_dir: Path | None = None
    seed: int = 0
    show_progress: bool = True
    store: Any = None

    def map_shards(
        self,
        n_rows: int,
        fn: Callable[[int, int], dict[str, np.ndarray]],
        shard_size: int = 4096,
        desc: str = "shards",
    ) -> dict[str, np.ndarray]:
        """Run ``fn(start, stop)`` over row shards, saving each result so a killed run resumes.

        The one resumable shard loop is :func:`curate.core.shards.map_shards`; this passes it the
        stage's scratch folder and the executor installed for the run (None: in this process).

        Args:
            n_rows: number of rows to cover.
            fn: computes arrays for rows [start, stop); returns {name: array with first dim stop-start}.
            shard_size: rows per shard (default 4096).
            desc: progress-bar label.

        Returns:
            {name: array concatenated over shards along axis 0}.
        """
        return map_shards(self.work_dir, n_rows, fn, shard_size=shard_size, desc=desc,
                          show_progress=self.show_progress, executor=active_executor())

    def clear(self) -> None:
        """Remove the scratch folder once the stage's output is committed."""
        shutil.rmtree(self.work_dir, ignore_errors=True)


@dataclass
class Selection:
    """A Selector's decision for every input row.

    Attributes:
        keep: (n,) bool, True where the row survives.
        reason: (n,) object array of reason codes (None where kept).
        score: optional (n,) float64 score the selector ranked by (NaN where undefined).
        extras: optional per-row columns, e.g. ``dup_of`` (id of the kept representative, or
            None), ``dup_cluster``, ``cluster_id``; the ledger copies them into provenance.
        rewrite: optional new values of existing columns, {column: (n,) array}, for selectors
            that also edit the rows they keep (a line-level filter rewriting ``text``, PII
            replacement, substring dedup). The engine puts them into the table before passing
            the kept rows on; values of dropped rows are ignored. Not copied into provenance.
    """

    keep: np.ndarray
    reason: np.ndarray
    score: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    rewrite: dict[str, np.ndarray] = field(default_factory=dict)

    REWRITE_PREFIX = "rewrite:"  # column-name prefix of rewritten columns in the cached table

    def __post_init__(self) -> None:
        self.keep = np.asarray(self.keep, dtype=bool)
        n = len(self.keep)
        self.reason = np.asarray(self.reason, dtype=object)
        if self.reason.shape != (n,):
            raise ValueError(f"reason has shape {self.reason.shape}, expected ({n},)")
        if self.score is not None:
            self.score = np.asarray(self.score, dtype=np.float64)
            if self.score.shape != (n,):
                raise ValueError(f"score has shape {self.score.shape}, expected ({n},)")
        for k, v in self.extras.items():
            if len(v) != n:
                raise ValueError(f"extra {k!r} has length {len(v)}, expected {n}")
        for k, v in self.rewrite.items():
            if len(v) != n:
                raise ValueError(f"rewrite of column {k!r} has length {len(v)}, expected {n}")
        missing = ~self.keep & np.array([r is None for r in self.reason], dtype=bool)
        if missing.any():
            raise ValueError(f"{int(missing.sum())} dropped rows have no reason")

    @classmethod
    def keep_mask(cls, keep: np.ndarray, reason: str, score: np.ndarray | None = None, **extras) -> "Selection":
        """Build a Selection where every dropped row has the same reason code."""
        keep = np.asarray(keep, dtype=bool)
        reasons = np.where(keep, None, reason).astype(object)
        return cls(keep=keep, reason=reasons, score=score, extras=dict(extras))

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    def to_table(self) -> pa.Table:
        cols: dict[str, Any] = {"keep": pa.array(self.keep), "reason": pa.array(self.reason.tolist(), pa.string())}
        if self.score is not None:
            cols["score"] = pa.array(self.score)
        for k, v in self.extras.items():
            cols[k] = pa.array(v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v)
        for k, v in self.rewrite.items():
            cols[self.REWRITE_PREFIX + k] = pa.array(v.tolist() if isinstance(v, np.ndarray) and v.dtype == object else v)
        return pa.table(cols)

    @classmethod
    def from_table(cls, table: pa.Table) -> "Selection":
        d = {c: table.column(c) for c in table.column_names}
        pre = cls.REWRITE_PREFIX
        rewrite = {k[len(pre):]: _to_numpy(v) for k, v in d.items() if k.startswith(pre)}
        extras = {k: _to_numpy(v) for k, v in d.items() if k not in ("keep", "reason", "score") and not k.startswith(pre)}
        score = _to_numpy(d["score"]).astype(np.float64) if "score" in d else None
        return cls(
            keep=d["keep"].to_numpy(zero_copy_only=False),
            reason=np.array(d["reason"].to_pylist(), dtype=object),
            score=score,
            extras=extras,
            rewrite=rewrite,
        )


def _to_numpy(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or col.null_count:
        if pa.types.is_floating(col.type):
            return col.to_numpy(zero_copy_only=False)
        return np.array(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


class Stage:
    """Base of all stages. Subclasses declare ``name`` (YAML type) and explicit keyword params."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    execution_params: ClassVar[tuple[str, ...]] = EXECUTION_PARAMS
    # Tags: facts about a stage that the engine, a refresh and the report act on, declared on the
    # class (as scikit-learn's estimator tags) instead of lists of stage names elsewhere.
    #: an Annotator whose output for a row depends on that row alone (a refresh reuses per-row results)
    row_local: ClassVar[bool] = False
    #: a Selector that keeps an exact budget of rows (``curate.select.base.BudgetSelector``)
    budgeted: ClassVar[bool] = False

    def required_columns(self) -> list[str]:
        """Columns the stage reads from its input table, in the order it names them.

        The engine checks them right after ingest, before any compute
        (:mod:`curate.engine.preflight`): each must be in the input, made by an earlier
        annotator, or made by one of this stage's ``prerequisites``. Columns a stage reads only
        when present (``quality_model`` reusing an ``embedding``) are not listed.

        Returns:
            Column names (default none).
        """
        return []

    @classmethod
    def param_names(cls) -> list[str]:
        """Constructor parameter names (excluding self and *args/**kwargs)."""
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind in kinds]

    def get_params(self) -> dict[str, Any]:
        """All constructor parameters as given (scikit-learn's contract)."""
        return {p: getattr(self, p) for p in self.param_names()}

    def cache_params(self) -> dict[str, Any]:
        """Parameters that change the result (execution-only ones removed); part of the cache key."""
        return {k: v for k, v in self.get_params().items() if k not in self.execution_params}

    def prerequisites(self, columns: list[str]) -> list["Stage"]:
        """Stages to run first when columns this stage needs are absent (default none).

        Args:
            columns: column names of the table this stage will receive.

        Returns:
            Stages (usually Annotators such as ``embed``/``kmeans``) the pipeline inserts before
            this one, in order. Recipes may also list them explicitly.
        """
        return []

    def describe(self) -> str:
        return f"{self.name}({json.dumps(self.cache_params(), sort_keys=True, default=str)})"

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Annotator(Stage):
    """A stage that adds columns (embeddings, cluster ids, scores) and never drops rows.

    Attributes:
        produces: score columns this annotator makes with its default parameters, which a
            selector (``top_k``, ``score_filter``, ...) may name: when such a column is missing,
            the annotator is added before the selector (:mod:`curate.score.producers` finds it
            by a registry scan). Empty for annotators whose columns are not scores, or that
            need a parameter without default (``reward_model``'s ``model``).
    """

    produces: ClassVar[tuple[str, ...]] = ()

    def output_columns(self) -> list[str]:
        """Columns ``annotate`` returns, known before it runs (``curate plan``, preflight).

        Every annotator adds at least one column, so the default (none) means "not declared":
        the preflight then stops checking the columns of later stages.
        """
        return []

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:  # pragma: no cover - abstract
        raise NotImplementedError


class Selector(Stage):
    """A stage that keeps or drops each row with a declared reason code.

    Attributes:
        reasons: {reason_code: one-line meaning}; every dropped row's reason is one of these.
    """

    reasons: ClassVar[dict[str, str]] = {}

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, selection: Selection, n_rows: int) -> Selection:
        """Validate a Selection against this stage's declared reasons and row count."""
        if len(selection.keep) != n_rows:
            raise ValueError(f"{self.name}: selection covers {len(selection.keep)} rows, input has {n_rows}")
        used = {r for r in selection.reason if r is not None}
        unknown = used - set(self.reasons)
        if unknown:
            raise ValueError(f"{self.name}: undeclared reason codes {sorted(unknown)}; declared {sorted(self.reasons)}")
        return selection
