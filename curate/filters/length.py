"""Cheap row filters (datatrove-style small steps with declared drop reasons)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.core.text_units import count_units, unit_kind, unspaced_mask


@register
class LengthFilter(Selector):
    """Drop rows whose text is too short or too long, in characters and/or words.

    Words are text units (:mod:`curate.core.text_units`): whitespace-separated tokens, except
    that each character of a script written without spaces (Chinese, Japanese, Thai, ...)
    counts as one word, so a normal Chinese answer is not "too short" for having no spaces. The
    ``length_unit`` extra (present when some row holds such characters) says per row what was
    counted: ``words``, ``characters`` (only such characters) or ``mixed``. Bounds are inclusive; None disables a bound.

    Args:
        min_chars: minimum characters (default None).
        max_chars: maximum characters (default None).
        min_words: minimum words (default None).
        max_words: maximum words (default None).
        column: text column to measure (default ``"text"``).
    """

    name = "length_filter"
    version = "2"  # 2: words are text units (a CJK character is one word)
    reasons = {"too_short": "fewer chars/words than min_chars/min_words (length_unit: what a word was)",
               "too_long": "more chars/words than max_chars/max_words (length_unit: what a word was)"}

    def __init__(self, *, min_chars: int | None = None, max_chars: int | None = None,
                 min_words: int | None = None, max_words: int | None = None, column: str = "text"):
        for pname, v in (("min_chars", min_chars), ("max_chars", max_chars), ("min_words", min_words), ("max_words", max_words)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError(f"{pname} must be a non-negative int or null, got {v!r}")
        if min_chars is not None and max_chars is not None and min_chars > max_chars:
            raise ValueError(f"min_chars ({min_chars}) > max_chars ({max_chars})")
        if min_words is not None and max_words is not None and min_words > max_words:
            raise ValueError(f"min_words ({min_words}) > max_words ({max_words})")
        self.min_chars, self.max_chars, self.min_words, self.max_words = min_chars, max_chars, min_words, max_words
        self.column = column

    def required_columns(self) -> list[str]:
        return [self.column]

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        col = pc.fill_null(table.column(self.column), "")
        chars = pc.utf8_length(col).to_numpy(zero_copy_only=False)
        words = count_units(col)
        unit = np.full(len(table), "words", dtype=object)
        for i in np.flatnonzero(unspaced_mask(col)):
            unit[i] = unit_kind(col[i].as_py())
        short = np.zeros(len(table), dtype=bool)
        long = np.zeros(len(table), dtype=bool)
        if self.min_chars is not None:
            short |= chars < self.min_chars
        if self.min_words is not None:
            short |= words < self.min_words
        if self.max_chars is not None:
            long |= chars > self.max_chars
        if self.max_words is not None:
            long |= words > self.max_words
        reason = np.full(len(table), None, dtype=object)
        reason[long] = "too_long"
        reason[short] = "too_short"  # e.g. one 5,000-char word: too few words wins over too many chars
        # only where something else than whitespace words was counted: English-only pools keep
        # their provenance columns (and output hash) as before
        extras = {"length_unit": unit} if (unit != "words").any() else {}
        return Selection(keep=~(short | long), reason=reason, score=chars.astype(np.float64), extras=extras)
