"""The ``messages`` format: OpenAI-style ``[{"role", "content"}]`` turns.

``content`` may be a list of ``{"type": "text", "text": ...}`` parts (joined by newlines). The
vectorised adapter works on the ``list<struct<role, content>>`` column: roles lower-cased and
mapped, turns' contents joined into ``text``, and the first user turn and the first assistant
turn after it found with numpy over the flattened turns. It falls back for content parts,
non-ASCII roles, or any other shape the per-row adapter handles itself.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core import schema
from curate.ingest.formats import ROLE_MAP, RowError, missing_field_error, render_text
from curate.ingest.kernels import (
    Fallback,
    as_numpy,
    column_array,
    edge_safe,
    replace_rows,
)
from curate.ingest.records.base import Check, Columns
from curate.ingest.records.conversation import (
    Conversation,
    content_text,
    empty_error,
    map_role,
    no_assistant_error,
    no_user_error,
)


def role_error(key: str, turn: int, role: Any) -> RowError:
    """The error of turn ``turn`` of field ``key`` whose role is missing (None) or not a string."""
    return RowError("missing_field" if role is None else "wrong_type", f"{key}[{turn}] has no string 'role'")


class Messages(Conversation):
    """OpenAI-style conversations (see the module docstring)."""

    name = "messages"
    field = "messages"

    def turns(self, rec: dict) -> tuple[list[dict], set[str]]:
        key, msgs = self.key, rec[self.key]
        if not isinstance(msgs, list):
            raise RowError("wrong_type", f"field {key!r} must be a list, got {type(msgs).__name__}")
        turns = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise RowError("wrong_type", f"{key}[{i}] must be a dict with role/content, got {type(m).__name__}")
            role = m.get("role")
            if not isinstance(role, str):
                raise role_error(key, i, role)
            turns.append({"role": map_role(role), "content": content_text(m.get("content"), f"{key}[{i}]")})
        return turns, {key}

    def adapt_columns(self, records: list[dict], keys: set[str], ok: np.ndarray) -> Columns:
        key, n = self.key, len(records)
        col = column_array(records, key)
        if pa.types.is_null(col.type):  # no row has turns
            null = pa.nulls(n, pa.string())
            return Columns(text=null, canon={schema.INSTRUCTION: null, schema.OUTPUT: null,
                                            schema.MESSAGES: pa.nulls(n, schema.MESSAGE_TYPE)},
                           checks=[Check(np.ones(n, bool), missing_field_error((key,)))], consumed={key}, strings={})
        if not pa.types.is_list(col.type) or not pa.types.is_struct(col.type.value_type):
            raise Fallback(f"{key!r} is {col.type}")
        st = col.type.value_type
        names = [st.field(i).name for i in range(st.num_fields)]
        if "role" not in names or any(not pa.types.is_string(st.field(f).type) and not pa.types.is_null(st.field(f).type)
                                      for f in ("role", "content") if f in names):
            raise Fallback("turns without string role/content")
        missing = as_numpy(col.is_null())
        flat = col.flatten()
        if flat.null_count:
            raise Fallback("a turn is not an object")  # per-row: wrong_type
        parent = pc.list_parent_indices(col).to_numpy()  # (turns,) the row of each turn
        starts = np.asarray(col.offsets.to_numpy()[:-1], np.int64) - int(col.offsets[0].as_py())
        pos = np.arange(len(flat)) - starts[parent]  # index of the turn inside its conversation
        role = flat.field("role").cast(pa.string())
        content = flat.field("content").cast(pa.string()) if "content" in names else pa.nulls(len(flat), pa.string())
        content = pc.fill_null(content, "")  # a missing content is "" (per-row: content_text(None))
        bad_role, role_errors = _role_errors(key, role, parent, pos, n)
        if not as_numpy(pc.string_is_ascii(pc.fill_null(role, ""))).all():
            raise Fallback("non-ASCII role")  # str.lower and Arrow's lower could disagree
        mapped = pc.utf8_lower(pc.fill_null(role, ""))
        for k, v in ROLE_MAP.items():
            if k != v:
                mapped = pc.if_else(pc.equal(mapped, k), v, mapped)
        text = _join_turns(content, parent, n)
        todo = [r for r in np.unique(parent[~edge_safe(content)]).tolist() if ok[r] and not bad_role[r]]
        if todo:  # Python's exact strip for turns with non-ASCII or space edges (plain-string contents here)
            text = replace_rows(text, todo, [render_text(messages=records[r][key]) for r in todo])
        first_user, first_asst = _first_pair(mapped.to_numpy(zero_copy_only=False), parent, n)
        ins = content.take(pa.array(np.maximum(first_user, 0))) if len(content) else pa.nulls(n, pa.string())
        out = content.take(pa.array(np.maximum(first_asst, 0))) if len(content) else pa.nulls(n, pa.string())
        turns = pa.StructArray.from_arrays([mapped, content], names=["role", "content"])
        full_offsets = np.r_[0, np.cumsum(np.bincount(parent, minlength=n))].astype(np.int32)
        msgs = pa.ListArray.from_arrays(pa.array(full_offsets), turns, type=schema.MESSAGE_TYPE)
        checks = [Check(missing, missing_field_error((key,))), Check(bad_role, role_errors),
                  Check(as_numpy(pc.equal(text, "")), empty_error(key)),
                  Check(first_user < 0, no_user_error()), Check(first_asst < 0, no_assistant_error())]
        return Columns(text=text, canon={schema.INSTRUCTION: ins, schema.OUTPUT: out, schema.MESSAGES: msgs},
                       checks=checks, consumed={key}, strings={})


def _role_errors(key: str, role: pa.Array, parent: np.ndarray, pos: np.ndarray,
                 n: int) -> tuple[np.ndarray, dict[int, RowError]]:
    """(n,) bool rows with a turn without a role, and each one's error (naming its first such turn)."""
    bad = as_numpy(role.is_null())
    rows_bad = np.zeros(n, bool)
    errors: dict[int, RowError] = {}
    if bad.any():
        rows, first = np.unique(parent[bad], return_index=True)
        rows_bad[rows] = True
        for r, j in zip(rows.tolist(), np.flatnonzero(bad)[first].tolist()):
            errors[r] = role_error(key, int(pos[j]), None)
    return rows_bad, errors


def _join_turns(content: pa.Array, parent: np.ndarray, n: int) -> pa.Array:
    """(n,) canonical text: each row's non-empty turns joined by a blank line."""
    keep_turn = ~as_numpy(pc.equal(content, ""))
    counts = np.bincount(parent[keep_turn], minlength=n)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), content.filter(pa.array(keep_turn))), "\n\n")


def _first_pair(roles: np.ndarray, parent: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n,) int turn indices of each row's first user turn and first assistant turn after it (-1: none)."""
    is_user, is_asst = roles == "user", roles == "assistant"
    first_user = np.full(n, -1, np.int64)
    u_rows, u_first = np.unique(parent[is_user], return_index=True)
    first_user[u_rows] = np.flatnonzero(is_user)[u_first]
    a_idx = np.flatnonzero(is_asst)
    a_idx = a_idx[(first_user[parent[a_idx]] >= 0) & (a_idx > first_user[parent[a_idx]])]
    first_asst = np.full(n, -1, np.int64)
    a_rows, a_first = np.unique(parent[a_idx], return_index=True)
    first_asst[a_rows] = a_idx[a_first]
    return first_user, first_asst

