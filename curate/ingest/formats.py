"""Format adapters: turn one raw record (a dict) into the canonical columns.

Formats (``format=`` in :func:`curate.ingest.read.read_input`; ``"auto"`` detects per file):

* ``alpaca``: ``instruction`` + ``output`` (required) and ``input`` (optional). Aliases, tried in
  order: instruction <- ``instruction|prompt|question``, output <- ``output|response|answer|
  completion``, input <- ``input|context``. ``messages`` stays null.
* ``sharegpt``: ``conversations`` is a list of ``{"from", "value"}`` dicts (``role``/``content``
  also accepted) or of plain strings that alternate user/assistant (LIMA). ``from`` maps
  human/user -> user, gpt/assistant/model/chatgpt/bot -> assistant, system -> system; any other
  role is kept lower-cased (e.g. ``tool``). A top-level string ``system`` becomes a first system
  turn.
* ``messages``: OpenAI style ``[{"role", "content"}]``; ``content`` may be a list of
  ``{"type": "text", "text": ...}`` parts (joined by newlines).
* ``text``: a plain ``text`` field (pretraining pools); structured fields stay null.

For both conversation formats ``instruction`` = the first user turn and ``output`` = the first
assistant turn after it, so instruction-level scorers work on multi-turn data; ``input`` is null.
A conversation without a user turn or without an assistant turn is quarantined
(``missing_field``). Required fields must be present, non-null strings; a blank required field
(e.g. Alpaca's 26 empty outputs) is NOT quarantined, because it is a quality problem for a
filter stage, not an unreadable row; only a row whose whole rendered text is blank is
(``empty_text``).

Auto-detection looks at a file's records in order and takes the first one whose keys match a
rule, in this priority: ``messages`` -> messages, ``conversations`` -> sharegpt, an instruction
alias and an output alias -> alpaca, ``text`` -> text. ``fields`` overrides names, e.g.
``{"instruction": "question", "output": "answer"}`` or ``{"text": "content"}``.

The canonical ``text`` (:func:`render_text`) is what hashing and embedding see: the non-blank
parts, each stripped, joined by a blank line (``"\\n\\n"``). Alpaca parts are instruction,
input, output; conversation parts are every turn's content in order (system included), without
role labels, so a single-turn conversation and the equivalent alpaca row get the same text.
Plain-text rows keep their text unchanged.

Row-level errors raise :class:`RowError` with a stable snake_case reason from :data:`REASONS`.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import pyarrow as pa

from curate.core import schema

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text")

# Stable quarantine reason codes (tests and provenance rely on them).
REASONS = {
    "malformed_json": "the line (or the rest of a JSON array) is not valid JSON",
    "invalid_utf8": "the raw bytes are not valid UTF-8 (or hold an unpaired surrogate escape)",
    "missing_field": "a required field is absent or null",
    "wrong_type": "a field has the wrong type (e.g. a number where a string is needed)",
    "empty_text": "the rendered text is blank after stripping whitespace",
    "row_too_large": "the raw row is larger than max_row_bytes",
    "duplicate_id": "the row's id was already used by an earlier row (both places named)",
    "malformed_row": "a CSV/TSV row has more fields than the header",
    "unreadable_file": "a whole file is not what its suffix claims (kept as one record)",
    "truncated_file": "a (compressed) file ends early or is corrupt; rows before the damage are kept, the rest is one record",
}

INSTRUCTION_KEYS = ("instruction", "prompt", "question")
OUTPUT_KEYS = ("output", "response", "answer", "completion")
INPUT_KEYS = ("input", "context")
FIELD_KEYS = ("instruction", "input", "output", "text", "messages", "conversations")

ROLE_MAP = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bot": "assistant",
    "system": "system",
}


class RowError(Exception):
    """A row that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:  # a bug in curate, not in the input; not an assert (python -O)
            raise ValueError(f"RowError reason must be one of {sorted(REASONS)}, got {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


def check_fields(fields: dict[str, str] | None) -> dict[str, str]:
    """Validate a ``fields`` override (canonical name -> source field name)."""
    fields = dict(fields or {})
    for k, v in fields.items():
        if k not in FIELD_KEYS:
            raise ValueError(f"fields: unknown key {k!r} (allowed: {', '.join(FIELD_KEYS)})")
        if not isinstance(v, str) or not v:
            raise ValueError(f"fields[{k!r}] must be a non-empty field name, got {v!r}")
    return fields


def field_keys(kind: str, fields: dict[str, str]) -> tuple[str, ...]:
    if kind in fields:
        return (fields[kind],)
    return {"instruction": INSTRUCTION_KEYS, "output": OUTPUT_KEYS, "input": INPUT_KEYS}.get(kind, (kind,))


def detect_format(records: list[dict], fields: dict[str, str] | None = None) -> str | None:
    """Return the format of the first record whose keys match a rule, else None.

    Args:
        records: the first parsed records of a file (dicts).
        fields: name overrides (see module docstring).
    """
    fields = fields or {}
    for rec in records:
        if not isinstance(rec, dict):
            continue
        if field_keys("messages", fields)[0] in rec:
            return "messages"
        if field_keys("conversations", fields)[0] in rec:
            return "sharegpt"
        if any(k in rec for k in field_keys("instruction", fields)) and any(k in rec for k in field_keys("output", fields)):
            return "alpaca"
        if field_keys("text", fields)[0] in rec:
            return "text"
    return None


def render_text(instruction: str | None = None, input: str | None = None, output: str | None = None,
                messages: list[dict] | None = None) -> str:
    """Render the canonical ``text`` used for hashing and embedding.

    If ``messages`` is given (a list of ``{"role", "content"}`` dicts) the parts are the turns'
    contents in order; otherwise instruction, input, output. Each part is stripped, blank parts
    are skipped, and the rest are joined by ``"\\n\\n"``.

    Args:
        instruction: instruction / first user turn, or None.
        input: optional context, or None.
        output: response, or None.
        messages: conversation turns, or None.

    Returns:
        The rendered text ("" if every part is blank).
    """
    if messages:
        parts = [m.get("content") for m in messages]
    else:
        parts = [instruction, input, output]
    return "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def _get(rec: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if k in rec and rec[k] is not None:
            return k, rec[k]
    return None, None


def _require_str(rec: dict, kind: str, fields: dict[str, str], required: bool) -> tuple[str | None, str | None]:
    keys = field_keys(kind, fields)
    key, val = _get(rec, keys)
    if key is None:
        if required:
            raise RowError("missing_field", f"missing field {' or '.join(repr(k) for k in keys)}")
        # An explicit null in an optional field is still "consumed" (not an extra column).
        return next((k for k in keys if k in rec), None), None
    if not isinstance(val, str):
        raise RowError("wrong_type", f"field {key!r} must be a string, got {type(val).__name__}")
    return key, val


def _content(val: Any, where: str) -> str:
    if val is None:
        return ""
    if isinstance(val, str):
        return val
    if isinstance(val, list):  # OpenAI content parts
        texts = []
        for part in val:
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise RowError("wrong_type", f"{where}: content part {str(part)[:60]!r} is not a text part")
        return "\n".join(texts)
    raise RowError("wrong_type", f"{where}: content must be a string, got {type(val).__name__}")


def _turns_from_sharegpt(conv: Any, key: str) -> list[dict]:
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
        content = _content(t.get("value", t.get("content")), f"{key}[{i}]")
        turns.append({"role": ROLE_MAP.get(role.lower(), role.lower()), "content": content})
    return turns


def _turns_from_messages(msgs: Any, key: str) -> list[dict]:
    if not isinstance(msgs, list):
        raise RowError("wrong_type", f"field {key!r} must be a list, got {type(msgs).__name__}")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RowError("wrong_type", f"{key}[{i}] must be a dict with role/content, got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str):
            raise RowError("missing_field" if role is None else "wrong_type", f"{key}[{i}] has no string 'role'")
        turns.append({"role": ROLE_MAP.get(role.lower(), role.lower()), "content": _content(m.get("content"), f"{key}[{i}]")})
    return turns


def _first_pair(turns: list[dict]) -> tuple[str, str]:
    user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    if user is None:
        raise RowError("missing_field", "conversation has no user turn")
    asst = next((t for t in turns[user + 1:] if t["role"] == "assistant"), None)
    if asst is None:
        raise RowError("missing_field", "conversation has no assistant turn after the first user turn")
    return turns[user]["content"], asst["content"]


def _check_utf8(text: str) -> None:
    # A JSON "\ud800" escape decodes to a lone surrogate that Arrow cannot store.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RowError("invalid_utf8", f"text holds an unpaired surrogate at position {e.start}") from None


# Canonical values of one row: instruction, input, output, messages, text.
Canon = tuple[str | None, str | None, str | None, list[dict] | None, str]


def make_adapter(fmt: str, fields: dict[str, str] | None = None) -> Callable[[dict], tuple[Canon, set[str]]]:
    """Return ``adapt(record) -> ((instruction, input, output, messages, text), consumed_keys)``.

    ``adapt`` raises :class:`RowError` for a bad row. ``consumed_keys`` are the record keys that
    became canonical fields (the rest are kept as extra columns).

    Args:
        fmt: one of ``alpaca``, ``sharegpt``, ``messages``, ``text``.
        fields: name overrides (see module docstring).
    """
    fields = check_fields(fields)
    if fmt == "alpaca":
        def adapt(rec):
            ki, ins = _require_str(rec, "instruction", fields, True)
            ko, out = _require_str(rec, "output", fields, True)
            kx, inp = _require_str(rec, "input", fields, False)
            text = render_text(ins, inp, out)
            if not text:
                raise RowError("empty_text", "instruction, input and output are all blank")
            _check_utf8(text)
            return (ins, inp, out, None, text), {ki, ko, kx}
    elif fmt in ("sharegpt", "messages"):
        key = field_keys("conversations" if fmt == "sharegpt" else "messages", fields)[0]
        to_turns = _turns_from_sharegpt if fmt == "sharegpt" else _turns_from_messages

        def adapt(rec):
            if rec.get(key) is None:
                raise RowError("missing_field", f"missing field {key!r}")
            turns = to_turns(rec[key], key)
            consumed = {key}
            if fmt == "sharegpt" and isinstance(rec.get("system"), str):
                consumed.add("system")
                if rec["system"].strip():
                    turns.insert(0, {"role": "system", "content": rec["system"]})
            text = render_text(messages=turns)
            if not text:
                raise RowError("empty_text", f"conversation in {key!r} has no non-blank turn")
            ins, out = _first_pair(turns)
            _check_utf8(text)
            return (ins, None, out, turns, text), consumed
    elif fmt == "text":
        def adapt(rec):
            kt, text = _require_str(rec, "text", fields, False)
            if text is None:
                raise RowError("missing_field", f"missing field {field_keys('text', fields)[0]!r}")
            if not text.strip():
                raise RowError("empty_text", f"field {kt!r} is blank")
            _check_utf8(text)
            return (None, None, None, None, text), {kt}
    else:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return adapt


class TableBuilder:
    """Collect canonical rows plus extra columns, then build one ``pa.Table`` at the end.

    Columns are Python lists until :meth:`build`, which calls ``pa.array`` once per column.
    Extra (original) columns keep their first-seen order; a key that collides with a canonical
    column name without being consumed (e.g. LIMA's ``source``) is kept as ``orig_<key>``; an
    empty key or one with control characters or unpaired surrogates becomes
    ``orig_<JSON-escaped key>`` (:func:`unique_column_name`); names are
    made unique with ``_2``, ``_3``... A column whose values mix types across rows (or hold
    empty objects, which Parquet cannot store) is stored as strings: strings unchanged, other
    values JSON-encoded.
    """

    def __init__(self) -> None:
        self.cols: dict[str, list] = {name: [] for name in schema.CANONICAL_COLUMNS}
        self.extras: list[dict] = []
        self.extra_names: dict[str, None] = {}
        self._names: dict[str, str] = {}  # record key -> column name (unique, printable)

    def _column_name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = unique_column_name(key, set(self._names.values()))
        return name

    def __len__(self) -> int:
        return len(self.cols[schema.ID])

    def add(self, row_id: str, canon: Canon, source: str, extras: dict) -> None:
        ins, inp, out, msgs, text = canon
        c = self.cols
        c[schema.ID].append(row_id)
        c[schema.TEXT].append(text)
        c[schema.INSTRUCTION].append(ins)
        c[schema.INPUT].append(inp)
        c[schema.OUTPUT].append(out)
        c[schema.MESSAGES].append(msgs)
        c[schema.SOURCE].append(source)
        if extras:
            extras = {self._column_name(k): v for k, v in extras.items()}
            for k in extras:
                if k not in self.extra_names:
                    self.extra_names[k] = None
        self.extras.append(extras)

    def build(self) -> pa.Table:
        arrays = [pa.array(self.cols[f.name], type=f.type) for f in schema.CANONICAL_SCHEMA]
        names = list(schema.CANONICAL_COLUMNS)
        for k in self.extra_names:
            arrays.append(_extra_array([e.get(k) if e else None for e in self.extras]))
            names.append(k)
        return pa.Table.from_arrays(arrays, names=names)


def _unwritable_name(name: str) -> bool:
    """True for a name Arrow, Parquet or ``datasets`` cannot round-trip: empty, control
    characters, or unpaired surrogates (not encodable as UTF-8)."""
    return not name or any(ord(ch) < 32 or ch == "\x7f" or 0xD800 <= ord(ch) <= 0xDFFF for ch in name)


def unique_column_name(key: str, taken: set[str]) -> str:
    """A record key as an extra column name, unique among ``taken`` and the canonical columns.

    Canonical names get ``orig_``; a name Arrow/Parquet/datasets cannot round-trip (see
    :func:`_unwritable_name`) becomes ``orig_<JSON-escaped key>``; clashes get ``_2``, ``_3``...
    """
    name = f"orig_{key}" if key in schema.CANONICAL_COLUMNS else key
    if _unwritable_name(name):
        name = "orig_" + json.dumps(name)[1:-1]
    taken = taken | set(schema.CANONICAL_COLUMNS)
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def storable_type(t: pa.DataType) -> bool:
    """False if ``t`` holds, anywhere, a struct without fields (Parquet cannot write those) or
    a field whose name cannot round-trip (:func:`_unwritable_name`)."""
    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(not _unwritable_name(t.field(i).name) and storable_type(t.field(i).type)
                                        for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return storable_type(t.value_type)
    if pa.types.is_map(t):
        return storable_type(t.key_type) and storable_type(t.item_type)
    return True


def _extra_array(values: list) -> pa.Array:
    try:
        arr = pa.array(values)
        if storable_type(arr.type):
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeEncodeError, OverflowError,
            RecursionError):
        pass
    for ascii_only in (False, True):  # True also escapes unpaired surrogates
        try:
            return pa.array(
                [v if v is None or (isinstance(v, str) and not ascii_only)
                 else json.dumps(v, ensure_ascii=ascii_only, default=str) for v in values],
                type=pa.string(),
            )
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII JSON always encodes")
