"""Text that is not space-separated (Chinese, Japanese, Thai...): units, length, dedup, heuristics.

Real rows from Debian's translated manual pages (sample_cjk/, see its README for licences).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import curate
from curate.core.text_units import count_units, has_unspaced, text_units, unit_kind
from curate.dedup.minhash_core import shingle_hashes
from curate.score.heuristics import text_heuristics

CJK = Path(__file__).resolve().parents[1] / "sample_cjk"


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (CJK / name).read_text().splitlines()]


def test_units_split_unspaced_scripts_by_character_and_keep_words_elsewhere():
    assert text_units("这是test句子, ok") == ["这", "是", "test", "句", "子", "ok"]
    assert text_units("你好。世界") == ["你", "好", "世", "界"]  # CJK punctuation separates
    assert text_units("日本語です") == ["日", "本", "語", "で", "す"]
    assert text_units("ภาษาไทย") == ["ภ", "า", "ษ", "า", "ไ", "ท", "ย"]
    assert text_units("한국어 문장입니다") == ["한국어", "문장입니다"]  # Korean is written with spaces
    assert text_units("Hello,  world .") == "Hello,  world .".split()  # unchanged for spaced text
    assert (unit_kind("hello"), unit_kind("你好"), unit_kind("你好 ok")) == ("words", "characters", "mixed")
    got = count_units(pa.array(["two words", "你好。世界", None, "mixed 中文 text"]))
    assert got.tolist() == [2, 4, 0, 4]


def test_cjk_answers_of_normal_length_pass_the_default_length_filter():
    short = rows("short_answers_cjk.jsonl")  # complete answers of 50-59 characters
    assert all(has_unspaced(r["output"]) for r in short)
    ds, prov = curate.select(short + [{"id": "en", "instruction": "Say hi", "output": "Hi there."}], schema="canonical",
                             method="length_filter", min_words=10, return_provenance=True)
    p = {r["id"]: r for r in prov.to_pylist()}
    assert sorted(ds["id"]) == sorted(r["id"] for r in short)  # every CJK answer kept
    assert p["en"]["reason"] == "too_short" and p["en"]["length_unit"] == "words"
    assert {p[r["id"]]["length_unit"] for r in short} <= {"characters", "mixed"}


def test_english_length_filter_output_has_no_unit_column():
    _, prov = curate.select([{"text": "one two three"}, {"text": "a b"}], schema="canonical", method="length_filter", min_words=3,
                            return_provenance=True)
    assert "length_unit" not in prov.column_names  # English-only pools: provenance as before


def pairs_of(kind: str) -> list[tuple[dict, dict]]:
    base = {r["id"]: r for r in rows("manpages_cjk_150.jsonl")}
    out = []
    for r in rows("planted_cjk.jsonl"):
        k, orig = r["planted"].split(":")
        if k == kind:
            out.append((base[orig], r))
    return out


@pytest.mark.parametrize("kind", ["char_substitute", "width_swap", "punct"])
def test_cjk_near_duplicates_are_found(kind):
    for orig, copy in pairs_of(kind):
        ds, prov = curate.select([orig, copy], schema="canonical", method="minhash_dedup", return_provenance=True)
        p = {r["id"]: r for r in prov.to_pylist()}
        assert p[copy["id"]]["status"] == "dropped" and p[copy["id"]]["dup_of"] == orig["id"], (kind, copy["id"])


def test_different_cjk_paragraphs_of_one_page_are_not_duplicates():
    base = rows("manpages_cjk_150.jsonl")
    by_page: dict[str, list[dict]] = {}
    for r in base:
        by_page.setdefault(r["page"], []).append(r)
    same_page = [v for v in by_page.values() if len(v) >= 2]
    assert len(same_page) >= 3
    flat = [r for v in same_page for r in v]
    ds = curate.select(flat, schema="canonical", method="minhash_dedup", threshold=0.7)
    assert len(ds) == len(flat)


def test_one_character_edit_breaks_whitespace_shingles_but_not_units():
    orig, copy = pairs_of("char_substitute")[0]
    a, b = pa.array([orig["output"]]), pa.array([copy["output"]])

    def jaccard(ng, ngu):
        sa, _ = shingle_hashes(a, ngram=ng, ngram_unspaced=ngu)
        sb, _ = shingle_hashes(b, ngram=ng, ngram_unspaced=ngu)
        return len(set(sa) & set(sb)) / len(set(sa) | set(sb))

    assert jaccard(5, 3) > 0.8  # CJK characters are words; 3-character shingles


def test_fullwidth_and_halfwidth_forms_are_one_text_for_exact_dedup():
    ds = curate.select([{"text": "ＡＢＣ　１２３ カタカナ"}, {"text": "ABC 123 ｶﾀｶﾅ"}], schema="canonical", method="exact_dedup")
    assert len(ds) == 1


def test_english_shingles_do_not_depend_on_the_unspaced_setting():
    texts = pa.array(["The quick brown fox jumps over the lazy dog.", "Café naïve façade, 3.14 rules", ""])
    a, oa = shingle_hashes(texts, ngram=5, ngram_unspaced=3)
    b, ob = shingle_hashes(texts, ngram=5, ngram_unspaced=None)
    assert np.array_equal(a, b) and np.array_equal(oa, ob)


def test_heuristics_are_nan_where_a_rule_means_nothing_on_characters():
    zh = rows("manpages_cjk_150.jsonl")[0]["output"]
    h = text_heuristics(zh)
    assert math.isnan(h["h_mean_word_len"]) and math.isnan(h["h_stop_words"])
    assert h["h_words"] == len(text_units(zh))
    en = text_heuristics("the cat sat on the mat")
    assert en["h_mean_word_len"] == pytest.approx(17 / 6) and en["h_stop_words"] == 2
