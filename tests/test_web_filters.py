"""FineWeb's rule stages (curate/filters/{gopher,c4,fineweb,pii,url}.py) on hand-computed toys."""
from __future__ import annotations

import math
import socket

import numpy as np
import pyarrow as pa
import pytest

from curate.core.registry import get_stage
from curate.core.stage import StageContext
from curate.filters.c4 import C4Quality
from curate.filters.fineweb import FineWebQuality
from curate.filters.gopher import (
    GopherQuality,
    GopherRepetition,
    duplicated_ngram_chars,
    duplicates,
    top_ngram_chars,
)
from curate.filters.pii import IP_REPLACEMENTS, PII, luhn_valid
from curate.filters.url import URLFilter
from curate.filters.web_text import count_sentences, web_words

# ----------------------------------------------------------------------------- helpers


def run(stage, tmp_path, texts=None, **cols):
    table = pa.table({"id": [str(i) for i in range(len(texts if texts is not None else next(iter(cols.values()))))],
                      **({"text": texts} if texts is not None else {}), **cols})
    ctx = StageContext(work_dir=tmp_path / f"w{np.random.randint(1 << 30)}", show_progress=False)
    return stage.check(stage.select(table, ctx), len(table))


def rule_names(sel, stage):
    return sorted(c[len(stage) + 2:] for c in sel.extras
                  if c.startswith(stage + "__") and not c.endswith("__pass") and f"{c}__pass" in sel.extras)


# ----------------------------------------------------------------------------- words and sentences


def test_web_words_split_punctuation_like_a_word_tokenizer():
    assert web_words("Don't stop (now), Mr. Smith.") == ["Do", "n't", "stop", "(", "now", ")", ",", "Mr.", "Smith", "."]
    assert web_words("It costs 20% in the U.S.A.") == ["It", "costs", "20", "%", "in", "the", "U.S.A."]
    assert web_words("well-known and/or e.g. www.example.com.") == [
        "well", "-", "known", "and/or", "e.g.", "www.example.com", "."]
    assert web_words("") == [] and web_words(None) == []


def test_cjk_words_are_characters_not_lines():
    text = "这是一个测试。这是第二句。"
    words = web_words(text)
    assert words == list("这是一个测试。这是第二句。")
    assert sum(w != "。" for w in words) == 11  # eleven characters, not one "word" per clause
    assert count_sentences(text) == 2


def test_count_sentences():
    assert count_sentences("One here. Two there! Three?") == 3
    assert count_sentences("Mr. Smith paid 3.5 dollars. Then left") == 2  # no end at "Mr." nor "3.5"
    assert count_sentences("no end at all") == 1
    assert count_sentences("") == 1


# ----------------------------------------------------------------------------- gopher_repetition


def test_repetition_helpers_by_hand():
    assert duplicates(["a", "b", "a", "a", "cc", "cc"]) == (3, 1 + 1 + 2)
    # all 2-grams occur once: the first one ("p q", 3 chars) wins the tie, as datatrove
    assert top_ngram_chars(["p", "q", "r", "s"], 2) == 3
    assert top_ngram_chars(["a", "b", "a", "b", "a"], 2) == 3 * 2  # "a b" twice
    assert top_ngram_chars(["a"], 2) == 0
    # x y z w v x y z w v: the 5-gram at index 5 repeats index 0 -> 5 chars ("xyzwv")
    assert duplicated_ngram_chars("x y z w v x y z w v".split(), 5) == 5
    assert duplicated_ngram_chars("a a a a a a".split(), 2) == 2 + 2  # idx 0 new, 1 dup (+2, jump), 3 dup (+2)


def test_gopher_repetition_toy_values_and_first_reason(tmp_path):
    text = "a b c\n\na b c\n\nd e f"  # 19 characters
    greek = " ".join(f"word{i}" for i in range(60)) + "."  # no repetition, long enough
    short = "Plain words here and there, all different ones."  # 47 characters
    sel = run(GopherRepetition(), tmp_path, [text, greek, short])
    ex = sel.extras
    assert ex["gopher_repetition__dup_para_frac"][0] == pytest.approx(1 / 3)
    assert ex["gopher_repetition__dup_para_char_frac"][0] == pytest.approx(5 / 19)
    assert ex["gopher_repetition__dup_line_frac"][0] == pytest.approx(1 / 3)
    assert ex["gopher_repetition__dup_line_char_frac"][0] == pytest.approx(5 / 19)
    assert ex["gopher_repetition__top_2_gram"][0] == pytest.approx(3 * 2 / 19)  # "a b" twice
    assert ex["gopher_repetition__dup_5_gram"][0] == 0.0
    # every rule fails on the toy; the reason is the first in datatrove's order
    assert not ex["gopher_repetition__dup_line_frac__pass"][0]
    assert sel.reason[0] == "dup_para_frac" and not sel.keep[0]
    assert sel.keep[1] and sel.reason[1] is None
    # no 2-gram repeats, but the first one ("Plain words", 11 chars) is the "top" one: 11/47 > 0.2
    assert ex["gopher_repetition__top_2_gram"][2] == pytest.approx(11 / 47) and sel.reason[2] == "top_2_gram"


def test_gopher_repetition_threshold_boundary_is_strict(tmp_path):
    text = "a b c\n\na b c\n\nd e f"
    at = GopherRepetition(dup_para_frac=1 / 3, dup_para_char_frac=None, dup_line_frac=None, dup_line_char_frac=None,
                          top_n_grams=None, dup_n_grams=None)
    below = GopherRepetition(dup_para_frac=0.33, dup_para_char_frac=None, dup_line_frac=None,
                             dup_line_char_frac=None, top_n_grams=None, dup_n_grams=None)
    assert run(at, tmp_path, [text]).keep[0]  # equal to the threshold passes
    assert run(below, tmp_path, [text]).reason[0] == "dup_para_frac"


def test_gopher_repetition_empty_and_all_columns(tmp_path):
    sel = run(GopherRepetition(), tmp_path, ["", "x", None])
    assert list(sel.reason) == ["empty", None, "empty"]
    names = rule_names(sel, "gopher_repetition")
    assert len(names) == 4 + 3 + 6
    for r in names:
        assert len(sel.extras[f"gopher_repetition__{r}"]) == 3
        assert sel.extras[f"gopher_repetition__{r}__pass"].dtype == bool
    assert math.isnan(sel.extras["gopher_repetition__dup_para_frac"][0])
    # "x" alone: its only... no 2-gram at all -> 0.0, passes
    assert sel.extras["gopher_repetition__top_2_gram"][1] == 0.0


# ----------------------------------------------------------------------------- gopher_quality


def test_gopher_quality_toy_values(tmp_path):
    # tokens: The cat and the dog ... # 1 - a list line (12); prose words: 9 of them
    text = "The cat and the dog... #1\n- a list line"
    sel = run(GopherQuality(), tmp_path, [text])
    v = {r: sel.extras[f"gopher_quality__{r}"][0] for r in rule_names(sel, "gopher_quality")}
    assert v["n_words"] == 9
    assert v["avg_word_length"] == pytest.approx(25 / 9)
    assert v["hash_ratio"] == pytest.approx(1 / 12)
    assert v["ellipsis_ratio"] == pytest.approx(1 / 12)
    assert v["bullet_lines_ratio"] == pytest.approx(1 / 2)
    assert v["end_ellipsis_lines_ratio"] == 0.0
    assert v["alpha_words_ratio"] == pytest.approx(8 / 12)
    assert v["stop_words"] == 2  # "the", "and" ("The" does not count: case-sensitive, as datatrove)
    assert sel.reason[0] == "short_doc"  # the first failing rule
    assert not sel.extras["gopher_quality__avg_word_length__pass"][0]
    assert not sel.extras["gopher_quality__alpha_words_ratio__pass"][0]
    assert sel.extras["gopher_quality__stop_words__pass"][0]


def _prose(n_words: int) -> str:
    base = "the quick brown fox jumps over the lazy dog and runs with speed".split()
    return " ".join(base[i % len(base)] for i in range(n_words)) + "."


def test_gopher_quality_word_bounds_and_two_sided_reasons(tmp_path):
    st = GopherQuality(min_doc_words=50, max_doc_words=60)
    sel = run(st, tmp_path, [_prose(49), _prose(50), _prose(60), _prose(61)])
    assert list(sel.extras["gopher_quality__n_words"]) == [49, 50, 60, 61]
    assert list(sel.reason) == ["short_doc", None, None, "long_doc"]
    long_words = run(GopherQuality(min_doc_words=1), tmp_path, ["extraordinarily incomprehensibilities the and"])
    assert long_words.reason[0] == "long_words"


def test_gopher_stop_words_only_for_english(tmp_path):
    text = "Un texte sans mots vides anglais mais assez long pour le reste des règles."
    st = GopherQuality(min_doc_words=1)
    sel = run(st, tmp_path, [text, text, text], language=["en", "fr", None])
    sw = sel.extras["gopher_quality__stop_words"]
    assert sw[0] == 0 and math.isnan(sw[1]) and sw[2] == 0
    assert list(sel.reason) == ["stop_words", None, "stop_words"]
    assert sel.extras["gopher_quality__stop_words__pass"][1]
    # no language column: every row is taken as English
    assert run(st, tmp_path, [text]).reason[0] == "stop_words"


def test_gopher_quality_cjk_counts_characters(tmp_path):
    text = "这是一个测试。" * 20  # 120 characters of Chinese, 20 sentence marks
    sel = run(GopherQuality(), tmp_path, [text])
    assert sel.extras["gopher_quality__n_words"][0] == 120
    assert sel.extras["gopher_quality__avg_word_length"][0] == 1.0
    assert sel.reason[0] == "short_words"  # Gopher's English rule: mean word length 1 < 3


# ----------------------------------------------------------------------------- c4_quality

C4_TEXT = "\n".join([
    "Short line.",                                         # 2 words: removed
    "This line mentions JavaScript in passing.",           # javascript: removed
    "We use cookies on this site, sorry.",                 # policy phrase: removed
    "A normal line with words [1] here.",                  # kept, citation cut
    "Another fine line of text. Two sentences here.",      # kept, 2 sentences
    "   Indented third line is fine.   ",                  # kept, stripped
    "x" * 1001 + " a b",                                   # word over 1000 chars: removed
])


def test_c4_rewrite_keeps_exactly_the_right_lines(tmp_path):
    sel = run(C4Quality(min_num_sentences=4), tmp_path, [C4_TEXT])
    assert sel.keep[0]
    want = "A normal line with words  here.\nAnother fine line of text. Two sentences here.\nIndented third line is fine."
    assert sel.rewrite["text"][0] == want
    ex = sel.extras
    assert ex["c4_quality__sentences"][0] == 4
    assert ex["c4_quality__lines_removed"][0] == 4
    assert ex["c4_quality__chars_removed"][0] == len(C4_TEXT) - len(want)
    for rule in ("too_few_words", "javascript", "policy", "too_long_word"):
        assert ex[f"c4_quality__lines_{rule}"][0] == 1
    assert ex["c4_quality__lines_no_terminal_punct"][0] == 0  # FineWeb's setting: rule off
    # FineWeb's default (5 sentences) drops it; the value is the same
    sel5 = run(C4Quality(), tmp_path, [C4_TEXT])
    assert sel5.reason[0] == "too_few_sentences" and sel5.extras["c4_quality__sentences"][0] == 4


def test_c4_terminal_punct_option(tmp_path):
    text = "A line without an end\nA line with its end.\nAnother line that ends...\n"
    sel = run(C4Quality(filter_no_terminal_punct=True, min_num_sentences=1), tmp_path, [text])
    assert sel.rewrite["text"][0] == "A line with its end."
    assert sel.extras["c4_quality__lines_no_terminal_punct"][0] == 2


def test_c4_page_rules_first_offending_line_and_order(tmp_path):
    docs = [
        "one two three four.\nfunction f() { return 1 }\nlorem ipsum dolor sit amet",  # "{" line comes first
        "lorem ipsum { x } y",          # same line: lorem ipsum is checked before "{"
        "javascript code { x } here",   # removed as javascript before "{" is looked at
    ]
    sel = run(C4Quality(min_num_sentences=None), tmp_path, docs)
    assert list(sel.reason) == ["curly_bracket", "lorem_ipsum", None]
    assert list(sel.extras["c4_quality__curly_bracket"]) == [1, 1, 0]
    assert list(sel.extras["c4_quality__lorem_ipsum"]) == [1, 1, 0]
    off = run(C4Quality(min_num_sentences=None, filter_curly_bracket=False), tmp_path, docs[:1])
    assert off.reason[0] == "lorem_ipsum"  # with "{" allowed, the later lorem ipsum line drops it


# ----------------------------------------------------------------------------- fineweb_quality


def test_fineweb_toy_values(tmp_path):
    text = "Hello world.\nshort\n\nAnother line here without end\nHello world."
    sel = run(FineWebQuality(), tmp_path, [text])
    v = {r: sel.extras[f"fineweb_quality__{r}"][0] for r in rule_names(sel, "fineweb_quality")}
    assert v["line_punct_ratio"] == pytest.approx(2 / 4)  # the empty line is not counted
    assert v["short_line_ratio"] == pytest.approx(4 / 4)
    assert v["char_dup_ratio"] == pytest.approx(12 / 58)
    assert v["list_ratio"] == pytest.approx(4 / 12)  # 4 newlines / 12 tokens (".", twice)
    assert sel.reason[0] == "short_line_ratio"
    assert not sel.extras["fineweb_quality__list_ratio__pass"][0]


def test_fineweb_boundaries_and_release_semantics(tmp_path):
    # 1 of 4 non-empty lines ends with "." -> 0.25; one empty line in between
    text = ("a line that is long enough to not be short.\nanother line that is long enough, no end\n\n"
            "a third line that is long enough too here\nand a fourth one that is long enough now")
    kw = dict(line_punct_thr=0.25, char_duplicates_ratio=0.01, new_line_ratio=1.0)
    now = run(FineWebQuality(**kw), tmp_path, [text])
    assert now.extras["fineweb_quality__line_punct_ratio"][0] == 0.25 and now.keep[0]  # equal passes (0.10.1)
    old = run(FineWebQuality(semantics="fineweb-2024", **kw), tmp_path, [text])
    assert old.extras["fineweb_quality__line_punct_ratio"][0] == pytest.approx(1 / 5)  # empty line counted
    assert old.reason[0] == "line_punct_ratio"
    # the code's 0.01 vs the paper's 0.1 for repeated-line characters
    rep = "\n".join(["This is a sentence that repeats."] * 2 + [f"Unique line number {i} is here, long enough." for i in range(8)])
    assert run(FineWebQuality(), tmp_path, [rep]).reason[0] == "char_dup_ratio"
    assert run(FineWebQuality(char_duplicates_ratio=0.1), tmp_path, [rep]).keep[0]
    assert run(FineWebQuality(), tmp_path, ["\n \n"]).reason[0] == "empty"


# ----------------------------------------------------------------------------- pii

PII_TEXT = ("Mail john.doe@mail.com or jane@x.org; servers 8.8.8.8, 192.168.1.1, 1.1.1.1 and 8.8.8.8. "
            "Also 10.0.0.1, 127.0.0.1, 172.16.0.5 and 01.2.3.4.")


def test_pii_replacements_by_hand(tmp_path):
    sel = run(PII(), tmp_path, [PII_TEXT, "nothing here"])
    assert sel.keep.all() and all(r is None for r in sel.reason)
    want = ("Mail email@example.com or firstname.lastname@example.org; servers "
            f"{IP_REPLACEMENTS[0]}, 192.168.1.1, {IP_REPLACEMENTS[1]} and {IP_REPLACEMENTS[2]}. "
            "Also 10.0.0.1, 127.0.0.1, 172.16.0.5 and 01.2.3.4.")
    assert sel.rewrite["text"][0] == want  # private, loopback and invalid addresses untouched
    assert sel.rewrite["text"][1] == "nothing here"
    assert list(sel.extras["pii__emails"]) == [2, 0] and list(sel.extras["pii__ips"]) == [3, 0]


def test_pii_is_deterministic_per_document(tmp_path):
    a = run(PII(), tmp_path, [PII_TEXT, PII_TEXT, "x@y.com", PII_TEXT]).rewrite["text"]
    b = run(PII(), tmp_path, [PII_TEXT]).rewrite["text"]
    assert a[0] == a[1] == a[3] == b[0]  # the turn restarts for every document
    assert a[2] == "email@example.com"


def test_pii_extra_kinds_off_by_default(tmp_path):
    text = "card 4539 1488 0343 6467, v6 2606:4700:4700::1111 and fe80::1, time 12:30:45"
    assert luhn_valid("4539 1488 0343 6467") and not luhn_valid("4539 1488 0343 6468")
    assert run(PII(), tmp_path, [text]).rewrite["text"][0] == text
    sel = run(PII(extra_kinds=["credit_card", "ipv6"]), tmp_path, [text])
    assert sel.rewrite["text"][0] == "card 4111 1111 1111 1111, v6 2001:db8::1 and fe80::1, time 12:30:45"
    assert sel.extras["pii__credit_cards"][0] == 1 and sel.extras["pii__ipv6"][0] == 1
    public_too = run(PII(only_remove_public_ips=False), tmp_path, ["at 10.0.0.1"]).rewrite["text"][0]
    assert public_too == f"at {IP_REPLACEMENTS[0]}"


# ----------------------------------------------------------------------------- url_filter


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_url_rules_with_extra_lists(tmp_path, no_network):
    st = URLFilter(use_integrated_lists=False, extra_domains=["bad.com", "sub.ok.com"],
                   extra_urls=["https://fine.org/exact"], banned_words=["xxx"], soft_banned_words=["hot", "girls"],
                   banned_subwords=["bad phrase"])
    urls = ["https://www.bad.com/x", "http://sub.ok.com/", "http://other.ok.com/", "https://fine.org/exact",
            "https://a.com/xxx-videos", "https://a.com/XXX", "https://a.com/hot-girls", "https://a.com/hot-dogs",
            "https://a.com/my-bad-phrase", None, ""]
    sel = run(st, tmp_path, url=urls)
    assert list(sel.reason) == ["domain", "subdomain", None, "url", "hard_blacklisted", None, "soft_blacklisted",
                                None, "blacklisted_subword", None, None]
    ex = sel.extras
    assert ex["url_filter__soft_words"][6] == 2 and ex["url_filter__soft_words"][7] == 1
    assert math.isnan(ex["url_filter__domain"][9]) and ex["url_filter__domain__pass"][9]
    assert len(rule_names(sel, "url_filter")) == 6


def test_url_integrated_lists_offline(tmp_path, no_network):
    sel = run(URLFilter(), tmp_path, url=["https://0-1avsex.com/page", "https://en.wikipedia.org/wiki/Data",
                                          "https://www.example.com/porn/", "https://news.example.com/story"])
    assert list(sel.reason) == ["domain", None, "hard_blacklisted", None]


def test_url_filter_without_url_column_keeps_all(tmp_path, caplog):
    assert URLFilter().required_columns() == []  # read when present
    sel = run(URLFilter(), tmp_path, ["text only", "more text"])
    assert sel.keep.all() and np.isnan(sel.extras["url_filter__domain"]).all()
    assert "no column 'url'" in caplog.text


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("stage", [GopherRepetition(), GopherQuality(), C4Quality(), FineWebQuality()])
def test_every_rule_recorded_for_every_document(stage, tmp_path):
    texts = ["", "Just one line.", "lorem ipsum dolor sit amet\n" * 3, "这是一个测试。" * 9,
             "\n".join(f"Line {i} of a longer document, with words and an end." for i in range(40))]
    sel = run(stage, tmp_path, texts)
    names = rule_names(sel, stage.name)
    assert names
    for r in names:
        assert sel.extras[f"{stage.name}__{r}"].shape == (len(texts),)
        assert sel.extras[f"{stage.name}__{r}__pass"].shape == (len(texts),)
    for i in np.flatnonzero(~sel.keep):
        assert sel.reason[i] in stage.reasons


def test_registered_and_resumable(tmp_path):
    for name, cls in (("gopher_repetition", GopherRepetition), ("gopher_quality", GopherQuality),
                      ("c4_quality", C4Quality), ("fineweb_quality", FineWebQuality), ("pii", PII),
                      ("url_filter", URLFilter)):
        assert get_stage(name) is cls
    table = pa.table({"id": ["0", "1"], "text": [C4_TEXT, "a b c\n\na b c"]})
    ctx = StageContext(work_dir=tmp_path / "same", show_progress=False)
    a = GopherRepetition().select(table, ctx)
    b = GopherRepetition().select(table, ctx)  # shards reused from the first run
    assert list(a.reason) == list(b.reason)


@pytest.mark.parametrize("make, pname", [
    (lambda: GopherRepetition(dup_para_frac=1.5), "dup_para_frac"),
    (lambda: GopherRepetition(top_n_grams=[[1, 0.2]]), "top_n_grams"),
    (lambda: GopherQuality(min_doc_words=-1), "min_doc_words"),
    (lambda: GopherQuality(stop_words="the"), "stop_words"),
    (lambda: C4Quality(min_words_per_line=2.5), "min_words_per_line"),
    (lambda: FineWebQuality(semantics="paper"), "semantics"),
    (lambda: PII(extra_kinds=["phone"]), "extra_kinds"),
    (lambda: URLFilter(soft_word_threshold=0), "soft_word_threshold"),
])
def test_bad_parameters_are_named(make, pname):
    with pytest.raises(ValueError, match=pname):
        make()
