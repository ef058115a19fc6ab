"""Row ids, the same rules on both ingest paths (per row and vectorised).

``id_field`` if given (a row lacking it is ``missing_field``), else a non-null ``id`` field, else
``<file>:<line>`` (in-memory rows: the bare 0-based row index, ``"7"``, so ids match the
positions ``datasets.Dataset.select`` takes). Ids become strings. A repeated id quarantines the later row
(``duplicate_id``), naming both places.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.ingest.formats import RowError, check_utf8
from curate.ingest.kernels import Fallback, as_numpy, column_array


def missing_id_error(key: str) -> RowError:
    """The error of a row without a value in the id field ``key``."""
    return RowError("missing_field", f"missing id field {key!r}")


def duplicate_id_error(row_id: str, place: str, first: str) -> RowError:
    """The error of a row at ``place`` ("file:line") reusing the id first used at ``first``."""
    return RowError("duplicate_id", f"id {row_id!r} at {place} repeats the id of {first}")


def row_id(rec: dict, id_field: str | None, name: str, line: int, bare: bool = False) -> tuple[str, str | None]:
    """The id of one row and the record key it came from (None for a ``<file>:<line>`` id).

    Args:
        rec (dict): the parsed row.
        id_field (str | None): as in :func:`curate.ingest.read.read_input`; None uses ``id`` when
            the row has a non-null one.
        name (str): the input's relative name.
        line (int): the row's 1-based line or row number (in-memory rows: 0-based row index).
        bare (bool): positional ids are ``str(line)`` without the name (in-memory rows; default False).

    Raises:
        RowError: the id field is missing (``missing_field``), holds a list/dict (``wrong_type``)
            or an unpaired surrogate that Arrow cannot store (``invalid_utf8``).
    """
    key = id_field or ("id" if rec.get("id") is not None else None)
    if key is None:
        return (str(line) if bare else f"{name}:{line}"), None
    val = rec.get(key)
    if val is None:
        raise missing_id_error(key)
    if isinstance(val, (dict, list)):
        raise RowError("wrong_type", f"id field {key!r} must be a scalar, got {type(val).__name__}")
    rid = str(val)
    try:
        check_utf8(rid)
    except RowError as e:
        raise RowError("invalid_utf8", f"id field {key!r}: {e.message}") from None
    return rid, key


def id_column(records: list[dict], keys: set[str], id_field: str | None, name: str,
              lines: np.ndarray, bare: bool = False) -> tuple[pa.Array, str | None, np.ndarray]:
    """:func:`row_id` over all rows at once.

    Args:
        records (list[dict]): n parsed rows.
        keys (set[str]): every key of any row.
        id_field (str | None): as in :func:`row_id`.
        name (str): the input's relative name.
        lines (np.ndarray): (n,) int, the rows' 1-based line numbers (in-memory: 0-based indices).
        bare (bool): as in :func:`row_id` (default False).

    Returns:
        (ids, key, missing): the (n,) string ids (null where missing), the id key (None for
        ``<file>:<line>`` ids), and the (n,) bool mask of rows lacking ``id_field``.

    Raises:
        Fallback: ids of another type than string/integer, or an ``id`` field only some rows
            have (those would get ``<file>:<line>`` ids and an ``orig_id`` column).
    """
    key = id_field or ("id" if "id" in keys else None)
    if key is None:
        ids = pa.array(lines, pa.int64()).cast(pa.string())
        if not bare:
            ids = pc.binary_join_element_wise(pa.scalar(f"{name}:"), ids, "")
        return ids, None, np.zeros(len(records), bool)
    col = column_array(records, key)
    if not (pa.types.is_string(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)):
        raise Fallback(f"id field {key!r} is {col.type}")
    if id_field is None and col.null_count:
        raise Fallback("some rows lack an id")
    ids = col.cast(pa.string())
    return ids, key, as_numpy(ids.is_null())


def find_duplicates(ids: pa.Array, ok: np.ndarray, by_line: bool, seen: dict[str, str] | None, name: str,
                    lines: np.ndarray) -> tuple[dict[int, str], dict[str, str]]:
    """Rows whose id an earlier row (or an earlier input) already used.

    Args:
        ids (pa.Array): (n,) string ids.
        ok (np.ndarray): (n,) bool, the rows not quarantined otherwise (only they claim ids).
        by_line (bool): the ids are ``<file>:<line>`` (unique by construction).
        seen (dict[str, str] | None): ids used by earlier inputs -> "file:line"; None when
            this is the whole input.
        name (str): the input's relative name.
        lines (np.ndarray): (n,) int, the rows' 1-based line numbers.

    Returns:
        (dup_of, new_seen): row index -> "file:line" of the id's first use, and this input's
        ids -> "file:line" (for the caller to merge into ``seen`` once the input is accepted).
    """
    new_seen: dict[str, str] = {}
    dup_of: dict[int, str] = {}
    if seen is None and by_line:
        return dup_of, new_seen
    rows = np.flatnonzero(ok)
    ok_ids = ids.take(pa.array(rows, pa.int64()))
    # The dict pass runs only when some id repeats or ids were seen before.
    if seen is not None or pc.count_distinct(ok_ids).as_py() != len(rows):
        for i, rid in zip(rows.tolist(), ok_ids.to_pylist()):
            first = (seen or {}).get(rid) or new_seen.get(rid)
            if first is not None:
                dup_of[i] = first
            else:
                new_seen[rid] = f"{name}:{int(lines[i])}"
    return dup_of, new_seen
