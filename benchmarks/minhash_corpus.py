"""Scale corpora for the MinHash benchmarks: real text, planted near-duplicates, written streaming.

Two kinds of documents, both made only of real text (nothing invented), written batch by batch
to an Arrow IPC file (the format of curate's cache, read back memory-mapped) with columns
``id``, ``text`` and ``copy_of`` (the row a planted copy was made from, -1 otherwise):

* ``short``: the existing MinHash benchmark's documents (``minhash_speed.make_corpus``): randomly
  drawn Dolly / Alpaca rows (rendered canonical text) concatenated until >= 200 words, cut to
  exactly 200 words (~1.25 KB). The Dolly and Alpaca JSON files (databricks-dolly-15k, Stanford
  Alpaca) are read from ``<data>/instruct/``.
* ``web``: web-length documents (~4 KB): paragraphs (lines of >= 5 words) of the real pages in
  ``sample_web/jsonl/`` (DCLM human-labelled pages, Wikipedia paragraphs from Dolly, translated
  Debian manual pages; licences in sample_web/README.md) drawn at random until >= 4,000
  characters, cut at the first word boundary after 4,000.

In both, 10% of the documents (never the first) are replaced by a near-duplicate of a random
earlier document: 2% of its words get a typo (swap, delete, insert or replace one letter;
``minhash_common._typos``). Unlike ``make_corpus`` (which copies the earlier document as it
stands, possibly itself a copy), the copy is made from the earlier document's *original* text,
regenerated from its draws, so the generator holds the draws (48 bytes a document) and never
all the texts: 10M documents are written in ~40 minutes in a few hundred MB.

Usage::

    python benchmarks/minhash_corpus.py short 1000000 /tmp/mhscale/short_1000000.arrow [--data DATA]
    python benchmarks/minhash_corpus.py web 1000000 /tmp/mhscale/web_1000000.arrow
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minhash_common import _typos, load_real_texts  # noqa: E402
from results_io import data_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORDS = 200
WEB_CHARS = 4000
DUP_RATE = 0.10
TYPO_RATE = 0.02
DRAWS = 12  # units drawn per document (enough for 200 words / 4,000 characters almost always)
BATCH = 65_536


def web_paragraphs() -> list[str]:
    """Lines of >= 5 words of the real pages in sample_web/jsonl/*.jsonl.gz (planted rows excluded)."""
    out = []
    for f in sorted((REPO / "sample_web" / "jsonl").glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt", encoding="utf-8"):
            for para in json.loads(line)["text"].split("\n"):
                if len(para.split()) >= 5:
                    out.append(para.strip())
    return out


class Docs:
    """Regenerates document i's original text from its draws (so a copy needs no stored text)."""

    def __init__(self, kind: str, units: list, draws: np.ndarray):
        self.kind, self.units, self.draws = kind, units, draws

    def original(self, i: int) -> str:
        if self.kind == "short":
            w: list[str] = []
            for j in self.draws[i]:
                w.extend(self.units[j])
                if len(w) >= WORDS:
                    break
            return " ".join(w[:WORDS])
        parts, size = [], 0
        for j in self.draws[i]:
            parts.append(self.units[j])
            size += len(self.units[j]) + 1
            if size >= WEB_CHARS:
                break
        text = "\n".join(parts)
        cut = text.find(" ", WEB_CHARS)
        return text if cut < 0 else text[:cut]


def build(kind: str, n: int, out: Path, data: Path | None = None, seed: int = 0) -> Path:
    """Write the corpus (module docstring) to ``out`` unless it exists; returns ``out``."""
    if out.exists():
        return out
    t0 = time.perf_counter()
    if kind == "short":
        units = [t.split() for t in load_real_texts(data or data_dir())]
    elif kind == "web":
        units = web_paragraphs()
    else:
        raise ValueError(f"kind must be 'short' or 'web', got {kind!r}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(n, DRAWS if kind == "short" else 64), dtype=np.int32)
    is_copy = rng.random(n) < DUP_RATE
    is_copy[0] = False
    src = np.where(is_copy, (rng.random(n) * np.arange(n)).astype(np.int64), -1)
    docs = Docs(kind, units, draws)
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("copy_of", pa.int64())])
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for lo in range(0, n, BATCH):
            hi = min(n, lo + BATCH)
            texts = []
            for i in range(lo, hi):
                if src[i] >= 0:
                    texts.append(_typos(docs.original(int(src[i])), np.random.default_rng([seed, i]), TYPO_RATE))
                else:
                    texts.append(docs.original(i))
            writer.write_batch(pa.record_batch([pa.array([f"d{i}" for i in range(lo, hi)]), pa.array(texts, pa.string()),
                                                pa.array(src[lo:hi])], schema=schema))
            if (lo // BATCH) % 16 == 0:
                print(f"{kind} corpus: {hi:,}/{n:,} documents, {time.perf_counter() - t0:.0f}s", flush=True)
    os.replace(tmp, out)
    return out


def open_corpus(path: Path) -> pa.Table:
    """The corpus memory-mapped (as curate's cache hands a table to a stage)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["short", "web"])
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("--data", default=str(data_dir()), help="default: $CURATE_DATA (docs/data.md)")
    args = ap.parse_args()
    p = build(args.kind, args.n, Path(args.out), Path(args.data))
    t = open_corpus(p)
    print(f"{p}: {t.num_rows:,} rows, {t.column('text').nbytes / 2**30:.2f} GiB of text")


if __name__ == "__main__":
    main()
