"""The ``messages`` format for the vectorised ingest path (:mod:`curate.ingest.fast`).

The per-row adapter (:func:`curate.ingest.formats.make_adapter`) turns OpenAI-style turns into the
canonical columns; this does the same over the whole ``list<struct<role, content>>`` column:
roles lower-cased and mapped (``ROLE_MAP``), turns' contents joined into ``text``, and the first
user turn and the first assistant turn after it found with numpy over the flattened turns.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core import schema
from curate.ingest.formats import render_text
from curate.ingest.kernels import Fallback, as_numpy, column_array, edge_safe


def adapt_messages(records: list[dict], key: str, reason: np.ndarray):
    """The ``messages`` adapter over a list<struct<role, content>> column (sets ``reason`` in place).

    Returns (text, instruction, output, messages) arrays of length n and {row: error message}
    for rows whose error names a turn. Falls back for content parts, non-ASCII roles, or any
    other shape the per-row adapter handles itself.
    """
    from curate.ingest.formats import ROLE_MAP

    n = len(records)
    col = column_array(records, key)
    if pa.types.is_null(col.type):
        reason[reason == 0] = 2
        null = pa.nulls(n, pa.string())
        return null, null, null, pa.nulls(n, schema.MESSAGE_TYPE), {}
    if not pa.types.is_list(col.type) or not pa.types.is_struct(col.type.value_type):
        raise Fallback(f"{key!r} is {col.type}")
    st = col.type.value_type
    names = [st.field(i).name for i in range(st.num_fields)]
    if "role" not in names or any(not pa.types.is_string(st.field(f).type) and not pa.types.is_null(st.field(f).type)
                                  for f in ("role", "content") if f in names):
        raise Fallback("turns without string role/content")
    reason[(reason == 0) & as_numpy(col.is_null())] = 2
    flat = col.flatten()
    if flat.null_count:
        raise Fallback("a turn is not an object")  # per-row: wrong_type
    parent = pc.list_parent_indices(col).to_numpy()
    starts = np.asarray(col.offsets.to_numpy()[:-1], np.int64) - int(col.offsets[0].as_py())
    pos = np.arange(len(flat)) - starts[parent]  # index of the turn inside its conversation
    role = flat.field("role").cast(pa.string())
    content = flat.field("content").cast(pa.string()) if "content" in names else pa.nulls(len(flat), pa.string())
    content = pc.fill_null(content, "")  # a missing content is "" (per-row: _content(None))
    bad_role = as_numpy(role.is_null())
    if bad_role.any():
        rows, first = np.unique(parent[bad_role], return_index=True)
        row_msgs = {}
        for r, j in zip(rows.tolist(), np.flatnonzero(bad_role)[first].tolist()):
            if reason[r] == 0:
                reason[r] = 5
                row_msgs[r] = f"{key}[{int(pos[j])}] has no string 'role'"
    else:
        row_msgs = {}
    if not as_numpy(pc.string_is_ascii(pc.fill_null(role, ""))).all():
        raise Fallback("non-ASCII role")  # str.lower and Arrow's lower could disagree
    mapped = pc.utf8_lower(pc.fill_null(role, ""))
    for k, v in ROLE_MAP.items():
        if k != v:
            mapped = pc.if_else(pc.equal(mapped, k), v, mapped)
    # canonical text: every non-blank turn, stripped, joined by a blank line
    safe = edge_safe(content)
    keep_turn = ~as_numpy(pc.equal(content, ""))
    kept_parent = parent[keep_turn]
    counts = np.bincount(kept_parent, minlength=n)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), content.filter(pa.array(keep_turn)))
    text = pc.binary_join(lists, "\n\n")
    unsafe_rows = np.unique(parent[~safe])
    todo = [r for r in unsafe_rows.tolist() if reason[r] == 0]
    if todo:
        fixed = [render_text(messages=records[r][key]) for r in todo]  # plain-string contents here
        mask = np.zeros(n, bool)
        mask[todo] = True
        text = pc.replace_with_mask(text, pa.array(mask), pa.array(fixed, pa.string()))
    reason[(reason == 0) & as_numpy(pc.equal(text, ""))] = 4
    # first user turn, then the first assistant turn after it
    m = mapped.to_numpy(zero_copy_only=False)
    is_user, is_asst = m == "user", m == "assistant"
    first_user = np.full(n, -1, np.int64)
    u_rows, u_first = np.unique(parent[is_user], return_index=True)
    first_user[u_rows] = np.flatnonzero(is_user)[u_first]
    a_idx = np.flatnonzero(is_asst)
    a_idx = a_idx[(first_user[parent[a_idx]] >= 0) & (a_idx > first_user[parent[a_idx]])]
    first_asst = np.full(n, -1, np.int64)
    a_rows, a_first = np.unique(parent[a_idx], return_index=True)
    first_asst[a_rows] = a_idx[a_first]
    reason[(reason == 0) & (first_user < 0)] = 6
    reason[(reason == 0) & (first_asst < 0)] = 7
    ins = content.take(pa.array(np.maximum(first_user, 0))) if len(content) else pa.nulls(n, pa.string())
    out = content.take(pa.array(np.maximum(first_asst, 0))) if len(content) else pa.nulls(n, pa.string())
    turns = pa.StructArray.from_arrays([mapped, content], names=["role", "content"])
    full_offsets = np.r_[0, np.cumsum(np.bincount(parent, minlength=n))].astype(np.int32)
    msgs = pa.ListArray.from_arrays(pa.array(full_offsets), turns, type=schema.MESSAGE_TYPE)
    return text, ins, out, msgs, row_msgs
