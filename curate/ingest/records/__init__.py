"""Record formats: one class per format, holding its per-row and (optional) vectorised adapter.

:func:`record_format` picks one by name; see :mod:`curate.ingest.formats` for the formats' rules
and :mod:`curate.ingest.records.base` for what a format provides.
"""
from __future__ import annotations

from curate.ingest.formats import FORMATS, check_fields
from curate.ingest.records.alpaca import Alpaca
from curate.ingest.records.base import RecordFormat
from curate.ingest.records.messages import Messages
from curate.ingest.records.sharegpt import ShareGPT
from curate.ingest.records.text import Text

RECORD_FORMATS: dict[str, type[RecordFormat]] = {f.name: f for f in (Alpaca, ShareGPT, Messages, Text)}


def record_format(fmt: str, fields: dict[str, str] | None = None) -> RecordFormat:
    """The record format ``fmt`` with name overrides ``fields``.

    Args:
        fmt (str): one of ``alpaca``, ``sharegpt``, ``messages``, ``text``.
        fields (dict[str, str] | None): name overrides (:func:`curate.ingest.formats.check_fields`);
            default None.

    Raises:
        ValueError: an unknown ``fmt`` or a bad ``fields``.
    """
    fields = check_fields(fields)
    cls = RECORD_FORMATS.get(fmt)
    if cls is None:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    return cls(fields)
