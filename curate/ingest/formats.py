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

This module holds what the formats share (names, reasons, detection, rendering); each format's
adapters, per row and over whole Arrow columns, are one class in :mod:`curate.ingest.records`.
Row-level errors raise :class:`RowError` with a stable snake_case reason from :data:`REASONS`.
"""
from __future__ import annotations

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text")
DETECT_N = 50  # records looked at to detect a file's format

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
    # web pages (HTML files, WARC responses): see curate.ingest.web
    "truncated_record": "a WARC record ends before its Content-Length (a cut file) or its payload cannot be decoded",
    "not_html": "a page that should be HTML is binary content (an image, a PDF, NUL bytes)",
    "invalid_encoding": "a page's bytes fit neither its declared charset nor UTF-8 (nor a guess when none is declared)",
    "extraction_failed": "the text extractor cannot build an HTML tree from the page, or raised on it",
    "extraction_timeout": "extracting the page's text took longer than the per-page timeout",
    "no_main_text": "the text extractor found no main text (boilerplate only, or too little text)",
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

# Canonical values of one row: instruction, input, output, messages, text.
Canon = tuple[str | None, str | None, str | None, list[dict] | None, str]


class RowError(Exception):
    """A row that cannot be used.

    Args:
        reason (str): one of :data:`REASONS` (a ``ValueError`` otherwise: a bug in curate, not
            in the input).
        message (str): what is wrong with this row, for the quarantine record's ``error``.
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:  # a bug in curate, not in the input; not an assert (python -O)
            raise ValueError(f"RowError reason must be one of {sorted(REASONS)}, got {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message


def missing_field_error(keys: tuple[str, ...]) -> RowError:
    """The ``missing_field`` error of a row lacking every one of ``keys`` (a field's aliases)."""
    return RowError("missing_field", f"missing field {' or '.join(repr(k) for k in keys)}")


def check_utf8(text: str) -> None:
    """Raise ``invalid_utf8`` if ``text`` cannot be stored by Arrow.

    A JSON ``"\\ud800"`` escape decodes to a lone surrogate that UTF-8 cannot encode.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RowError("invalid_utf8", f"text holds an unpaired surrogate at position {e.start}") from None


def check_fields(fields: dict[str, str] | None) -> dict[str, str]:
    """Validate a ``fields`` override and return a copy.

    Args:
        fields (dict[str, str] | None): canonical name (one of :data:`FIELD_KEYS`) -> source
            field name; None means no override.

    Raises:
        ValueError: an unknown canonical name or an empty/non-string source name.
    """
    fields = dict(fields or {})
    for k, v in fields.items():
        if k not in FIELD_KEYS:
            raise ValueError(f"fields: unknown key {k!r} (allowed: {', '.join(FIELD_KEYS)})")
        if not isinstance(v, str) or not v:
            raise ValueError(f"fields[{k!r}] must be a non-empty field name, got {v!r}")
    return fields


def field_keys(kind: str, fields: dict[str, str]) -> tuple[str, ...]:
    """Source field names tried, in order, for the canonical field ``kind``.

    Args:
        kind (str): a canonical name from :data:`FIELD_KEYS`.
        fields (dict[str, str]): validated overrides; an override replaces the aliases.
    """
    if kind in fields:
        return (fields[kind],)
    return {"instruction": INSTRUCTION_KEYS, "output": OUTPUT_KEYS, "input": INPUT_KEYS}.get(kind, (kind,))


def detect_format(records: list[dict], fields: dict[str, str] | None = None) -> str | None:
    """Return the format of the first record whose keys match a rule, else None.

    Args:
        records (list[dict]): the first parsed records of a file; non-dicts are skipped.
        fields (dict[str, str] | None): name overrides (see module docstring); default None.
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
