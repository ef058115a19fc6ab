"""The ``sharegpt`` format: ``conversations`` as ``{"from", "value"}`` turns or alternating strings.

``role``/``content`` are accepted for ``from``/``value``; a list of plain strings alternates
user/assistant, user first (LIMA). A top-level string ``system`` becomes a first system turn.
Only the per-row adapter exists (the vectorised path falls back to it).
"""
from __future__ import annotations

from typing import Any

from curate.ingest.formats import RowError
from curate.ingest.records.conversation import Conversation, content_text, map_role


class ShareGPT(Conversation):
    """ShareGPT / LIMA conversations (see the module docstring)."""

    name = "sharegpt"
    field = "conversations"

    def turns(self, rec: dict) -> tuple[list[dict], set[str]]:
        turns = _turns(rec[self.key], self.key)
        consumed = {self.key}
        if isinstance(rec.get("system"), str):
            consumed.add("system")
            if rec["system"].strip():
                turns.insert(0, {"role": "system", "content": rec["system"]})
        return turns, consumed


def _turns(conv: Any, key: str) -> list[dict]:
    if not isinstance(conv, list):
        raise RowError("wrong_type", f"field {key!r} must be a list, got {type(conv).__name__}")
    if all(isinstance(t, str) for t in conv):
        # LIMA style: plain strings alternating user / assistant, user first.
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(conv)]
    turns = []
    for i, t in enumerate(conv):
        if not isinstance(t, dict):
            raise RowError("wrong_type", f"{key}[{i}] must be a dict or every turn a string, got {type(t).__name__}")
        role = t.get("from", t.get("role"))
        if not isinstance(role, str):
            raise RowError("missing_field" if role is None else "wrong_type", f"{key}[{i}] has no string 'from'/'role'")
        turns.append({"role": map_role(role), "content": content_text(t.get("value", t.get("content")), f"{key}[{i}]")})
    return turns
