"""``substring_dedup`` on planted spans in real text: recall, mistakes, speed, peak memory, shards.

Corpus: the non-empty ``input`` paragraphs of dolly_15k (Wikipedia text, 4,456 docs, 5.3 MB),
in file order. Planting: for each span length L in (30, 50, 100, 200) SmolLM2 tokens,
``--per-length`` source documents each give one span of L tokens (starting and ending at a word
boundary), pasted into 1-2 other documents at a random space. Every document is a source or a
target at most once, so the labels (doc, character interval) stay exact, and sources and
targets are drawn from documents without a natural repeat of 30+ tokens (checked with the peer
below), so the earliest planted copy is the first occurrence. Metrics:

* recall(L): fraction of the characters of the copies that should go (all but the earliest in
  input order for keep=first; all for keep=none) that were cut. L=30 is below the 50-token
  threshold: its "recall" should be 0.
* first intact: fraction of the earliest copies' characters left (keep=first).
* natural repeats: cut characters outside the planted copies inside a cut interval whose text
  occurs twice in the input (or whose 100-character windows, stepped by 50, all do).
* mistakes: cut characters outside the planted copies in intervals failing that check.

Peer, same run and same units: numpy rolling-hash k-gram dedup (every window hashed to 64 bits,
first occurrence by sort): the same semantics without a suffix array; agreement of the cut sets
is reported. Memory: each measurement runs in a fresh process; peak RSS is sampled every 5 ms
with psutil; "pass peak" is the growth of RSS during the suffix-array phase alone, against the
model of curate.dedup.suffix_array.pass_bytes and the ``memory_gb`` bound.

Usage:
    python benchmarks/substring_dedup.py [--data DIR] [--out DIR] [--per-length 25] [--scale-mb 5 20 40] [--record]

Writes ``<out>/substring_dedup.{md,json}`` (default ``runs/benchmarks``); ``--record`` also writes
``benchmarks/results/substring_dedup.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import data_dir

LENGTHS = (30, 50, 100, 200)


class RssPeak:
    """Peak RSS of this process, sampled every 5 ms in a thread (context manager)."""

    def __init__(self):
        import psutil

        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = False

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def dolly_inputs(data: Path) -> list[str]:
    return [r["input"] for r in json.loads((data / "instruct" / "dolly_15k.json").read_text()) if r.get("input")]


def scale_texts(data: Path, mb: float) -> list[str]:
    """Real texts (dolly inputs and outputs, then alpaca_44k outputs: 23.5 MB) up to ``mb`` MB; past
    23.5 MB the pool is cycled, so the rest repeats it (a heavy-duplication case)."""
    pool = dolly_inputs(data)
    pool += [r["output"] for r in json.loads((data / "instruct" / "dolly_15k.json").read_text()) if r.get("output")]
    pool += [r["output"] for r in json.loads((data / "instruct" / "alpaca_44k.json").read_text()) if r.get("output")]
    out, size, i = [], 0, 0
    while size < mb * 1e6:
        t = pool[i % len(pool)]
        out.append(t)
        size += len(t.encode())
        i += 1
    return out


def plant(texts: list[str], backend, per_length: int, seed: int = 0):
    """Paste spans of known token length into other documents; returns (texts, labels)."""
    from curate.dedup.substring_units import token_sequence

    rng = np.random.default_rng(seed)
    texts = list(texts)
    # sources and targets must hold no natural repeat of >= 30 tokens (else a label's "first copy"
    # may not be the first): found with the peer, independently of the suffix array
    seq, starts = token_sequence(texts, backend)
    lo, _ = rolling_hash_cuts(seq, starts, min(LENGTHS), "none")
    dirty = set((np.searchsorted(starts, lo, side="right") - 1).tolist())
    free = [int(i) for i in rng.permutation(len(texts)) if int(i) not in dirty]
    labels = []
    for li, L in enumerate(LENGTHS):
        made = 0
        while made < per_length and len(free) > 3:
            src = int(free.pop())
            enc = backend.encode(texts[src], add_special_tokens=False)
            off, t = enc.offsets, texts[src]
            ok = [i for i in range(1, len(off) - L) if t[off[i][0]] == " " and t[off[i + L][0]] == " "
                  and off[i][0] == off[i - 1][1]]
            if not ok:
                continue
            i = int(rng.choice(ok))
            a, b = off[i][0], off[i + L - 1][1]
            span = t[a:b]
            group = li * 1000 + made
            labels.append({"group": group, "L": L, "doc": src, "lo": a, "hi": b})
            for _ in range(int(rng.integers(1, 3))):
                dst = int(free.pop())
                spaces = [p for p, c in enumerate(texts[dst]) if c == " "]
                p = int(rng.choice(spaces)) if spaces else len(texts[dst])
                texts[dst] = texts[dst][:p] + span + texts[dst][p:]
                labels.append({"group": group, "L": L, "doc": dst, "lo": p, "hi": p + len(span)})
            made += 1
    return texts, labels


def score(texts: list[str], row, clo, chi, labels, keep: str) -> dict:
    """Recall per planted length, first-copy survival, natural repeats and mistakes (in characters)."""
    cut = {}
    for r, a, b in zip(row.tolist(), clo.tolist(), chi.tolist()):
        cut.setdefault(r, np.zeros(len(texts[r]), bool))[a:b] = True
    planted = {}
    for lab in labels:
        planted.setdefault(lab["doc"], np.zeros(len(texts[lab["doc"]]), bool))[lab["lo"]:lab["hi"]] = True
    out = {}
    groups = {}
    for lab in labels:
        groups.setdefault(lab["group"], []).append(lab)
    for L in LENGTHS:
        due = gone = first_n = first_left = 0
        for occ in (g for g in groups.values() if g[0]["L"] == L):
            occ = sorted(occ, key=lambda x: x["doc"])
            for j, o in enumerate(occ):
                m = cut.get(o["doc"])
                n_cut = int(m[o["lo"]:o["hi"]].sum()) if m is not None else 0
                if j > 0 or keep == "none":
                    due += o["hi"] - o["lo"]
                    gone += n_cut
                else:
                    first_n += o["hi"] - o["lo"]
                    first_left += o["hi"] - o["lo"] - n_cut
        out[f"recall_{L}"] = gone / due if due else None
        if keep == "first":
            out[f"first_intact_{L}"] = first_left / first_n if first_n else None
    corpus = "\x00".join(texts)
    natural = mistakes = 0
    for r, a, b in zip(row.tolist(), clo.tolist(), chi.tolist()):
        outside = ~planted[r][a:b] if r in planted else np.ones(b - a, bool)
        if not outside.any():
            continue
        ok = repeated_chars(texts[r][a:b], corpus)
        natural += int((outside & ok).sum())
        mistakes += int((outside & ~ok).sum())
    out.update(natural_repeat_chars=natural, mistaken_chars=mistakes, chars_cut=int((chi - clo).sum()),
               planted_chars=int(sum(m.sum() for m in planted.values())))
    return out


def repeated_chars(s: str, corpus: str, m: int = 100, stride: int = 25) -> np.ndarray:
    """(len(s),) bool: characters of ``s`` inside a substring of ``s`` of >= min(m, len(s)) characters
    that occurs at least twice in ``corpus`` (the whole of ``s``, then m-windows at ``stride``, then
    at stride 1 around what is left)."""
    n = len(s)
    if corpus.count(s) >= 2:
        return np.ones(n, bool)
    ok = np.zeros(n, bool)
    if n <= m:
        return ok
    for w in sorted(set(range(0, n - m + 1, stride)) | {n - m}):
        if corpus.count(s[w:w + m]) >= 2:
            ok[w:w + m] = True
    budget = 4000  # window checks left for the stride-1 pass (a real mistake costs up to m checks per char)
    c = 0
    while budget > 0:
        left = np.flatnonzero(~ok[c:])
        if len(left) == 0:
            break
        c = int(left[0]) + c
        for w in range(max(0, c - m + 1), min(c, n - m) + 1):
            budget -= 1
            if corpus.count(s[w:w + m]) >= 2:
                ok[w:w + m] = True
                break
        c += 1
    return ok


def rolling_hash_cuts(seq: np.ndarray, starts: np.ndarray, k: int, keep: str):
    """The peer: a 64-bit Horner hash of every k-gram, first occurrence by a stable sort."""
    from curate.dedup.suffix_array import windows_to_intervals

    x = (seq.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    m = len(x) - k + 1
    with np.errstate(over="ignore"):
        win = x[:m].copy()
        for j in range(1, k):  # k vector passes: h = ((x0*B + x1)*B + x2)... mod 2^64
            win *= np.uint64(0xC2B2AE3D27D4EB4F)
            win += x[j:j + m]
    del x
    p = np.arange(m, dtype=np.int64)
    seps = np.r_[starts[1:] - 1, len(seq) - 1]
    valid = p + k <= seps[np.searchsorted(seps, p, side="left")]  # no separator inside
    p, win = p[valid], win[valid]
    order = np.argsort(win, kind="stable")  # equal hashes keep position order
    ws = win[order]
    new = np.r_[True, ws[1:] != ws[:-1]]
    size = np.bincount(np.cumsum(new) - 1)
    multi = size[np.cumsum(new) - 1] >= 2
    chosen = order[multi & ~new] if keep == "first" else order[multi]
    return windows_to_intervals(np.sort(p[chosen]), k)


# ---- workers (one fresh process each, so peak RSS is the measurement's own) ------------------------
def _encode(texts, unit: str, backend):
    import pyarrow as pa

    from curate.dedup.substring_units import token_sequence, utf8_sequence

    if unit == "byte":
        return utf8_sequence(pa.array(texts, pa.large_string()))
    return token_sequence(texts, backend)


def _sa_phase(seq, starts, k, keep, memory_gb, cross):
    from curate.dedup.suffix_array import find_repeated_spans, max_pass_units

    stats: dict = {}
    with RssPeak() as rss:
        t = time.perf_counter()
        lo, hi = find_repeated_spans(seq, starts, k, keep=keep, max_units=max_pass_units(memory_gb, seq.itemsize),
                                     cross_shard=cross, stats=stats)
        dt = time.perf_counter() - t
    return lo, hi, {"sa_s": dt, "pass_peak_mb": (rss.peak - rss.start) / 2**20, **stats}


def _mask(lo, hi, n):
    m = np.zeros(n, bool)
    for a, b in zip(lo.tolist(), hi.tolist()):
        m[a:b] = True
    return m


def worker(cfg: dict) -> dict:
    import pyarrow as pa

    from curate.core.stage import StageContext
    from curate.dedup.substring import SubstringDedup
    from curate.dedup.suffix_array import max_pass_units, pass_bytes
    from curate.models.tokenizers import load_tokenizer

    data = Path(cfg["data"])
    backend = load_tokenizer("SmolLM2-135M-Instruct").backend_tokenizer
    unit, keep = cfg["unit"], cfg.get("keep", "first")
    labels = None
    if cfg["kind"] == "quality":
        texts, labels = plant(dolly_inputs(data)[:cfg["n_docs"]], backend, cfg["per_length"])
    else:
        texts = scale_texts(data, cfg["mb"])
    stage = SubstringDedup(unit=unit, keep=keep, min_words=0)
    k = stage.length_units()
    seq, starts = _encode(texts, unit, backend)
    n_units, width = len(seq), seq.itemsize
    memory_gb = cfg.get("memory_gb", 8.0)
    if cfg.get("shards"):  # a budget that forces about this many shards with pair passes
        memory_gb = pass_bytes(-(-n_units // (cfg["shards"] // 2)), width) / 2**30
    res = {**cfg, "keep": keep, "unit": unit, "n_docs": len(texts), "mb": sum(len(t.encode()) for t in texts) / 1e6, "n_units": n_units,
           "k": k, "memory_gb": memory_gb, "bound_mb": memory_gb * 1024,
           "model_mb": pass_bytes(min(n_units, max_pass_units(memory_gb, width)), width) / 2**20}
    lo, hi, sa = _sa_phase(seq, starts, k, keep, memory_gb, cfg.get("cross", True))
    res.update(sa)
    if cfg.get("peer"):
        with RssPeak() as rss:
            t = time.perf_counter()
            plo, phi = rolling_hash_cuts(seq, starts, k, keep)
            res["peer_s"] = time.perf_counter() - t
        res["peer_peak_mb"] = (rss.peak - rss.start) / 2**20
        res["peer_units_differ"] = int((_mask(lo, hi, n_units) != _mask(plo, phi, n_units)).sum())
        res["units_cut"] = int((hi - lo).sum())
    if cfg.get("one_pass_check"):
        lo1, hi1, _ = _sa_phase(seq, starts, k, keep, 1e6, True)
        res["units_differ_from_one_pass"] = int((_mask(lo, hi, n_units) != _mask(lo1, hi1, n_units)).sum())
    del seq
    stage = SubstringDedup(unit=unit, keep=keep, min_words=0, memory_gb=memory_gb,
                           cross_shard=cfg.get("cross", True))
    table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string())})
    with RssPeak() as rss:
        t = time.perf_counter()
        if labels is not None:
            cuts = stage.find_cuts(table.column("text"))
        else:
            sel = stage.select(table, StageContext(work_dir=Path("/tmp/substring_bench"), show_progress=False))
        res["stage_s"] = time.perf_counter() - t
    res["peak_rss_mb"] = rss.peak / 2**20
    res["docs_per_s"] = len(texts) / res["stage_s"]
    res["mb_per_s"] = res["mb"] / res["stage_s"]
    if labels is not None:
        res.update(cuts.stats and {f"stage_{a}": b for a, b in cuts.stats.items() if a.endswith("_s")})
        res.update(score(texts, cuts.row, cuts.char_lo, cuts.char_hi, labels, keep))
    else:
        res["docs_cut"] = int((sel.extras["substr_spans_removed"] > 0).sum())
    if cfg.get("pydivsufsort_int") and width > 1:
        from pydivsufsort import divsufsort, kasai

        seq, _ = _encode(texts, unit, backend)
        with RssPeak() as rss:
            sa = divsufsort(seq)
            kasai(seq, sa)
        res["pydivsufsort_int_bytes_per_unit"] = (rss.peak - rss.start) / n_units
        from curate.dedup.suffix_array import suffix_array_lcp

        del sa
        with RssPeak() as rss:
            suffix_array_lcp(seq)
        res["curate_sa_bytes_per_unit"] = (rss.peak - rss.start) / n_units
    return res


def run_worker(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"worker {cfg} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {cfg.get('name', cfg['kind'])}: {res.get('stage_s', 0):.1f}s", file=sys.stderr, flush=True)
    return res


def f(x, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def markdown(rs: dict) -> str:
    q = rs["quality"]
    big = max(q, key=lambda r: r["n_docs"])
    lines = ["# substring_dedup benchmark", "",
             f"Planted spans in dolly_15k `input` paragraphs (up to {big['n_docs']} docs, {big['mb']:.2f} MB); "
             f"{rs['per_length']} source spans per length, each pasted 1-2 times. Machine: {rs['machine']}. "
             "Times include tokenisation (token unit); the machine was shared, so they are noisy.", "",
             "## Recall of planted copies and mistakes (characters)", "",
             "| config | unit (k) | keep | shards / passes | recall 30 | recall 50 | recall 100 | recall 200 "
             "| first copy intact (min) | natural-repeat chars | mistaken chars | stage s | docs/s | MB/s | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in q:
        fi = [r.get(f"first_intact_{L}") for L in LENGTHS if r.get(f"first_intact_{L}") is not None]
        lines.append(f"| {r['name']} | {r['unit']} ({r['k']}) | {r['keep']} | {r['n_shards']} / {r['n_passes']} | "
                     + " | ".join(f(r[f'recall_{L}']) for L in LENGTHS)
                     + f" | {f(min(fi)) if fi else '-'} | {r['natural_repeat_chars']} | {r['mistaken_chars']} "
                     f"| {f(r['stage_s'], 1)} | {f(r['docs_per_s'], 0)} | {f(r['mb_per_s'], 2)} | {f(r['peak_rss_mb'], 0)} |")
    lines += ["", "## Suffix array vs the rolling-hash peer (same units, same run)", "",
              "| config | units | SA phase s | peer s | peer / SA time | SA pass peak MB | peer peak MB | units cut | units differing |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in q:
        if "peer_s" in r:
            lines.append(f"| {r['name']} | {r['n_units']} | {f(r['sa_s'], 2)} | {f(r['peer_s'], 2)} | "
                         f"{f(r['peer_s'] / r['sa_s'], 2)} | {f(r['pass_peak_mb'], 1)} | {f(r['peer_peak_mb'], 1)} | "
                         f"{r['units_cut']} | {r['peer_units_differ']} |")
    lines += ["", "## Memory bound and shards", "",
              "Measured pass peak: growth of RSS during the suffix-array phase (sampled every 5 ms); it "
              "undercounts when the allocator reuses memory freed earlier, so memory_gb is enforced through "
              "the model (`pass_bytes`). Shards with pairs: every pair of shards is one pass.", "",
              "| config | memory_gb | bound MB | model MB | measured pass peak MB | shards / passes | SA phase s "
              "| units differing from one pass |", "|---|---|---|---|---|---|---|---|"]
    for r in q:
        lines.append(f"| {r['name']} | {f(r['memory_gb'], 4)} | {f(r['bound_mb'], 1)} | {f(r['model_mb'], 1)} | "
                     f"{f(r['pass_peak_mb'], 1)} | {r['n_shards']} / {r['n_passes']} | {f(r['sa_s'], 2)} | "
                     f"{r.get('units_differ_from_one_pass', '-')} |")
    lines += ["", "## Corpus size (real text, whole stage `select`)", "",
              "Dolly inputs and outputs, then Alpaca outputs (23.5 MB in all; a larger size cycles the pool, "
              "so its second copy is cut away: heavy duplication).", "",
              "| MB | docs | unit | units | stage s | docs/s | MB/s | peak RSS MB | SA pass peak MB | model MB "
              "| docs cut |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rs["scale"]:
        lines.append(f"| {f(r['mb'], 1)} | {r['n_docs']} | {r['unit']} | {r['n_units']} | {f(r['stage_s'], 1)} | "
                     f"{f(r['docs_per_s'], 0)} | {f(r['mb_per_s'], 2)} | {f(r['peak_rss_mb'], 0)} | "
                     f"{f(r['pass_peak_mb'], 1)} | {f(r['model_mb'], 1)} | {r['docs_cut']} |")
    ints = [r for r in rs["scale"] if "pydivsufsort_int_bytes_per_unit" in r]
    if ints:
        r = ints[-1]
        lines += ["", f"Suffix array + LCP of {r['n_units']} 16-bit tokens: pydivsufsort's integer path "
                  f"{r['pydivsufsort_int_bytes_per_unit']:.1f} bytes/token at peak, curate's aligned byte sort "
                  f"{r['curate_sa_bytes_per_unit']:.1f} (model 16)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--out", type=Path, default=Path("runs") / "benchmarks")
    ap.add_argument("--per-length", type=int, default=25)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4456])
    ap.add_argument("--scale-mb", type=float, nargs="+", default=[5, 10, 20, 40])
    ap.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/substring_dedup.{md,json}")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(json.loads(a.worker)), default=float))
        return
    import platform

    base = {"data": str(a.data), "per_length": a.per_length, "kind": "quality"}
    full = max(a.sizes)
    cfgs = [dict(base, name=f"token first {n} docs", n_docs=n, unit="token", peer=n == full) for n in a.sizes]
    cfgs += [dict(base, name="token none", n_docs=full, unit="token", keep="none", peer=True),
             dict(base, name="byte first", n_docs=full, unit="byte", peer=True),
             dict(base, name="byte none", n_docs=full, unit="byte", keep="none"),
             dict(base, name="token first, ~4 shards, pairs", n_docs=full, unit="token", shards=4, one_pass_check=True),
             dict(base, name="token first, ~4 shards, alone", n_docs=full, unit="token", shards=4, cross=False,
                  one_pass_check=True),
             dict(base, name="byte first, ~4 shards, pairs", n_docs=full, unit="byte", shards=4, one_pass_check=True)]
    rs = {"per_length": a.per_length, "machine": f"{platform.processor() or platform.machine()}, "
          f"{__import__('os').cpu_count()} CPUs", "quality": [], "scale": []}
    for c in cfgs:
        rs["quality"].append(run_worker(c))
    for mb in a.scale_mb:
        for unit in ("byte", "token"):
            rs["scale"].append(run_worker({"data": str(a.data), "kind": "scale", "mb": mb, "unit": unit,
                                           "pydivsufsort_int": unit == "token" and mb == max(a.scale_mb)}))
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "substring_dedup.json").write_text(json.dumps(rs, indent=2, default=float))
    md = markdown(rs)
    (a.out / "substring_dedup.md").write_text(md)
    if a.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_io import RESULTS, write_results
        write_results("substring_dedup", rs, md, out=RESULTS, indent=2, default=float)
    else:
        print(md)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
