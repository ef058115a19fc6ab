"""Throughput and peak memory of ``minhash_dedup`` against datasketch, measured in the same run.

Corpus (synthetic scale from real rows, so no text is invented): each document concatenates
randomly drawn real dolly_15k / alpaca_44k rows until it has >= 200 words and is cut to exactly
200 words; 10% of documents are then replaced by a near-duplicate of an earlier document
(2% word typos) so LSH and the components have real work. Written once to parquet in
``--corpus-dir`` (default /tmp/curate_minhash_bench) and reused.

Each measurement runs in a fresh Python process (so peak RSS is its own): datasketch (MinHash
.bulk + MinHashLSH insert/query + union-find, same word 5-gram shingles on the same normalised
text, same num_perm, same b x r) on a subsample, and curate's stage end to end (shingle ->
signature -> LSH -> components -> keep rule) at the sizes asked. Peak RSS: the process's
resident memory of the process and its workers summed, sampled every 0.2 s from /proc. 10M rows is extrapolated from the measured 1M run (rows/s; memory = table
bytes + per-row dedup bytes), never measured.

Usage:
    python benchmarks/minhash_speed.py [DATA] [--sizes 100000 1000000] [--peer-n 20000] [--record]

Writes runs/bench/minhash_speed/minhash_speed.{md,json} (``--record``: benchmarks/results/);
``--render`` re-renders the committed benchmarks/results/minhash_speed.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from minhash_common import _typos, load_real_texts, peak_rss_mb  # noqa: E402
from results_io import RESULTS, add_record_flag, data_dir, output_dir

WORDS = 200


def make_corpus(data: Path, n: int, out: Path, seed: int = 0) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = out / f"corpus_{n}.parquet"
    if path.exists():
        return path
    out.mkdir(parents=True, exist_ok=True)
    real = [t.split() for t in load_real_texts(data)]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(real), size=(n, 12))
    docs = []
    for i in range(n):
        w: list[str] = []
        for j in draws[i]:
            w.extend(real[j])
            if len(w) >= WORDS:
                break
        docs.append(" ".join(w[:WORDS]))
    dup = np.flatnonzero(rng.random(n) < 0.10)
    dup = dup[dup > 0]
    for i in dup:
        src = int(rng.integers(0, i))
        docs[i] = _typos(docs[src], np.random.default_rng([seed, int(i)]), 0.02)
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(n)], "text": docs}), path, row_group_size=100_000)
    return path


def vmrss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb() -> float:
    """Resident memory of this process plus all its descendants (workers), in MiB."""
    import os

    from proc_sampler import tree_pids

    return sum(_rss_kb(p) for p in tree_pids(os.getpid())) / 1024


class TreeRssSampler:
    """Polls tree_rss_mb() every 0.2 s in a thread; ``peak`` is the largest total seen.

    ru_maxrss is not used for workers: a spawned child's ru_maxrss includes the parent's pages
    it briefly shared at fork, before exec.
    """

    def __init__(self):
        import threading

        self.peak = tree_rss_mb()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, tree_rss_mb())

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return self.peak


def measure(args) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(args.corpus)
    batches, got = [], 0
    for b in pf.iter_batches(batch_size=min(args.n, 100_000)):  # read only the first n rows
        batches.append(b.slice(0, args.n - got))
        got += len(batches[-1])
        if got >= args.n:
            break
    tab = pa.Table.from_batches(batches).combine_chunks()
    del batches
    pa.default_memory_pool().release_unused()  # return the parquet decode buffers to the OS
    base = vmrss_mb()
    import resource

    def cpu_s() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    cpu0 = cpu_s()
    sampler = TreeRssSampler()
    out = {"tool": args.tool, "n": tab.num_rows, "num_proc": args.num_proc, "rss_after_load_mb": round(base, 1),
           "table_mb": round(tab.nbytes / 2**20, 1)}
    if args.tool == "datasketch":
        from minhash_common import datasketch_dedup

        texts = tab.column("text").to_pylist()
        t = time.perf_counter()
        keep = datasketch_dedup(texts, num_perm=args.num_perm, bands=args.bands, rows=args.rows)
        out["seconds"] = time.perf_counter() - t
    else:
        import tempfile

        from curate.core.stage import StageContext
        from curate.dedup.minhash import MinHashDedup

        st = MinHashDedup(num_perm=args.num_perm, bands=args.bands, rows=args.rows, num_proc=args.num_proc,
                          check_false_positives=args.check, save_index=False)
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            sel = st.select(tab, StageContext(work_dir=Path(d) / "w", show_progress=False))
            out["seconds"] = time.perf_counter() - t
        keep = sel.keep
        out["check_false_positives"] = args.check
    out["dropped"] = int((~np.asarray(keep)).sum())
    out["rows_per_s"] = out["n"] / out["seconds"]
    out["cpu_seconds"] = cpu_s() - cpu0  # workers count once they have exited (pool closed)
    out["peak_tree_rss_mb"] = round(sampler.stop(), 1)
    out["peak_rss_mb"] = round(peak_rss_mb()[0], 1)
    return out


def run_child(corpus: Path, tool: str, n: int, num_proc: int, b: int, r: int, check: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--corpus", str(corpus), "--tool", tool, "--n", str(n),
           "--num-proc", str(num_proc), "--bands", str(b), "--rows", str(r)] + (["--check"] if check else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        raise RuntimeError(res.stderr[-3000:])
    got = json.loads(res.stdout.strip().splitlines()[-1])
    print(json.dumps(got), flush=True)
    return got


def extrapolate(runs: list[dict], n10: int = 10_000_000) -> str:
    """10M-row estimate from the two largest 2-process curate runs (no exact check).

    Memory that grows with n is the slope of (peak - RSS after load) between the two sizes, so
    fixed costs (interpreter, workers, one shard's buffers) are not multiplied.
    """
    cur = sorted((x for x in runs if x["tool"] == "curate" and x["num_proc"] == 2
                  and not x.get("check_false_positives")), key=lambda x: x["n"])
    if len(cur) < 2:
        return "(10M extrapolation needs two sizes)"
    a, b = cur[-2], cur[-1]
    grow = lambda x: x["peak_tree_rss_mb"] - x["rss_after_load_mb"]  # noqa: E731
    per_row = max(grow(b) - grow(a), 0) / (b["n"] - a["n"]) * 2**20
    fixed = grow(b) - per_row * b["n"] / 2**20
    table = b["table_mb"] / b["n"] * 2**20
    base = b["rss_after_load_mb"] - b["table_mb"]
    total = (table * n10 + per_row * n10) / 2**30 + (fixed + base) / 1024
    return (f"Extrapolated to 10M rows (not measured) from the {a['n']:,} and {b['n']:,}-row runs: "
            f"{n10 / b['rows_per_s'] / 60:.0f} min at {b['rows_per_s']:,.0f} rows/s; peak memory ~{total:.1f} GiB = "
            f"input table {table * n10 / 2**30:.1f} GiB ({table:.0f} B/row, held by the pipeline) + dedup state "
            f"{per_row * n10 / 2**30:.1f} GiB ({per_row:.0f} B/row, the slope between the two sizes) + fixed "
            f"{(fixed + base) / 1024:.1f} GiB (interpreter, load buffers, workers, one shard).")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(data_dir()))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--peer-n", type=int, default=20_000)
    ap.add_argument("--corpus-dir", default="/tmp/curate_minhash_bench")
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--corpus")
    ap.add_argument("--tool")
    ap.add_argument("--n", type=int)
    ap.add_argument("--num-proc", type=int, default=1)
    ap.add_argument("--bands", type=int)
    ap.add_argument("--rows", type=int)
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--render", action="store_true",
                    help="re-render the tables from the committed benchmarks/results/minhash_speed.json")
    add_record_flag(ap)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    from curate.dedup.minhash import MinHashDedup

    b, r = MinHashDedup(num_perm=args.num_perm).band_shape()
    if args.render:
        runs = json.loads((RESULTS / "minhash_speed.json").read_text())
    else:
        biggest = max(args.sizes + [args.peer_n])
        t = time.perf_counter()
        corpus = make_corpus(Path(args.data), biggest, Path(args.corpus_dir))
        print(f"corpus {corpus} ({biggest} rows) ready in {time.perf_counter() - t:.0f}s; bands x rows = {b} x {r}")
        runs = [run_child(corpus, "datasketch", args.peer_n, 1, b, r, False)]
        for p in (1, 2):
            runs.append(run_child(corpus, "curate", args.peer_n, p, b, r, False))
        runs.append(run_child(corpus, "curate", args.peer_n, 1, b, r, True))
        for n in args.sizes:
            runs.append(run_child(corpus, "curate", n, 2, b, r, False))
        runs.append(run_child(corpus, "curate", args.sizes[0], 1, b, r, False))
        runs.append(run_child(corpus, "curate", args.sizes[0], 2, b, r, True))
    ds = runs[0]
    lines = [f"## minhash_dedup vs datasketch ({WORDS}-word docs built from real dolly/alpaca rows, 10% planted "
             f"near-dups; num_perm={args.num_perm}, {b} bands x {r} rows, word 5-grams; 2 CPU cores)", "",
             "| tool | rows | procs | exact check | wall s | rows/s | vs datasketch (wall) | CPU s | vs datasketch (CPU per row) | RSS after load MB | peak RSS MB (all processes) | dropped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in runs:
        ratio = x["rows_per_s"] / ds["rows_per_s"]
        cpu_ratio = (ds["cpu_seconds"] / ds["n"]) / (x["cpu_seconds"] / x["n"])
        lines.append(f"| {x['tool']} | {x['n']:,} | {x['num_proc']} | {x.get('check_false_positives', False)} | "
                     f"{x['seconds']:.1f} | {x['rows_per_s']:,.0f} | {ratio:.1f}x | {x['cpu_seconds']:.1f} | {cpu_ratio:.1f}x | "
                     f"{x['rss_after_load_mb']:.0f} | "
                     f"{x['peak_tree_rss_mb']:.0f} | {x['dropped']:,} |")
    lines += ["", extrapolate(runs)]
    text = "\n".join(lines)
    print("\n" + text)
    out_dir = output_dir(args)
    (out_dir / "minhash_speed.md").write_text(text + "\n")
    (out_dir / "minhash_speed.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
