"""Parity of curate's FineWeb rule stages with datatrove 0.10.1 on the same documents.

For each stage (gopher_repetition, gopher_quality, c4_quality with FineWeb's setting,
fineweb_quality, pii, url_filter) and for FineWeb's whole rule chain, this reports how often
curate and datatrove agree on keep/drop, on the reason, and per rule on the value (to 1e-9) and
on the pass/fail flag; every disagreeing document is listed in the JSON. C4's rewritten text and
PII's output are compared exactly.

datatrove runs in its own virtualenv (never curate's), by this same file in ``--datatrove-side``
mode: ``python3 -m venv /tmp/dt-venv && /tmp/dt-venv/bin/pip install datatrove==0.10.1 spacy
tldextract pyahocorasick nltk fasteners``. Its per-rule values are recomputed from datatrove's own
helpers (``split_into_words``, ``find_duplicates``, ...), as its filters stop at the first failing
rule. The tldextract of both sides uses its bundled suffix list (TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS
set empty for datatrove), so both parse URLs alike.

Documents (CLI): ``--dclm`` (DCLM pages with human labels), ``--dolly`` (Dolly-15k contexts,
``--dolly-n`` of them, seeded), ``--docs`` (any JSONL or JSONL.gz with ``text`` and optional
``url``, e.g. ``sample_web/jsonl/manpages_l10n.jsonl.gz``, ``sample_web/planted/planted.jsonl.gz``;
repeatable; lines that are not UTF-8 are skipped). Besides these, PII is also run on planted texts with e-mails and
private/public IPs, and the URL filter on URLs drawn from the block lists themselves plus
Wikipedia-style URLs (the DCLM/Dolly documents have no URL).

Usage: python benchmarks/web_rules_parity.py [--docs sample_web/jsonl/manpages_l10n.jsonl.gz ...]
       [--dt-python /tmp/dt-venv/bin/python] [--out DIR] [--record]

Writes ``<out>/web_rules_parity.{md,json}``; ``--record`` also writes
``benchmarks/results/web_rules_parity.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import data_dir

DATA = data_dir()  # $CURATE_DATA, see docs/data.md
STAGES = ("gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality")
#: datatrove's reason strings -> curate's reason codes
DT_REASONS = {
    "gopher_short_doc": "short_doc", "gopher_long_doc": "long_doc", "gopher_below_avg_threshold": "short_words",
    "gopher_above_avg_threshold": "long_words", "gopher_too_many_hashes": "hash_ratio",
    "gopher_too_many_ellipsis": "ellipsis_ratio", "gopher_too_many_bullets": "bullet_lines",
    "gopher_too_many_end_ellipsis": "end_ellipsis_lines", "gopher_below_alpha_threshold": "alpha_words",
    "gopher_enough_stop_words": "stop_words",
    **{f"duplicated_{n}_n_grams": f"dup_{n}_gram" for n in range(2, 11)},
}


# ----------------------------------------------------------------------------- datatrove side
def _dt_values(text: str) -> dict:
    """Per-rule values with datatrove's helpers (its filters stop at the first failing rule)."""
    import numpy as np
    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )
    from datatrove.utils.text import (
        PUNCTUATION_SET,
        TERMINAL_PUNCTUATION,
        split_into_words,
    )

    nan = float("nan")
    out: dict = {"gopher_repetition": {}, "gopher_quality": {}, "fineweb_quality": {}}
    words = split_into_words(text, "en") if text else []
    if text:
        g = out["gopher_repetition"]
        paragraphs = re.split(r"\n{2,}", text.strip())
        d, c = find_duplicates(paragraphs)
        g["dup_para_frac"], g["dup_para_char_frac"] = d / len(paragraphs), c / len(text)
        lines = re.split("\n+", text)
        d, c = find_duplicates(lines)
        g["dup_line_frac"], g["dup_line_char_frac"] = d / len(lines), c / len(text)
        for n in (2, 3, 4):
            grams = get_n_grams(words, n)
            g[f"top_{n}_gram"] = find_top_duplicate(grams) / len(text) if grams else 0.0
        for n in range(5, 11):
            g[f"dup_{n}_gram"] = find_all_duplicate(words, n) / len(text)
    q = out["gopher_quality"]
    prose = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    q["n_words"] = len(prose)
    q["avg_word_length"] = float(np.mean([len(w) for w in prose])) if prose else nan
    q["hash_ratio"] = text.count("#") / len(words) if words else nan
    q["ellipsis_ratio"] = (text.count("...") + text.count("…")) / len(words) if words else nan
    q["alpha_words_ratio"] = sum(any(c.isalpha() for c in w) for w in words) / len(words) if words else nan
    lines = text.splitlines()
    q["bullet_lines_ratio"] = (sum(s.lstrip().startswith("•") or s.lstrip().startswith("-") for s in lines)
                               / len(lines) if lines else nan)
    q["end_ellipsis_lines_ratio"] = (sum(s.rstrip().endswith("...") or s.rstrip().endswith("…") for s in lines)
                                     / len(lines) if lines else nan)
    q["stop_words"] = len(set(STOP_WORDS) & set(words))
    f = out["fineweb_quality"]
    lines = [ln for ln in text.split("\n") if ln.strip() != ""]
    if lines:
        stop = tuple(TERMINAL_PUNCTUATION)
        f["line_punct_ratio"] = sum(1 for ln in lines if ln.endswith(stop)) / len(lines)
        f["short_line_ratio"] = sum(1 for ln in lines if len(ln) <= 30) / len(lines)
        f["char_dup_ratio"] = find_duplicates(lines)[1] / len(text.replace("\n", ""))
        f["list_ratio"] = text.count("\n") / len(words) if words else float("inf")
    return out


def _dt_c4_values(text: str) -> dict:
    """C4's page-rule values computed over every line (datatrove's line loop, without its early exit)."""
    from datatrove.pipeline.filters.c4_filters import CITATION_REGEX, POLICY_SUBSTRINGS
    from datatrove.utils.text import split_into_sentences

    lorem = curly = sentences = 0
    for line in text.splitlines():
        line = line.strip()
        words = line.split()
        if any(len(w) > 1000 for w in words):
            continue
        line = CITATION_REGEX.sub("", line)
        if len(words) < 3:
            continue
        low = line.lower()
        lorem += "lorem ipsum" in low
        if "javascript" in low:
            continue
        curly += "{" in line
        if any(p in low for p in POLICY_SUBSTRINGS):
            continue
        sentences += len(split_into_sentences(line, "en"))
    return {"lorem_ipsum": lorem, "curly_bracket": curly, "sentences": sentences}


def datatrove_side(inp: Path, out: Path) -> None:
    """Run datatrove 0.10.1's filters on every document of ``inp``; one JSON line per document."""
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        URLFilter,
    )
    from datatrove.pipeline.formatters import PIIFormatter

    filters = {"gopher_repetition": GopherRepetitionFilter(), "gopher_quality": GopherQualityFilter(),
               "c4_quality": C4QualityFilter(filter_no_terminal_punct=False),
               "fineweb_quality": FineWebQualityFilter()}
    url_filter = URLFilter()
    stream_pii = PIIFormatter()  # one formatter over all documents, as a datatrove worker runs it
    with open(inp) as f_in, open(out, "w") as f_out:
        for line in f_in:
            d = json.loads(line)
            rec: dict = {"id": d["id"]}
            text = d.get("text")
            if text is not None:
                values = _dt_values(text)
                values["c4_quality"] = _dt_c4_values(text)
                for name, flt in filters.items():
                    doc = Document(text=text, id=d["id"])
                    res = flt.filter(doc)
                    keep, reason = (res, None) if isinstance(res, bool) else res
                    rec[name] = {"keep": bool(keep), "reason": None if keep else reason, "values": values[name]}
                    if name == "c4_quality" and keep:
                        rec[name]["text"] = doc.text
                chain = Document(text=text, id=d["id"])
                rec["chain"] = {"keep": True, "dropped_by": None}
                for name, flt in filters.items():
                    res = flt.filter(chain)
                    if not (res if isinstance(res, bool) else res[0]):
                        rec["chain"] = {"keep": False, "dropped_by": name}
                        break
                fresh = PIIFormatter()
                rec["pii"] = {"text": fresh.format(text), "stream_text": stream_pii.format(text)}
            if d.get("url"):
                res = url_filter.filter(Document(text="", id=d["id"], metadata={"url": d["url"]}))
                keep, reason = (res, None) if isinstance(res, bool) else res
                rec["url_filter"] = {"keep": bool(keep), "reason": None if keep else reason}
            f_out.write(json.dumps(rec) + "\n")


# ----------------------------------------------------------------------------- documents
def _lines(path) -> list[str]:
    """Lines of a text file (``.gz`` read through gzip); lines that are not UTF-8 are skipped."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read().split(b"\n")
    out = []
    for b in raw:
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return [x for x in out if x.strip()]


def load_documents(args) -> list[dict]:
    """The benchmark's documents: [{"id", "text", "url"?, "source"}]."""
    docs: list[dict] = []
    if args.dclm and Path(args.dclm).exists():
        for i, line in enumerate(_lines(args.dclm)):
            docs.append({"id": f"dclm:{i}", "text": json.loads(line)["text"], "source": "dclm"})
    if args.dolly and Path(args.dolly).exists() and args.dolly_n:
        with open(args.dolly, encoding="utf-8") as f:
            rows = json.load(f)
        idx = [i for i, r in enumerate(rows) if (r.get("input") or "").strip()]
        random.Random(0).shuffle(idx)
        for i in sorted(idx[: args.dolly_n]):
            docs.append({"id": f"dolly:{i}", "text": rows[i]["input"], "source": "dolly"})
    for path in args.docs or ():
        stem = Path(path).name.split(".")[0]
        for i, line in enumerate(_lines(path)):
            r = json.loads(line)
            docs.append({"id": f"{stem}:{r.get('id', i)}", "text": r.get("text") or "", "url": r.get("url"),
                         "source": stem})
    return docs


def planted_pii(n: int = 200, seed: int = 0) -> list[dict]:
    """Texts with e-mails, public/private IPv4s, leading-zero and partial IP strings."""
    rng = random.Random(seed)
    names = ["john.doe", "a_b", "jane+news", "x", "info", "first.last-1"]
    hosts = ["example.net", "mail.uni-x.edu", "foo.co.uk", "bar.io"]
    ips = ["8.8.8.8", "192.168.1.1", "10.0.0.7", "172.16.5.4", "127.0.0.1", "1.2.3.4", "203.0.113.9",
           "100.64.0.1", "01.2.3.4", "256.1.1.1", "31.13.71.36", "169.254.1.1", "1234.5.6.7", "0.0.0.0"]
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 6)):
            k = rng.random()
            if k < 0.4:
                parts.append(f"write to {rng.choice(names)}@{rng.choice(hosts)} today")
            elif k < 0.8:
                parts.append(f"server at {rng.choice(ips)} responded")
            else:
                parts.append("version 2.0.0.1 and 3.1.4 released")
        out.append({"id": f"pii:{i}", "text": ". ".join(parts) + ".", "source": "planted_pii"})
    return out


def url_documents(dclm_texts: list[str], n_block: int = 300, seed: int = 0) -> list[dict]:
    """URLs drawn from the shipped block lists (domains, subdomains, exact URLs, banned words) and
    Wikipedia-style URLs built from document words; text is empty (only the URL is judged)."""
    import lzma

    from curate.filters.url import ASSETS
    rng = random.Random(seed)
    with lzma.open(ASSETS / "domains.xz", "rt") as f:
        domains = [d for i, d in enumerate(f) if i % 15000 == 0]
    with lzma.open(ASSETS / "urls.xz", "rt") as f:
        listed = [u.strip() for i, u in enumerate(f) if i % 200 == 0]
    words = [w.strip() for w in _lines(ASSETS / "banned_words.txt") if w.strip() and w[0] != "#"]
    soft = [w.strip() for w in _lines(ASSETS / "soft_banned_words.txt") if w.strip() and w[0] != "#"]
    subw = [w.strip().replace(" ", "-") for w in _lines(ASSETS / "banned_subwords.txt") if w.strip() and w[0] != "#"]
    urls = []
    for d in domains[:n_block]:
        d = d.strip()
        urls += [f"https://{d}/", f"http://www.{d}/page?id=1", f"https://cdn.{d}/a/b.html"]
    urls += [u if "://" in u else "http://" + u for u in listed]
    for w in rng.sample(words, min(60, len(words))):
        urls.append(f"https://news.example.com/{w}/story-{rng.randint(1, 999)}")
    for _ in range(60):
        a, b = rng.sample(soft, 2)
        urls.append(f"https://blog.example.org/{a}-{b}.html")
        urls.append(f"https://blog.example.org/{a}-photos.html")
    for w in rng.sample(subw, min(60, len(subw))):
        urls.append(f"https://video.example.net/watch/{w}{rng.randint(1, 99)}")
    for t in dclm_texts[:500]:
        title = "_".join(re.findall(r"[A-Za-z]+", t)[:3]) or "Main_Page"
        urls.append(f"https://en.wikipedia.org/wiki/{title}")
    urls += ["http://192.168.0.1/admin", "https://EXAMPLE.COM/XXX/", "https://user:pw@host.example.com:8080/x"]
    return [{"id": f"url:{i}", "text": None, "url": u, "source": "urls"} for i, u in enumerate(urls)]


# ----------------------------------------------------------------------------- curate side
def curate_side(docs: list[dict], work: Path) -> dict[str, dict]:
    """Run curate's stages on ``docs``; {id: record shaped like the datatrove side's}."""
    import tempfile

    import numpy as np
    import pyarrow as pa

    from curate.core.stage import StageContext
    from curate.filters.c4 import C4Quality
    from curate.filters.fineweb import FineWebQuality
    from curate.filters.gopher import GopherQuality, GopherRepetition
    from curate.filters.pii import PII
    from curate.filters.url import URLFilter

    scratch = Path(tempfile.mkdtemp(prefix="web_rules_parity_"))  # shard files; removed at the end

    def ctx(name: str) -> StageContext:
        return StageContext(work_dir=scratch / f"{name}_{time.time_ns()}", show_progress=False)

    stages = {"gopher_repetition": GopherRepetition(), "gopher_quality": GopherQuality(),
              "c4_quality": C4Quality(), "fineweb_quality": FineWebQuality()}
    recs: dict[str, dict] = {d["id"]: {"id": d["id"]} for d in docs}
    text_docs = [d for d in docs if d.get("text") is not None]
    table = pa.table({"id": [d["id"] for d in text_docs], "text": [d["text"] for d in text_docs]})
    timings = {}
    sels = {}
    for name, st in stages.items():
        t0 = time.perf_counter()
        sels[name] = sel = st.check(st.select(table, ctx(name)), len(table))
        timings[name] = time.perf_counter() - t0
        rules = [c[len(name) + 2:] for c in sel.extras if c.startswith(name + "__") and not c.endswith("__pass")
                 and f"{c}__pass" in sel.extras]
        for i, d in enumerate(text_docs):
            r = {"keep": bool(sel.keep[i]), "reason": sel.reason[i],
                 "values": {k: float(sel.extras[f"{name}__{k}"][i]) for k in rules},
                 "pass": {k: bool(sel.extras[f"{name}__{k}__pass"][i]) for k in rules}}
            if name == "c4_quality" and sel.keep[i]:
                r["text"] = sel.rewrite["text"][i]
            recs[d["id"]][name] = r
    # FineWeb's chain: each stage sees the rows the previous kept, C4's rewrite applied
    alive = np.arange(len(table))
    texts = np.array(table.column("text").to_pylist(), dtype=object)
    dropped_by = np.full(len(table), None, dtype=object)
    for name, st in stages.items():
        sub = pa.table({"id": [text_docs[i]["id"] for i in alive], "text": list(texts[alive])})
        sel = st.select(sub, ctx("chain_" + name))
        rw = getattr(sel, "rewrite", None) or {}
        if "text" in rw:
            texts[alive[sel.keep]] = rw["text"][sel.keep]
        dropped_by[alive[~sel.keep]] = name
        alive = alive[sel.keep]
    for i, d in enumerate(text_docs):
        recs[d["id"]]["chain"] = {"keep": dropped_by[i] is None, "dropped_by": dropped_by[i]}
    t0 = time.perf_counter()
    psel = PII().select(table, ctx("pii"))
    timings["pii"] = time.perf_counter() - t0
    for i, d in enumerate(text_docs):
        recs[d["id"]]["pii"] = {"text": psel.rewrite["text"][i], "changed": psel.rewrite["text"][i] != d["text"],
                                "counts": {k[5:]: int(v[i]) for k, v in psel.extras.items()}}
    url_docs = [d for d in docs if d.get("url")]
    if url_docs:
        ut = pa.table({"id": [d["id"] for d in url_docs], "url": [d["url"] for d in url_docs]})
        t0 = time.perf_counter()
        usel = URLFilter().select(ut, ctx("url"))
        timings["url_filter"] = time.perf_counter() - t0
        for i, d in enumerate(url_docs):
            recs[d["id"]]["url_filter"] = {"keep": bool(usel.keep[i]), "reason": usel.reason[i]}
    recs["_timings"] = timings
    import shutil

    shutil.rmtree(scratch, ignore_errors=True)
    return recs


# ----------------------------------------------------------------------------- comparison
def _same(a: float, b: float) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def _dt_pass(stage: str, rule: str, v: float) -> bool:
    """datatrove's pass condition for one rule value (FineWeb's thresholds)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return True
    rep = {"dup_para_frac": 0.3, "dup_para_char_frac": 0.2, "dup_line_frac": 0.3, "dup_line_char_frac": 0.2,
           "top_2_gram": 0.2, "top_3_gram": 0.18, "top_4_gram": 0.16, **{f"dup_{n}_gram": 0.2 - 0.01 * n
                                                                         for n in range(5, 11)}}
    if stage == "gopher_repetition":
        return not v > rep[rule]
    if stage == "gopher_quality":
        lo, hi = {"n_words": (50, 100000), "avg_word_length": (3, 10), "hash_ratio": (None, 0.1),
                  "ellipsis_ratio": (None, 0.1), "bullet_lines_ratio": (None, 0.9),
                  "end_ellipsis_lines_ratio": (None, 0.3), "alpha_words_ratio": (0.8, None),
                  "stop_words": (2, None)}[rule]
        return not ((lo is not None and v < lo) or (hi is not None and v > hi))
    if stage == "c4_quality":
        return v >= 5 if rule == "sentences" else v == 0
    if stage == "fineweb_quality":
        return {"line_punct_ratio": not v < 0.12, "short_line_ratio": not v > 0.67, "char_dup_ratio": not v > 0.01,
                "list_ratio": not v > 0.3}[rule]
    raise KeyError(stage)


#: why a document's tokens differ from datatrove's (see curate/filters/web_text.py, gopher.py)
CAUSES = {
    "cjk_units": "holds CJK/Thai characters: curate counts each as a word, spaCy's English tokenizer a "
                 "whole run as one (deliberate: curate's text units)",
    "punctuation_set": "holds a mark such as • · § ‘ that curate counts as punctuation (Unicode P*) and "
                       "datatrove's hand-made list does not (deliberate)",
    "tokenizer": "curate's rule-based word tokens differ from spaCy's on a few tokens (e-mail/X.400 "
                 "addresses, rare abbreviations, runs of …)",
}
_PUNCT_GAP = set("•·§¶‘›‹―¿¡‗،؛")


def cause(text: str | None) -> str:
    """The documented cause of a disagreement on ``text`` (a key of :data:`CAUSES`)."""
    from curate.core.text_units import has_unspaced
    from curate.filters.web_text import web_words

    if text and has_unspaced(text):
        return "cjk_units"
    if text and any(w in _PUNCT_GAP for w in web_words(text)):
        return "punctuation_set"
    return "tokenizer"


def compare(cur: dict, dt: dict, texts: dict[str, str | None] | None = None) -> dict:
    """Agreement figures and the list of disagreements (with their cause), per stage."""
    texts = texts or {}
    res: dict = {}
    ids = [i for i in dt if i in cur]
    for stage in STAGES + ("chain", "url_filter"):
        both = [i for i in ids if stage in cur[i] and stage in dt[i]]
        if not both:
            continue
        s = {"docs": len(both), "both_keep": 0, "both_drop": 0, "only_curate_keeps": 0, "only_datatrove_keeps": 0,
             "reason_agree": 0, "disagreements": []}
        rule_agree: dict[str, list[int]] = {}
        for i in both:
            c, d = cur[i][stage], dt[i][stage]
            dreason = d.get("dropped_by") if stage == "chain" else DT_REASONS.get(d.get("reason"), d.get("reason"))
            creason = c.get("dropped_by") if stage == "chain" else c.get("reason")
            if c["keep"] and d["keep"]:
                s["both_keep"] += 1
            elif not c["keep"] and not d["keep"]:
                s["both_drop"] += 1
                s["reason_agree"] += creason == dreason
            else:
                s["only_curate_keeps" if c["keep"] else "only_datatrove_keeps"] += 1
            if "values" in d:
                for rule, dv in d["values"].items():
                    cv = c["values"].get(rule)
                    a = rule_agree.setdefault(rule, [0, 0, 0])
                    a[0] += _same(cv, dv)
                    a[1] += c["pass"].get(rule) == _dt_pass(stage, rule, dv)
                    a[2] += 1
            if c["keep"] != d["keep"] or (not c["keep"] and creason != dreason):
                diff = {}
                if "values" in d:
                    diff = {r: [c["values"].get(r), dv] for r, dv in d["values"].items() if not _same(c["values"].get(r), dv)}
                s["disagreements"].append({"id": i, "curate": [c["keep"], creason], "datatrove": [d["keep"], dreason],
                                           "values_curate_vs_datatrove": diff, "cause": cause(texts.get(i))})
        s["keep_agreement"] = (s["both_keep"] + s["both_drop"]) / len(both)
        s["rules"] = {r: {"value_agreement": a[0] / a[2], "pass_agreement": a[1] / a[2]} for r, a in rule_agree.items()}
        if stage == "c4_quality":
            kept = [i for i in both if cur[i][stage]["keep"] and dt[i][stage]["keep"]]
            s["rewrite_identical"] = sum(cur[i][stage]["text"] == dt[i][stage]["text"] for i in kept)
            s["rewrite_compared"] = len(kept)
        res[stage] = s
    pii = [i for i in ids if "pii" in cur[i] and "pii" in dt[i]]
    if pii:
        res["pii"] = {"docs": len(pii),
                      "identical_fresh_formatter": sum(cur[i]["pii"]["text"] == dt[i]["pii"]["text"] for i in pii),
                      "identical_stream_formatter": sum(cur[i]["pii"]["text"] == dt[i]["pii"]["stream_text"] for i in pii),
                      "docs_changed": sum(cur[i]["pii"]["changed"] for i in pii),
                      "replacements": {k: sum(cur[i]["pii"]["counts"].get(k, 0) for i in pii) for k in ("emails", "ips")},
                      "mismatches": [i for i in pii if cur[i]["pii"]["text"] != dt[i]["pii"]["text"]][:20]}
    return res


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def markdown(res: dict, meta: dict) -> str:
    lines = ["# FineWeb rule stages: curate vs datatrove 0.10.1", "",
             f"Documents: {meta['sources']}. datatrove {meta['datatrove']} in its own venv; "
             f"curate stage timings (s, this 2-core machine, shared): {meta['timings']}.", "",
             "## Keep/drop agreement per stage", "",
             "| stage | docs | keep agreement | both keep | both drop | only curate keeps | only datatrove keeps "
             "| same reason (both drop) |", "|---|---|---|---|---|---|---|---|"]
    for stage, s in res.items():
        if stage == "pii":
            continue
        lines.append(f"| {stage} | {s['docs']} | {_pct(s['keep_agreement'])} | {s['both_keep']} | {s['both_drop']} "
                     f"| {s['only_curate_keeps']} | {s['only_datatrove_keeps']} | {s['reason_agree']}/{s['both_drop']} |")
    if "c4_quality" in res:
        c = res["c4_quality"]
        lines += ["", f"C4 rewrite: {c['rewrite_identical']}/{c['rewrite_compared']} kept pages have the same "
                      "rewritten text in both."]
    if "pii" in res:
        p = res["pii"]
        lines += ["", "## PII", "",
                  f"{p['docs']} texts ({p['docs_changed']} changed by curate; {p['replacements']} replacements): "
                  f"identical output to a fresh datatrove PIIFormatter per text in {p['identical_fresh_formatter']}; "
                  f"to one formatter run over all texts in order (datatrove's worker) in "
                  f"{p['identical_stream_formatter']} (datatrove carries its replacement turn across documents, "
                  f"curate restarts it per document)."]
    lines += ["", "## Per-rule agreement (value to 1e-9 relative; pass flag at FineWeb's thresholds)", "",
              "| stage | rule | value agreement | pass agreement |", "|---|---|---|---|"]
    for stage, s in res.items():
        for rule, a in s.get("rules", {}).items():
            lines.append(f"| {stage} | {rule} | {_pct(a['value_agreement'])} | {_pct(a['pass_agreement'])} |")
    lines += ["", "## Disagreements (keep/drop or reason), first 12 per stage; all in the JSON", ""]
    for stage, s in res.items():
        for d in s.get("disagreements", [])[:12]:
            vals = "; ".join(f"{r}: {a[0]:.4g} vs {a[1]:.4g}" if isinstance(a[0], float) and isinstance(a[1], float)
                             else f"{r}: {a[0]} vs {a[1]}" for r, a in list(d["values_curate_vs_datatrove"].items())[:4])
            lines.append(f"- {stage} `{d['id']}`: curate {d['curate']}, datatrove {d['datatrove']}"
                         + (f" — {vals}" if vals else "") + f" — cause: `{d['cause']}`")
    lines += ["", "Causes:", ""] + [f"- `{k}`: {v}" for k, v in CAUSES.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datatrove-side", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--dclm", default=str(DATA / "quality/dclm_human_quality_majority.jsonl"))
    ap.add_argument("--dolly", default=str(DATA / "instruct/dolly_15k.json"))
    ap.add_argument("--dolly-n", type=int, default=1000)
    ap.add_argument("--docs", action="append", help="extra JSONL of documents (text, optional url); repeatable")
    ap.add_argument("--dt-python", default="/tmp/dt-venv/bin/python", help="python of a venv with datatrove==0.10.1")
    ap.add_argument("--out", type=Path, default=Path("runs/web_rules_parity"))
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/web_rules_parity.{md,json}")
    args = ap.parse_args()
    if args.datatrove_side:
        datatrove_side(Path(args.datatrove_side[0]), Path(args.datatrove_side[1]))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    args.out.mkdir(parents=True, exist_ok=True)
    docs = load_documents(args)
    docs += planted_pii()
    docs += url_documents([d["text"] for d in docs if d["source"] == "dclm"])
    doc_file = args.out / "documents.jsonl"
    with open(doc_file, "w") as f:
        f.writelines(json.dumps(d) + "\n" for d in docs)
    dt_file = args.out / "datatrove.jsonl"
    t0 = time.time()
    env = {**os.environ, "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": ""}
    subprocess.run([args.dt_python, __file__, "--datatrove-side", str(doc_file), str(dt_file)], check=True, env=env)
    dt_seconds = time.time() - t0
    dt = {r["id"]: r for r in map(json.loads, _lines(dt_file))}
    cur = curate_side(docs, args.out)
    timings = {k: round(v, 2) for k, v in cur.pop("_timings").items()}
    res = compare(cur, dt, {d["id"]: d.get("text") for d in docs})
    counts: dict[str, int] = {}
    for d in docs:
        counts[d["source"]] = counts.get(d["source"], 0) + 1
    dt_version = subprocess.run([args.dt_python, "-c", "from importlib.metadata import version; print(version('datatrove'))"],
                                capture_output=True, text=True, check=True).stdout.strip()
    meta = {"sources": counts, "datatrove": dt_version, "timings": timings, "datatrove_seconds_all": round(dt_seconds, 1)}
    md = markdown(res, meta)
    data = {"meta": meta, "results": res}
    (args.out / "web_rules_parity.json").write_text(json.dumps(data, indent=1, default=str))
    (args.out / "web_rules_parity.md").write_text(md)
    if args.record:
        from results_io import RESULTS, write_results
        write_results("web_rules_parity", data, md, out=RESULTS, indent=1, default=str)
    else:
        print(md)


if __name__ == "__main__":
    if "--datatrove-side" not in sys.argv:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
