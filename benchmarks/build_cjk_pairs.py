"""Build real Chinese/Japanese text for curate's unspaced-script work from Debian's manual pages.

Source: the translated manual pages of two Debian packages (no network access here; nothing is
downloaded by this script):

* ``manpages-zh`` 1.6.4.0-1 (zh_CN, and zh_TW converted from it): GFDL-1.2+ per its
  debian/copyright, with the upstream English notice kept in some pages' roff headers;
* ``manpages-ja`` 0.5.0.0.20221215+dfsg-1: "the same license as the original man pages", i.e.
  per page, as written in each roff source's comment header.

Get them once with::

    mkdir -p /tmp/debs && cd /tmp/debs && apt-get download manpages-zh manpages-ja
    for d in *.deb; do dpkg-deb -x "$d" ex; done

then run (from the repository root)::

    python benchmarks/build_cjk_pairs.py /tmp/debs/ex [--out runs/cjk] [--commit]

``MAN_ROOT`` is the folder the packages were extracted into (``/tmp/debs/ex``; the script looks
in ``usr/share/man/{zh_CN,zh_TW,ja}``) or that ``usr/share/man`` folder itself. Needs groff
and ``col`` (bsdextrautils); the files checked in were made with GNU groff 1.22.4. Everything
is seeded (``--seed``, default 0): the same .deb files and groff give byte-identical output.

Steps:

1. Render every page: ``groff -Kutf-8 -Tutf8 -man -rLL=10000n -dAD=l -rHY=0 | col -bx`` (preconv
   with the encoding named: all 2,332 sources are UTF-8; one output line per paragraph, no
   justification spaces, no hyphenation). Symlinks and ``.so`` pages are skipped.
2. Licence of each page (:func:`page_licence`): the roff comment header is matched against the
   Linux man-pages VERBATIM permission (only with its clause allowing modified versions), BSD
   ("Redistribution and use in source and binary forms"), MIT/ISC ("Permission is hereby
   granted, free of charge" / "Permission to use, copy, modify, and distribute"), public
   domain, GFDL and GPL texts; a ja page without a header licence may state GPL in its rendered
   COPYRIGHT (著作権) section (help2man pages). A zh page without any notice is GFDL-1.2+ (the
   package's ``Files: *``); the three files debian/copyright lists separately are GPL. Pages
   whose notice names a licence that is not in the page (e.g. "see the LICENSE file of the
   sendmail distribution", "see section COPYING") or that has no notice at all (ja) are left
   out. GPL pages are left out too, so that every file written holds only text whose full
   licence terms are in the folder (NOTICES + GFDL-1.2.txt): usable = VERBATIM, BSD, MIT-like,
   public-domain, GFDL (+ the translation's GFDL-1.2+ for zh).
3. Paragraphs from DESCRIPTION-like sections (描述/DESCRIPTION/说明/說明/説明/解説/詳細/注意/
   NOTES/备注/備註/備考; not option sections): runs of lines at one indentation, a leading
   option tag ("-a    ...") removed, lines joined, whitespace collapsed and removed between two
   CJK characters (source line breaks inside a sentence). Kept when >= 60% of the non-space
   characters are CJK (Han, kana, CJK punctuation, full-width forms) and the length is
   40-400 characters and the paragraph does not start with a particle or closing punctuation
   (the rest of a sentence cut by a display); exact repeats within a language are kept once.
4. Pairs (``<out>/cjk_pairs.jsonl``): for 600 paragraphs (260 zh_CN, 260 ja, 80 zh_TW; at most
   3 per page; zh_TW pages are not among the zh_CN ones) one near-duplicate made by a real edit
   and one non-duplicate, each line
   ``{"a", "b", "label", "kind", "detail", "lang", "page", "page_b", "jaccard_char5"}``:

   * ``char_substitute`` (1): one CJK character replaced by another CJK character of the text;
   * ``char_delete`` / ``char_insert`` (1): 1-3 characters deleted / inserted (inserted ones are
     drawn from the text);
   * ``punct`` (1): every 。 -> ".", or ， -> ",", or 、 removed, or ASCII "." / "," after a CJK
     character -> 。 / ，;
   * ``width_swap`` (1): ASCII letters/digits/punctuation -> full-width forms (U+FF01-FF5E), or
     full-width forms -> ASCII, or katakana -> half-width katakana (ja);
   * ``sentence_append`` / ``sentence_drop`` (1): a sentence of at most 20% of the paragraph's
     length appended (taken from another paragraph of the same page when there is one) /
     dropped;
   * ``same_page`` (0, hard negative): another paragraph of the same page, tried first for two
     of every three paragraphs;
   * ``diff_page`` (0): a paragraph of another page (different command name) of the language,
     for the third paragraph and whenever the page has no other usable paragraph.

   The positive kind of each paragraph is the applicable kind used least so far (ties by the
   seeded generator), so the kinds come out near balance. ``jaccard_char5`` is the exact
   Jaccard similarity of the two texts' sets of character 5-grams (texts as stored, no
   normalisation). Negatives need ``jaccard_char5 < 0.5`` (a more similar pair of different
   paragraphs is templated text, not a clean negative); ``detail`` says what was edited.
   ``<out>`` also gets ``pages.jsonl`` (every page: licence as read, why, paragraph count) and
   ``paragraphs.jsonl`` (every extracted paragraph: lang, page, section, idx, text).
5. ``--commit`` also writes the checked-in files:

   * ``benchmarks/data/cjk_pairs.jsonl``: a stratified subset of the pairs (<= 300 KB) and
     ``benchmarks/data/NOTICES_cjk_pairs.txt`` (every page's licence notice);
   * ``sample_cjk/manpages_cjk_150.jsonl`` (150 instruction rows: a question made from the
     page name in the row's language, the paragraph as ``output``), ``planted_cjk.jsonl``
     (21 near-duplicates of those rows, ``planted`` = ``<kind>:<id of the original>``),
     ``short_answers_cjk.jsonl`` (CJK answers of 50-60 characters that a whitespace
     ``min_words: 10`` filter drops) and ``NOTICES.txt``. ``GFDL-1.2.txt`` there is the licence
     text, copied once from Debian's /usr/share/common-licenses (not written by this script).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LANGS = ("zh_CN", "zh_TW", "ja")
GROFF = ["groff", "-Kutf-8", "-Tutf8", "-man", "-rLL=10000n", "-dAD=l", "-rHY=0"]
PACKAGES = {"zh": "manpages-zh 1.6.4.0-1", "ja": "manpages-ja 0.5.0.0.20221215+dfsg-1"}
N_PARAS = {"zh_CN": 260, "ja": 260, "zh_TW": 80}
PER_PAGE = 3
NEG_MAX_J = 0.5
SMALL_MAX_BYTES = 300_000
POS_KINDS = ("char_substitute", "char_delete", "char_insert", "punct", "width_swap", "sentence_append", "sentence_drop")
NEG_KINDS = ("same_page", "diff_page")

# ---------------------------------------------------------------- characters

_CJK_LETTER = ("\u3005-\u3007\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
               "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
_CJK_ANY = _CJK_LETTER + "\u3000-\u303f\uff01-\uff65\uffe0-\uffee"
CJK_LETTER = re.compile(f"[{_CJK_LETTER}]")
CJK_ANY = re.compile(f"[{_CJK_ANY}]")
SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK_ANY}])\\s+(?=[{_CJK_ANY}])")
SENTENCE = re.compile(r"[^。！？．]*[。！？．]+|[^。！？．]+$")
# a paragraph that starts with a particle or closing punctuation continues text cut off by a display
FRAGMENT_START = re.compile(r"^[のをにはがへ、。，．：；）」』)]")
DESC_SECTION = re.compile(r"描述|DESCRIPTION|说明|說明|説明|解説|詳細|详细|注意|NOTES?\b|备注|備註|備考", re.IGNORECASE)
NOT_DESC = re.compile(r"オプション|OPTION|选项|選項|参数|參數|引數|PARAMETER", re.IGNORECASE)
BODY_INDENT = 7  # groff -man: section body
ITEM_TAG = re.compile(f"^([^\\s{_CJK_LETTER}][^\\s{_CJK_LETTER}]{{0,24}})\\s{{2,}}(?=\\S)")
BULLETS = {"•", "·", "o", "*"}


def cjk_ratio(t: str) -> float:
    chars = [c for c in t if not c.isspace()]
    return sum(bool(CJK_ANY.match(c)) for c in chars) / max(len(chars), 1)


def char5(t: str) -> set[str]:
    return {t[i:i + 5] for i in range(len(t) - 4)} or {t}


def jaccard5(a: str, b: str) -> float:
    x, y = char5(a), char5(b)
    return len(x & y) / len(x | y)


def sentences(t: str) -> list[str]:
    return [s for s in SENTENCE.findall(t) if s]


# ---------------------------------------------------------------- pages and licences

@dataclass
class Page:
    lang: str
    rel: str            # man5/aliases.5.gz
    name: str           # aliases.5
    cmd: str            # aliases
    sec: str            # 5
    licence: str        # e.g. "GFDL-1.2+", "VERBATIM", "GFDL-1.2+ (translation); BSD (original)"; "" = unusable
    why: str            # how the licence was read
    notice: str         # the roff comment header, verbatim
    paras: list[tuple[str, str]] = field(default_factory=list)  # (section, text)


_LIC = [
    ("VERBATIM", r"permission is granted to make and distribute verbatim copies"),
    ("GFDL", r"gnu free documentation license"),
    ("GPL", r"gnu (library |lesser )?general public licen[cs]e|\bgpl\b"),
    ("BSD", r"redistribution and use in source and binary forms"),
    ("MIT-like", r"permission is hereby granted, free of charge|permission to use, copy, modify,? and(/or)? distribute"),
    ("public-domain", r"public domain"),
]
# debian/copyright of manpages-zh: files not under Files: * GFDL-1.2+
_ZH_EXCEPTIONS = {"man1/kill.1.gz": "GPL-2.0", "man6/intro.6.gz": "GPL-2.0+", "man7/epoll.7.gz": "GPL-2.0+"}
_COMMENT = re.compile(r"^(?:\.\\\"|'\\\"|\\\")")


def roff_header(src: str) -> str:
    """The comment lines before the first request that is not a comment (the page's notice)."""
    out = []
    for line in src.splitlines():
        if _COMMENT.match(line):
            out.append(_COMMENT.sub("", line, count=1).rstrip())
        elif line.strip():
            break
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out)


def page_licence(lang: str, rel: str, notice: str, rendered: str) -> tuple[str, str]:
    """(licence, how it was read); licence "" when the page may not be used (see module doc)."""
    low = re.sub(r"\s+", " ", notice.lower())
    found = [n for n, rx in _LIC if re.search(rx, low)]
    if "VERBATIM" in found and "distribute modified versions" not in low:
        found.remove("VERBATIM")  # VERBATIM_ONE_PARA: verbatim copies only
        found.append("verbatim-only")
    if lang != "ja":
        if rel in _ZH_EXCEPTIONS:
            return "", f"debian/copyright: {_ZH_EXCEPTIONS[rel]}"
        if not found and not re.search(r"copyright|licen[cs]e|permission|distribut", low):
            return "GFDL-1.2+", "no notice in the page; debian/copyright Files: * GFDL-1.2+"
    elif not found:
        m = re.search(r"\n(?:著作権|COPYRIGHT)\n(.*?)(?:\n\S|\Z)", rendered, re.DOTALL)
        if m and re.search(r"GNU GPL|GPLv\d", m.group(1)):
            return "", "GPL (stated in the page's 著作権 section)"
    if not found:
        return "", "notice without a licence text" if low.strip() else "no notice"
    if any(f in ("GPL", "verbatim-only") for f in found):
        return "", "+".join(found)
    orig = "+".join(found)
    if lang == "ja":
        return orig, "roff header"
    return f"GFDL-1.2+ (translation); {orig} (original)", "roff header + debian/copyright"


def render(raw: bytes) -> str:
    g = subprocess.run(GROFF, input=raw, capture_output=True, check=False)
    c = subprocess.run(["col", "-bx"], input=g.stdout, capture_output=True, check=True)
    return c.stdout.decode("utf-8", errors="replace")


def clean(lines: list[str]) -> str:
    t = " ".join(lines)
    t = re.sub(r"\s+", " ", t).strip()
    return SPACE_BETWEEN_CJK.sub("", t)


def extract_paragraphs(rendered: str) -> list[tuple[str, str]]:
    """(section, text) for the prose paragraphs of DESCRIPTION-like sections (module doc, step 3).

    Only text at the body indentation (7 columns) counts: a line there that is followed by a
    deeper one is an item tag (``.TP``/``.IP``), a line that starts with a short token and two
    or more spaces is an item with its tag on the same line (both dropped, with the indented
    item bodies and code); a bullet (``•``) is removed and its text kept.
    """
    out: list[tuple[str, str]] = []
    section, block = None, []

    def flush():
        nonlocal block
        run: list[str] = []
        for k, (indent, body) in enumerate(block):
            deeper_next = k + 1 < len(block) and block[k + 1][0] > indent
            keep = indent == BODY_INDENT and not deeper_next
            if keep and (m := ITEM_TAG.match(body)):
                keep, body = m.group(1) in BULLETS, body[m.end():]
            if keep:
                run.append(body)
                continue
            _emit(run)
            run = []
        _emit(run)
        block = []

    def _emit(run: list[str]):
        if run and section is not None:
            t = clean(run)
            if 40 <= len(t) <= 400 and cjk_ratio(t) >= 0.6 and not FRAGMENT_START.match(t):
                out.append((section, t))

    for line in rendered.split("\n"):
        if not line.strip():
            flush()
            continue
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            flush()
            head = re.sub(r"\s+", " ", line.strip())
            section = head if DESC_SECTION.search(head) and not NOT_DESC.search(head) else None
            continue
        block.append((indent, line.strip()))
    flush()
    return out


def load_pages(man: Path) -> list[Page]:
    pages = []
    for lang in LANGS:
        root = man / lang
        for path in sorted(root.rglob("*.gz")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                continue
            raw = gzip.decompress(path.read_bytes())
            src = raw.decode("utf-8")
            if re.match(r"\s*\.so\s", src):
                continue
            rendered = render(raw)
            notice = roff_header(src)
            lic, why = page_licence(lang, rel, notice, rendered)
            name = path.name[:-3]
            cmd, _, sec = name.rpartition(".")
            p = Page(lang, rel, name, cmd, sec, lic, why, notice)
            if lic:
                p.paras = extract_paragraphs(rendered)
            pages.append(p)
    return pages


# ---------------------------------------------------------------- edits

def _halfwidth_katakana() -> dict[str, str]:
    """Full-width katakana -> half-width form (voiced ones as base + ﾞ/ﾟ)."""
    half = {}
    for cp in range(0xFF66, 0xFFA0):
        h = chr(cp)
        f = unicodedata.normalize("NFKC", h)
        if len(f) == 1 and "\u30a0" <= f <= "\u30ff":
            half.setdefault(f, h)
    for cp in range(0x30A1, 0x30FB):
        f = chr(cp)
        if f in half:
            continue
        d = unicodedata.normalize("NFD", f)
        if len(d) == 2 and d[0] in half and d[1] in "\u3099\u309a":
            half[f] = half[d[0]] + ("\uff9e" if d[1] == "\u3099" else "\uff9f")
    return half


HALF_KATA = _halfwidth_katakana()


def _cjk_positions(t: str) -> list[int]:
    return [i for i, c in enumerate(t) if CJK_LETTER.match(c)]


def edit(kind: str, t: str, rng: np.random.Generator, page_sents: list[str], lang_sents: list[str]):
    """Apply edit ``kind`` to ``t``: (new text, detail) or None when the kind does not apply."""
    if kind == "char_substitute":
        pos = _cjk_positions(t)
        if len({t[i] for i in pos}) < 2:
            return None
        i = int(rng.choice(pos))
        pool = sorted({t[j] for j in pos} - {t[i]})
        c = str(rng.choice(pool))
        return t[:i] + c + t[i + 1:], f"{t[i]}->{c} at {i}"
    if kind == "char_delete":
        pos = [i for i, c in enumerate(t) if not c.isspace()]
        k = int(rng.integers(1, 4))
        drop = sorted(int(x) for x in rng.choice(pos, size=k, replace=False))
        gone = set(drop)
        return "".join(c for i, c in enumerate(t) if i not in gone), f"deleted {k}: " + ",".join(t[i] for i in drop)
    if kind == "char_insert":
        pos = _cjk_positions(t)
        if not pos:
            return None
        k = int(rng.integers(1, 4))
        s, ins = t, []
        for _ in range(k):
            c = t[int(rng.choice(pos))]
            i = int(rng.integers(0, len(s) + 1))
            s = s[:i] + c + s[i:]
            ins.append(c)
        return s, f"inserted {k}: " + ",".join(ins)
    if kind == "punct":
        opts = []
        if "。" in t:
            opts.append(("。->.", lambda s: s.replace("。", ".")))
        if "，" in t:
            opts.append(("，->,", lambda s: s.replace("，", ",")))
        if "、" in t:
            opts.append(("、 removed", lambda s: s.replace("、", "")))
        cjk_dot = re.compile(f"(?<=[{_CJK_LETTER}])\\.(?!\\w)")
        cjk_comma = re.compile(f"(?<=[{_CJK_LETTER}]),")
        if cjk_dot.search(t):
            opts.append((".->。", lambda s: cjk_dot.sub("。", s)))
        if cjk_comma.search(t):
            opts.append((",->，", lambda s: cjk_comma.sub("，", s)))
        if not opts:
            return None
        name, fn = opts[int(rng.integers(len(opts)))]
        new = fn(t)
        return new, f"{name} x{sum(x != y for x, y in zip(t, new)) if len(new) == len(t) else len(t) - len(new)}"
    if kind == "width_swap":
        opts = []
        if re.search(r"[!-~]", t):
            opts.append(("ascii->fullwidth", lambda s: re.sub(r"[!-~]", lambda m: chr(ord(m.group()) + 0xFEE0), s), r"[!-~]"))
        if re.search("[\uff01-\uff5e]", t):
            opts.append(("fullwidth->ascii", lambda s: re.sub("[\uff01-\uff5e]", lambda m: chr(ord(m.group()) - 0xFEE0), s),
                         "[\uff01-\uff5e]"))
        if any(c in HALF_KATA for c in t):
            opts.append(("katakana->halfwidth", lambda s: "".join(HALF_KATA.get(c, c) for c in s),
                         "[" + "".join(sorted(HALF_KATA)) + "]"))
        if not opts:
            return None
        name, fn, rx = opts[int(rng.integers(len(opts)))]
        return fn(t), f"{name} x{len(re.findall(rx, t))}"
    if kind == "sentence_append":
        limit = 0.2 * len(t)
        for where, pool in (("same page", page_sents), ("same language", lang_sents)):
            cand = sorted({s for s in pool if 8 <= len(s) <= limit and s[-1] in "。！？" and cjk_ratio(s) >= 0.6
                           and s not in t})
            if cand:
                s = str(rng.choice(cand))
                return t + s, f"appended {len(s)} chars from {where}"
        return None
    if kind == "sentence_drop":
        ss = sentences(t)
        cand = [i for i, s in enumerate(ss) if len(s) <= 0.2 * len(t)] if len(ss) >= 2 else []
        if not cand:
            return None
        i = int(rng.choice(cand))
        return "".join(ss[:i] + ss[i + 1:]), f"dropped sentence {i + 1}/{len(ss)} ({len(ss[i])} chars)"
    raise ValueError(kind)


# ---------------------------------------------------------------- selection and pairs

@dataclass(frozen=True)
class Para:
    lang: str
    page: str     # aliases.5
    cmd: str
    sec: str
    section: str
    text: str
    idx: int      # paragraph number within the page (0-based)


def all_paragraphs(pages: list[Page]) -> dict[str, list[Para]]:
    by_lang: dict[str, list[Para]] = defaultdict(list)
    seen: dict[str, set[str]] = defaultdict(set)
    for p in pages:
        for k, (section, text) in enumerate(p.paras):
            if text in seen[p.lang]:
                continue
            seen[p.lang].add(text)
            by_lang[p.lang].append(Para(p.lang, p.name, p.cmd, p.sec, section, text, k))
    return by_lang


def pick(paras: list[Para], n: int, rng: np.random.Generator, per_page: int, avoid_cmds: set[str] = frozenset()) -> list[Para]:
    order = rng.permutation(len(paras))
    count: Counter = Counter()
    out = []
    for i in order:
        p = paras[int(i)]
        if p.cmd in avoid_cmds or count[p.page] >= per_page:
            continue
        count[p.page] += 1
        out.append(p)
        if len(out) == n:
            break
    return out


def build_pairs(by_lang: dict[str, list[Para]], seed: int) -> tuple[list[dict], list[Para]]:
    rng = np.random.default_rng(seed)
    chosen: list[Para] = []
    zh_cn = pick(by_lang["zh_CN"], N_PARAS["zh_CN"], rng, PER_PAGE)
    chosen += zh_cn
    chosen += pick(by_lang["ja"], N_PARAS["ja"], rng, PER_PAGE)
    chosen += pick(by_lang["zh_TW"], N_PARAS["zh_TW"], rng, PER_PAGE, avoid_cmds={p.cmd for p in zh_cn})
    page_paras: dict[tuple[str, str], list[Para]] = defaultdict(list)
    for lang, ps in by_lang.items():
        for p in ps:
            page_paras[(lang, p.page)].append(p)
    lang_sents = {lang: sorted({s for p in ps for s in sentences(p.text)}) for lang, ps in by_lang.items()}
    used: Counter = Counter()
    pairs = []
    for n, p in enumerate(chosen):
        others = [q for q in page_paras[(p.lang, p.page)] if q.text != p.text]
        page_sents = [s for q in others for s in sentences(q.text)]
        kinds = list(POS_KINDS)
        rng.shuffle(kinds)
        kinds.sort(key=lambda k: used[k])
        for kind in kinds:
            r = edit(kind, p.text, rng, page_sents, lang_sents[p.lang])
            if r is not None and r[0] != p.text:
                used[kind] += 1
                pairs.append(_pair(p, r[0], 1, kind, r[1], p.page))
                break
        # negative: same page (hard) for 2 of every 3 paragraphs, else (or when the page has no other) another page
        cand = [q for q in others if jaccard5(p.text, q.text) < NEG_MAX_J] if n % 3 != 2 else []
        if cand:
            q = cand[int(rng.integers(len(cand)))]
            pairs.append(_pair(p, q.text, 0, "same_page", f"paragraph {q.idx + 1} vs {p.idx + 1}", q.page))
            continue
        pool = by_lang[p.lang]
        for _ in range(1000):
            q = pool[int(rng.integers(len(pool)))]
            if q.cmd != p.cmd and jaccard5(p.text, q.text) < NEG_MAX_J:
                break
        pairs.append(_pair(p, q.text, 0, "diff_page", f"{q.page} paragraph {q.idx + 1}", q.page))
    return pairs, chosen


def _pair(p: Para, b: str, label: int, kind: str, detail: str, page_b: str) -> dict:
    return {"a": p.text, "b": b, "label": label, "kind": kind, "detail": detail, "lang": p.lang,
            "page": p.page, "page_b": page_b, "jaccard_char5": round(jaccard5(p.text, b), 4)}


def small_subset(pairs: list[dict], seed: int, max_bytes: int = SMALL_MAX_BYTES) -> list[dict]:
    """Stratified by (kind, lang): the same share of every stratum, as many as fit in max_bytes."""
    rng = np.random.default_rng(seed + 1)
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(pairs):
        strata[(r["kind"], r["lang"])].append(i)
    order = {k: [v[int(j)] for j in rng.permutation(len(v))] for k, v in sorted(strata.items())}
    size = [len(json.dumps(r, ensure_ascii=False).encode()) + 1 for r in pairs]
    best: list[int] = []
    for pct in range(1, 101):
        idx = sorted(i for v in order.values() for i in v[:round(pct / 100 * len(v))])
        if sum(size[i] for i in idx) > max_bytes:
            break
        best = idx
    return [pairs[i] for i in best]


# ---------------------------------------------------------------- sample_cjk

QUESTIONS = {
    "zh_CN": {"cmd": ("{c} 命令是做什么的？", "{c} 命令还有哪些需要了解的？"),
              "func": ("{c} 函数是做什么的？", "关于 {c} 函数还有什么说明？"),
              "file": ("{c} 文件是什么？", "{c} 文件还有什么需要注意的？"),
              "dev": ("{c} 设备是什么？", "关于 {c} 设备还有什么说明？"),
              "other": ("{c} 是什么？", "请再介绍一下 {c}。")},
    "zh_TW": {"cmd": ("{c} 指令是做什麼的？", "{c} 指令還有哪些需要了解的？"),
              "func": ("{c} 函式是做什麼的？", "關於 {c} 函式還有什麼說明？"),
              "file": ("{c} 檔案是什麼？", "{c} 檔案還有什麼需要注意的？"),
              "dev": ("{c} 裝置是什麼？", "關於 {c} 裝置還有什麼說明？"),
              "other": ("{c} 是什麼？", "請再介紹一下 {c}。")},
    "ja": {"cmd": ("{c}コマンドは何をしますか？", "{c}コマンドについてもう少し説明してください。"),
           "func": ("{c}関数は何をしますか？", "{c}関数についてもう少し説明してください。"),
           "file": ("{c}ファイルとは何ですか？", "{c}ファイルについてもう少し説明してください。"),
           "dev": ("{c}デバイスとは何ですか？", "{c}デバイスについてもう少し説明してください。"),
           "other": ("{c}とは何ですか？", "{c}についてもう少し説明してください。")},
}
N_SAMPLE = {"zh_CN": 60, "ja": 60, "zh_TW": 30}
N_PLANT_PER_KIND = 3
N_SHORT = {"zh_CN": 3, "zh_TW": 1, "ja": 4}


def question(p: Para, nth: int) -> str:
    s = p.sec[:1]
    kind = {"1": "cmd", "6": "cmd", "8": "cmd", "2": "func", "3": "func", "4": "dev", "5": "file"}.get(s, "other")
    if s == "3" and p.sec != "3":  # 3tcl, 3pm ...: not C functions
        kind = "other"
    return QUESTIONS[p.lang][kind][min(nth, 1)].format(c=p.cmd)


def whitespace_words(t: str) -> int:
    return len(t.split())


def build_sample(by_lang: dict[str, list[Para]], seed: int):
    rng = np.random.default_rng(seed + 2)
    rows: list[dict] = []
    taken: list[Para] = []

    def fresh(p: Para) -> bool:  # a complete answer (ends a sentence), not similar to a row already taken
        return p.text[-1] in "。．.！？" and all(jaccard5(p.text, q.text) < 0.2 for q in taken)

    cn_cmds: set[str] = set()
    for lang in ("zh_CN", "ja", "zh_TW"):
        got = 0
        nth: Counter = Counter()
        for p in pick(by_lang[lang], len(by_lang[lang]), rng, 2, avoid_cmds=cn_cmds if lang == "zh_TW" else set()):
            if got == N_SAMPLE[lang]:
                break
            if not fresh(p):
                continue
            taken.append(p)
            got += 1
            rows.append({"p": p, "instruction": question(p, nth[p.page])})
            nth[p.page] += 1
        if lang == "zh_CN":
            cn_cmds = {r["p"].cmd for r in rows}
    # stable order: language, page, paragraph; ids after sorting
    order = {"zh_CN": 0, "zh_TW": 1, "ja": 2}
    rows.sort(key=lambda r: (order[r["p"].lang], r["p"].page, r["p"].idx))
    out = []
    for i, r in enumerate(rows, 1):
        p = r["p"]
        out.append({"id": f"cjk-{i:03d}", "instruction": r["instruction"], "output": p.text, "lang": p.lang, "page": p.page})
    # planted near-duplicates: N_PLANT_PER_KIND per positive kind, distinct originals
    planted = []
    lang_sents = {lang: sorted({s for p in ps for s in sentences(p.text)}) for lang, ps in by_lang.items()}
    page_of = defaultdict(list)
    for lang, ps in by_lang.items():
        for p in ps:
            page_of[(lang, p.page)].append(p)
    orig_order = [int(i) for i in rng.permutation(len(out))]
    used_rows: set[int] = set()
    for kind in POS_KINDS:
        made = 0
        for i in orig_order:
            if made == N_PLANT_PER_KIND:
                break
            if i in used_rows:
                continue
            r, p = out[i], rows[i]["p"]
            page_sents = [s for q in page_of[(p.lang, p.page)] if q.text != p.text for s in sentences(q.text)]
            e = edit(kind, p.text, rng, page_sents, lang_sents[p.lang])
            if e is None or e[0] == p.text:
                continue
            used_rows.add(i)
            made += 1
            planted.append({"id": f"cjk-planted-{len(planted) + 1:02d}", "instruction": r["instruction"], "output": e[0],
                            "lang": r["lang"], "page": r["page"], "planted": f"{kind}:{r['id']}",
                            "_detail": e[1], "_j": round(jaccard5(p.text, e[0]), 4)})
    # short answers: 50-60 characters, fewer than 10 whitespace words with the question
    short = []
    for lang in ("zh_CN", "zh_TW", "ja"):
        got = 0
        for p in pick(by_lang[lang], len(by_lang[lang]), rng, 1, avoid_cmds=cn_cmds if lang == "zh_TW" else set()):
            if got == N_SHORT[lang]:
                break
            q = question(p, 0)
            if not 50 <= len(p.text) <= 60 or whitespace_words(q + "\n\n" + p.text) >= 10 or not fresh(p):
                continue
            taken.append(p)
            got += 1
            short.append({"p": p, "instruction": q})
    short_rows = [{"id": f"cjk-short-{i:02d}", "instruction": r["instruction"], "output": r["p"].text,
                   "lang": r["p"].lang, "page": r["p"].page} for i, r in enumerate(short, 1)]
    return out, planted, short_rows


# ---------------------------------------------------------------- output

def write_jsonl(path: Path, rows: list[dict]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(data)
    return len(data)


ZH_GFDL = ("manpages-zh debian/copyright, Files: *\n"
           "Copyright: 2005, Carlos Z.F. Liu; 2008, LI Daobing; 2008, Ji ZhengYu;\n"
           "           2000-2004, CMPP Project <http://cmpp.linuxforum.net>; 2016-2020, Boyuan Yang\n"
           "License: GFDL-1.2+\n"
           " Permission is granted to copy, distribute and/or modify this document\n"
           " under the terms of the GNU Free Documentation License, Version 1.2\n"
           " or any later version published by the Free Software Foundation;\n"
           " with no Invariant Sections, no Front-Cover Texts, and no Back-Cover Texts.\n"
           " The complete text of the GNU Free Documentation License Version 1.2 is in GFDL-1.2.txt\n"
           " (sample_cjk/GFDL-1.2.txt in this repository).")


_NOTICE_LINE = re.compile(r"copyright|licen[cs]e|permission|warrant|translat|distribut|public domain|author|"
                          r"such damage|\(c\)|©|all rights reserved|provided that|conditions", re.IGNORECASE)


def notice_part(notice: str) -> str:
    """The header up to its last line about copyright, licence or translation (verbatim); what
    follows (RCS ids, translators' word lists, macro definitions) is not part of the notice."""
    lines = notice.split("\n")
    last = max((i for i, line in enumerate(lines) if _NOTICE_LINE.search(line)), default=len(lines) - 1)
    return "\n".join(lines[:last + 1])


def write_notices(path: Path, pages: list[Page], what: str) -> int:
    parts = [f"Licence notices of the manual pages whose text is in {what}.\n"
             f"Sources: Debian packages {PACKAGES['zh']} (zh_CN, zh_TW) and {PACKAGES['ja']} (ja);\n"
             "each notice below is the page's roff comment header, verbatim (comment markers removed).\n"
             "All zh pages are also under the translation's licence:\n\n" + ZH_GFDL + "\n"]
    groups: dict[tuple[str, str], list[Page]] = defaultdict(list)  # pages with the same notice share one entry
    for p in sorted(pages, key=lambda p: (p.lang, p.rel)):
        body = "(no licence notice in the page: GFDL-1.2+ above)" if p.licence == "GFDL-1.2+" else notice_part(p.notice)
        groups[(p.licence, body)].append(p)
    for (lic, body), ps in groups.items():
        parts.append("\n".join(f"==== {p.lang}/{p.rel} ({p.name}) - {lic}" for p in ps) + "\n" + body + "\n")
    data = "\n".join(parts).encode("utf-8")
    path.write_bytes(data)
    return len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("man_root", type=Path, help="folder the .deb files were extracted into (or its usr/share/man)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "cjk", help="full outputs (git-ignored)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--commit", action="store_true", help="also write benchmarks/data/ and sample_cjk/")
    a = ap.parse_args()
    man = a.man_root / "usr" / "share" / "man" if (a.man_root / "usr").is_dir() else a.man_root
    pages = load_pages(man)
    by_lang = all_paragraphs(pages)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)

    lic_count = Counter((p.lang, p.licence or f"(left out) {p.why}") for p in pages)
    write_jsonl(out / "pages.jsonl", [{"lang": p.lang, "file": p.rel, "page": p.name, "licence": p.licence, "why": p.why,
                                       "n_paragraphs": len(p.paras)} for p in pages])
    write_jsonl(out / "paragraphs.jsonl", [{"lang": q.lang, "page": q.page, "section": q.section, "idx": q.idx,
                                            "text": q.text} for lang in LANGS for q in by_lang[lang]])
    pairs, _chosen = build_pairs(by_lang, a.seed)
    n_full = write_jsonl(out / "cjk_pairs.jsonl", pairs)
    pages_by_key = {(p.lang, p.name): p for p in pages}

    print("pages by licence:")
    for (lang, lic), n in sorted(lic_count.items()):
        print(f"  {lang:6s} {n:5d}  {lic}")
    print("paragraphs:", {lang: len(by_lang[lang]) for lang in LANGS},
          "from pages:", {lang: len({q.page for q in by_lang[lang]}) for lang in LANGS})
    _report_pairs("full", pairs, n_full, out / "cjk_pairs.jsonl")

    if a.commit:
        small = small_subset(pairs, a.seed)
        bd = REPO / "benchmarks" / "data"
        n_small = write_jsonl(bd / "cjk_pairs.jsonl", small)
        used = {(r["lang"], r[k]) for r in small for k in ("page", "page_b")}
        write_notices(bd / "NOTICES_cjk_pairs.txt", [pages_by_key[k] for k in used], "benchmarks/data/cjk_pairs.jsonl")
        _report_pairs("small (committed)", small, n_small, bd / "cjk_pairs.jsonl")
        sd = REPO / "sample_data" / "cjk"
        rows, planted, short = build_sample(by_lang, a.seed)
        sizes = {"manpages_cjk_150.jsonl": write_jsonl(sd / "manpages_cjk_150.jsonl", rows),
                 "planted_cjk.jsonl": write_jsonl(sd / "planted_cjk.jsonl", [{k: v for k, v in r.items() if k[0] != "_"}
                                                                             for r in planted]),
                 "short_answers_cjk.jsonl": write_jsonl(sd / "short_answers_cjk.jsonl", short)}
        used = {(r["lang"], r["page"]) for r in rows + planted + short}
        sizes["NOTICES.txt"] = write_notices(sd / "NOTICES.txt", [pages_by_key[k] for k in used], "sample_cjk/")
        print("sample_cjk:", sizes)
        print("  rows per lang:", Counter(r["lang"] for r in rows), "planted:", Counter(r["planted"].split(":")[0] for r in planted),
              "short:", Counter(r["lang"] for r in short))
        print("  licences of sample pages:", Counter(pages_by_key[k].licence for k in used))
        print("  planted (id | kind | copy of | edit | char-5-gram Jaccard to the original output):")
        for r in planted:
            kind, of = r["planted"].split(":")
            print(f"  | {r['id']} | {kind} | {of} | {r['_detail']} | {r['_j']:.2f} |")


def _report_pairs(name: str, pairs: list[dict], nbytes: int, path: Path) -> None:
    print(f"{name}: {len(pairs)} pairs, {nbytes / 1024:.0f} KiB -> {path}")
    c = Counter((r["kind"], r["lang"]) for r in pairs)
    js = defaultdict(list)
    for r in pairs:
        js[r["kind"]].append(r["jaccard_char5"])
    for kind in POS_KINDS + NEG_KINDS:
        v = np.array(js[kind]) if js[kind] else np.zeros(1)
        print(f"  {kind:16s} " + " ".join(f"{lang}={c[(kind, lang)]:3d}" for lang in LANGS)
              + f"  J5 median {np.median(v):.3f} min {v.min():.3f} max {v.max():.3f}")


if __name__ == "__main__":
    main()
