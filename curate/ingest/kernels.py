"""curate.ingest.kernels"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Fallback(Exception):
    """The fast path cannot reproduce the per-row result for this input exactly."""


def column_array(records: list[dict], key: str, type: pa.DataType | None = None) -> pa.Array:
    try:
        return pa.array([r.get(key) for r in records], type=type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, UnicodeEncodeError,
            TypeError):
        raise Fallback(f"column {key!r} has mixed, non-string or unencodable values") from None


def as_numpy(mask) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def edge_safe(p: pa.Array) -> np.ndarray:
    """(n,) bool: null, empty, or first and last bytes printable non-space ASCII (from the offsets)."""
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
