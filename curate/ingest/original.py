"""The user's own rows back: a subset of the input in the input's own schema.

Inside, every stage sees the canonical view (:mod:`curate.core.schema`); what a user gets back
is, by default, the rows they gave, fewer of them, as ``datasets``' ``ds.filter`` /
``ds.select(indices)`` return them: same columns, same features, same order, values untouched.

* In-memory data (:func:`take_rows`): a ``datasets.Dataset`` comes back through
  ``ds.select(indices)`` (its features exactly), a ``pa.Table`` through ``take`` (its schema),
  a pandas DataFrame through ``iloc`` (its index kept), a list of dicts as the same dicts.
  The positions come from the ledger (:func:`selected_positions`): ingest keeps the input's
  order and names each quarantined in-memory row by its 0-based index.
* Files (:func:`read_original`): each file is read again and every record whose id (the same
  rules as ingest, :func:`curate.ingest.ids.row_id`) was kept is taken as it was read: Parquet
  and ``save_to_disk`` rows keep their Arrow types, JSON/JSONL/CSV/web records are the parsed
  records. Files with different columns give the union of their columns, null where a file
  lacks one (one table, so ``datasets.load_dataset`` of the output still works).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.errors import InputError
from curate.core.schema import SELECTED
from curate.ingest.formats import RowError
from curate.ingest.ids import row_id
from curate.ingest.read import is_path_spec

__all__ = ["columns_by_id", "input_kind", "read_original", "selected_positions", "take_rows", "with_columns"]

log = logging.getLogger(__name__)

KINDS = ("dataset", "arrow", "pandas", "list", "path")


def input_kind(data) -> str:
    """What ``data`` is: ``dataset``, ``arrow``, ``pandas``, ``list`` (of dicts) or ``path``.

    Raises:
        InputError: a ``datasets.DatasetDict`` (select one split, or loop over the splits).
        TypeError: anything else.
    """
    if is_path_spec(data):
        return "path"
    if isinstance(data, list):
        return "list"
    if isinstance(data, pa.Table):
        return "arrow"
    module = type(data).__module__
    if module.startswith("pandas"):
        return "pandas"
    if module.startswith("datasets"):
        if type(data).__name__ in ("DatasetDict", "IterableDatasetDict"):
            raise InputError(f"curate.select takes one split; got a DatasetDict with splits {sorted(data)}: "
                             f"pass ds['train'] (or loop: {{k: curate.select(v, ...) for k, v in ds.items()}})")
        return "dataset"
    raise TypeError(f"data must be a list of dicts, pa.Table, DataFrame, datasets.Dataset or path, "
                    f"got {type(data).__name__}")


def selected_positions(ledger, n_rows: int) -> np.ndarray:
    """0-based positions in an in-memory input of the rows the ledger ends ``selected``.

    Ingest keeps the input's order and drops only quarantined rows, each named by its 0-based
    index (``line``); so the ledger's ingested rows are the input positions minus those.

    Args:
        ledger: the run's :class:`curate.engine.provenance.Ledger`.
        n_rows (int): rows in the input.

    Returns:
        (k,) int64 positions, ascending.
    """
    keep = np.ones(n_rows, bool)
    keep[[int(q["line"]) for q in ledger.quarantine]] = False
    ingested = np.flatnonzero(keep)
    if len(ingested) != len(ledger.ids):  # pragma: no cover - an ingest that broke its own contract
        raise AssertionError(f"{len(ledger.ids)} ingested rows but {len(ingested)} unquarantined positions")
    return ingested[ledger.status == SELECTED].astype(np.int64)


def take_rows(data, kind: str, positions: np.ndarray):
    """The rows of in-memory ``data`` at ``positions``, as the same kind of object.

    Args:
        data: the input (``kind`` from :func:`input_kind`, not ``path``).
        kind (str): ``dataset``, ``arrow``, ``pandas`` or ``list``.
        positions (np.ndarray): (k,) int positions.

    Returns:
        ``ds.select(positions)`` / ``table.take`` / ``df.iloc[positions]`` / the list's dicts.
    """
    if kind == "dataset":
        return data.select(positions.tolist())
    if kind == "arrow":
        return data.take(pa.array(positions, pa.int64()))
    if kind == "pandas":
        return data.iloc[positions]
    if kind == "list":
        return [data[i] for i in positions.tolist()]
    raise ValueError(f"take_rows: unknown kind {kind!r}")


def with_columns(rows, kind: str, columns: dict[str, pa.Array]):
    """``rows`` (as :func:`take_rows` returns them) with ``columns`` added, aligned by row.

    A column whose name the rows already have is added as ``curate_<name>`` so the user's
    values stay untouched. Lists of dicts are copied (the input's dicts are not changed).
    """
    if not columns:
        return rows
    have = set(_names(rows, kind))
    named = {(f"curate_{k}" if k in have else k): v for k, v in columns.items()}
    if kind == "dataset":
        for k, v in named.items():
            rows = rows.add_column(k, v.to_pylist())
        return rows
    if kind == "arrow":
        for k, v in named.items():
            rows = rows.append_column(k, v)
        return rows
    if kind == "pandas":
        rows = rows.copy()
        for k, v in named.items():
            rows[k] = v.to_pylist()
        return rows
    values = {k: v.to_pylist() for k, v in named.items()}
    return [{**r, **{k: vals[j] for k, vals in values.items()}} for j, r in enumerate(rows)]


def columns_by_id(table: pa.Table, names: list[str], ids: list[str]) -> dict[str, pa.Array]:
    """{name: ``table``'s column for the rows ``ids``, in that order} (joined on ``id``): the
    stages' scores lined up with original rows for :func:`with_columns`."""
    if not names:
        return {}
    import pyarrow.compute as pc

    at = pc.index_in(pa.array(ids, pa.string()), value_set=table.column("id").combine_chunks())
    return {c: table.column(c).combine_chunks().take(at) for c in names}


def _names(rows, kind: str) -> list[str]:
    if kind in ("dataset", "arrow"):
        return list(rows.column_names)
    if kind == "pandas":
        return [str(c) for c in rows.columns]
    return sorted({k for r in rows for k in r})


def read_original(entries: list[tuple[Path | str, str]], keep: Iterable[str], *, id_field: str | None = None,
                  max_row_bytes: int = 2**62, split: str = "train", extract_timeout: float | None = None,
                  show_progress: bool = False) -> tuple[pa.Table, list[str]]:
    """The records of files whose id is in ``keep``, as they were read, in input order.

    Args:
        entries (list[tuple[Path | str, str]]): ``(path, relative name)`` as
            ``curate.ingest.read`` expands the input (the names are the ids' ``<file>`` part).
        keep (Iterable[str]): ids of the rows to return.
        id_field (str | None): as the ingest that made the ids (default None: ``id`` if present).
        max_row_bytes, split, extract_timeout: as in ``curate.ingest.read.read_input``.
        show_progress (bool): a bar over files (default False).

    Returns:
        (table, ids): the kept records (the union of the files' columns, in input order; Parquet
        and ``save_to_disk`` rows with their own Arrow types) and their ids, row-aligned.

    Raises:
        InputError: an id in ``keep`` was not found again (the input changed since the run),
            or two files' columns have types that do not merge.
    """
    from tqdm.auto import tqdm

    from curate.ingest.readers import read_records
    from curate.ingest.readers.base import FileError

    wanted = set(keep)
    taken: set[str] = set()
    tables, ids = [], []
    for path, name in tqdm(entries, desc="original rows", disable=not show_progress, leave=False):
        lines, recs = [], []
        try:
            for line, rec, _raw in read_records(path, max_row_bytes, split, extract_timeout):
                if not isinstance(rec, dict):  # a RowError: ingest quarantined it
                    continue
                try:
                    rid, _ = row_id(rec, id_field, name, line)
                except RowError:
                    continue
                if rid in wanted and rid not in taken:
                    taken.add(rid)
                    lines.append(line)
                    recs.append(rec)
                    ids.append(rid)
        except FileError:
            continue  # an unreadable file gave no kept rows (ingest quarantined it)
        if recs:
            tables.append(_file_rows(path, lines, recs, split))
    missing = wanted - taken
    if missing:
        raise InputError(f"{len(missing)} kept rows (e.g. {sorted(missing)[:3]}) are no longer in the input; "
                         f"the files changed since the run: run again")
    if not tables:
        return pa.table({}), ids
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"the input files' columns do not merge into one table ({e}); "
                         f"use output.schema: canonical for this pool") from None
    return table, ids


def _file_rows(path: Path | str, lines: list[int], recs: list[dict], split: str) -> pa.Table:
    """One file's kept rows: its own Arrow table where it has one, else the parsed records."""
    p = Path(str(path))
    if p.is_dir() or p.suffix.lower() == ".parquet":
        if p.is_dir():
            import datasets

            from curate.ingest.readers.hf import dataset_table

            full = dataset_table(datasets.load_from_disk(str(p)), split, p.name)
        else:
            import pyarrow.parquet as pq

            full = pq.read_table(p)
        return full.take(pa.array(np.asarray(lines, np.int64) - 1))  # their row numbers are 1-based
    return pa.Table.from_pylist(recs)
