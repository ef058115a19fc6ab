"""minhash_dedup: hand-computed toys (known Jaccard on each side of the threshold), keep rules,
dup_of pointing at the kept row, the band optimiser's table, the against-index, resume."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.core.stage import StageContext
from curate.dedup import minhash_index as mi
from curate.dedup.lsh import band_edges, connected_components, representatives
from curate.dedup.minhash import MinHashDedup
from curate.dedup.minhash_core import (
    candidate_probability,
    jaccard,
    minhash_signatures,
    ngram_hashes,
    normalize_texts,
    optimal_param,
    pair_jaccard,
    shingle_hashes,
)
from curate.dedup.minhash_index import MinHashIndex, compute_band_keys
from curate.report.dups import dup_clusters_from_provenance, format_dup_cluster


def words(lo: int, hi: int, tag: str = "w") -> str:
    """Distinct words tag<lo> .. tag<hi-1>: hi-lo words, hi-lo-4 distinct 5-gram shingles."""
    return " ".join(tag + "".join(chr(97 + (i // 26 ** k) % 26) for k in (2, 1, 0)) for i in range(lo, hi))


def ctx(tmp_path, name="w"):
    return StageContext(work_dir=tmp_path / name, artifact_dir=tmp_path / (name + "_art"), show_progress=False)


def table(texts, **cols):
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": texts, **cols})


# Exact-decision setting: 128 bands of 1 row make every pair with J >~ 0.1 a candidate
# (P = 1 - (1-J)^128), and the exact check then decides J >= t. So outcomes are hand-computable.
EXACT = dict(bands=128, rows=1, check_false_positives=True)


@pytest.mark.parametrize("t,P,expected", [(0.7, 240, (24, 10)), (0.7, 256, (25, 10)), (0.8, 256, (17, 15)),
                                          (0.85, 256, (13, 19)), (0.7, 128, (14, 9)), (0.8, 128, (9, 13)),
                                          (0.5, 128, (25, 5))])
def test_optimal_param_reproduces_methods_table(t, P, expected):
    assert optimal_param(t, P, 0.5, 0.5) == expected


def test_default_band_choice_is_recall_leaning():
    b, r = MinHashDedup().band_shape()
    assert (b, r) == optimal_param(0.8, 128, 0.1, 0.9) == (14, 9)
    assert candidate_probability(0.8, b, r) > 0.85 > 0.45 > candidate_probability(0.8, 9, 13)


def test_normalisation_like_simplify_text():
    got = normalize_texts(pa.array(["Hello,   World! 3.14 is PI.", "Café  naïve_x", None, "a\tb\nc"])).to_pylist()
    assert got == ["hello world 0 is pi", "cafe naive x", "", "a b c"]


def test_ngram_counts_short_and_empty():
    tok = np.arange(1, 11, dtype=np.uint64)
    off = np.array([0, 7, 10, 10])  # 7 tokens, 3 tokens, 0 tokens
    sh, so = ngram_hashes(tok, off, 5)
    assert so.tolist() == [0, 3, 4, 4]  # 7-5+1 = 3 shingles; short text = 1 shingle; empty = none
    assert len(set(sh.tolist())) == 4
    # order matters inside a shingle, position in the text does not
    sh2, _ = ngram_hashes(np.array([5, 4, 3, 2, 1, 1, 2, 3, 4, 5], np.uint64), np.array([0, 5, 10]), 5)
    assert sh2[0] != sh2[1]
    sh3, _ = ngram_hashes(np.array([9, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5], np.uint64), np.array([0, 6, 11]), 5)
    assert sh3[1] == sh3[2]


def test_pair_jaccard_matches_one_by_one():
    rng = np.random.default_rng(1)
    lens = rng.integers(0, 30, size=40)
    off = np.r_[0, np.cumsum(lens)]
    sh = rng.integers(0, 25, size=int(off[-1])).astype(np.uint64)  # small alphabet: overlaps + repeats
    a, b = rng.integers(0, 40, size=300), rng.integers(0, 40, size=300)
    want = [jaccard(sh[off[i]:off[i + 1]], sh[off[j]:off[j + 1]]) for i, j in zip(a, b)]
    assert np.allclose(pair_jaccard(sh, off, a, b), want)
    assert np.allclose(pair_jaccard(sh, off, a, b, chunk_items=7), want)  # many small chunks


def test_shingle_jaccard_hand_computed():
    a = words(0, 24)  # 20 shingles
    for extra, want in [(2, 20 / 22), (5, 20 / 25), (6, 20 / 26), (10, 20 / 30)]:
        b = a + " " + words(100, 100 + extra)
        sh, off = shingle_hashes(pa.array([a, b]))
        assert jaccard(sh[off[0]:off[1]], sh[off[1]:off[2]]) == pytest.approx(want)


@pytest.mark.parametrize("backend", ["rensa", "numpy"])
def test_signature_agreement_estimates_jaccard(backend):
    a = words(0, 104)  # 100 shingles
    b = words(0, 54) + " " + words(500, 550)  # shares 50 shingles -> J = 50 / 150
    sh, off = shingle_hashes(pa.array([a, b, a.upper()]))
    sig = minhash_signatures(sh, off, num_perm=512, seed=3, backend=backend)
    assert sig.shape == (3, 512) and sig.dtype == np.uint32
    assert (sig[0] == sig[2]).all()  # case folding: identical shingle sets
    assert abs((sig[0] == sig[1]).mean() - 50 / 150) < 0.07  # 3.4 sigma at P=512


@pytest.mark.parametrize("backend", ["rensa", "numpy"])
def test_threshold_both_sides_exact(tmp_path, backend):
    a = words(0, 24)
    texts = [a,
             a + " " + words(100, 102),  # J = 20/22 = 0.909 -> dup
             a + " " + words(200, 205),  # J = 20/25 = 0.800 -> dup (>= t)
             a + " " + words(300, 306),  # J = 20/26 = 0.769 -> kept
             words(0, 24, "z")]  # unrelated
    sel = MinHashDedup(threshold=0.8, backend=backend, **EXACT).select(table(texts), ctx(tmp_path))
    assert sel.keep.tolist() == [True, False, False, True, True]
    assert sel.reason.tolist() == [None, "near_duplicate", "near_duplicate", None, None]
    assert sel.extras["dup_of"].tolist() == [None, "r0", "r0", None, None]
    c = sel.extras["dup_cluster"]
    assert c[0] == c[1] == c[2] >= 0 and c[3] == c[4] == -1


def test_default_lsh_finds_high_jaccard_and_misses_unrelated(tmp_path):
    rng = np.random.default_rng(0)
    base = [words(k * 40, k * 40 + 40) for k in range(30)]
    near = [b + " " + words(5000 + k, 5001 + k) for k, b in enumerate(base)]  # J = 36/37
    order = rng.permutation(60)
    texts = np.array(base + near, dtype=object)[order].tolist()
    sel = MinHashDedup(check_false_positives=False).select(table(texts), ctx(tmp_path))
    assert sel.n_kept == 30
    pos = {t: i for i, t in enumerate(texts)}
    for k in range(30):
        i, j = sorted((pos[base[k]], pos[near[k]]))
        assert sel.keep[i] and not sel.keep[j] and sel.extras["dup_of"][j] == f"r{i}"


def test_chain_points_at_kept_row_not_intermediate(tmp_path):
    # A~B and B~C have J = 33/39 = 0.846 >= 0.8, but A~C has J = 30/42 = 0.714: still one cluster
    # (transitive), and C's dup_of is the kept A, never the dropped B.
    A, B, C = words(0, 40), words(3, 43), words(6, 46)
    sel = MinHashDedup(**EXACT).select(table([C, "other text entirely here", A, B][::-1]), ctx(tmp_path))
    # rows: r0=B, r1=A, r2=other, r3=C
    assert sel.keep.tolist() == [True, False, True, False]
    assert sel.extras["dup_of"].tolist() == [None, "r0", None, "r0"]
    assert sel.extras["dup_cluster"][0] == sel.extras["dup_cluster"][1] == sel.extras["dup_cluster"][3]


@pytest.mark.parametrize("keep,kept", [("first", 0), ("longest", 2), ("highest:q", 1)])
def test_keep_policies(tmp_path, keep, kept):
    a = words(0, 60)
    texts = [a, a + " " + words(900, 901), a + " " + words(800, 803), words(0, 30, "y")]
    q = [0.1, 0.9, float("nan"), 5.0]
    sel = MinHashDedup(keep=keep, **EXACT).select(table(texts, q=q), ctx(tmp_path))
    members = [0, 1, 2]
    assert [bool(sel.keep[i]) for i in members] == [i == kept for i in members]
    assert all(sel.extras["dup_of"][i] == f"r{kept}" for i in members if i != kept)
    assert sel.keep[3]


def test_keep_highest_ties_go_first_and_nan_loses(tmp_path):
    a = words(0, 60)
    sel = MinHashDedup(keep="highest:q", **EXACT).select(table([a, a, a], q=[float("nan"), 2.0, 2.0]), ctx(tmp_path))
    assert sel.keep.tolist() == [False, True, False]


def test_keep_highest_missing_column(tmp_path):
    with pytest.raises(ValueError, match="'nope'"):
        MinHashDedup(keep="highest:nope").select(table(["a b c", "a b c"]), ctx(tmp_path))


def test_empty_texts_never_duplicates_short_texts_are(tmp_path):
    sel = MinHashDedup(**EXACT).select(table(["", None, "  ...  ", "Short one.", "short ONE", "short two"]),
                                       ctx(tmp_path))
    assert sel.keep.tolist() == [True, True, True, True, False, True]


def test_char_ngrams(tmp_path):
    a = "abcdefghijklmnopqrstuvwxyz" * 2
    sel = MinHashDedup(char_ngram=3, **EXACT).select(table([a, a + "q", "zyxwvutsrqponmlkjihgfedcba"]), ctx(tmp_path))
    assert sel.keep.tolist() == [True, False, True]


def test_lsh_helpers_on_toy_arrays():
    keys = np.array([[1, 7], [2, 7], [1, 8], [3, 9], [4, 9]], dtype=np.uint64)
    src, dst = band_edges(keys)
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2), (3, 4)]
    src, dst = band_edges(keys, valid=np.array([True, True, True, False, True]))
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (0, 2)]
    lab = connected_components(6, np.array([4, 2, 1]), np.array([5, 1, 0]))
    assert lab.tolist() == [0, 0, 0, 3, 4, 4]
    assert representatives(lab).tolist() == [0, 0, 0, 3, 4, 4]
    assert representatives(lab, np.array([1.0, 3.0, 3.0, 0, np.nan, 0.0])).tolist() == [1, 1, 1, 3, 5, 5]


def test_against_index_and_param_mismatch(tmp_path):
    cur = [words(0, 40), words(100, 140)]
    idx_dir = tmp_path / "idx"
    stage = MinHashDedup(**EXACT)
    kw = {k: v for k, v in stage.signature_params().items() if k != "algorithm"}
    MinHashIndex.build(["c0", "c1"], cur, **kw).save(idx_dir)
    new = [words(200, 240), cur[1] + " " + words(900, 901), words(200, 240) + " extra", words(300, 340)]
    sel = MinHashDedup(against=str(idx_dir), **EXACT).select(table(new), ctx(tmp_path))
    assert sel.reason.tolist() == [None, "duplicate_of_curated", "near_duplicate", None]
    assert sel.extras["dup_of"].tolist() == [None, "c1", "r0", None]
    with pytest.raises(ValueError, match="ngram: index=5 stage=4"):
        MinHashDedup(against=str(idx_dir), ngram=4, bands=128, rows=1).select(table(new), ctx(tmp_path, "x"))


def test_against_a_run_directory_builds_and_caches_index(tmp_path):
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["k0", "k1"], "text": [words(0, 30), words(50, 80)], "x": [1, 2]}),
                   run / "data" / "part-00000.parquet")
    sel = MinHashDedup(against=str(run), **EXACT).select(table([words(50, 80).upper(), words(0, 10)]), ctx(tmp_path))
    assert sel.extras["dup_of"].tolist() == ["k1", None]
    assert len(list((run / "minhash_index").glob("*/meta.json"))) == 1
    with pytest.raises(FileNotFoundError, match="neither"):
        MinHashDedup(against=str(tmp_path / "nothing")).select(table(["a"]), ctx(tmp_path, "y"))


def test_artifact_index_of_kept_rows(tmp_path):
    c = ctx(tmp_path)
    a = words(0, 30)
    MinHashDedup(save_index=True, **EXACT).select(table([a, a, words(40, 70)]), c)
    assert (c.artifact_dir / "minhash_index").is_dir()
    x = ctx(tmp_path, "x")
    MinHashDedup(**EXACT).select(table([a]), x)  # default: no artifact
    assert x.artifact_dir != c.artifact_dir and not (x.artifact_dir / "minhash_index").exists()
    idx = MinHashIndex.load(c.artifact_dir / "minhash_index")
    assert idx.ids.tolist() == ["r0", "r2"] and idx.keys.shape == (2, 128)


def test_shards_resume_and_parallel_match(tmp_path, monkeypatch):
    texts = pa.array([words(i, i + 12) for i in range(50)])
    params = MinHashDedup().signature_params()
    k1, v1 = compute_band_keys(texts, params, batch_size=16, work_dir=tmp_path)
    assert len(list((tmp_path / "shards").glob("*.npz"))) == 4

    def boom(*a, **k):
        raise AssertionError("recomputed a finished shard")

    monkeypatch.setattr(mi, "_shard_worker", boom)
    k2, v2 = compute_band_keys(texts, params, batch_size=16, work_dir=tmp_path)
    assert (k1 == k2).all() and (v1 == v2).all()
    monkeypatch.undo()
    k3, _ = compute_band_keys(texts, params, batch_size=16, num_proc=2)
    assert (k1 == k3).all()


@pytest.mark.parametrize("bad", [dict(threshold=1.5), dict(keep="best"), dict(bands=4), dict(bands=20, rows=10),
                                 dict(char_ngram=0), dict(backend="gpu"), dict(num_perm=0)])
def test_init_validates(bad):
    with pytest.raises(ValueError, match=list(bad)[0]):
        MinHashDedup(**bad)


def test_registered_and_through_select():
    import curate
    from curate.core.registry import get_stage

    assert get_stage("minhash_dedup") is MinHashDedup
    a = words(0, 30)
    ds, prov = curate.select([{"id": "a", "text": a}, {"id": "b", "text": a + " !"}, {"id": "c", "text": words(40, 80)}], schema="canonical",
                             method="minhash_dedup", return_provenance=True)
    assert sorted(ds["id"]) == ["a", "c"]
    row = {r["id"]: r for r in prov.to_pylist()}
    assert row["b"]["reason"] == "near_duplicate" and row["b"]["dup_of"] == "a"


def test_inspect_helpers():
    prov = pa.table({"id": ["a", "b", "c", "d", "e"], "dup_of": [None, "a", None, "a", "c"],
                     "dup_cluster": [0, 0, -1, 0, None]})
    assert dup_clusters_from_provenance(prov) == {0: ["a", "b", "d"], 1: ["c", "e"]}
    out = format_dup_cluster([{"id": "a", "text": "the cat sat on the mat today"},
                              {"id": "b", "text": "the cat sat on a mat today", "reason": "near_duplicate"}],
                             kept_id="a", width=80)
    assert "KEPT a" in out and "DROP b  [near_duplicate]" in out and "[-the-] {+a+}" in out
    assert "cluster of 2 rows" in out


def test_chunked_large_string_column_same_result(tmp_path):
    a = words(0, 30)
    texts = [a, words(40, 80), a + " more", None, words(40, 80).upper()]
    plain = MinHashDedup(keep="longest", **EXACT).select(table(texts), ctx(tmp_path, "p"))
    t = table(texts).cast(pa.schema([("id", pa.string()), ("text", pa.large_string())]))
    chunked = pa.concat_tables([t.slice(0, 2), t.slice(2)])
    assert chunked.column("text").num_chunks == 2
    sel = MinHashDedup(keep="longest", batch_size=2, **EXACT).select(chunked, ctx(tmp_path, "c"))
    assert sel.keep.tolist() == plain.keep.tolist() == [False, True, True, True, False]
    assert sel.extras["dup_of"].tolist() == plain.extras["dup_of"].tolist() == ["r2", None, None, None, "r1"]


def _tokens_via_kernels(texts):
    """Token hashes of ascii_split_whitespace(normalize_texts(texts)), the documented definition."""
    import pyarrow.compute as pc

    from curate.dedup import minhash_core as mc

    toks = pc.ascii_split_whitespace(normalize_texts(pa.array(texts, pa.string()), True,
                                                     collapse_whitespace=False)).to_pylist()
    joined = pa.array([" ".join(t) for t in toks], pa.large_string())
    data, off = mc._string_buffers(joined)
    buf = np.zeros(len(data) + 8, np.uint8)
    buf[:len(data)] = data
    return mc._split_hash(buf, off)


def test_fused_word_tokens_equal_normalize_texts_tokens():
    # The fused numpy path (normalise + split + hash per shard) must give the tokens of the
    # documented kernels: Unicode folding, numbers, controls, long tokens, rows back to back.
    from curate.dedup.minhash_core import normalized_word_token_hashes

    tricky = ["Hello,   World! 3.14 is PI.", "Café  naïve_x", None, "a\tb\nc", "", "   ", "x", "ab",
              "1\u03012 and 1\u0301.5 3.4.5.6 1.2.3", "ΟΔΟΣ ΣΑΣ İstanbul ǅ ß ﬁ Ω K Å", "a\x01b c\x7fd", "é\x01x",
              "\u037e1;2", "“quoted” — dash… emoji 😀🎉 中文字符 한국어 العربية", "\u00a0nbsp\u2028ls\u3000ideo",
              "endword", "startword", "abcdefghi" * 9 + " short", "\x85nel", "\x1cé x\x1d", "é \x1f", "ab\x1e",
              "y" * 8, "z" * 9, "w" * 16, "v" * 17, "u" * 64, "t" * 65, "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 3,
              "ⅷ ² ① ．全角 𝐀𝐁𝐂"]
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ019.,;:!? \t\n_-") + ["é", "É", "\u0301", "ß", "—", "“", "\u00a0", "中", "😀", "\x01",
                                                  "İ", "\x1c", "\x85", "\u037e", "\u00b2"]
    rand = ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(2000)]
    for texts in (tricky, rand, [t for t in rand if "\x85" not in t and "\x1c" not in t]):
        want, want_off = _tokens_via_kernels(texts)
        got, got_off = normalized_word_token_hashes(pa.array(texts, pa.string()))
        assert got_off.tolist() == want_off.tolist()
        assert (got == want).all()


def test_shingle_hash_properties_after_fused_path():
    sh, off = shingle_hashes(pa.array(["one two three four five six", "zero One two THREE four five!",
                                       "five four three two one", "Two words", "two   WORDS.", "two words more"]))
    s = [set(sh[off[i]:off[i + 1]].tolist()) for i in range(6)]
    assert len(s[0] & s[1]) == 1  # "one two three four five" anywhere in the text
    assert not (s[0] & s[2])  # order-sensitive
    assert s[3] == s[4] and len(s[3]) == 1 and not (s[3] & s[5])  # short-text rule


def test_index_from_older_shingle_hashes_is_refused(tmp_path):
    from curate.dedup.minhash_core import SHINGLE_HASH_VERSION

    stage = MinHashDedup(**EXACT)
    params = stage.signature_params()
    assert params["algorithm"].endswith(f"shingle-{SHINGLE_HASH_VERSION}")
    kw = {k: v for k, v in params.items() if k != "algorithm"}
    idx = MinHashIndex.build(["c0"], [words(0, 40)], **kw)
    idx.params["algorithm"] = "rensa-rminhash-2"  # what a version-1 index recorded
    idx.save(tmp_path / "old")
    with pytest.raises(ValueError, match="algorithm"):
        MinHashDedup(against=str(tmp_path / "old"), **EXACT).select(table([words(0, 40)]), ctx(tmp_path))


def test_fold_numbers_matches_the_number_regex():
    import re

    from curate.dedup.minhash_core import _fold_numbers

    rng = np.random.default_rng(3)
    for alphabet in ("0123456789..ab ", "0.1.", "0."):
        rows = ["".join(rng.choice(list(alphabet), size=int(rng.integers(0, 30)))) for _ in range(3000)]
        rows += ["1.2.3", "1.2.3.4", "..1..2.", "12.34.56.78.9", "", "1.", "2", ".3", "1", ".", "2"]
        data = np.frombuffer("".join(rows).encode(), np.uint8)
        offs = np.r_[0, np.cumsum([len(r) for r in rows])].astype(np.int64)
        out, new = _fold_numbers(data, offs)
        got = [bytes(out[new[i]:new[i + 1]]).decode() for i in range(len(rows))]
        assert got == [re.sub(r"[0-9]+(\.[0-9]+)?", "0", r) for r in rows]


def test_exact_check_in_small_batches_gives_the_same_selection(tmp_path, monkeypatch):
    # many small candidate clusters, some with a pair below the threshold
    texts = []
    for k in range(12):
        a = words(k * 50, k * 50 + 24)
        texts += [a, a + " " + words(9000 + k * 10, 9002 + k * 10), a + " " + words(9500 + k * 10, 9506 + k * 10)]
    whole = MinHashDedup(threshold=0.8).select(table(texts), ctx(tmp_path / "a"))
    import dataclasses

    plan = MinHashDedup.plan
    monkeypatch.setattr(MinHashDedup, "plan", lambda self, *a: dataclasses.replace(plan(self, *a), verify_rows=3))
    batched = MinHashDedup(threshold=0.8).select(table(texts), ctx(tmp_path / "b"))
    assert len(list((tmp_path / "b" / "w" / "minhash").glob("check-*/*.npz"))) == 12  # one batch per group
    assert whole.keep.tolist() == batched.keep.tolist()
    assert whole.extras["dup_of"].tolist() == batched.extras["dup_of"].tolist()
    assert whole.n_kept == 24  # per group: the base and its J=0.769 variant stay, the 0.909 one goes


def test_fineweb_preset_is_fineweb_minhash_and_refuses_conflicts():
    from curate.dedup.minhash import MinHashDedup

    m = MinHashDedup(preset="fineweb")
    assert (m.band_shape(), m.num_perm, m.ngram, m.check_false_positives, m.keep) == ((14, 8), 112, 5, False, "first")
    assert MinHashDedup(**m.get_params()).get_params() == m.get_params()  # parameters round-trip
    assert MinHashDedup(preset="fineweb", num_perm=112).num_perm == 112  # the preset's own value is fine
    with pytest.raises(ValueError, match="bands=9 conflicts with preset='fineweb'"):
        MinHashDedup(preset="fineweb", bands=9, rows=13)
    with pytest.raises(ValueError, match="preset must be one of"):
        MinHashDedup(preset="gopher")
