"""Python API: ``curate.run(config)``, ``curate.plan(config)`` and ``curate.select(data, method=..., budget=...)``."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow as pa

from curate.core.schema import SELECTED, is_vector_type
from curate.engine.config import build_stage
from curate.engine.execute import execute_table, run
from curate.engine.pipeline import plan
from curate.ingest import read as cio
from curate.ingest.original import (
    columns_by_id,
    input_kind,
    read_original,
    selected_positions,
    take_rows,
    with_columns,
)

__all__ = ["plan", "run", "select"]


def interactive() -> bool:
    """True when progress bars have someone to watch them: standard error is a terminal, or the
    code runs in a Jupyter kernel (tqdm.auto draws notebook bars there)."""
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def select(data, method: str, budget=None, *, format: str | None = None, id_field: str | None = None,
           cache_dir: str | Path | None = None, show_progress: bool | None = None, return_provenance: bool = False,
           return_indices: bool = False, with_scores: bool | list[str] = False, schema: str = "original",
           output: str | None = None, **params):
    """One-off selection on in-memory or on-disk data: the rows you gave, fewer of them.

    Args:
        data: ``datasets.Dataset``, ``pa.Table``, pandas DataFrame, list of dicts, or a path
            (file, folder, glob or list of them). A ``DatasetDict`` is refused: pass one split.
        method: a stage type, e.g. ``"random"``, ``"top_k"``, ``"exact_dedup"``, ``"minhash_dedup"``,
            ``"semdedup"``, ``"d4"``. Stages it needs first (e.g. ``embed`` + ``kmeans`` for
            ``semdedup``) are added automatically.
        budget: passed as the stage's ``budget`` when given (int count or float fraction).
        format: input format for raw records (default auto-detect).
        id_field: field holding row ids (default ``id`` if present; else the row's 0-based
            index for in-memory data, ``<file>:<line>`` for files).
        cache_dir: stage cache folder (default: a temporary folder, i.e. no reuse).
        show_progress: draw progress bars (default None: when standard error is a terminal or
            the caller is a Jupyter kernel, as tqdm users expect; False silences them).
        return_provenance: also return the provenance table (every input row's status, stage,
            reason and scores; default False).
        return_indices: also return the kept rows' 0-based positions in ``data`` (an int64
            array, ascending; ``ds.select(idx)`` reproduces the result; in-memory data only;
            default False).
        with_scores: add score columns to the rows: True adds every non-vector column the
            stages computed (scores, cluster ids, ...); a list adds those columns (vectors
            such as ``embedding`` only this way). A name the rows already have gets a
            ``curate_`` prefix. Default False: the rows as given.
        schema: ``"original"`` (default): the input's own columns, features, order and values
            (``ds.select(idx)``, ``table.take``, ``df.iloc`` with its index, the list's dicts;
            files: each kept record as read). ``"canonical"``: curate's inner view (``id``,
            ``text``, ``instruction``, ``input``, ``output``, ``messages``, ``source``, the
            input's other columns, the stages' columns), as ``curate run`` writes it.
        output: None (default): the same kind of object as ``data`` (a ``datasets.Dataset``
            for paths and for ``schema="canonical"``); ``"dataset"`` or ``"arrow"`` (a
            ``pa.Table``; skips importing ``datasets``, ~0.7 s on first use) to convert.

    Returns:
        the kept rows; with ``return_indices`` and/or ``return_provenance`` a tuple
        ``(rows, indices, provenance)`` of the ones asked for, in that order.
    """
    if output not in (None, "dataset", "arrow"):
        raise ValueError(f"output must be None, 'dataset' or 'arrow', got {output!r}")
    if schema not in ("original", "canonical"):
        raise ValueError(f"schema must be 'original' or 'canonical', got {schema!r}")
    kind = input_kind(data)
    if return_indices and kind == "path":
        raise ValueError("return_indices is for in-memory data; rows read from files are named by their ids "
                         "(<file>:<line> or the id field): pass return_provenance=True")
    spec = {"type": method, **params}
    if budget is not None:
        spec["budget"] = budget
    stage = build_stage(spec, where=f"select(method={method!r})")
    got = cio.from_records(data, format=format, id_field=id_field)  # paths go through read_input
    with tempfile.TemporaryDirectory(prefix="curate-select-") as tmp:
        if show_progress is None:
            show_progress = interactive()
        ex = execute_table(got, [stage], cache_dir=cache_dir or tmp, show_progress=show_progress)
        # built while the temporary cache (the table's memory-mapped columns) still exists
        names = _score_names(ex.table, got.table.column_names, with_scores)
        kept = ex.ledger.ids[ex.ledger.status == SELECTED].tolist()  # in input order, as the positions
        indices = selected_positions(ex.ledger, _length(data, kind)) if kind != "path" else None
        if schema == "canonical":
            rows, kind = _canonical_rows(ex.table, with_scores), "arrow"
            output = output or "dataset"
        elif kind == "path":
            rows, ids = read_original(cio.expand_with_names(data), kept, id_field=id_field, show_progress=show_progress)
            rows, kind = with_columns(rows, "arrow", columns_by_id(ex.table, names, ids)), "arrow"
            output = output or "dataset"
        else:
            rows = with_columns(take_rows(data, kind, indices), kind, columns_by_id(ex.table, names, kept))
        rows = _convert(rows, kind, output)
        extra = ([indices] if return_indices else []) + ([ex.ledger.to_table()] if return_provenance else [])
        return (rows, *extra) if extra else rows


def _length(data, kind: str) -> int:
    return data.num_rows if kind == "arrow" else len(data)


def _score_names(table: pa.Table, input_columns: list[str], with_scores) -> list[str]:
    """The columns ``with_scores`` asks for: True = every non-vector column the stages added."""
    if not with_scores:
        return []
    if with_scores is True:
        return [f.name for f in table.schema if f.name not in input_columns and not is_vector_type(f.type)]
    names = list(with_scores)
    unknown = [c for c in names if c not in table.column_names]
    if unknown:
        raise KeyError(f"with_scores: no column {unknown} in the selected rows; have {table.column_names}")
    return names


def _canonical_rows(table, with_scores):
    """The canonical view, vector columns left out unless ``with_scores`` names them."""
    named = set(with_scores) if isinstance(with_scores, (list, tuple)) else set()
    drop = [f.name for f in table.schema if is_vector_type(f.type) and f.name not in named]
    return table.drop_columns(drop).combine_chunks()


def _convert(rows, kind: str, output: str | None):
    """``rows`` of ``kind`` as ``output`` asks (None: unchanged)."""
    if output is None or output == kind:
        return rows
    if kind == "dataset":
        table = rows.flatten_indices().data.table
    elif kind == "pandas":
        table = pa.Table.from_pandas(rows)
    elif kind == "list":
        table = pa.Table.from_pylist(rows)
    else:
        table = rows
    if output == "arrow":
        return table
    import datasets

    return datasets.Dataset(table)
