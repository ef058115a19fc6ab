"""C4's line and page rules (Raffel et al. 2020), with FineWeb's setting (datatrove ``C4QualityFilter``).

Each line (``str.splitlines()``, stripped) is removed when, in this order: one of its
whitespace words is longer than ``max_word_length``; (after citation markers such as ``[1]``,
``[edit]``, ``[citation needed]`` are cut out) it does not end in terminal punctuation (only with
``filter_no_terminal_punct``; FineWeb turns this off); it has fewer than ``min_words_per_line``
whitespace words (counted before the markers are cut, as datatrove); it mentions "javascript";
it holds one of the cookie/terms phrases of :data:`POLICY_PHRASES`. The page is dropped when a
line that reached the check holds "lorem ipsum" (checked before "javascript") or ``{`` (checked
after it), or when its kept lines hold fewer than ``min_num_sentences`` sentences
(:func:`curate.filters.web_text.count_sentences` per line; datatrove: spaCy's sentencizer). A kept
page's text becomes its kept lines joined by newlines (``Selection.rewrite["text"]``).

Every page gets every value (no short-circuit): ``c4_quality__lorem_ipsum`` and
``c4_quality__curly_bracket`` (how many lines trip them), ``c4_quality__sentences`` (sentences
in the lines that survive the line rules, as if the page rules were off), each with its
``__pass`` column, and the counts ``c4_quality__lines_removed``, ``c4_quality__chars_removed``
and one ``c4_quality__lines_<rule>`` per line rule. A dropped page's reason: the page rule of its
first offending line (datatrove stops there), else ``too_few_sentences``.
"""
from __future__ import annotations

import re
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.filters.web_rules import (
    Rule,
    attach_rewrite,
    check_bool,
    check_count,
    column_texts,
    rule_selection,
)
from curate.filters.web_text import count_sentences

CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
LINE_RULES = ("too_long_word", "no_terminal_punct", "too_few_words", "javascript", "policy")


@register
class C4Quality(Selector):
    """Remove boilerplate lines and drop pages that are not prose (C4; FineWeb step 6).

    Args:
        remove_citations: cut ``[1]``, ``[edit]``, ``[citation needed]`` out of lines (default True).
        filter_no_terminal_punct: remove lines not ending in ``. ? ! " '`` or ending in ``...``
            (default False: FineWeb's setting; C4 and datatrove's default is True).
        min_num_sentences: drop pages whose kept lines hold fewer sentences (default 5; None disables).
        min_words_per_line: remove lines with fewer whitespace words (default 3; None disables).
        max_word_length: remove lines with a longer whitespace word (default 1000; None disables).
        filter_lorem_ipsum: drop pages with a "lorem ipsum" line (default True).
        filter_javascript: remove lines mentioning "javascript" (default True).
        filter_curly_bracket: drop pages with a ``{`` line (default True).
        filter_policy: remove lines with a cookie/terms phrase (default True).
        column: text column to filter and rewrite (default ``"text"``).
    """

    name = "c4_quality"
    version = "1"
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("lorem_ipsum", "lorem_ipsum"), Rule("curly_bracket", "curly_bracket"),
        Rule("sentences", "too_few_sentences"))
    reasons: ClassVar[dict[str, str]] = {
        "lorem_ipsum": "a line says 'lorem ipsum' (placeholder text)",
        "curly_bracket": "a line holds '{' (code, templates)",
        "too_few_sentences": "the kept lines hold fewer than min_num_sentences sentences",
    }

    def __init__(self, *, remove_citations: bool = True, filter_no_terminal_punct: bool = False,
                 min_num_sentences: int | None = 5, min_words_per_line: int | None = 3,
                 max_word_length: int | None = 1000, filter_lorem_ipsum: bool = True,
                 filter_javascript: bool = True, filter_curly_bracket: bool = True, filter_policy: bool = True,
                 column: str = "text"):
        for pname, v in (("remove_citations", remove_citations), ("filter_no_terminal_punct", filter_no_terminal_punct),
                         ("filter_lorem_ipsum", filter_lorem_ipsum), ("filter_javascript", filter_javascript),
                         ("filter_curly_bracket", filter_curly_bracket), ("filter_policy", filter_policy)):
            check_bool(pname, v)
        check_count("min_num_sentences", min_num_sentences)
        check_count("min_words_per_line", min_words_per_line)
        check_count("max_word_length", max_word_length, minimum=1)
        self.remove_citations, self.filter_no_terminal_punct = remove_citations, filter_no_terminal_punct
        self.min_num_sentences, self.min_words_per_line = min_num_sentences, min_words_per_line
        self.max_word_length, self.filter_lorem_ipsum = max_word_length, filter_lorem_ipsum
        self.filter_javascript, self.filter_curly_bracket = filter_javascript, filter_curly_bracket
        self.filter_policy, self.column = filter_policy, column

    def required_columns(self) -> list[str]:
        return [self.column]

    def clean(self, text: str) -> dict:
        """Apply the line rules to one page.

        Args:
            text: the page.

        Returns:
            {"text": kept lines joined by "\\n" and stripped, "first_page_rule": reason code of the
            first line that trips an enabled page rule or None, "lorem_ipsum", "curly_bracket":
            lines tripping them, "sentences": sentences in the kept lines, "lines_<rule>": lines
            removed by each line rule, "lines_total"}.
        """
        counts = dict.fromkeys(LINE_RULES, 0)
        kept: list[str] = []
        lorem = curly = sentences = 0
        first = None
        lines = text.splitlines()
        for line in lines:
            line = line.strip()
            words = line.split()  # before citations are cut, as datatrove counts them
            if self.max_word_length is not None and any(len(w) > self.max_word_length for w in words):
                counts["too_long_word"] += 1
                continue
            if self.remove_citations:
                line = CITATION.sub("", line)
            if self.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
                counts["no_terminal_punct"] += 1
                continue
            if self.min_words_per_line is not None and len(words) < self.min_words_per_line:
                counts["too_few_words"] += 1
                continue
            low = line.lower()
            if "lorem ipsum" in low:
                lorem += 1
                if self.filter_lorem_ipsum and first is None:
                    first = "lorem_ipsum"
            if self.filter_javascript and "javascript" in low:
                counts["javascript"] += 1
                continue
            if "{" in line:
                curly += 1
                if self.filter_curly_bracket and first is None:
                    first = "curly_bracket"
            if self.filter_policy and any(p in low for p in POLICY_PHRASES):
                counts["policy"] += 1
                continue
            sentences += count_sentences(line)
            kept.append(line)
        return {"text": "\n".join(kept).strip(), "first_page_rule": first, "lorem_ipsum": lorem,
                "curly_bracket": curly, "sentences": sentences, "lines_removed": len(lines) - len(kept),
                **{f"lines_{k}": v for k, v in counts.items()}}

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        # In-process, not map_shards: the rewritten texts are strings, which shards do not store.
        texts = column_texts(table, self.column)
        n = len(texts)
        res = [self.clean(t) for t in texts]
        values = {k: np.array([r[k] for r in res], dtype=np.float64) for k in ("lorem_ipsum", "curly_bracket",
                                                                                 "sentences")}
        passed = {
            "lorem_ipsum": ~(values["lorem_ipsum"] > 0) | (not self.filter_lorem_ipsum),
            "curly_bracket": ~(values["curly_bracket"] > 0) | (not self.filter_curly_bracket),
            "sentences": (values["sentences"] >= self.min_num_sentences if self.min_num_sentences is not None
                          else np.ones(n, dtype=bool)),
        }
        new_text = np.array([r["text"] for r in res], dtype=object)
        extras = {f"{self.name}__lines_{k}": np.array([r[f"lines_{k}"] for r in res], dtype=np.int64)
                  for k in LINE_RULES}
        extras[f"{self.name}__lines_removed"] = np.array([r["lines_removed"] for r in res], dtype=np.int64)
        extras[f"{self.name}__chars_removed"] = np.array([len(a) - len(b) for a, b in zip(texts, new_text)],
                                                         dtype=np.int64)
        first = np.array([r["first_page_rule"] for r in res], dtype=object)
        sel = rule_selection(self.name, self.RULES, values, passed, pre_reason=first, extras=extras)
        return attach_rewrite(sel, self.column, new_text)
