"""Cheap text-quality heuristics in the style of Gopher's quality filters.

Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from Training Gopher"
(arXiv 2112.11446), Appendix A: document length, mean word length, symbol-to-word ratio,
share of words without an alphabetic character, bullet/ellipsis lines, stop words, and
repetition (duplicate lines, top n-gram character share, duplicated n-gram character share).
Here they are reported as columns (``h_*``), not applied as filters: a ``score_filter`` stage
applies thresholds (Gopher's: 50-100k words, mean word length 3-10, symbol ratio < 0.1,
non-alpha words < 0.2, dup lines < 0.3, top 2/3/4-gram < 0.20/0.18/0.16, dup 5..10-gram
< 0.15..0.10). Words are whitespace tokens, as in Gopher, except in text with characters of
a script written without spaces (Chinese, Japanese, Thai, ...): there each such character is a
word (:func:`curate.core.text_units.text_units`), and the two rules that mean nothing on
characters are NaN, never a wrong number: ``h_mean_word_len`` (a "word" is one character) and
``h_stop_words`` (Gopher's list is English).
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

from curate.core.text_units import has_unspaced, text_units

_STOP = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])  # Gopher's list
_ALPHA = re.compile(r"[^\W\d_]")

HEURISTIC_COLUMNS = (
    "h_chars", "h_words", "h_lines", "h_mean_word_len", "h_non_alpha_frac", "h_symbol_ratio",
    "h_bullet_lines_frac", "h_ellipsis_lines_frac", "h_stop_words", "h_unique_word_frac",
    "h_dup_line_frac", "h_top_2gram_frac", "h_top_3gram_frac", "h_top_4gram_frac",
    "h_dup_5gram_frac", "h_dup_10gram_frac",
)


def _top_ngram_frac(words: list[str], n: int) -> float:
    """Characters in the most frequent word n-gram (all occurrences) / characters in all words."""
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(w) for w in gram) * count / total


def _dup_ngram_frac(words: list[str], n: int) -> float:
    """Characters of words covered by an n-gram occurring more than once / all word characters.

    Overlapping duplicate n-grams count each word once (Gopher counts covered characters).
    """
    total = sum(len(w) for w in words)
    if len(words) < n or total == 0:
        return 0.0
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    covered = np.zeros(len(words), dtype=bool)
    for i in range(len(words) - n + 1):
        if grams[tuple(words[i:i + n])] > 1:
            covered[i:i + n] = True
    return float(sum(len(w) for w, c in zip(words, covered) if c) / total)


def text_heuristics(text: str) -> dict[str, float]:
    """All ``h_*`` values for one string (see :data:`HEURISTIC_COLUMNS`).

    Args:
        text: the string to describe ("" gives zeros).

    Returns:
        {column: float}; fractions are in [0, 1], counts are floats; NaN where a rule does not
        apply to the text's script (see the module docstring).
    """
    unspaced = has_unspaced(text)
    words = text_units(text) if unspaced else text.split()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    nw, nl = len(words), len(lines)
    lw = [w.lower().strip(".,;:!?\"'()[]") for w in words]
    line_counts = Counter(ln.strip() for ln in lines)
    return {
        "h_chars": float(len(text)),
        "h_words": float(nw),
        "h_lines": float(nl),
        "h_mean_word_len": np.nan if unspaced else float(np.mean([len(w) for w in words])) if nw else 0.0,
        "h_non_alpha_frac": sum(1 for w in words if not _ALPHA.search(w)) / nw if nw else 0.0,
        "h_symbol_ratio": (text.count("#") + text.count("...") + text.count("\u2026")) / nw if nw else 0.0,
        "h_bullet_lines_frac": sum(ln.lstrip().startswith(("-", "*", "\u2022")) for ln in lines) / nl if nl else 0.0,
        "h_ellipsis_lines_frac": sum(ln.rstrip().endswith(("...", "\u2026")) for ln in lines) / nl if nl else 0.0,
        "h_stop_words": np.nan if unspaced else float(sum(1 for w in lw if w in _STOP)),
        "h_unique_word_frac": len(set(lw)) / nw if nw else 0.0,
        # Repeats beyond a line's first occurrence, as datatrove's Gopher repetition filter counts.
        "h_dup_line_frac": sum(c - 1 for c in line_counts.values()) / nl if nl else 0.0,
        "h_top_2gram_frac": _top_ngram_frac(lw, 2),
        "h_top_3gram_frac": _top_ngram_frac(lw, 3),
        "h_top_4gram_frac": _top_ngram_frac(lw, 4),
        "h_dup_5gram_frac": _dup_ngram_frac(lw, 5),
        "h_dup_10gram_frac": _dup_ngram_frac(lw, 10),
    }


def heuristics_matrix(texts: list[str], columns: tuple[str, ...] = HEURISTIC_COLUMNS) -> np.ndarray:
    """(n, len(columns)) float64 matrix of heuristics for ``texts``."""
    out = np.zeros((len(texts), len(columns)), dtype=np.float64)
    for i, t in enumerate(texts):
        h = text_heuristics(t)
        out[i] = [h[c] for c in columns]
    return out
