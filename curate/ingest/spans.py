"""Raw byte spans of JSON array elements, for ``row_too_large`` on the vectorised path.

The per-row JSON reader measures each element's raw span against ``max_row_bytes``; the
vectorised path must quarantine exactly the same rows, so it proves every element is within the
limit (a free bound from the file size, else a numpy scan) or falls back.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.ingest.kernels import Fallback, as_numpy


def object_spans(data: bytes) -> np.ndarray | None:
    """Byte length of every top-level object of a JSON array, found with numpy, or None.

    The per-row reader measures each element's raw span; this finds the same spans without a
    Python loop: unescaped quotes (an even run of backslashes before them) delimit strings,
    the structural characters outside strings give the nesting depth, and each element is
    from a ``{`` opened at depth 1 to the ``}`` that closes it. None when the array holds
    anything but objects (the per-row path decides then).
    """
    b = np.frombuffer(data, np.uint8)
    pos = np.flatnonzero((b == 123) | (b == 125) | (b == 91) | (b == 93) | (b == 34) | (b == 92))
    c = b[pos]
    q, bs = pos[c == 34], pos[c == 92]
    if len(bs) and len(q):
        k = np.searchsorted(bs, q)  # backslashes before each quote
        run_start = np.flatnonzero(np.r_[True, np.diff(bs) != 1])  # index in bs where each run starts
        start_of = run_start[np.searchsorted(run_start, np.arange(len(bs)), side="right") - 1]
        adj = (k > 0) & (bs[np.maximum(k - 1, 0)] == q - 1)
        run = np.where(adj, (k - 1) - start_of[np.maximum(k - 1, 0)] + 1, 0)
        q = q[run % 2 == 0]
    s = pos[(c == 123) | (c == 125) | (c == 91) | (c == 93)]
    s = s[np.searchsorted(q, s) % 2 == 0]  # an even number of quotes before: outside strings
    ch = b[s]
    delta = np.where((ch == 123) | (ch == 91), 1, -1)
    after = np.cumsum(delta)
    before = after - delta
    if len(s) == 0 or ch[0] != 91:
        return None
    opens = s[(ch == 123) & (before == 1)]
    closes = s[(ch == 125) & (after == 1)]
    if len(opens) != len(closes) or ((ch == 91) & (before == 1)).any():
        return None
    return closes - opens + 1


def check_spans(records: list[dict], data: bytes, limit: int, cols: dict[str, pa.Array]) -> None:
    """Fall back unless every JSON array element is provably within ``limit`` bytes.

    First a free bound: c_i = quoted keys and string values of the columns already built (a
    lower bound of element i's raw span, escapes and other fields left out); spans and
    separators add up to at most the file size F, so span_i <= c_i + (F - (n + 1) - sum_j c_j).
    When that does not settle it, every element is measured (:func:`object_spans`).

    Args:
        records (list[dict]): the n parsed elements.
        data (bytes): the file's bytes after the BOM.
        limit (int): ``max_row_bytes``.
        cols (dict[str, pa.Array]): record key -> (n,) string column already built.

    Raises:
        Fallback: some element may be (or is) larger than ``limit``.
    """
    n = len(records)
    c = np.full(n, 2, np.int64)
    for key, col in cols.items():
        if col is None or not pa.types.is_string(col.type):
            continue
        present = ~as_numpy(col.is_null())
        blen = np.asarray(pc.fill_null(pc.binary_length(col), 0).to_numpy(zero_copy_only=False), np.int64)
        c += present * (len(json.dumps(key, ensure_ascii=False).encode()) + 3) + blen
    slack = len(data) - (n + 1) - int(c.sum())
    if slack >= 0 and int(c.max()) + slack <= limit:
        return
    spans = object_spans(data)
    if spans is None or len(spans) != n:
        raise Fallback("JSON array elements could not be measured")
    if int(spans.max()) > limit:
        raise Fallback("a row exceeds max_row_bytes")  # the per-row path quarantines it with its raw text
