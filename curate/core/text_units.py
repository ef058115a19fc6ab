"""Text units: what a "word" is in a text that may not separate its words with spaces.

Chinese and Japanese (Han, Hiragana, Katakana) and the Southeast Asian and Tibetan scripts
(Thai, Lao, Khmer, Myanmar, Tibetan) are written without spaces between words. Splitting such
text on whitespace makes a whole paragraph one "word": a length filter then drops a normal
answer as too short, and word n-gram shingles make any one-character edit an unrelated
document (datatrove had the same bug, its issue #147). Every stage that counts or shingles
words uses the units defined here instead:

* a character of an *unspaced* script is one unit;
* any other run of non-space characters is one unit (a word, as ``str.split()`` gives it);
* CJK punctuation and full-width spaces (U+3000-U+303F, U+FF01-U+FF0F ...) separate units like
  whitespace does, and in a row with unspaced characters a run of punctuation alone is not a
  unit, so "你好。世界" and "你好, 世界" are 4 units.

Mixed text is handled per run: "这是test句子" is 这 / 是 / test / 句 / 子. The choice is made per
row from the text itself (cheap: one regular-expression search), so a pool mixing languages
needs no ``language:`` setting; rows without unspaced characters are counted exactly as before
(whitespace words). Korean is written with spaces between words, so Hangul counts by words.
Characters are code points, not grapheme clusters: a Thai vowel sign counts as its own unit
(a word segmenter such as jieba or fugashi would give words; see docs/ingest.md "Languages").

The character ranges are spelled once (:data:`UNSPACED_RANGES`) and compiled both for Python's
``re`` and for RE2 inside pyarrow (both accept literal characters in a class).
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: (first, last) code points of scripts written without spaces between words.
UNSPACED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E00, 0x0E7F),    # Thai
    (0x0E80, 0x0EFF),    # Lao
    (0x0F00, 0x0FFF),    # Tibetan
    (0x1000, 0x109F),    # Myanmar
    (0x1780, 0x17FF),    # Khmer
    (0x19E0, 0x19FF),    # Khmer symbols
    (0x2E80, 0x2FDF),    # CJK radicals, Kangxi radicals
    (0x3005, 0x3007),    # 々 〆 〇 (ideographic iteration and number marks)
    (0x3021, 0x3029),    # Hangzhou numerals
    (0x3031, 0x3035),    # kana repeat marks
    (0x3038, 0x303C),
    (0x3040, 0x309F),    # Hiragana
    (0x30A0, 0x30FF),    # Katakana
    (0x31F0, 0x31FF),    # Katakana phonetic extensions
    (0x3400, 0x4DBF),    # CJK extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xA9E0, 0xA9FF),    # Myanmar extended-B
    (0xAA60, 0xAA7F),    # Myanmar extended-A
    (0xF900, 0xFAFF),    # CJK compatibility ideographs
    (0xFF66, 0xFF9F),    # half-width Katakana
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
    (0x30000, 0x3134F),  # CJK extension G
)

#: Separators besides whitespace: CJK symbols and punctuation, full-width ASCII punctuation.
SEPARATOR_RANGES: tuple[tuple[int, int], ...] = (
    (0x3000, 0x3004), (0x3008, 0x3020), (0x3030, 0x3030), (0x303D, 0x303F),
    (0xFF01, 0xFF0F), (0xFF1A, 0xFF20), (0xFF3B, 0xFF40), (0xFF5B, 0xFF65),
)


def _char_class(ranges: Iterable[tuple[int, int]]) -> str:
    parts = []
    for a, b in ranges:
        parts.append(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}")
    return "[" + "".join(parts) + "]"


#: a regex character class matching one unspaced-script character (Python re and RE2)
UNSPACED_CLASS = _char_class(UNSPACED_RANGES)
_SEP_CLASS = _char_class(SEPARATOR_RANGES)[1:-1]
_UNSPACED = re.compile(UNSPACED_CLASS)
# one unspaced character, or a run of anything that is neither space, separator nor unspaced
_UNIT = re.compile(f"{UNSPACED_CLASS}|[^\\s{_SEP_CLASS}{UNSPACED_CLASS[1:-1]}]+")


def has_unspaced(text: str | None) -> bool:
    """True when ``text`` holds at least one character of an unspaced script."""
    return bool(text) and _UNSPACED.search(text) is not None


def text_units(text: str | None) -> list[str]:
    """The text's units, in order: unspaced-script characters one by one, other words whole.

    Args:
        text: any string (None counts as "").

    Returns:
        list of units; for text without unspaced characters exactly ``text.split()``.

    Example:
        >>> text_units("这是test句子, ok")
        ['这', '是', 'test', '句', '子', 'ok']
    """
    if not text:
        return []
    if not has_unspaced(text):
        return text.split()
    return [u for u in _UNIT.findall(text) if any(c.isalnum() for c in u)]


def unit_kind(text: str | None) -> str:
    """``"words"``, ``"characters"`` (only unspaced-script units) or ``"mixed"``: what was counted."""
    units = text_units(text)
    n_chars = sum(1 for u in units if len(u) == 1 and _UNSPACED.match(u))
    if n_chars == 0:
        return "words"
    return "characters" if n_chars == len(units) else "mixed"


def unspaced_mask(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) bool: which rows of an Arrow string array hold an unspaced-script character (RE2)."""
    got = pc.match_substring_regex(pc.fill_null(texts, ""), UNSPACED_CLASS)
    return np.asarray(got.to_numpy(zero_copy_only=False), dtype=bool)


def count_units(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n,) int64 number of text units per row.

    Rows without unspaced characters are counted by Arrow's whitespace split, as ``str.split()``
    counts (Arrow also yields "" tokens at leading/trailing whitespace: those are not words);
    only rows with unspaced characters take the Python path.
    """
    col = pc.fill_null(texts, "")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    lists = pc.utf8_split_whitespace(col)
    nonempty = pc.greater(pc.utf8_length(pc.list_flatten(lists)), 0).to_numpy(zero_copy_only=False)
    parent = pc.list_parent_indices(lists).to_numpy()
    n = np.bincount(parent[nonempty], minlength=len(col)).astype(np.int64)
    mask = unspaced_mask(col)
    if mask.any():
        values = col.to_pylist()
        for i in np.flatnonzero(mask):
            n[i] = len(text_units(values[i]))
    return n


def space_unspaced(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Put a space around every unspaced-script character, so a whitespace split yields units.

    Used before word shingling (MinHash): a CJK character then is one token and word n-grams
    are character n-grams on those runs. Rows without such characters come back unchanged.
    """
    return pc.replace_substring_regex(texts, f"({UNSPACED_CLASS})", r" \1 ")
