"""``minhash_dedup`` on Chinese/Japanese text: per-pair decisions, English side effects, speed.

Three shingle settings are compared on the same labelled pairs, with the stage's own signature
parameters (``MinHashDedup(threshold=t, ngram_unspaced=...).signature_params()``: 128
permutations, the FP/FN-optimal bands, seed 42, rensa):

* ``ngram_unspaced=3`` (the default since commit 02feb77): a row holding a character of a
  script written without spaces (Chinese, Japanese, Thai, ...) is shingled by 3 units, each such
  character being one unit (``curate.core.text_units``); NFKD folding;
* ``ngram_unspaced=5``: the same units, 5 at a time (``ngram_unspaced=None`` is the same thing:
  ``ngram`` = 5 for every row);
* ``whitespace 5-grams (before 02feb77)``: the old behaviour, emulated here (the old code is not
  importable): NFD instead of NFKD, no space around unspaced characters, so ``str.split()``
  words of the normalised text (a Chinese sentence is one "word") taken 5 at a time; band keys
  from the same signature code with the same bands x rows.

The decision for a pair is the stage's: the two texts share at least one LSH band key AND
their exact Jaccard (``pair_jaccard`` of ``shingle_hashes``, what the stage's exact check
computes) is >= t. Reported per edit kind, overall and per language: recall on the
near-duplicates, and on the non-duplicates the share flagged (false-positive rate); precision =
flagged duplicates / all flagged pairs. A cross-check runs the stage itself
(``MinHashDedup.select``) on the distinct texts of the pairs and counts the pairs whose "same
cluster" outcome differs from the per-pair decision (possible only through transitive links).

Inputs (labelled pairs, ``benchmarks/data/README.md``): ``runs/cjk/cjk_pairs.jsonl`` (1,200
pairs, git-ignored, rebuilt by ``python benchmarks/build_cjk_pairs.py /tmp/debs/ex``) when
present, and the committed 370-pair subset ``benchmarks/data/cjk_pairs.jsonl``.

The same paragraph in zh_CN and in zh_TW (``runs/cjk/paragraphs.jsonl``, aligned as in
``embed_cjk.py``): Jaccard and how many the stage would pair (it does not fold simplified and
traditional characters).

English (needs the data folder with ``instruct/dolly_15k.json`` and ``alpaca_44k.json``; skipped
without it):

* the labelled perturbations of ``minhash_quality.py`` (59,646 Dolly + Alpaca rows, 500
  perturbed copies per type, seed 0): the same per-pair decisions for the three settings, plus
  random pairs of different real rows as negatives, and the stage with its defaults on the
  whole 64,146-row corpus at each threshold, scored exactly as ``minhash_quality.py`` scores it
  (its committed table in ``docs/dedup.md`` is the "before" figure);
* which real rows' shingle sets changed with 02feb77 (old emulation vs the new Arrow path,
  the same token hash for both): how many, how many hold unspaced-script characters, and which
  compatibility characters NFKD folds in the others.

Throughput: ``text_band_keys`` (the stage's per-shard work: normalise, shingle, sign, band)
with the default parameters at t = 0.8 on the CJK paragraphs (``runs/cjk/paragraphs.jsonl``, or
the pairs' texts) and on English paragraphs of about the same number of characters (Dolly
``context`` fields, in file order, from the data folder or ``sample_data/dolly_2k.jsonl``), in
``--rounds`` alternating rounds of ``--repeat`` calls per set, the fastest call kept; rows/s, characters/s
and UTF-8 MB/s, CJK / English ratio. Each set is timed twice: as is, and without the few rows
holding a character that sends a shard from the fused numpy path to the Arrow kernels
(full-width digits, "…", "²"), so both paths are compared like for like.

Usage::

    python benchmarks/minhash_cjk.py [--data "$CURATE_DATA"] [--out runs/minhash_cjk] [--record]

Writes ``<out>/minhash_cjk.{md,json}``; ``--record`` also writes
``benchmarks/results/minhash_cjk.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results_io import data_dir, write_results

from curate.core.stage import StageContext
from curate.core.text_units import has_unspaced, unspaced_mask
from curate.dedup.minhash import MinHashDedup
from curate.dedup.minhash_core import (
    _map_non_ascii,
    _normalize_ascii,
    _string_buffers,
    band_keys,
    merge_rows,
    minhash_signatures,
    ngram_hashes,
    normalize_texts,
    pair_jaccard,
    shingle_hashes,
    text_band_keys,
    word_token_hashes,
)

THRESHOLDS = (0.7, 0.8)
OLD = "whitespace 5-grams (before 02feb77)"
SETTINGS = {"ngram_unspaced=3 (default)": 3, "ngram_unspaced=5": 5, OLD: "old"}
CJK_KINDS = ("char_substitute", "char_delete", "char_insert", "punct", "width_swap", "sentence_append",
             "sentence_drop")


# ---- the behaviour before 02feb77, emulated ------------------------------------------------------
def old_normalize(texts: pa.Array) -> pa.Array:
    """The normalisation before 02feb77 (Arrow path): lower, NFD, no Mn, numbers -> 0, P/S/Z/_ -> " ".

    No space is put around unspaced-script characters, so a Chinese sentence stays one token.
    """
    texts = pc.coalesce(texts, pa.scalar("", pa.string()))
    nonascii = pc.invert(pc.string_is_ascii(texts))
    if not pc.any(nonascii).as_py():
        return _normalize_ascii(texts, False)
    uni = pc.utf8_normalize(pc.utf8_lower(texts.filter(nonascii)), form="NFD")
    uni = pc.replace_substring_regex(uni, r"\p{Mn}+", "")
    uni = pc.replace_substring_regex(uni, r"\d+(\.\d+)?", "0")
    uni = pc.replace_substring_regex(uni, r"[\p{P}\p{S}\p{Z}_]+", " ")
    uni = pc.utf8_trim_whitespace(uni)
    asc = _normalize_ascii(texts.filter(pc.invert(nonascii)), False) if not pc.all(nonascii).as_py() else None
    out = texts if asc is None else pc.replace_with_mask(texts, pc.invert(nonascii), asc)
    return pc.replace_with_mask(out, nonascii, uni)


def old_shingles(texts: pa.Array, ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace word n-grams of :func:`old_normalize` (xxh3 token hashes, curate's n-gram hash)."""
    tok, off = word_token_hashes(old_normalize(texts), normalized=True)
    return ngram_hashes(tok, off, ngram)


def new_shingles_arrow(texts: pa.Array, ngram: int = 5, ngram_unspaced: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The current shingles through the Arrow path (same token hash as :func:`old_shingles`).

    ``shingle_hashes`` uses a fused numpy path whose token hashes differ from the Arrow path's
    (same tokens, tested), so sets from the two paths are compared through this twin.
    """
    texts = pc.coalesce(texts, pa.scalar("", pa.string()))
    mask = unspaced_mask(texts)
    tok, off = word_token_hashes(normalize_texts(texts, True, collapse_whitespace=False), normalized=True)
    parts = []
    for rows, n in ((np.flatnonzero(~mask), ngram), (np.flatnonzero(mask), ngram_unspaced)):
        lens = off[rows + 1] - off[rows]  # the subset's token ranges, in row order
        idx = np.repeat(off[rows], lens) + (np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens))
        o = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(lens, out=o[1:])
        parts.append((rows, *ngram_hashes(tok[idx], o, n)))
    return merge_rows(parts, len(texts))


# ---- per-pair decisions --------------------------------------------------------------------------
def _params(t: float, setting) -> dict:
    p = MinHashDedup(threshold=t, ngram_unspaced=5 if setting == "old" else setting).signature_params()
    p.pop("algorithm")
    return p


def shingles_for(texts: pa.Array, setting) -> tuple[np.ndarray, np.ndarray]:
    if setting == "old":
        return old_shingles(texts)
    return shingle_hashes(texts, ngram=5, ngram_unspaced=setting)


def keys_for(texts: pa.Array, setting, t: float, sh: np.ndarray, off: np.ndarray):
    """(n, bands) band keys and (n,) valid, as the stage computes them."""
    p = _params(t, setting)
    if setting != "old":
        return text_band_keys(texts, **p)
    sig = minhash_signatures(sh, off, num_perm=p["num_perm"], seed=p["seed"], backend=p["backend"])
    return band_keys(sig, p["bands"], p["rows"]), np.diff(off) > 0


def pair_decisions(a_texts: list[str], b_texts: list[str], setting, thresholds=THRESHOLDS) -> dict:
    """Exact Jaccard and, per threshold, band collision and the stage's decision for each pair."""
    n = len(a_texts)
    texts = pa.array([x for ab in zip(a_texts, b_texts) for x in ab], pa.string())
    ia, ib = np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2)
    sh, off = shingles_for(texts, setting)
    jac = pair_jaccard(sh, off, ia, ib)
    out = {"jaccard": jac}
    for t in thresholds:
        keys, valid = keys_for(texts, setting, t, sh, off)
        collide = (keys[ia] == keys[ib]).any(axis=1) & valid[ia] & valid[ib]
        out[t] = {"collide": collide, "flag": collide & (jac >= t)}
    return out


def _rate(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def summarise(pairs: list[dict], dec: dict, t: float, group_key: str, groups) -> list[dict]:
    label = np.array([p["label"] for p in pairs])
    g = np.array([p[group_key] for p in pairs])
    jac, flag, collide = dec["jaccard"], dec[t]["flag"], dec[t]["collide"]
    rows = []
    for name in list(groups) + ["all"]:
        m = np.ones(len(pairs), bool) if name == "all" else g == name
        pos, neg = m & (label == 1), m & (label == 0)
        tp, fp = int(flag[pos].sum()), int(flag[neg].sum())
        rows.append({
            "group": name, "positives": int(pos.sum()), "negatives": int(neg.sum()),
            "recall": _rate(flag[pos]),
            "share_J_ge_t": _rate(jac[pos] >= t),  # the ceiling: what a perfect LSH would find
            "lsh_missed": int((pos & (jac >= t) & ~collide).sum()),
            "median_J_pos": float(np.median(jac[pos])) if pos.any() else float("nan"),
            "negatives_flagged": fp, "fp_rate": _rate(flag[neg]),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "max_J_neg": float(jac[neg].max()) if neg.any() else float("nan"),
            "negatives_colliding": int(collide[neg].sum()),
        })
    return rows


def stage_crosscheck(pairs: list[dict], setting: int, t: float, flag: np.ndarray) -> dict:
    """Run the stage on the pairs' distinct texts; count pairs whose same-cluster outcome differs."""
    texts = list(dict.fromkeys([x for p in pairs for x in (p["a"], p["b"])]))
    pos = {x: i for i, x in enumerate(texts)}
    table = pa.table({"id": [f"t{i}" for i in range(len(texts))], "text": texts})
    st = MinHashDedup(threshold=t, ngram_unspaced=setting, save_index=False)
    with tempfile.TemporaryDirectory() as d:
        sel = st.select(table, StageContext(work_dir=Path(d), show_progress=False))
    cl = np.asarray(sel.extras["dup_cluster"])
    same = np.array([cl[pos[p["a"]]] >= 0 and cl[pos[p["a"]]] == cl[pos[p["b"]]] for p in pairs])
    return {"texts": len(texts), "dropped": int((~sel.keep).sum()), "disagreements": int((same != flag).sum())}


def run_cjk(path: Path) -> dict:
    pairs = [json.loads(line) for line in path.open(encoding="utf-8")]
    langs = sorted({p["lang"] for p in pairs})
    res = {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), "pairs": len(pairs),
           "positives": sum(p["label"] for p in pairs), "settings": {}}
    a, b = [p["a"] for p in pairs], [p["b"] for p in pairs]
    for name, setting in SETTINGS.items():
        dec = pair_decisions(a, b, setting)
        per = {}
        for t in THRESHOLDS:
            per[str(t)] = {"bands_rows": list(MinHashDedup(threshold=t).band_shape()),
                           "by_kind": summarise(pairs, dec, t, "kind", CJK_KINDS),
                           "by_lang": summarise(pairs, dec, t, "lang", langs)}
            if setting != "old":
                per[str(t)]["stage_crosscheck"] = stage_crosscheck(pairs, setting, t, dec[t]["flag"])
        res["settings"][name] = per
    return res


def run_cn_tw(paragraphs: list[dict]) -> dict:
    """The same paragraph in zh_CN and zh_TW (manpages-zh converts its pages): does MinHash pair them?"""
    from embed_cjk import align_cn_tw

    aligned = align_cn_tw(paragraphs)
    a, b = [x[1] for x in aligned], [x[2] for x in aligned]
    out = {"pairs": len(aligned), "settings": {}}
    for name, setting in SETTINGS.items():
        dec = pair_decisions(a, b, setting)
        j = dec["jaccard"]
        out["settings"][name] = {"median_J": float(np.median(j)), "p90_J": float(np.percentile(j, 90)),
                                 "max_J": float(j.max()),
                                 "flagged": {str(t): int(dec[t]["flag"].sum()) for t in THRESHOLDS}}
    return out


# ---- English ---------------------------------------------------------------------------------------
def run_english(data: Path, per_type: int, seed: int = 0) -> dict:
    from minhash_common import PERTURBATIONS, build_labelled, load_real_texts
    from minhash_quality import Sets, evaluate

    texts = load_real_texts(data)
    corpus, pairs = build_labelled(texts, per_type)
    rng = np.random.default_rng(seed)
    neg_a = rng.integers(0, len(texts), len(pairs))
    neg_b = (neg_a + rng.integers(1, len(texts), len(pairs))) % len(texts)
    lab = [{"label": 1, "kind": name} for _, _, name in pairs] + [{"label": 0, "kind": "random_pair"}] * len(pairs)
    A = [corpus[s] for s, _, _ in pairs] + [texts[i] for i in neg_a]
    B = [corpus[c] for _, c, _ in pairs] + [texts[i] for i in neg_b]
    out = {"real_rows": len(texts), "labelled_pairs": len(pairs), "random_negative_pairs": len(pairs),
           "per_type": per_type, "pairwise": {}, "stage": {}}
    for name, setting in SETTINGS.items():
        dec = pair_decisions(A, B, setting)
        out["pairwise"][name] = {str(t): summarise(lab, dec, t, "kind", PERTURBATIONS) for t in THRESHOLDS}
    # the stage with its defaults on the whole corpus, scored as minhash_quality.py scores it
    table = pa.table({"id": [f"r{i}" for i in range(len(corpus))], "text": corpus})
    sets = Sets(corpus)
    pair_j = np.array([sets.j(s, c) for s, c, _ in pairs])
    copy_type = {c: name for _, c, name in pairs}
    for t in THRESHOLDS:
        st = MinHashDedup(threshold=t, save_index=False)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            sel = st.select(table, StageContext(work_dir=Path(d), show_progress=False))
            secs = time.perf_counter() - t0
        rows, biggest = evaluate(sel.extras["dup_cluster"], pairs, pair_j, sets, t, copy_type)
        out["stage"][str(t)] = {"bands_rows": list(st.band_shape()), "dropped": int((~sel.keep).sum()),
                                "largest_cluster": biggest, "seconds": secs, "metrics": rows}
    out["changed_rows"] = changed_rows(texts)
    return out


def changed_rows(texts: list[str]) -> dict:
    """Real rows whose shingle set differs between the old emulation and the current code."""
    arr = pa.array(texts, pa.string())
    nonascii = np.flatnonzero(~np.asarray(pc.string_is_ascii(arr).to_numpy(zero_copy_only=False), bool))
    sub = arr.take(pa.array(nonascii))  # an ASCII row is normalised exactly as before
    so, oo = old_shingles(sub)
    sn, on = new_shingles_arrow(sub)
    changed = [int(nonascii[i]) for i in range(len(sub))
               if not np.array_equal(np.unique(so[oo[i]:oo[i + 1]]), np.unique(sn[on[i]:on[i + 1]]))]
    unspaced = [i for i in changed if has_unspaced(texts[i])]
    # of those, the rows whose tokens changed (the others hold isolated CJK characters only: same
    # tokens, but the whole row is now shingled by 3 units instead of 5)
    pos = {int(r): k for k, r in enumerate(nonascii)}
    sub_u = sub.take(pa.array([pos[i] for i in unspaced], pa.int64()))
    tok_new = normalize_texts(sub_u, True, collapse_whitespace=False).to_pylist()
    tok_old = old_normalize(sub_u).to_pylist()
    n_tok = sum(x.split() != y.split() for x, y in zip(tok_new, tok_old))
    folded = Counter()
    for i in changed:
        if i in set(unspaced):
            continue
        for ch in set(texts[i]):
            if ord(ch) > 127 and unicodedata.normalize("NFKD", ch) != unicodedata.normalize("NFD", ch):
                folded[ch] += 1
    return {"rows": len(texts), "non_ascii_rows": len(nonascii), "changed": len(changed),
            "with_unspaced_characters": len(unspaced), "with_unspaced_tokens_changed": n_tok,
            "other": len(changed) - len(unspaced),
            "other_rows_by_folded_character": folded.most_common(20),
            "changed_ids": changed[:50]}


# ---- throughput ------------------------------------------------------------------------------------
def english_paragraphs(data: Path | None, n_chars: int) -> tuple[list[str], str]:
    src = None
    if data is not None and (data / "instruct" / "dolly_15k.json").exists():
        rows = json.loads((data / "instruct" / "dolly_15k.json").read_text())
        src = "dolly_15k.json contexts"
    else:
        rows = [json.loads(x) for x in (ROOT / "sample_data" / "dolly_2k.jsonl").open()]
        src = "sample_data/dolly_2k.jsonl contexts"
    out, tot = [], 0
    for r in rows:
        c = (r.get("input") or r.get("context") or "").strip()
        if c:
            out.append(c)
            tot += len(c)
            if tot >= n_chars:
                break
    if tot < n_chars:  # the 2k sample has fewer contexts: add outputs
        for r in rows:
            if tot >= n_chars:
                break
            o = (r.get("output") or "").strip()
            if o:
                out.append(o)
                tot += len(o)
        src += " + outputs"
    return out, src


def kernel_rows(texts: list[str]) -> np.ndarray:
    """(n,) bool: rows holding a character that sends a whole shard to the Arrow kernels.

    ``shingle_hashes``' fused numpy path maps each distinct non-ASCII character once; a
    character whose mapping could differ from the whole-string kernels (e.g. full-width digits,
    which NFKD makes ASCII digits, or "²") sends the shard it is in to ``normalize_texts``.
    """
    from curate.dedup.minhash_core import _cp_replacements

    cps = np.array(sorted({ord(c) for t in texts for c in t if ord(c) > 127}), np.int64)
    bad = {chr(int(c)) for c, r in zip(cps, _cp_replacements(cps)) if r is None}
    return np.array([any(c in bad for c in t) for t in texts], bool)


def throughput(cjk: list[str], data: Path | None, rounds: int, repeat: int) -> dict:
    """text_band_keys on CJK vs English of the same size: all rows, and without the rows that force
    the Arrow-kernel path (so both paths are measured); alternating rounds of ``repeat`` calls per
    set, the fastest call of all kept."""
    en, en_src = english_paragraphs(data, sum(map(len, cjk)))
    sets = {"cjk": cjk, "english": en}
    for name in ("cjk", "english"):
        k = kernel_rows(sets[name])
        sets[f"{name}, without the {int(k.sum())} rows that force the kernels"] = [t for t, x in zip(sets[name], k) if not x]
    arrays = {k: pa.array(v, pa.string()) for k, v in sets.items()}
    p, p5 = _params(0.8, 3), _params(0.8, 5)
    names = list(sets)
    jobs = [(names[0], "ngram_unspaced=3 (default)", p), (names[0], "ngram_unspaced=5", p5),
            (names[1], "ngram_unspaced=3 (default)", p), (names[2], "ngram_unspaced=3 (default)", p),
            (names[3], "ngram_unspaced=3 (default)", p)]
    best = [float("inf")] * len(jobs)
    text_band_keys(arrays["cjk"][:200], **p)  # warm up (rensa import, permutations)
    for r in range(rounds):
        for j in (range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs)))):
            name, _, params = jobs[j]
            for _ in range(repeat):
                t0 = time.perf_counter()
                text_band_keys(arrays[name], **params)
                best[j] = min(best[j], time.perf_counter() - t0)
    out = {"english_source": en_src, "rounds": rounds, "repeat": repeat, "bands_rows": [p["bands"], p["rows"]],
           "runs": []}
    for (name, setting, params), secs in zip(jobs, best):
        v = sets[name]
        nbytes = sum(len(x.encode("utf-8")) for x in v)
        _, off = shingle_hashes(arrays[name], ngram=5, ngram_unspaced=params["ngram_unspaced"])
        out["runs"].append({"texts": name, "setting": setting, "rows": len(v), "chars": sum(map(len, v)),
                            "mb": nbytes / 1e6, "shingles_per_row": float(np.diff(off).mean()),
                            "fused_path": _map_non_ascii(*_string_buffers(arrays[name])) is not None,
                            "seconds": secs, "rows_per_s": len(v) / secs,
                            "chars_per_s": sum(map(len, v)) / secs, "mb_per_s": nbytes / 1e6 / secs})
    for x in out["runs"]:  # against the English run on the same path
        ref = next(y for y in out["runs"] if y["texts"].startswith("english") and y["fused_path"] == x["fused_path"])
        for m in ("rows_per_s", "chars_per_s", "mb_per_s"):
            x[f"{m}_vs_english"] = x[m] / ref[m]
    return out


# ---- report ----------------------------------------------------------------------------------------
def _f(x, nd=3):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def markdown(res: dict) -> str:
    md = ["## minhash_dedup on Chinese/Japanese near-duplicates (`benchmarks/minhash_cjk.py`)", "",
          ("Decision per pair as the stage makes it: a shared LSH band key (stage defaults: 128 permutations, "
          "FP/FN-optimal bands, seed 42, rensa) AND exact Jaccard >= t. Recall over the near-duplicates; "
          "'flagged' = non-duplicates (other paragraphs of the same page, or of another page) the stage would "
          "drop ('sharing a band': LSH candidates before the exact check); precision = flagged duplicates / all "
          "flagged. 'J>=t' = share of near-duplicates whose exact "
          "Jaccard reaches t (what a perfect LSH would find); 'LSH miss' = pairs with J>=t and no shared band."), ""]
    for c in res["cjk"]:
        md += [f"### {c['file']}: {c['pairs']} pairs ({c['positives']} near-duplicates)", "",
               ("| setting | t | b x r | recall | J>=t | LSH miss | negatives sharing a band | negatives flagged | precision | "
               "max J of a negative | stage run disagrees |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, per in c["settings"].items():
            for t, x in per.items():
                a = x["by_kind"][-1]
                cc = x.get("stage_crosscheck")
                md.append(f"| {name} | {t} | {x['bands_rows'][0]} x {x['bands_rows'][1]} | {_f(a['recall'])} | "
                          f"{_f(a['share_J_ge_t'])} | {a['lsh_missed']} | {a['negatives_colliding']} | "
                          f"{a['negatives_flagged']} of {a['negatives']} "
                          f"| {_f(a['precision'])} | {_f(a['max_J_neg'], 2)} | "
                          f"{'-' if cc is None else str(cc['disagreements']) + ' pairs'} |")
        md += ["", "Recall per edit kind (t = 0.7 / t = 0.8):", "",
               "| edit | pairs | " + " | ".join(c["settings"]) + " |", "|---|---|" + "---|" * len(c["settings"])]
        names = list(c["settings"])
        for i, kind in enumerate(list(CJK_KINDS) + ["all"]):
            cells = []
            for name in names:
                r7, r8 = (c["settings"][name][str(t)]["by_kind"][i] for t in THRESHOLDS)
                cells.append(f"{_f(r7['recall'])} / {_f(r8['recall'])}")
            md.append(f"| {kind} | {c['settings'][names[0]]['0.7']['by_kind'][i]['positives']} | " + " | ".join(cells) + " |")
        md += ["", "Per language (recall t = 0.7 / 0.8; negatives flagged at 0.7):", "",
               "| lang | pairs | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for i, g in enumerate(c["settings"][names[0]]["0.7"]["by_lang"]):
            cells = []
            for name in names:
                r7, r8 = (c["settings"][name][str(t)]["by_lang"][i] for t in THRESHOLDS)
                cells.append(f"{_f(r7['recall'])} / {_f(r8['recall'])}; {r7['negatives_flagged']}")
            md.append(f"| {g['group']} | {g['positives'] + g['negatives']} | " + " | ".join(cells) + " |")
        md.append("")
    ct = res.get("cn_tw")
    if ct:
        md += [(f"### The same paragraph in zh_CN and zh_TW ({ct['pairs']} paragraphs of `runs/cjk/paragraphs.jsonl` "
               "aligned as in `embed_cjk.py`): simplified/traditional conversion is not undone"), "",
               "| setting | median J | 90th percentile J | max J | flagged at t = 0.7 | at 0.8 |", "|---|---|---|---|---|---|"]
        for name, x in ct["settings"].items():
            md.append(f"| {name} | {_f(x['median_J'], 2)} | {_f(x['p90_J'], 2)} | {_f(x['max_J'], 2)} | "
                      f"{x['flagged']['0.7']} of {ct['pairs']} | {x['flagged']['0.8']} |")
        md.append("")
    en = res.get("english")
    if en:
        md += [(f"### English: the perturbations of `minhash_quality.py` ({en['labelled_pairs']:,} labelled pairs from "
               f"{en['real_rows']:,} Dolly + Alpaca rows, {en['per_type']} per type; {en['random_negative_pairs']:,} "
               "random pairs of different real rows as negatives)"), "",
               "Per-pair decisions (recall t = 0.7 / 0.8):", "",
               "| perturbation | pairs | " + " | ".join(en["pairwise"]) + " |", "|---|---|" + "---|" * len(en["pairwise"])]
        names = list(en["pairwise"])
        n_rows = len(en["pairwise"][names[0]]["0.7"])
        for i in range(n_rows):
            g = en["pairwise"][names[0]]["0.7"][i]
            cells = []
            for name in names:
                r7, r8 = (en["pairwise"][name][str(t)][i] for t in THRESHOLDS)
                cells.append(f"{_f(r7['recall'])} / {_f(r8['recall'])}")
            md.append(f"| {g['group']} | {g['positives']} | " + " | ".join(cells) + " |")
        md.append("| share with J>=t (the ceiling) | | " + " | ".join(
            f"{_f(en['pairwise'][n]['0.7'][-1]['share_J_ge_t'])} / {_f(en['pairwise'][n]['0.8'][-1]['share_J_ge_t'])}"
            for n in names) + " |")
        for name in names:
            md.append(f"\n{name}: random pairs flagged {en['pairwise'][name]['0.7'][-1]['negatives_flagged']} (t=0.7), "
                      f"{en['pairwise'][name]['0.8'][-1]['negatives_flagged']} (t=0.8) of {en['random_negative_pairs']:,}.")
        md += ["", ("The stage with its defaults on the whole corpus (scored as `minhash_quality.py` does; compare its "
               "committed table, made before 02feb77):"), "",
               "| t | b x r | rows dropped | precision | recall (J>=t) | F1 | recall (label, any J) |", "|---|---|---|---|---|---|---|"]
        for t, s in en["stage"].items():
            a = s["metrics"][-1]
            md.append(f"| {t} | {s['bands_rows'][0]} x {s['bands_rows'][1]} | {s['dropped']:,} | {_f(a['precision'])} | "
                      f"{_f(a['recall'])} | {_f(a['f1'])} | {_f(a['recall_label'])} |")
        ch = en["changed_rows"]
        md += ["", f"Rows whose word-shingle set changed with 02feb77: {ch['changed']} of {ch['rows']:,} "
               f"({ch['non_ascii_rows']:,} rows hold a non-ASCII character; ASCII rows cannot change): "
               f"{ch['with_unspaced_characters']} hold unspaced-script characters (CJK/Thai: the whole row is now "
               f"shingled by 3 units; in {ch['with_unspaced_tokens_changed']} of them the tokens changed too, the "
               "others hold only isolated characters), "
               f"{ch['other']} hold compatibility characters that NFKD folds and NFD did not. Those characters "
               "(rows holding each): " + ", ".join(f"{k!r} ({v})" for k, v in ch["other_rows_by_folded_character"]) + "."]
        md.append("")
    tp = res.get("throughput")
    if tp:
        md += [(f"### Throughput: `text_band_keys` (t = 0.8: {tp['bands_rows'][0]} x {tp['bands_rows'][1]}), fastest call of "
               f"{tp['rounds']} alternating rounds x {tp['repeat']} calls per set; English = {tp['english_source']}; ratios "
               "against the English run on the same path"), "",
               ("| texts | setting | rows | characters | UTF-8 MB | shingles/row | fused numpy path | rows/s | "
               "characters/s | MB/s | vs English (rows/s, chars/s, MB/s) |"), "|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in tp["runs"]:
            md.append(f"| {x['texts']} | {x['setting']} | {x['rows']:,} | {x['chars']:,} | {x['mb']:.2f} | "
                      f"{x['shingles_per_row']:.0f} | {'yes' if x['fused_path'] else 'no (Arrow kernels)'} | "
                      f"{x['rows_per_s']:,.0f} | {x['chars_per_s']:,.0f} | {x['mb_per_s']:.2f} | "
                      f"{x['rows_per_s_vs_english']:.2f}x, {x['chars_per_s_vs_english']:.2f}x, {x['mb_per_s_vs_english']:.2f}x |")
        md.append("")
    md.append(f"Command: `{res['command']}`")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(data_dir()),
                    help="folder with instruct/dolly_15k.json and alpaca_44k.json (English parts)")
    ap.add_argument("--pairs", nargs="*", default=None,
                    help="labelled pair files (default: runs/cjk/cjk_pairs.jsonl if present, and the committed "
                         "benchmarks/data/cjk_pairs.jsonl)")
    ap.add_argument("--paragraphs", default=str(ROOT / "runs" / "cjk" / "paragraphs.jsonl"))
    ap.add_argument("--per-type", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="calls per timing (throughput)")
    ap.add_argument("--skip-english", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "runs" / "minhash_cjk"))
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/minhash_cjk.{md,json}")
    args = ap.parse_args()
    data = Path(args.data)
    if args.pairs is None:
        full = ROOT / "runs" / "cjk" / "cjk_pairs.jsonl"
        pair_files = ([full] if full.exists() else []) + [ROOT / "benchmarks" / "data" / "cjk_pairs.jsonl"]
    else:
        pair_files = [Path(x) for x in args.pairs]
    res = {"command": "python benchmarks/minhash_cjk.py " + " ".join(sys.argv[1:]), "thresholds": list(THRESHOLDS)}
    t0 = time.perf_counter()
    res["cjk"] = [run_cjk(p) for p in pair_files]
    pp = Path(args.paragraphs)
    paragraphs = [json.loads(x) for x in pp.open(encoding="utf-8")] if pp.exists() else None
    if paragraphs is not None:
        res["cn_tw"] = run_cn_tw(paragraphs)
    print(f"cjk pairs: {time.perf_counter() - t0:.1f}s", flush=True)
    if not args.skip_english and (data / "instruct" / "dolly_15k.json").exists():
        t0 = time.perf_counter()
        res["english"] = run_english(data, args.per_type)
        print(f"english: {time.perf_counter() - t0:.1f}s", flush=True)
    if not args.skip_throughput:
        if paragraphs is not None:
            cjk = [p["text"] for p in paragraphs]
            res["cjk_paragraphs"] = str(pp.relative_to(ROOT)) if pp.is_relative_to(ROOT) else str(pp)
        else:
            cjk = list(dict.fromkeys(json.loads(x)["a"] for f in pair_files for x in f.open(encoding="utf-8")))
            res["cjk_paragraphs"] = "the pairs' `a` texts"
        res["throughput"] = throughput(cjk, data if data.exists() else None, args.rounds, args.repeat)
    md = markdown(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "minhash_cjk.json").write_text(json.dumps(res, indent=1, default=str))
    (out / "minhash_cjk.md").write_text(md + "\n")
    if args.record:
        write_results("minhash_cjk", res, md, indent=1, default=str)
    else:
        print(md)


if __name__ == "__main__":
    main()
