"""Gopher's rule filters (Rae et al. 2021, Table A1), as FineWeb runs them through datatrove 0.10.1.

``gopher_repetition`` drops pages that repeat themselves (duplicate paragraphs and lines, a
dominant n-gram, many repeated long n-grams); ``gopher_quality`` drops pages whose word
statistics are not those of prose (too few/many words, odd mean word length, many ``#`` or
ellipses, mostly bullet lines, few alphabetic words, no English stop words). Defaults are
FineWeb's (datatrove's defaults). Both record every rule for every page (see
:mod:`curate.filters.web_rules`): ``gopher_repetition__top_2_gram``, ``..._pass``, ...

Splitting, as datatrove: paragraphs are the pieces of ``text.strip()`` between runs of 2+
newlines; lines (repetition) the pieces of ``text`` between runs of newlines; lines (quality)
``str.splitlines()``; words :func:`curate.filters.web_text.web_words` (datatrove: spaCy's
English tokenizer; both split punctuation into tokens; the parity benchmark measures where they
differ). Every fraction is strictly compared (a value equal to its threshold passes), as datatrove.

Differences from datatrove 0.10.1, all deliberate: CJK/Thai characters are words one by one
(spaCy's English tokenizer keeps a run of them as one token); punctuation is every Unicode P*
character (:func:`curate.filters.web_text.is_symbol_word`; datatrove's list lacks ``•`` and
other non-ASCII marks); stop words apply to English rows only; None disables a rule (datatrove
also treats 0 as "off"; here 0 is a threshold). FineWeb itself (April 2024) ran an older
datatrove: NLTK words, lines by ``str.splitlines()`` in the repetition rules, and stop words
counted by occurrence (``the the`` = 2) instead of distinct words; 0.10.1 is followed here.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.filters.web_rules import (
    Rule,
    check_count,
    check_fraction,
    column_texts,
    map_rule_values,
    optional_column,
    reason_codes,
    rule_selection,
)
from curate.filters.web_text import is_symbol_word, web_words

_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")
#: FineWeb's (Gopher's) thresholds: (n, max fraction of characters)
TOP_N_GRAMS = ((2, 0.2), (3, 0.18), (4, 0.16))
DUP_N_GRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
N_RANGE = range(2, 11)  # n-gram sizes a recipe may use (each has a declared reason code)
#: Gopher's English stop words (a page needs 2 of them)
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


def duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(number of items equal to an earlier item, their total characters)."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def top_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters of the most frequent word n-gram (joined by spaces) times its count.

    Ties go to the n-gram seen first, as datatrove (``Counter.most_common(1)``): on a page
    without any repeated n-gram this is the first n-gram's length. 0 when there is no n-gram.
    """
    grams = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0
    gram, count = max(grams.items(), key=lambda kv: kv[1])
    return len(gram) * count


def duplicated_ngram_chars(words: Sequence[str], n: int) -> int:
    """Characters in word n-grams that repeat an earlier n-gram, without double counting.

    Scans left to right: an n-gram seen before adds its characters (words joined without
    spaces, as datatrove) and the scan jumps past it; a new one is remembered and the scan moves
    one word on.
    """
    flat = "".join(words)
    ends = [0]  # ends[k]: where word k ends in `flat`; an n-gram is one slice, not a join
    for w in words:
        ends.append(ends[-1] + len(w))
    seen: set[str] = set()
    chars = i = 0
    while i < len(words) - n + 1:
        gram = flat[ends[i]:ends[i + n]]
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def _ngram_pairs(pname: str, pairs: Any) -> None:
    if pairs is None:
        return
    try:
        items = [tuple(p) for p in pairs]
    except TypeError:
        raise ValueError(f"{pname} must be a list of [n, max_fraction] pairs, got {pairs!r}") from None
    for p in items:
        if len(p) != 2 or isinstance(p[0], bool) or not isinstance(p[0], int) or p[0] not in N_RANGE:
            raise ValueError(f"{pname}: each pair is [n, max_fraction] with n an int in 2..10, got {p!r} in {pairs!r}")
        check_fraction(f"{pname} (n={p[0]})", p[1], allow_none=False)
    if len({p[0] for p in items}) != len(items):
        raise ValueError(f"{pname} repeats an n: {pairs!r}")


@register
class GopherRepetition(Selector):
    """Drop pages that repeat paragraphs, lines or n-grams (Gopher Table A1; FineWeb step 4).

    Rules, in order (each drops when its value is above its threshold; None disables a rule,
    whose value is still recorded): ``dup_para_frac`` (share of paragraphs that repeat an
    earlier one), ``dup_para_char_frac`` (their characters / the page's), ``dup_line_frac``,
    ``dup_line_char_frac`` (the same for lines), ``top_<n>_gram`` (characters of the most
    frequent word n-gram times its count / the page's), ``dup_<n>_gram`` (characters in
    repeated word n-grams / the page's). An empty page is dropped as ``empty`` (values NaN).

    Args:
        dup_para_frac: default 0.3.
        dup_para_char_frac: default 0.2.
        dup_line_frac: default 0.3.
        dup_line_char_frac: default 0.2.
        top_n_grams: [[n, max fraction], ...] with n in 2..10; default [[2, 0.2], [3, 0.18], [4, 0.16]].
        dup_n_grams: the same for repeated n-grams; default [[5, 0.15], [6, 0.14], ..., [10, 0.10]].
        column: text column (default ``"text"``).
    """

    name = "gopher_repetition"
    version = "1"
    reasons: ClassVar[dict[str, str]] = {
        "empty": "the text is empty",
        "dup_para_frac": "too many paragraphs repeat an earlier paragraph",
        "dup_para_char_frac": "too many characters are in repeated paragraphs",
        "dup_line_frac": "too many lines repeat an earlier line",
        "dup_line_char_frac": "too many characters are in repeated lines",
        **{f"top_{n}_gram": f"the most frequent word {n}-gram covers too many characters" for n in N_RANGE},
        **{f"dup_{n}_gram": f"too many characters are in repeated word {n}-grams" for n in N_RANGE},
    }

    def __init__(self, *, dup_para_frac: float | None = 0.3, dup_para_char_frac: float | None = 0.2,
                 dup_line_frac: float | None = 0.3, dup_line_char_frac: float | None = 0.2,
                 top_n_grams: Sequence[Sequence[float]] | None = TOP_N_GRAMS,
                 dup_n_grams: Sequence[Sequence[float]] | None = DUP_N_GRAMS, column: str = "text"):
        for pname, v in (("dup_para_frac", dup_para_frac), ("dup_para_char_frac", dup_para_char_frac),
                         ("dup_line_frac", dup_line_frac), ("dup_line_char_frac", dup_line_char_frac)):
            check_fraction(pname, v)
        _ngram_pairs("top_n_grams", top_n_grams)
        _ngram_pairs("dup_n_grams", dup_n_grams)
        self.dup_para_frac, self.dup_para_char_frac = dup_para_frac, dup_para_char_frac
        self.dup_line_frac, self.dup_line_char_frac = dup_line_frac, dup_line_char_frac
        self.top_n_grams, self.dup_n_grams = top_n_grams, dup_n_grams
        self.column = column

    def required_columns(self) -> list[str]:
        return [self.column]

    def thresholds(self) -> dict[str, float | None]:
        """{rule name: threshold or None}, in the stage's order."""
        out: dict[str, float | None] = {"dup_para_frac": self.dup_para_frac,
                                        "dup_para_char_frac": self.dup_para_char_frac,
                                        "dup_line_frac": self.dup_line_frac,
                                        "dup_line_char_frac": self.dup_line_char_frac}
        out.update({f"top_{int(n)}_gram": float(t) for n, t in (self.top_n_grams or ())})
        out.update({f"dup_{int(n)}_gram": float(t) for n, t in (self.dup_n_grams or ())})
        return out

    def values(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Every rule's value for each text: {rule name: (n,) float64}; NaN for empty texts."""
        names = list(self.thresholds())
        out = {k: np.full(len(texts), np.nan) for k in names}
        top = [int(n) for n, _ in (self.top_n_grams or ())]
        dup = [int(n) for n, _ in (self.dup_n_grams or ())]
        for i, text in enumerate(texts):
            if not text:
                continue
            size = len(text)
            paragraphs = _PARAGRAPHS.split(text.strip())
            n_dup, dup_chars = duplicates(paragraphs)
            out["dup_para_frac"][i] = n_dup / len(paragraphs)
            out["dup_para_char_frac"][i] = dup_chars / size
            lines = _LINES.split(text)
            n_dup, dup_chars = duplicates(lines)
            out["dup_line_frac"][i] = n_dup / len(lines)
            out["dup_line_char_frac"][i] = dup_chars / size
            words = web_words(text)
            for n in top:
                out[f"top_{n}_gram"][i] = top_ngram_chars(words, n) / size
            for n in dup:
                out[f"dup_{n}_gram"][i] = duplicated_ngram_chars(words, n) / size
        return out

    def decide(self, vals: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each rule's pass flags from its values under this stage's thresholds (no text needed:
        ``curate report --whatif`` re-decides from the values in provenance).

        Returns:
            ({rule: (n,) bool passes}, {} (one-sided rules only)).
        """
        n = len(next(iter(vals.values()))) if vals else 0
        return {k: ~(vals[k] > t) if t is not None else np.ones(n, dtype=bool)
                for k, t in self.thresholds().items()}, {}

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = column_texts(table, self.column)
        vals = map_rule_values(ctx, texts, self.values, desc=self.name)
        rules = [Rule(k, k) for k in self.thresholds()]
        passed, _ = self.decide(vals)
        empty = np.array(["empty" if not t else None for t in texts], dtype=object)
        return rule_selection(self.name, rules, vals, passed, pre_reason=empty)


@register
class GopherQuality(Selector):
    """Drop pages whose word statistics are not those of prose (Gopher Table A1; FineWeb step 5).

    Rules, in order (a value equal to its bound passes; None disables a bound, the value is
    still recorded):

    * ``n_words``: words that are not only punctuation; reasons ``short_doc`` / ``long_doc``;
    * ``avg_word_length``: their mean length in characters; ``short_words`` / ``long_words``;
    * ``hash_ratio``: ``#`` characters / all tokens (punctuation included); ``hash_ratio``;
    * ``ellipsis_ratio``: (``...`` + ``…``) occurrences / all tokens; ``ellipsis_ratio``;
    * ``bullet_lines_ratio``: lines starting (after spaces) with ``•`` or ``-``; ``bullet_lines``;
    * ``end_ellipsis_lines_ratio``: lines ending with ``...`` or ``…``; ``end_ellipsis_lines``;
    * ``alpha_words_ratio``: tokens holding a letter / all tokens; ``alpha_words``;
    * ``stop_words``: how many *different* stop words occur (case-sensitive, as datatrove
      0.10.1); ``stop_words``. English-only: on a row whose ``language_column`` value is set and
      is not ``stop_words_language`` the value is NaN and the rule passes.

    CJK/Thai text is counted in :mod:`curate.core.text_units` units (one per character), so
    its word count is its character count, not one "word" per line.

    Args:
        min_doc_words: default 50.
        max_doc_words: default 100000.
        min_avg_word_length: default 3.
        max_avg_word_length: default 10.
        max_symbol_word_ratio: bound of both ``hash_ratio`` and ``ellipsis_ratio``; default 0.1.
        max_bullet_lines_ratio: default 0.9.
        max_ellipsis_lines_ratio: default 0.3.
        min_alpha_words_ratio: default 0.8 (datatrove calls it ``max_non_alpha_words_ratio``
            although a page needs at least this share of alphabetic words).
        min_stop_words: default 2.
        stop_words: the stop words (default None: Gopher's eight, :data:`STOP_WORDS`).
        stop_words_language: the language the stop words belong to (default ``"en"``); None
            applies the rule to every row.
        language_column: column with each row's language code, read when present (default
            ``"language"``, written by ``language_id``); rows without it are taken to be in
            ``stop_words_language``.
        column: text column (default ``"text"``).
    """

    name = "gopher_quality"
    version = "1"
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("n_words", "short_doc", "long_doc"),
        Rule("avg_word_length", "short_words", "long_words"),
        Rule("hash_ratio", "hash_ratio"),
        Rule("ellipsis_ratio", "ellipsis_ratio"),
        Rule("bullet_lines_ratio", "bullet_lines"),
        Rule("end_ellipsis_lines_ratio", "end_ellipsis_lines"),
        Rule("alpha_words_ratio", "alpha_words"),
        Rule("stop_words", "stop_words"),
    )
    reasons: ClassVar[dict[str, str]] = dict(zip(reason_codes(RULES), (
        "fewer words than min_doc_words", "more words than max_doc_words",
        "mean word length under min_avg_word_length", "mean word length over max_avg_word_length",
        "too many '#' per word", "too many ellipses per word", "too many lines start with a bullet",
        "too many lines end with an ellipsis", "too few words hold a letter", "too few distinct stop words")))

    def __init__(self, *, min_doc_words: int | None = 50, max_doc_words: int | None = 100000,
                 min_avg_word_length: float | None = 3, max_avg_word_length: float | None = 10,
                 max_symbol_word_ratio: float | None = 0.1, max_bullet_lines_ratio: float | None = 0.9,
                 max_ellipsis_lines_ratio: float | None = 0.3, min_alpha_words_ratio: float | None = 0.8,
                 min_stop_words: int | None = 2, stop_words: Sequence[str] | None = None,
                 stop_words_language: str | None = "en", language_column: str | None = "language",
                 column: str = "text"):
        check_count("min_doc_words", min_doc_words)
        check_count("max_doc_words", max_doc_words)
        check_count("min_stop_words", min_stop_words)
        for pname, v in (("min_avg_word_length", min_avg_word_length), ("max_avg_word_length", max_avg_word_length)):
            check_fraction(pname, v, upper=None)
        for pname, v in (("max_symbol_word_ratio", max_symbol_word_ratio),
                         ("max_bullet_lines_ratio", max_bullet_lines_ratio),
                         ("max_ellipsis_lines_ratio", max_ellipsis_lines_ratio),
                         ("min_alpha_words_ratio", min_alpha_words_ratio)):
            check_fraction(pname, v)
        if stop_words is not None and (isinstance(stop_words, str) or not all(isinstance(w, str) for w in stop_words)):
            raise ValueError(f"stop_words must be a list of strings or null, got {stop_words!r}")
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio, self.max_ellipsis_lines_ratio = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_alpha_words_ratio, self.min_stop_words = min_alpha_words_ratio, min_stop_words
        self.stop_words, self.stop_words_language = stop_words, stop_words_language
        self.language_column, self.column = language_column, column

    def required_columns(self) -> list[str]:
        return [self.column]

    def values(self, rows: list[tuple[str, bool]]) -> dict[str, np.ndarray]:
        """Every rule's value for (text, stop words apply) rows: {rule name: (n,) float64}."""
        stop = frozenset(STOP_WORDS if self.stop_words is None else self.stop_words)
        out = {r.name: np.full(len(rows), np.nan) for r in self.RULES}
        for i, (text, english) in enumerate(rows):
            words = web_words(text)
            prose = [w for w in words if not is_symbol_word(w)]
            out["n_words"][i] = len(prose)
            if prose:
                out["avg_word_length"][i] = sum(len(w) for w in prose) / len(prose)
            if words:
                out["hash_ratio"][i] = text.count("#") / len(words)
                out["ellipsis_ratio"][i] = (text.count("...") + text.count("…")) / len(words)
                out["alpha_words_ratio"][i] = sum(any(c.isalpha() for c in w) for w in words) / len(words)
            lines = text.splitlines()
            if lines:
                out["bullet_lines_ratio"][i] = sum(ln.lstrip().startswith(("•", "-")) for ln in lines) / len(lines)
                out["end_ellipsis_lines_ratio"][i] = sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines)
            if english:
                out["stop_words"][i] = len(stop.intersection(words))
        return out

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = column_texts(table, self.column)
        langs = optional_column(table, self.language_column)
        want = self.stop_words_language
        english = [want is None or langs is None or langs[i] is None or langs[i] == want for i in range(len(texts))]
        v = map_rule_values(ctx, list(zip(texts, english)), self.values, desc=self.name)
        passed, high = self.decide(v)
        return rule_selection(self.name, self.RULES, v, passed, high=high)

    def decide(self, v: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Each rule's pass flags (and which two-sided rules failed high) from its values under
        this stage's bounds; NaN passes (a rule that does not apply). Used by ``select`` and by
        ``curate report --whatif``.
        """
        n = len(next(iter(v.values()))) if v else 0
        passed: dict[str, np.ndarray] = {}
        high: dict[str, np.ndarray] = {}

        def bounds(rule: str, lo: Any, hi: Any) -> None:
            low = v[rule] < lo if lo is not None else np.zeros(n, dtype=bool)
            up = v[rule] > hi if hi is not None else np.zeros(n, dtype=bool)
            passed[rule], high[rule] = ~(low | up), up & ~low

        bounds("n_words", self.min_doc_words, self.max_doc_words)
        bounds("avg_word_length", self.min_avg_word_length, self.max_avg_word_length)
        bounds("hash_ratio", None, self.max_symbol_word_ratio)
        bounds("ellipsis_ratio", None, self.max_symbol_word_ratio)
        bounds("bullet_lines_ratio", None, self.max_bullet_lines_ratio)
        bounds("end_ellipsis_lines_ratio", None, self.max_ellipsis_lines_ratio)
        bounds("alpha_words_ratio", self.min_alpha_words_ratio, None)
        bounds("stop_words", self.min_stop_words, None)
        return passed, high
