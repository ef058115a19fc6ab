"""What the default embedder (all-MiniLM-L6-v2, English-trained) does with Chinese and Japanese.

Cosine similarity of the ``embed`` stage's default vectors (``Embed().encode``: onnx backend,
all-MiniLM-L6-v2, 256 word pieces, L2-normalised) for four kinds of CJK pairs built from real
paragraphs of Debian's translated manual pages (``benchmarks/build_cjk_pairs.py``):

* (a) the same paragraph in zh_CN and zh_TW: manpages-zh converts its zh_CN pages to zh_TW
  (characters and some vocabulary: 用户 -> 使用者), so the same page holds the same paragraphs.
  A zh_CN paragraph is paired with the zh_TW paragraph of the same page whose character multiset
  overlaps it most, when that is mutual, the overlap is >= 0.5 (paragraphs of different pages:
  median 0.12, max 0.36) and their ASCII words are the same sequence;
* (b) near-duplicate edits: the labelled positives of ``cjk_pairs.jsonl`` (one character
  substituted/deleted/inserted, punctuation, full-width/half-width, a sentence appended/dropped);
* (c) another paragraph of the same page (the pairs file's ``same_page`` negatives);
* (d) a paragraph of another page, same language (``diff_page`` negatives).

Separation: ROC AUC (probability that a random pair of the first kind scores above a random
pair of the second; ties count half) of (a) vs (c) (zh pairs of (c) only, as (a) is zh) and of
(b) vs (d), (b) vs (c); and at SemDeDup's usual eps (a pair is a duplicate when cosine >= 1 -
eps) the share of each kind that would be called a duplicate. Tokenizer statistics per language
([UNK] share of word pieces, pieces per character, share truncated at 256).

English, the same statistics where the data folder has them (``--data``; skipped without it):

* MRPC test (1,725 labelled sentence pairs, paraphrase or not: a hard-negative set like (a) vs (c));
* QQP: gold duplicate question pairs vs questions of two different gold clusters;
* Dolly ``context`` paragraphs: an edited copy (2% word typos, punctuation, 10% truncation,
  appended boilerplate: ``minhash_common.PERTURBATIONS``) vs another paragraph of the same
  context (consecutive blocks split at newlines) vs a paragraph of another context, the
  analogues of (b), (c), (d).

Usage::

    python benchmarks/embed_cjk.py [--data "$CURATE_DATA"] [--max-pairs 300] [--out runs/embed_cjk] [--record]

Writes ``<out>/embed_cjk.{md,json}``; ``--record`` also writes ``benchmarks/results/embed_cjk.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results_io import data_dir, write_results

EPS = (0.05, 0.1, 0.2, 0.3)
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC = P(pos > neg) + P(pos = neg) / 2 (Mann-Whitney), exact over all pairs."""
    pos, neg = np.asarray(pos, np.float64), np.asarray(neg, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    neg_sorted = np.sort(neg)
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    return float((lo + (hi - lo) / 2).sum() / (len(pos) * len(neg)))


def overlap(a: str, b: str) -> float:
    """Shared characters (multiset, spaces ignored) / the longer text's characters."""
    A, B = Counter(a.replace(" ", "")), Counter(b.replace(" ", ""))
    return sum((A & B).values()) / max(sum(A.values()), sum(B.values()), 1)


def align_cn_tw(paragraphs: list[dict]) -> list[tuple[str, str, str]]:
    """(page, zh_CN text, zh_TW text) of paragraphs that are the same text in both scripts."""
    by = defaultdict(lambda: {"zh_CN": [], "zh_TW": []})
    for p in paragraphs:
        if p["lang"] in ("zh_CN", "zh_TW"):
            by[p["page"]][p["lang"]].append(p["text"])
    out = []
    for page in sorted(by):
        cn, tw = by[page]["zh_CN"], by[page]["zh_TW"]
        if not cn or not tw:
            continue
        m = np.array([[overlap(a, b) for b in tw] for a in cn])
        for i in range(len(cn)):
            j = int(m[i].argmax())
            if int(m[:, j].argmax()) == i and m[i, j] >= 0.5 \
                    and _ASCII_WORD.findall(cn[i]) == _ASCII_WORD.findall(tw[j]):
                out.append((page, cn[i], tw[j]))
    return out


def sample(items: list, n: int, seed: int) -> list:
    if len(items) <= n:
        return items
    idx = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[i] for i in idx]


class Encoder:
    """Embed().encode over unique texts, memoised (one pass per text)."""

    def __init__(self):
        from curate.embed.stage import Embed

        self.stage = Embed(show_progress=False)
        self.vec: dict[str, np.ndarray] = {}
        self.seconds = 0.0

    def add(self, texts: list[str]) -> None:
        new = [t for t in dict.fromkeys(texts) if t not in self.vec]
        if new:
            t0 = time.perf_counter()
            v = self.stage.encode(new)
            self.seconds += time.perf_counter() - t0
            self.vec.update(zip(new, v))

    def cos(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        self.add([x for p in pairs for x in p])
        return np.array([float(self.vec[a] @ self.vec[b]) for a, b in pairs])


def describe(c: np.ndarray) -> dict:
    if not len(c):
        return {"n": 0}
    q = np.percentile(c, [0, 5, 25, 50, 75, 95, 100])
    return {"n": len(c), "mean": float(c.mean()), "min": q[0], "p5": q[1], "p25": q[2], "median": q[3],
            "p75": q[4], "p95": q[5], "max": q[6],
            "share_dup_at_eps": {str(e): float((c >= 1 - e).mean()) for e in EPS}}


def token_stats(texts_by_lang: dict[str, list[str]]) -> dict:
    from curate.embed.onnx_backend import _tokenizer, ensure_export

    graph = ensure_export(None)
    tok = _tokenizer(str(graph.parent / "tokenizer.json"))
    limit = int(json.loads((graph.parent / "curate_onnx.json").read_text())["max_seq_length"])
    out = {}
    for lang, texts in texts_by_lang.items():
        encs = tok.encode_batch(texts, add_special_tokens=False)
        pieces = sum(len(e.tokens) for e in encs)
        unk = sum(t == "[UNK]" for e in encs for t in e.tokens)
        out[lang] = {"texts": len(texts), "chars": sum(map(len, texts)), "pieces": pieces,
                     "unk_share": unk / max(pieces, 1), "pieces_per_char": pieces / max(sum(map(len, texts)), 1),
                     "truncated_share": float(np.mean([len(e.tokens) + 2 > limit for e in encs])),
                     "max_length": limit}
    return out


def run_cjk(enc: Encoder, paragraphs: list[dict] | None, pairs: list[dict], max_pairs: int, seed: int) -> dict:
    res = {"groups": {}, "by_lang": {}}
    groups: dict[str, list[tuple[str, str, str]]] = {}  # name -> (lang or kind, text, text)
    if paragraphs is not None:
        aligned = align_cn_tw(paragraphs)
        res["aligned_cn_tw"] = len(aligned)
        groups["a_cn_vs_tw"] = [("zh", a, b) for _, a, b in sample(aligned, max_pairs, seed)]
    groups["b_near_dup"] = [(p["lang"], p["a"], p["b"]) for p in pairs if p["label"] == 1]
    groups["c_same_page"] = [(p["lang"], p["a"], p["b"]) for p in pairs if p["kind"] == "same_page"]
    groups["d_diff_page"] = [(p["lang"], p["a"], p["b"]) for p in pairs if p["kind"] == "diff_page"]
    kinds_b = [p["kind"] for p in pairs if p["label"] == 1]
    for name in ("b_near_dup", "c_same_page", "d_diff_page"):
        if len(groups[name]) > max_pairs * 2:  # keep the language mix; subsample evenly
            keep = sample(list(range(len(groups[name]))), max_pairs * 2, seed)
            if name == "b_near_dup":
                kinds_b = [kinds_b[i] for i in keep]
            groups[name] = [groups[name][i] for i in keep]
    cos = {name: enc.cos([(a, b) for _, a, b in g]) for name, g in groups.items()}
    langs = {name: np.array([x[0] for x in g]) for name, g in groups.items()}
    for name, c in cos.items():
        res["groups"][name] = describe(c)
    zh_c = cos["c_same_page"][np.isin(langs["c_same_page"], ["zh_CN", "zh_TW"])]
    res["auc"] = {
        "a_vs_c_zh": auc(cos["a_cn_vs_tw"], zh_c) if "a_cn_vs_tw" in cos else float("nan"),
        "a_vs_d_zh": auc(cos["a_cn_vs_tw"], cos["d_diff_page"][np.isin(langs["d_diff_page"], ["zh_CN", "zh_TW"])])
        if "a_cn_vs_tw" in cos else float("nan"),
        "b_vs_d": auc(cos["b_near_dup"], cos["d_diff_page"]),
        "b_vs_c": auc(cos["b_near_dup"], cos["c_same_page"]),
        "c_vs_d": auc(cos["c_same_page"], cos["d_diff_page"]),
    }
    for lang in sorted(set(langs["b_near_dup"])):
        b = cos["b_near_dup"][langs["b_near_dup"] == lang]
        c = cos["c_same_page"][langs["c_same_page"] == lang]
        d = cos["d_diff_page"][langs["d_diff_page"] == lang]
        res["by_lang"][lang] = {"b": describe(b), "c": describe(c), "d": describe(d),
                                "auc_b_vs_d": auc(b, d), "auc_b_vs_c": auc(b, c)}
    kb = np.array(kinds_b)
    res["b_by_kind"] = {k: {"n": int((kb == k).sum()), "median": float(np.median(cos["b_near_dup"][kb == k])),
                            "auc_vs_d": auc(cos["b_near_dup"][kb == k], cos["d_diff_page"])}
                        for k in dict.fromkeys(kinds_b)}
    texts_by_lang = defaultdict(list)
    for g in ("b_near_dup", "c_same_page", "d_diff_page"):
        for lang, a, _ in groups[g]:
            texts_by_lang[lang].append(a)
    res["tokens"] = token_stats({k: list(dict.fromkeys(v)) for k, v in sorted(texts_by_lang.items())})
    return res


def run_english(enc: Encoder, data: Path, max_pairs: int, seed: int) -> dict:
    import csv

    from embed_cache import mrpc_pairs
    from minhash_common import PERTURBATIONS

    res = {"groups": {}, "auc": {}}
    rng = np.random.default_rng(seed)
    # MRPC test: paraphrase vs not (all pairs)
    sents, idx, lab = mrpc_pairs(data, "test")
    c = enc.cos([(sents[i], sents[j]) for i, j in idx])
    res["groups"]["mrpc_paraphrase"], res["groups"]["mrpc_not_paraphrase"] = describe(c[lab == 1]), describe(c[lab == 0])
    res["auc"]["mrpc"] = auc(c[lab == 1], c[lab == 0])
    # QQP: gold duplicate pairs vs questions of different gold clusters
    with open(data / "dedup" / "qqp_pairs.csv", newline="", encoding="utf-8") as f:
        qp = [(r["question1"], r["question2"]) for r in csv.DictReader(f) if r["is_duplicate"] == "1"]
    qp = sample(qp, max_pairs, seed)
    rows = [json.loads(x) for x in (data / "dedup" / "qqp_clusters.jsonl").open(encoding="utf-8")]
    qn = []
    while len(qn) < len(qp):
        i, j = rng.integers(0, len(rows), 2)
        if rows[i]["cluster"] != rows[j]["cluster"]:
            qn.append((rows[i]["text"], rows[j]["text"]))
    cp, cn = enc.cos(qp), enc.cos(qn)
    res["groups"]["qqp_duplicate"], res["groups"]["qqp_other_cluster"] = describe(cp), describe(cn)
    res["auc"]["qqp"] = auc(cp, cn)
    # Dolly contexts: edited copy / same context / other context
    dolly = json.loads((data / "instruct" / "dolly_15k.json").read_text())
    ctx = [r["input"].strip() for r in dolly if (r.get("input") or "").strip()]
    ctx = list(dict.fromkeys(ctx))
    blocks = [[b.strip() for b in re.split(r"\n+", t) if len(b.strip()) >= 100] for t in ctx]
    multi = [i for i, b in enumerate(blocks) if len(b) >= 2]
    pick = rng.permutation(multi)[:max_pairs]
    kinds = ["typos_2pct", "punctuation", "truncate_10pct", "boilerplate_append"]
    b_pairs, c_pairs, d_pairs, b_kind = [], [], [], []
    for k, i in enumerate(pick):
        p0 = blocks[i][0]
        kind = kinds[k % len(kinds)]
        b_pairs.append((p0, PERTURBATIONS[kind](p0, np.random.default_rng([seed, int(i)]))))
        b_kind.append(kind)
        c_pairs.append((p0, blocks[i][1]))
        j = int(rng.choice(multi))
        while j == i:
            j = int(rng.choice(multi))
        d_pairs.append((p0, blocks[j][0]))
    cb, cc, cd = enc.cos(b_pairs), enc.cos(c_pairs), enc.cos(d_pairs)
    res["groups"]["dolly_b_edited"], res["groups"]["dolly_c_same_context"] = describe(cb), describe(cc)
    res["groups"]["dolly_d_other_context"] = describe(cd)
    res["auc"]["dolly_b_vs_d"], res["auc"]["dolly_b_vs_c"] = auc(cb, cd), auc(cb, cc)
    res["auc"]["dolly_c_vs_d"] = auc(cc, cd)
    res["dolly_b_kinds"] = dict(Counter(b_kind))
    res["tokens"] = token_stats({"en (Dolly paragraphs)": list(dict.fromkeys(p[0] for p in b_pairs))})
    return res


def _f(x, nd=3):
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


GROUP_NAMES = {
    "a_cn_vs_tw": "(a) same paragraph, zh_CN vs zh_TW",
    "b_near_dup": "(b) near-duplicate edit",
    "c_same_page": "(c) other paragraph, same page",
    "d_diff_page": "(d) paragraph of another page",
    "mrpc_paraphrase": "MRPC paraphrase", "mrpc_not_paraphrase": "MRPC not a paraphrase",
    "qqp_duplicate": "QQP gold duplicate", "qqp_other_cluster": "QQP other gold cluster",
    "dolly_b_edited": "Dolly (b') edited copy", "dolly_c_same_context": "Dolly (c') next paragraph, same context",
    "dolly_d_other_context": "Dolly (d') paragraph of another context",
}


def _group_table(groups: dict) -> list[str]:
    md = ["| pairs | n | mean | p5 | median | p95 | min-max | " + " | ".join(f"cos >= {1 - e:.2f}" for e in EPS) + " |",
          "|---|---|---|---|---|---|---|" + "---|" * len(EPS)]
    for name, s in groups.items():
        md.append(f"| {GROUP_NAMES.get(name, name)} | {s['n']} | {_f(s['mean'])} | {_f(s['p5'])} | {_f(s['median'])} | "
                  f"{_f(s['p95'])} | {_f(s['min'], 2)}-{_f(s['max'], 2)} | "
                  + " | ".join(_f(s["share_dup_at_eps"][str(e)], 2) for e in EPS) + " |")
    return md


def markdown(res: dict) -> str:
    md = ["## The default embedder on Chinese/Japanese (`benchmarks/embed_cjk.py`)", "",
          (f"Model: {res['model']} through the `embed` stage's default backend ({res['backend']}); cosine of "
          "L2-normalised vectors. 'cos >= x' columns: share of the pairs SemDeDup would call duplicates at "
          f"eps = 1 - x. {res['texts_embedded']:,} distinct texts embedded in {res['embed_seconds']:.0f} s."), ""]
    c = res["cjk"]
    md += [(f"### CJK ({res['pairs_file']}; {c.get('aligned_cn_tw', 0)} zh_CN/zh_TW paragraphs aligned, "
           f"{c['groups'].get('a_cn_vs_tw', {}).get('n', 0)} used)"), ""]
    md += _group_table(c["groups"])
    a = c["auc"]
    md += ["", "| separation (ROC AUC) | value |", "|---|---|",
           f"| (a) same paragraph zh_CN/zh_TW vs (c) other paragraph of the page (zh) | {_f(a['a_vs_c_zh'])} |",
           f"| (a) vs (d) paragraph of another page (zh) | {_f(a['a_vs_d_zh'])} |",
           f"| (b) near-duplicate vs (d) another page | {_f(a['b_vs_d'])} |",
           f"| (b) near-duplicate vs (c) same page | {_f(a['b_vs_c'])} |",
           f"| (c) same page vs (d) another page | {_f(a['c_vs_d'])} |", "", "Per language:", "",
           "| lang | (b) median | (c) median | (d) median | AUC (b) vs (d) | AUC (b) vs (c) |", "|---|---|---|---|---|---|"]
    for lang, x in c["by_lang"].items():
        md.append(f"| {lang} | {_f(x['b'].get('median'))} | {_f(x['c'].get('median'))} | {_f(x['d'].get('median'))} | "
                  f"{_f(x['auc_b_vs_d'])} | {_f(x['auc_b_vs_c'])} |")
    md += ["", "(b) per edit kind:", "", "| edit | n | median cosine | AUC vs (d) |", "|---|---|---|---|"]
    for k, x in c["b_by_kind"].items():
        md.append(f"| {k} | {x['n']} | {_f(x['median'])} | {_f(x['auc_vs_d'])} |")
    md += ["", "Tokenizer (MiniLM's English word-piece vocabulary) on the paragraphs:", "",
           "| texts | n | characters | word pieces per character | [UNK] share of pieces | truncated (> max_length) |",
           "|---|---|---|---|---|---|"]
    toks = dict(c["tokens"])
    if res.get("english"):
        toks.update(res["english"]["tokens"])
    for lang, t in toks.items():
        md.append(f"| {lang} | {t['texts']} | {t['chars']:,} | {t['pieces_per_char']:.2f} | {t['unk_share']:.2f} | "
                  f"{t['truncated_share']:.2f} (at {t['max_length']}) |")
    en = res.get("english")
    if en:
        md += ["", "### English, same statistics", ""]
        md += _group_table(en["groups"])
        md += ["", "| separation (ROC AUC) | value |", "|---|---|",
               f"| MRPC paraphrase vs not (same-topic negatives) | {_f(en['auc']['mrpc'])} |",
               f"| QQP gold duplicate vs other cluster | {_f(en['auc']['qqp'])} |",
               f"| Dolly (b') edited copy vs (d') another context | {_f(en['auc']['dolly_b_vs_d'])} |",
               f"| Dolly (b') edited copy vs (c') same context | {_f(en['auc']['dolly_b_vs_c'])} |",
               f"| Dolly (c') same context vs (d') another context | {_f(en['auc']['dolly_c_vs_d'])} |", "",
               "Dolly edits: " + ", ".join(f"{k} ({v})" for k, v in en["dolly_b_kinds"].items()) + "."]
    md += ["", f"Command: `{res['command']}`"]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(data_dir()),
                    help="folder with dedup/mrpc_test.tsv, dedup/qqp_*.{csv,jsonl}, instruct/dolly_15k.json")
    ap.add_argument("--pairs", default=None, help="labelled pairs (default runs/cjk/cjk_pairs.jsonl if present, "
                                                  "else the committed benchmarks/data/cjk_pairs.jsonl)")
    ap.add_argument("--paragraphs", default=str(ROOT / "runs" / "cjk" / "paragraphs.jsonl"))
    ap.add_argument("--max-pairs", type=int, default=300,
                    help="(a), QQP and Dolly pairs per kind; (b), (c), (d) at most twice that")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-english", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "runs" / "embed_cjk"))
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/embed_cjk.{md,json}")
    args = ap.parse_args()
    full = ROOT / "runs" / "cjk" / "cjk_pairs.jsonl"
    pairs_path = Path(args.pairs) if args.pairs else (full if full.exists() else ROOT / "benchmarks" / "data" / "cjk_pairs.jsonl")
    pairs = [json.loads(x) for x in pairs_path.open(encoding="utf-8")]
    pp = Path(args.paragraphs)
    paragraphs = [json.loads(x) for x in pp.open(encoding="utf-8")] if pp.exists() else None
    enc = Encoder()
    res = {"command": "python benchmarks/embed_cjk.py " + " ".join(sys.argv[1:]),
           "model": "all-MiniLM-L6-v2 (default)", "backend": enc.stage.backend,
           "pairs_file": str(pairs_path.relative_to(ROOT)) if pairs_path.is_relative_to(ROOT) else str(pairs_path),
           "paragraphs_file": None if paragraphs is None else
           str(pp.resolve().relative_to(ROOT)) if pp.resolve().is_relative_to(ROOT) else str(pp)}
    res["cjk"] = run_cjk(enc, paragraphs, pairs, args.max_pairs, args.seed)
    print(f"cjk: {len(enc.vec)} texts, {enc.seconds:.0f}s", flush=True)
    data = Path(args.data)
    if not args.skip_english and (data / "dedup" / "mrpc_test.tsv").exists():
        res["english"] = run_english(enc, data, args.max_pairs, args.seed)
        print(f"english: {len(enc.vec)} texts, {enc.seconds:.0f}s", flush=True)
    res["texts_embedded"], res["embed_seconds"] = len(enc.vec), enc.seconds
    md = markdown(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_cjk.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "embed_cjk.md").write_text(md + "\n")
    if args.record:
        write_results("embed_cjk", res, md, indent=1, default=float)
    else:
        print(md)


if __name__ == "__main__":
    main()
