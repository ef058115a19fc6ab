"""What the two conversation formats (``sharegpt``, ``messages``) share.

Both turn a list of turns into ``[{"role", "content"}]`` with roles lower-cased and mapped by
:data:`curate.ingest.formats.ROLE_MAP`; ``instruction`` is the first user turn, ``output`` the
first assistant turn after it; ``text`` is every turn's content (see
:func:`curate.ingest.formats.render_text`). A conversation without a user turn, or without an
assistant turn after it, is ``missing_field``.
"""
from __future__ import annotations

from typing import Any

from curate.ingest.formats import (
    ROLE_MAP,
    RowError,
    check_utf8,
    field_keys,
    missing_field_error,
    render_text,
)
from curate.ingest.records.base import RecordFormat


def map_role(role: str) -> str:
    """A turn's role, lower-cased and mapped to user/assistant/system (other roles kept)."""
    low = role.lower()
    return ROLE_MAP.get(low, low)


def empty_error(key: str) -> RowError:
    """The error of a conversation (in field ``key``) without any non-blank turn."""
    return RowError("empty_text", f"conversation in {key!r} has no non-blank turn")


def no_user_error() -> RowError:
    """The error of a conversation without a user turn."""
    return RowError("missing_field", "conversation has no user turn")


def no_assistant_error() -> RowError:
    """The error of a conversation without an assistant turn after its first user turn."""
    return RowError("missing_field", "conversation has no assistant turn after the first user turn")


def content_text(val: Any, where: str) -> str:
    """A turn's content as a string: "" for None, OpenAI text parts joined by newlines.

    Args:
        val (Any): the content value.
        where (str): the turn, e.g. ``messages[2]``, for error messages.

    Raises:
        RowError: a part that is not a text part, or content of another type (``wrong_type``).
    """
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


def first_pair(turns: list[dict]) -> tuple[str, str]:
    """(first user turn, first assistant turn after it) contents.

    Raises:
        RowError: no user turn, or no assistant turn after it (``missing_field``).
    """
    user = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    if user is None:
        raise no_user_error()
    asst = next((t for t in turns[user + 1:] if t["role"] == "assistant"), None)
    if asst is None:
        raise no_assistant_error()
    return turns[user]["content"], asst["content"]


class Conversation(RecordFormat):
    """A conversation format; subclasses say how a row becomes turns (:meth:`turns`).

    Args:
        fields (dict[str, str]): validated name overrides; ``field`` may be renamed.
    """

    field = ""  # the canonical name of the record field holding the turns

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields)
        self.key = field_keys(self.field, fields)[0]

    def turns(self, rec: dict) -> tuple[list[dict], set[str]]:
        """The row's turns (``{"role", "content"}``) and the record keys they consumed.

        Raises:
            RowError: a turn of the wrong shape.
        """
        raise NotImplementedError

    def adapt(self, rec: dict):
        if rec.get(self.key) is None:
            raise missing_field_error((self.key,))
        turns, consumed = self.turns(rec)
        text = render_text(messages=turns)
        if not text:
            raise empty_error(self.key)
        ins, out = first_pair(turns)
        check_utf8(text)
        return (ins, None, out, turns, text), consumed
