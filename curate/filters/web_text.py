"""Words and sentences as the web rule filters (Gopher, C4, FineWeb) count them.

datatrove 0.10.1 counts English words with spaCy's blank English tokenizer: punctuation is split
off words ("end." is ``end`` and ``.``, "(see" is ``(`` and ``see``), so a page's word count,
its share of alphabetic words and its n-grams all see punctuation as separate tokens. curate
does not depend on spaCy; :func:`web_words` gives the same kind of tokens by rules of its own,
with curate's unspaced scripts (:mod:`curate.core.text_units`) counted by character:

* text is split on whitespace; in a run holding CJK / Thai / other unspaced-script characters
  each such character is a word, as in :mod:`curate.core.text_units` (so a Chinese page has as
  many words as characters, not one "word" per clause as spaCy's English tokenizer gives), each
  punctuation mark is a token, and any other stretch (Latin letters, digits) is one word;
* punctuation, quotes, dashes and pictographs at either end of a run become tokens of their own,
  one character each (``( ) , : ; ! ? " ' « » “ ” — –``, CJK brackets, emoji ...; also ``§ % =``
  and currency signs at the start); ``- / @ | ^ ~ • ‐ ⟨ ⟩`` and other marks stay attached, as in
  spaCy; dot runs and ``…`` are one token; a final ``.`` is split off only after a lowercase
  letter, a digit, punctuation or two capitals (``end.``, ``1990.``, ``USA.``), not after a single
  capital (``J.``) nor in the abbreviations of :data:`ABBREVIATIONS` (``Mr.``, ``e.g.``, ``Calif.``);
  a number keeps no unit (``20%`` -> ``20 %``, ``5km`` -> ``5 km``);
* ``'s`` and the English contractions ``n't 're 've 'll 'd 'm`` become tokens (``don't`` ->
  ``do n't``), as do the apostrophe-less forms spaCy splits (``dont`` -> ``do nt``);
* inside a run, hyphens between letters, ``.`` between a lowercase and an uppercase letter,
  ``,`` between letters, ``: < > = /`` between a letter/digit and a letter, and ``+ - * ^``
  between digits are split off; runs that look like URLs (with a host name) or e-mail addresses
  stay whole; emoticons (``:)``) stay whole.

On the 1,499 DCLM pages and Dolly paragraphs of the parity benchmark, 98% of documents get
exactly spaCy's token list (the rest differ in a few tokens: runs of ``…``, rare abbreviations);
on 350 translated man pages 97%.

:func:`count_sentences` counts sentences as spaCy's sentencizer does on those tokens: a new
sentence starts at the first non-punctuation token after a sentence-terminal token (Unicode
``Sentence_Terminal``, e.g. ``. ! ? 。``). ``benchmarks/web_rules_parity.py`` measures how often
these counts differ from datatrove's and what that changes.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import regex

from curate.core.text_units import UNSPACED_CLASS, has_unspaced

#: punctuation and quotes split off either end of a word (the inventory of spaCy's English
#: tokenizer; other marks such as - / @ | ^ ~ • ‐ ⟨ ⟩ stay attached)
_PUNCT = frozenset("…,:;!?¿؟¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪")
_QUOTES = frozenset("'\"”“`‘´’‚,„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧")
_BOTH_ENDS = _PUNCT | _QUOTES | frozenset("—–")
#: split off the start only
_START_ONLY = frozenset("§%=")
#: Unicode Sentence_Terminal (. ! ? 。 ！ ？ । ...): what ends a sentence or a "punctuated" line
STERM = regex.compile(r"\p{Sentence_Terminal}")
#: words kept whole although they end in "." or hold punctuation (case-sensitive): titles, months,
#: US states, Latin abbreviations, single lowercase letters ("a." in a list)
ABBREVIATIONS = frozenset(
    "Mr. Mrs. Ms. Dr. Prof. St. Mt. Jr. Inc. Ltd. Co. co. Corp. Bros. Messrs. Adm. Gen. Gov. Rep. "
    "Rev. Sen. Ph.D. vs. v.s. e.g. E.g. E.G. i.e. I.e. I.E. a.m. p.m. D.C. "
    "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. "
    "Ak. Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ia. Id. Ill. Ind. Kan. Kans. Ky. La. "
    "Mass. Md. Mich. Minn. Miss. Mo. Mont. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Okla. "
    "Ore. Pa. S.C. Tenn. Va. Wash. Wis. and/or w/o o'clock O'clock ma'am Ma'am".split()
    + [c + "." for c in "abcdefghijklmnopqrstuvwxyzäöü"]
)
#: emoticons kept as one token
EMOTICONS = frozenset(
    ":) :-) :)) (: (-: =) (= :] :-] [: [-: 8) 8-) ;) ;-) (; (-; :( :-( ): )-: =( >:( :') :'( "
    ":/ :-/ =/ =| :| :-| :P :-P :p :-p :O :-O :o :-o :D :-D xD XD <3 </3 ^_^ -_- o.O O.o [= =] :1 :0 :* "
    "=D".split()
)
#: English clitics spaCy splits off pronouns, with or without the apostrophe ("we're", "were" is
#: excluded below): {pronoun: clitics}
_W_WORDS = "who what when where why how there that this"
_PRONOUN_CLITICS = {
    "i": ("m", "ma", "ll", "d", "ve"),
    **{p: ("ll", "d", "ve", "re") for p in ("you", "we", "they")},
    **{p: ("ll", "d", "s") for p in ("he", "she", "it")},
    **{p: ("s", "ll", "d", "re", "ve") for p in _W_WORDS.split()},
    **{p: ("ve",) for p in ("could", "would", "should", "must", "might")},
}
_NO_SPLIT = frozenset("ill its hell shell shed were well whore".split())
_NT_BASES = frozenset(
    "do does did is are was were has have had ca wo could would should must might need sha ai "
    "dare may".split()
)
#: informal words spaCy splits in two
_SPLIT_WORDS = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "Cannot": 3, "Gonna": 3, "Gotta": 3,
                "Wanna": 3, "y'all": 2, "y’all": 2, "Y'all": 2, "Y’all": 2}
_HOURS = re.compile(r"^(1[0-2]|[1-9])(am|pm|a\.m\.|p\.m\.)$")
_HOST = r"(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}(?::[0-9]+)?"
#: URLs (with a real host: "file:///etc" is not one), www. names, e-mail addresses, mailto:
_URLISH = re.compile(rf"^(?:[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s/@]+@)?(?:{_HOST}|[0-9.]+|localhost)(?:[/?#]\S*)?"
                     rf"|www\.\S+|(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?:[A-Za-z0-9-]+\.)+[a-z]{{2,24}}"
                     r"(?:[/?#:]\S*)?)$")
_DOTS = re.compile(r"\.\.+|…+")
_DOTS_END = re.compile(r"(?:\.\.+|…+)$")
#: a word that is itself a token although made of punctuation
_PUNCT_WORDS = frozenset(["''", "'s", "'S", "’s", "’S", "--", "—", "'", "C++"])
#: units split off a number ("20%" -> "20 %", "5km" -> "5 km")
_UNIT_AFTER_DIGIT = re.compile(r"^(.*[0-9])(%|km|cm|mm|kg|mg|lbs|lb|oz|ft|mph|kmh|GB|MB|KB|TB|m|g|G|M|K|T)$")


def _is_affix(ch: str) -> bool:
    """True for a character that splits off either end of a word: punctuation of :data:`_PUNCT`,
    quotes and dashes, and pictographic symbols (emoji, dingbats: Unicode So)."""
    return ch in _BOTH_ENDS or unicodedata.category(ch) == "So"


def _is_punct_token(tok: str) -> bool:
    """spaCy's ``is_punct``: every character is Unicode punctuation (category P*)."""
    return all(unicodedata.category(c)[0] == "P" for c in tok)


def _split_final_dot(word: str) -> bool:
    """Whether the final "." of ``word`` (len >= 2) is a token of its own."""
    prev = word[-2]
    if prev.isdigit() or prev.islower() or prev in "%²-+" or prev in _PUNCT or prev in _QUOTES:
        return True
    if prev.isalpha() and not prev.isupper():  # letters of scripts without case
        return True
    return len(word) >= 3 and word[-3].isupper() and prev.isupper()


def _special(word: str) -> list[str] | None:
    """Tokens of a word spaCy treats as an exception (abbreviation, emoticon, contraction)."""
    if word in ABBREVIATIONS or word in EMOTICONS or word in _PUNCT_WORDS:
        return [word]
    m = _HOURS.match(word)
    if m:
        return [m.group(1), m.group(2)]
    cut = _SPLIT_WORDS.get(word)
    if cut:
        return [word[:cut], word[cut:]]
    low = word.lower()
    cut = _CONTRACTIONS.get(low)
    if cut is None or not (word == low or word == low.capitalize()):
        return None
    return [word[:cut], word[cut:]]


def _contraction_table() -> dict[str, int]:
    """{lowercased contraction: where it splits}: "don't" -> 2, "dont" -> 2, "we're" -> 2, ..."""
    table: dict[str, int] = {}
    for base in _NT_BASES:
        for nt in ("n't", "n’t", "nt"):
            table.setdefault(base + nt, len(base))
    for base, clitics in _PRONOUN_CLITICS.items():
        for cl in clitics:
            for apo in ("'", "’", ""):
                table.setdefault(base + apo + cl, len(base))
    for w in _NO_SPLIT:
        table.pop(w, None)
    return table


_CONTRACTIONS = _contraction_table()


def _prefix_len(word: str) -> int:
    m = _DOTS.match(word)
    if m:
        return m.end()
    for cur in ("US$", "C$", "A$"):
        if word.startswith(cur):
            return len(cur)
    ch = word[0]
    if ch == "+":
        return 0 if len(word) > 1 and word[1].isdigit() else 1
    return 1 if (_is_affix(ch) or ch in _START_ONLY or unicodedata.category(ch) == "Sc") else 0


def _suffix_len(word: str) -> int:
    m = _DOTS_END.search(word)
    if m and m.end() == len(word):
        return len(word) - m.start()
    if word.endswith(("'s", "'S", "’s", "’S")) and len(word) > 2:
        return 2
    if word[-1] == "+" and len(word) > 1 and word[-2].isdigit():
        return 1
    m = _UNIT_AFTER_DIGIT.match(word)
    if m:
        return len(m.group(2))
    ch = word[-1]
    if ch == ".":
        return 1 if len(word) > 1 and _split_final_dot(word) else 0
    return 1 if _is_affix(ch) else 0


_INFIX = regex.compile(
    r"\.\.+|…|\p{So}"                             # ellipses and icons anywhere
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"                 # 1-2, 3*4
    r"|(?<=[\p{Ll}'\"”“`‘´’])\.(?=[\p{Lu}'\"”“`‘´’])"  # end.Next
    r"|(?<=\p{L}),(?=\p{L})"                        # a,b
    r"|(?<=[\p{L}0-9])(?:---|--|—|–|-|~)(?=\p{L})"  # well-known, 10-year
    r"|(?<=[\p{L}0-9])[:<>=/](?=\p{L})"             # key:value, either/or
)


def _split_infixes(core: str) -> list[str]:
    if _URLISH.match(core):
        return [core]
    out: list[str] = []
    last = 0
    for m in _INFIX.finditer(core):
        if m.start() == 0:
            continue
        if m.start() > last:
            out.append(core[last:m.start()])
        out.append(m.group())
        last = m.end()
    if last < len(core):
        out.append(core[last:])
    return out


@lru_cache(maxsize=65536)
def _word_tokens(run: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free run (cached: web text repeats its words)."""
    special = _special(run)
    if special is not None:
        return tuple(special)
    if run.isalpha():
        return (run,)
    pre: list[str] = []
    suf: list[str] = []
    word = run
    while word:  # peel punctuation off both ends, stopping at an exception (as spaCy does)
        n_pre = _prefix_len(word) if len(word) > 1 else 0
        if n_pre and _special(word[n_pre:]) is not None:
            pre.append(word[:n_pre])
            word = word[n_pre:]
            break
        n_suf = _suffix_len(word[n_pre:]) if len(word) - n_pre > 1 else 0
        if n_suf and _special(word[:-n_suf]) is not None:
            suf.append(word[-n_suf:])
            word = word[:-n_suf]
            break
        if not n_pre and not n_suf:
            break
        if n_pre:
            pre.append(word[:n_pre])
            word = word[n_pre:]
        if n_suf and n_suf < len(word):
            suf.append(word[-n_suf:])
            word = word[:-n_suf]
        if _special(word) is not None:
            break
    special = _special(word) if word else None
    mid = special if special is not None else (_split_infixes(word) if word else [])
    return _merge_emoticons(pre + mid + suf[::-1])


def _merge_emoticons(toks: list[str]) -> tuple[str, ...]:
    """Join adjacent tokens that together are an exception: an emoticon ("here):" -> here ):),
    an abbreviation ("z.B." -> z. B.)."""
    out: list[str] = []
    for t in toks:
        if out and len(t) == 1 and (out[-1] + t in EMOTICONS or out[-1] + t in _PUNCT_WORDS
                                    or out[-1] + t in ABBREVIATIONS):
            out[-1] += t
        else:
            out.append(t)
    return tuple(out)


def web_words(text: str | None) -> list[str]:
    """Word tokens of ``text`` with punctuation split off (see the module docstring).

    Args:
        text: any string (None counts as "").

    Returns:
        list of tokens in order; for text with CJK/Thai characters the text units of
        :func:`~curate.core.text_units.text_units` (no punctuation tokens).

    Example:
        >>> web_words("Don't stop (now), Mr. Smith.")
        ['Do', "n't", 'stop', '(', 'now', ')', ',', 'Mr.', 'Smith', '.']
    """
    if not text:
        return []
    out: list[str] = []
    if not has_unspaced(text):
        for run in text.split():
            out.extend(_word_tokens(run))
        return out
    for run in text.split():
        out.extend(_CJK_TOKENS.findall(run) if has_unspaced(run) else _word_tokens(run))
    return out


# a run with CJK/Thai characters: each such character, each punctuation/symbol character, and
# each run of anything else (Latin letters, digits) is a token
_CJK_TOKENS = regex.compile(
    f"{UNSPACED_CLASS}|[\\p{{P}}\\p{{S}}]|[^\\s\\p{{P}}\\p{{S}}{UNSPACED_CLASS[1:-1]}]+")


def count_sentences(text: str | None) -> int:
    """Sentences in ``text`` as a rule-based sentencizer counts them (at least 1 for any text).

    A sentence ends at a token made of one sentence-terminal character (``.``, ``!``, ``?``,
    ``。`` ...); the next sentence starts at the first following token that is not punctuation.
    Abbreviations (``Mr.``) and numbers (``3.5``) do not end a sentence; ``...`` does not either.

    Args:
        text: a line or a paragraph.

    Returns:
        number of sentences (1 for text without a sentence end, including "").
    """
    if not text:
        return 1
    n = 1
    seen_end = False
    for tok in web_words(text):
        is_end = len(tok) == 1 and STERM.match(tok) is not None
        if seen_end and not is_end and not _is_punct_token(tok):
            n += 1
            seen_end = False
        elif is_end:
            seen_end = True
    return n


_ASCII_SYMBOLS = frozenset("$+<=>^`|~´～━►∶")


def is_symbol_word(word: str) -> bool:
    """True when every character of ``word`` is punctuation: Unicode P*, a control character or
    one of the symbols ``$ + < = > ^ ` | ~ ´ ～ ━ ► ∶``.

    datatrove's ``PUNCTUATION_SET`` is a hand-made list of ASCII, CJK and sentence-final marks:
    it lacks most other Unicode punctuation (``• · § ¶ † ‡ ‰ ¡ ¿`` ...), so a lone ``•`` bullet
    is a word there and punctuation here (it lowers datatrove's mean word length and raises its
    word count on bulleted pages).
    """
    for c in word:
        cat = unicodedata.category(c)
        if not (cat[0] == "P" or cat == "Cc" or c in _ASCII_SYMBOLS):
            return False
    return True
