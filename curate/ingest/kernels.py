"""Arrow/numpy kernels of the vectorised ingest path (:mod:`curate.ingest.fast`).

Each works on whole columns and raises :class:`Fallback` where it cannot reproduce the per-row
path exactly; the caller then takes the per-row path.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Fallback(Exception):
    """The fast path cannot reproduce the per-row result for this input exactly."""


def column_array(records: list[dict], key: str, type: pa.DataType | None = None) -> pa.Array:
    """The values of ``key`` in every record as one Arrow array (null where a record lacks it).

    Args:
        records (list[dict]): n parsed rows.
        key (str): the record field.
        type (pa.DataType | None): the array type; None (default) lets Arrow infer it.

    Returns:
        pa.Array of shape (n,).

    Raises:
        Fallback: values of mixed or other types than ``type``, or not encodable as UTF-8.
    """
    try:
        return pa.array([r.get(key) for r in records], type=type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, UnicodeEncodeError,
            TypeError):
        raise Fallback(f"column {key!r} has mixed, non-string or unencodable values") from None


def as_numpy(mask) -> np.ndarray:
    """A boolean Arrow array (nulls count as False) as an (n,) numpy bool array."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def edge_safe(p: pa.Array) -> np.ndarray:
    """(n,) bool: null, empty, or first and last bytes printable non-space ASCII (from the offsets).

    Such a string is unchanged by ``str.strip``; any other one may be changed differently by
    Python and by Arrow's trim, so Python must render it.
    """
    if p.null_count == len(p):
        return np.ones(len(p), bool)
    p = pa.concat_arrays([p]) if isinstance(p, pa.ChunkedArray) else p
    off = np.frombuffer(p.buffers()[1], np.int32)[p.offset:p.offset + len(p) + 1]
    data = np.frombuffer(p.buffers()[2], np.uint8) if p.buffers()[2] is not None else np.zeros(0, np.uint8)
    valid = ~as_numpy(p.is_null())
    ne = valid & (off[1:] > off[:-1])
    first, last = data[off[:-1][ne]], data[off[1:][ne] - 1]
    ok = np.ones(len(p), bool)
    ok[ne] = (first >= 33) & (first <= 126) & (last >= 33) & (last <= 126)
    return ok


def join_parts(parts: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    """Canonical text of string columns, and the rows Python must render itself.

    Non-empty parts are joined by a blank line, as :func:`curate.ingest.formats.render_text`
    does for parts that need no stripping; one part is kept unchanged (the ``text`` format).

    Args:
        parts (list[pa.Array]): k string arrays of shape (n,), in rendering order.

    Returns:
        (text, unsafe): the (n,) string array (nulls as ""), and the (n,) bool mask of rows
        with a non-empty part whose edges are not :func:`edge_safe` (their text is wrong here).
    """
    unsafe = np.zeros(len(parts[0]), bool)
    for p in parts:
        unsafe |= ~edge_safe(p)
    if len(parts) == 1:  # the text format keeps its text unchanged
        return pc.fill_null(parts[0], ""), unsafe
    cleaned = [pc.if_else(pc.fill_null(pc.equal(p, ""), True), pa.scalar(None, pa.string()), p) for p in parts]
    # Joined pairwise with coalesce: pyarrow 26's null_handling="skip" drops the rows whose parts
    # are all null from its result (it returns fewer rows than it was given).
    acc = cleaned[0]
    for p in cleaned[1:]:
        acc = pc.coalesce(pc.binary_join_element_wise(acc, p, "\n\n"), acc, p)
    return pc.fill_null(acc, ""), unsafe


def replace_rows(values: pa.Array, rows: np.ndarray | list[int], new: list[str]) -> pa.Array:
    """``values`` with ``values[rows[j]] = new[j]`` (rows sorted ascending, new strings).

    Args:
        values (pa.Array): (n,) string array.
        rows (np.ndarray | list[int]): m row indices, ascending.
        new (list[str]): m replacement strings.
    """
    mask = np.zeros(len(values), bool)
    mask[rows] = True
    return pc.replace_with_mask(values, pa.array(mask), pa.array(new, pa.string()))
