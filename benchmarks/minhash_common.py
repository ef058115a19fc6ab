"""Shared pieces of the MinHash benchmarks: real rows, labelled perturbations, the datasketch peer.

Real rows come from $CURATE_DATA/instruct/{dolly_15k,alpaca_44k}.json (docs/data.md; rendered with curate's
canonical ``render_text``). Nothing here is a test; see minhash_quality.py / minhash_speed.py.
"""
from __future__ import annotations

import json
import re
import resource
from pathlib import Path

import numpy as np

from curate.ingest.formats import render_text

TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            "the request.\n\n### Instruction:\n{text}\n\n### Response:")
BOILERPLATE = " I hope this helps! Let me know if you have any other questions or need further assistance."


def load_real_texts(data: Path) -> list[str]:
    """Canonical texts of dolly_15k then alpaca_44k (59,646 rows)."""
    out = []
    for name in ("dolly_15k.json", "alpaca_44k.json"):
        for r in json.loads((Path(data) / "instruct" / name).read_text()):
            out.append(render_text(r.get("instruction"), r.get("input"), r.get("output")))
    return out


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 2:
        return word + "x"
    i = int(rng.integers(0, len(word) - 1))
    op = int(rng.integers(0, 4))
    c = chr(97 + int(rng.integers(0, 26)))
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]  # swap neighbours
    if op == 1:
        return word[:i] + word[i + 1:]  # delete
    if op == 2:
        return word[:i] + c + word[i:]  # insert
    return word[:i] + c + word[i + 1:]  # replace


def _typos(text: str, rng: np.random.Generator, rate: float) -> str:
    w = text.split(" ")
    k = max(1, int(round(rate * len(w))))
    for i in rng.choice(len(w), size=min(k, len(w)), replace=False):
        w[i] = _typo(w[i], rng)
    return " ".join(w)


def _case_ws(text: str, rng: np.random.Generator) -> str:
    w = text.split()
    out = []
    for x in w:
        u = rng.random()
        out.append(x.upper() if u < 0.1 else x.lower() if u < 0.3 else x.title() if u < 0.4 else x)
    seps = rng.choice(np.array([" ", "  ", "\n", " \t "], dtype=object), size=max(len(out) - 1, 0), p=[0.7, 0.1, 0.1, 0.1])
    return "".join(a + b for a, b in zip(out, list(seps) + [""])) + "\n"


_SENT = re.compile(r"(?<=[.!?])\s+")


def _shuffle(text: str, rng: np.random.Generator) -> str:
    s = _SENT.split(text.strip())
    perm = rng.permutation(len(s))
    if (perm == np.arange(len(s))).all():
        perm = np.roll(perm, 1)
    return " ".join(s[i] for i in perm)


def _punct(text: str, rng: np.random.Generator) -> str:
    t = re.sub(r"[,;:]", "", text)
    return t.replace(".", " .").replace("'", "\u2019").replace('"', "\u201c")


def _truncate(text: str, frac: float) -> str:
    w = text.split(" ")
    return " ".join(w[: max(1, int(round(len(w) * (1 - frac))))])


PERTURBATIONS = {
    "case_whitespace": lambda t, r: _case_ws(t, r),
    "punctuation": lambda t, r: _punct(t, r),
    "typos_2pct": lambda t, r: _typos(t, r, 0.02),
    "typos_7pct": lambda t, r: _typos(t, r, 0.07),
    "sentence_shuffle": lambda t, r: _shuffle(t, r),
    "truncate_10pct": lambda t, r: _truncate(t, 0.10),
    "truncate_30pct": lambda t, r: _truncate(t, 0.30),
    "template_wrapper": lambda t, r: TEMPLATE.format(text=t),
    "boilerplate_append": lambda t, r: t + BOILERPLATE,
}


def build_labelled(texts: list[str], per_type: int, seed: int = 0, min_words: int = 20):
    """Real rows plus one perturbed copy of ``per_type`` disjoint source rows per perturbation.

    Returns:
        (corpus texts, pairs): corpus = all real rows followed by the perturbed copies; pairs =
        list of (source index, copy index, perturbation name).
    """
    rng = np.random.default_rng(seed)
    ok = np.array([len(t.split()) >= min_words and len(_SENT.split(t.strip())) >= 2 for t in texts])
    pool = rng.permutation(np.flatnonzero(ok))
    corpus = list(texts)
    pairs = []
    for k, (name, fn) in enumerate(PERTURBATIONS.items()):
        for src in pool[k * per_type:(k + 1) * per_type]:
            corpus.append(fn(texts[src], np.random.default_rng([seed, int(src)])))
            pairs.append((int(src), len(corpus) - 1, name))
    return corpus, pairs


def peak_rss_mb() -> tuple[float, float]:
    """(this process's peak RSS, the largest child's peak RSS) in MiB (Linux ru_maxrss is KiB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


# ---- the peer: datasketch MinHash + MinHashLSH, as a user would write it ------------------------
_NUM = re.compile(r"\d+(\.\d+)?")
_PUNCT = re.compile(r"[^\w\s]|_")
_WS = re.compile(r"\s+")


def py_normalize(text: str) -> str:
    """Python twin of curate's Arrow normalisation (lower, numbers->0, punctuation->space, diacritics)."""
    import unicodedata

    t = text.lower()
    t = "".join(c for c in unicodedata.normalize("NFD", t) if unicodedata.category(c) != "Mn")
    t = _NUM.sub("0", t)
    t = _PUNCT.sub(" ", t)
    return _WS.sub(" ", t).strip()


def word_shingles(text: str, n: int = 5) -> set[bytes]:
    w = py_normalize(text).split()
    if not w:
        return set()
    if len(w) < n:
        return {" ".join(w).encode()}
    return {" ".join(w[i:i + n]).encode() for i in range(len(w) - n + 1)}


def datasketch_dedup(texts: list[str], *, num_perm: int, bands: int, rows: int, seed: int = 42, n: int = 5,
                     bulk: bool = True):
    """End to end with datasketch: shingle -> MinHash -> MinHashLSH insert+query -> union-find
    (keep first). ``bulk`` (default): ``MinHash.bulk``, datasketch's fastest documented path
    (shared permutations, batch update); False: one ``MinHash`` + ``update_batch`` per row, the
    usage its README shows. Returns (n,) bool keep."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=num_perm, params=(bands, rows))
    parent = list(range(len(texts)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def per_row(chunk):
        for sh in chunk:
            if not sh:  # skipped below: no hashing for it
                yield None
                continue
            m = MinHash(num_perm=num_perm, seed=seed)
            m.update_batch(sh)
            yield m

    for lo in range(0, len(texts), 1000):
        chunk = [list(word_shingles(t, n)) for t in texts[lo:lo + 1000]]
        hashes = MinHash.bulk(chunk, num_perm=num_perm, seed=seed) if bulk else per_row(chunk)
        for k, m in enumerate(hashes):
            i = lo + k
            if not chunk[k]:
                continue
            for j in lsh.query(m):
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            lsh.insert(i, m)
    return np.array([find(i) == i for i in range(len(texts))])
