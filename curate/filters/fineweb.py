"""FineWeb's own page rules (Penedo et al. 2024; datatrove ``FineWebQualityFilter``).

Four rules on the page's non-empty lines (``text.split("\\n")``, lines of only spaces removed),
in this order:

* ``line_punct_ratio``: share of lines ending in a sentence-terminal character (Unicode
  ``Sentence_Terminal``: ``. ! ? 。 ！ ？ ।`` ...; datatrove 0.10.1's ``TERMINAL_PUNCTUATION`` is
  the same list but for 19 rare marks); dropped when below ``line_punct_thr`` (0.12);
* ``short_line_ratio``: share of lines of at most ``short_line_length`` (30) characters;
  dropped when above ``short_line_thr`` (0.67);
* ``char_dup_ratio``: characters in lines that repeat an earlier line / the page's characters
  without newlines; dropped when above ``char_duplicates_ratio``;
* ``list_ratio``: newlines / words (:func:`curate.filters.web_text.web_words`); dropped when
  above ``new_line_ratio`` (0.3).

A page without a non-empty line is dropped as ``empty``.

``char_duplicates_ratio`` defaults to 0.01, the value in datatrove's code as released with
FineWeb and still in 0.10.1 -- the value that produced FineWeb. The FineWeb paper's text says
0.1; pass ``char_duplicates_ratio=0.1`` for the paper's rule (it keeps pages with a few repeated
lines, e.g. a repeated "Read more").

``semantics`` picks between two versions of datatrove's code:

* ``"datatrove-0.10.1"`` (default; what the parity benchmark compares with): empty lines are
  removed before every ratio, and the comparisons are strict (a ratio equal to its threshold
  passes), as changed in datatrove's FineWeb-2 commit (Dec 2024, "change fw quality to strict
  inequality", "bugfix for empty lines");
* ``"fineweb-2024"``: the code FineWeb was built with (Apr 2024): the line-punctuation and
  short-line ratios count empty lines too, a page is dropped when a ratio *equals* its threshold
  (``<=``/``>=``), and the terminal characters are ``. ' " ! ?`` only. (FineWeb also counted words
  with NLTK's tokenizer, which this option does not reproduce.)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.filters.gopher import duplicates
from curate.filters.web_rules import (
    Rule,
    check_bool,
    check_count,
    check_fraction,
    column_texts,
    map_rule_values,
    rule_selection,
)
from curate.filters.web_text import STERM, web_words

SEMANTICS = ("datatrove-0.10.1", "fineweb-2024")
LEGACY_STOP_CHARS = (".", "'", '"', "!", "?")


@register
class FineWebQuality(Selector):
    """Drop list-like, unpunctuated or line-repeating pages (FineWeb's rules; its step 7).

    Args:
        line_punct_thr: minimum share of lines ending in terminal punctuation (default 0.12).
        line_punct_exclude_zero: let pages with no such line at all pass that rule (default False).
        stop_chars: the terminal characters/strings a line may end with (default None: Unicode
            Sentence_Terminal, or ``. ' " ! ?`` with ``semantics="fineweb-2024"``).
        short_line_thr: maximum share of short lines (default 0.67).
        short_line_length: a line of at most this many characters is short (default 30).
        char_duplicates_ratio: maximum share of characters in repeated lines (default 0.01, the
            code's value; 0.1 is the paper's).
        new_line_ratio: maximum newlines per word (default 0.3).
        semantics: ``"datatrove-0.10.1"`` (default) or ``"fineweb-2024"`` (see the module docstring).
        column: text column (default ``"text"``).
    """

    name = "fineweb_quality"
    version = "1"
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("line_punct_ratio", "line_punct_ratio"), Rule("short_line_ratio", "short_line_ratio"),
        Rule("char_dup_ratio", "char_dup_ratio"), Rule("list_ratio", "list_ratio"))
    reasons: ClassVar[dict[str, str]] = {
        "empty": "no non-empty line",
        "line_punct_ratio": "too few lines end in terminal punctuation",
        "short_line_ratio": "too many short lines",
        "char_dup_ratio": "too many characters in repeated lines",
        "list_ratio": "too many newlines per word (a list)",
    }

    def __init__(self, *, line_punct_thr: float = 0.12, line_punct_exclude_zero: bool = False,
                 stop_chars: Sequence[str] | None = None, short_line_thr: float = 0.67, short_line_length: int = 30,
                 char_duplicates_ratio: float = 0.01, new_line_ratio: float = 0.3,
                 semantics: str = "datatrove-0.10.1", column: str = "text"):
        check_fraction("line_punct_thr", line_punct_thr, allow_none=False)
        check_bool("line_punct_exclude_zero", line_punct_exclude_zero)
        check_fraction("short_line_thr", short_line_thr, allow_none=False)
        check_count("short_line_length", short_line_length, allow_none=False)
        check_fraction("char_duplicates_ratio", char_duplicates_ratio, allow_none=False)
        check_fraction("new_line_ratio", new_line_ratio, allow_none=False, upper=None)
        if stop_chars is not None and (isinstance(stop_chars, str) or not stop_chars
                                       or not all(isinstance(c, str) and c for c in stop_chars)):
            raise ValueError(f"stop_chars must be a non-empty list of non-empty strings or null, got {stop_chars!r}")
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {list(SEMANTICS)}, got {semantics!r}")
        self.line_punct_thr, self.line_punct_exclude_zero = line_punct_thr, line_punct_exclude_zero
        self.stop_chars, self.short_line_thr, self.short_line_length = stop_chars, short_line_thr, short_line_length
        self.char_duplicates_ratio, self.new_line_ratio = char_duplicates_ratio, new_line_ratio
        self.semantics, self.column = semantics, column

    def required_columns(self) -> list[str]:
        return [self.column]

    def _ends_punct(self, line: str) -> bool:
        if self.stop_chars is not None:
            return line.endswith(tuple(self.stop_chars))
        if self.semantics == "fineweb-2024":
            return line.endswith(LEGACY_STOP_CHARS)
        return bool(line) and STERM.match(line[-1]) is not None

    def values(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Every rule's value for each text: {rule name: (n,) float64}; NaN where the page is empty."""
        out = {r.name: np.full(len(texts), np.nan) for r in self.RULES}
        legacy = self.semantics == "fineweb-2024"
        for i, text in enumerate(texts):
            all_lines = text.split("\n")
            lines = [ln for ln in all_lines if ln.strip() != ""]
            if not lines:
                continue
            ratio_lines = all_lines if legacy else lines
            out["line_punct_ratio"][i] = sum(self._ends_punct(ln) for ln in ratio_lines) / len(ratio_lines)
            out["short_line_ratio"][i] = (sum(len(ln) <= self.short_line_length for ln in ratio_lines)
                                          / len(ratio_lines))
            out["char_dup_ratio"][i] = duplicates(lines)[1] / len(text.replace("\n", ""))
            n_words = len(web_words(text))
            newlines = text.count("\n")
            out["list_ratio"][i] = newlines / n_words if n_words else (np.inf if newlines else 0.0)
        return out

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = column_texts(table, self.column)
        v = map_rule_values(ctx, texts, self.values, desc=self.name)
        passed, _ = self.decide(v)
        empty = np.array([None if np.isfinite(p) else "empty" for p in v["line_punct_ratio"]], dtype=object)
        return rule_selection(self.name, self.RULES, v, passed, pre_reason=empty)

    def decide(self, v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each rule's pass flags from its values under this stage's thresholds (used by
        ``select`` and by ``curate report --whatif``); returns ({rule: (n,) bool}, {})."""
        punct, short, dup, lst = v["line_punct_ratio"], v["short_line_ratio"], v["char_dup_ratio"], v["list_ratio"]
        if self.semantics == "fineweb-2024":  # dropped when a ratio equals its threshold
            punct_bad, short_bad, dup_bad = punct <= self.line_punct_thr, short >= self.short_line_thr, \
                dup >= self.char_duplicates_ratio
        else:
            punct_bad, short_bad, dup_bad = punct < self.line_punct_thr, short > self.short_line_thr, \
                dup > self.char_duplicates_ratio
        if self.line_punct_exclude_zero:
            punct_bad &= punct != 0
        passed = {"line_punct_ratio": ~punct_bad, "short_line_ratio": ~short_bad, "char_dup_ratio": ~dup_bad,
                  "list_ratio": ~(lst > self.new_line_ratio)}
        return passed, {}
