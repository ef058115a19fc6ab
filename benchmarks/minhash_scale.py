"""``minhash_dedup`` at 1M-10M documents: wall time, peak memory, disk, docs/s, F1 on planted pairs,
against datatrove's 4-step MinHash, the previous curate, and itself on a 2-worker Dask LocalCluster.

Corpora: ``benchmarks/minhash_corpus.py`` (real text, 10% planted near-duplicates with 2% typos;
``short`` = 200-word documents of Dolly/Alpaca rows, ``web`` = ~4 KB documents of the real pages
in sample_web/). Each job runs in a fresh process (``--child``) on the corpus memory-mapped from
an Arrow IPC file, as curate's cache hands a table to a stage, and does what the engine does for
the step: ``stage.check(stage.select(table, ctx), n).to_table()``. Its process tree (workers
included) is sampled every 0.5 s (``proc_sampler``): peak resident memory, its anonymous part
(what the processes hold; the rest is pages of the memory-mapped input, which the kernel drops
under pressure) and the peak size of the work folder.

Jobs (``JOBS``): ``curate`` (this checkout), ``curate_prev`` (the previous curate, a copy of an
older checkout's ``curate/`` given by ``--prev``, e.g. ``git archive <commit> curate | tar -x -C
/tmp/curate_prev``), ``curate_dask`` (this checkout inside ``flows.dask_dedup.dask_executor`` with
a 2-worker LocalCluster), ``datatrove`` (``benchmarks/minhash_datatrove.py`` in datatrove's own
virtualenv, ``--dt-python``). Results are appended to ``runs/bench/minhash_scale/minhash_scale.jsonl``
(``--record``: ``benchmarks/results/``) as each job ends, so a killed run resumes with the jobs not
done; the tables go to ``minhash_scale.{md,json}`` beside it. ``--render`` alone re-renders the
committed log into the run folder.

Quality (``evaluate``): recall = planted (copy, source) pairs whose exact word-5-gram Jaccard
(curate's normalisation) is >= t that end in one cluster; precision = dropped documents (a
seeded sample of 20,000) whose Jaccard with the document kept for their cluster is >= t;
F1 of the two. t = 0.7 for the FineWeb settings (their S-curve's midpoint is 0.72), else the
stage's threshold.

Usage (from the repository root, ~hours for all; on the 2-core machine, nice'd)::

    python benchmarks/minhash_scale.py --jobs short-1M-curate-fineweb short-1M-datatrove ... [--record]
    python benchmarks/minhash_scale.py --render [--record]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from proc_sampler import TreeSampler  # noqa: E402
from results_io import RESULTS, add_record_flag, output_dir

LOG = RESULTS / "minhash_scale.jsonl"  # set_log picks the run folder's unless --log / --record
CORPUS_DIR = Path("/tmp/mhscale/corpus")
WORK_DIR = Path("/tmp/mhscale/work")
FINEWEB = {"preset": "fineweb"}

# name -> (corpus kind, rows, tool, stage parameters)
JOBS: dict[str, tuple[str, int, str, dict]] = {
    "short-1M-curate-fineweb": ("short", 1_000_000, "curate", FINEWEB),
    "short-1M-prev-fineweb": ("short", 1_000_000, "curate_prev", {**FINEWEB, "num_proc": 2}),
    "short-1M-datatrove": ("short", 1_000_000, "datatrove", {}),
    # datatrove's bands (14 x 8, word 5-grams) with curate's exact check at 0.7, the threshold of the F1
    "short-1M-curate-14x8-check": ("short", 1_000_000, "curate",
                                   {"num_perm": 112, "bands": 14, "rows": 8, "ngram": 5, "threshold": 0.7}),
    "short-1M-dask-fineweb": ("short", 1_000_000, "curate_dask", FINEWEB),
    "short-1M-curate-default": ("short", 1_000_000, "curate", {}),
    "short-1M-prev-default": ("short", 1_000_000, "curate_prev", {"num_proc": 2}),
    "web-1M-curate-fineweb": ("web", 1_000_000, "curate", FINEWEB),
    "short-3M-curate-fineweb": ("short", 3_000_000, "curate", FINEWEB),
    "short-10M-curate-fineweb": ("short", 10_000_000, "curate", FINEWEB),
    "short-10M-curate-default": ("short", 10_000_000, "curate", {}),
}
# the same on 20,000 documents: a check of the machinery (``--log`` elsewhere)
JOBS.update({f"smoke-{k.split('-', 2)[2]}": ("short", 20_000, tool, p) for k, (_, n, tool, p) in list(JOBS.items())
             if n == 1_000_000 and k.startswith("short")})


def corpus_path(kind: str, n: int) -> Path:
    return CORPUS_DIR / f"{kind}_{n}.arrow"


def selection_hash(keep: np.ndarray, cluster: np.ndarray, dup_of: list) -> str:
    """sha256 of the decision: keep flags, cluster ids and dup_of ids (the output a run hands on)."""
    h = hashlib.sha256(np.asarray(keep, bool).tobytes())
    h.update(np.asarray(cluster, np.int64).tobytes())
    h.update("\n".join("" if d is None else d for d in dup_of).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- child: one job, measured
def child(name: str, work: Path, corpus: Path) -> dict:
    kind, n, tool, params = JOBS[name]
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    logging.basicConfig(filename=str(work / "child.log"), level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")

    from curate.core.stage import StageContext
    from curate.dedup.minhash import MinHashDedup

    table = pa.ipc.open_file(pa.memory_map(str(corpus))).read_all().select(["id", "text"])
    stage = MinHashDedup(**params)
    out = {"job": name, "tool": tool, "kind": kind, "n": table.num_rows, "params": params,
           "text_gib": round(table.column("text").nbytes / 2**30, 3)}
    if hasattr(stage, "plan"):
        import pyarrow.compute as pc

        out["estimate"] = stage.plan(table.num_rows, int(pc.sum(pc.binary_length(table.column("text"))).as_py())).as_dict()
    ctx = StageContext(work_dir=work / "w", artifact_dir=None, show_progress=False)
    sampler = TreeSampler(work)
    clock = PhaseClock(sampler)
    t = time.perf_counter()
    if tool == "curate_dask":
        sys.path.insert(0, str(HERE.parent))
        from flows.dask_dedup import dask_executor

        with dask_executor(n_workers=2):
            t = time.perf_counter()  # the cluster's start-up is reported apart
            sel = stage.check(stage.select(table, ctx), table.num_rows)
            sel_table = sel.to_table()
    else:
        sel = stage.check(stage.select(table, ctx), table.num_rows)
        sel_table = sel.to_table()
    out["seconds"] = round(time.perf_counter() - t, 2)
    out.update(sampler.stop())
    out["phase_peak_anon_mb"] = clock.peaks(time.monotonic() - sampler.t0)
    out["docs_per_s"] = round(table.num_rows / out["seconds"])
    out["dropped"] = int((~sel.keep).sum())
    out["output_hash"] = selection_hash(sel.keep, sel.extras["dup_cluster"], sel.extras["dup_of"].tolist())
    pq.write_table(sel_table, work / "selection.parquet")
    return out


class PhaseClock:
    """Logging handler noting when ``minhash_dedup`` logs its plan (right before the phases) and
    its phase seconds (right after them), on the sampler's clock."""

    def __init__(self, sampler: TreeSampler):
        import logging

        self.sampler, self.marks = sampler, {}
        outer = self

        class Handler(logging.Handler):
            def emit(self, record) -> None:
                msg = record.getMessage()
                now = time.monotonic() - outer.sampler.t0
                if "; plan {" in msg:
                    outer.marks["phases_start"] = now
                elif "phase seconds" in msg:
                    outer.marks["phases_end"] = now
                    outer.marks["secs"] = msg.split("phase seconds", 1)[1].strip()

        self.handler = Handler()
        logging.getLogger("curate").addHandler(self.handler)

    def peaks(self, total: float) -> dict:
        """Peak anonymous memory (MiB) of each phase, of the set-up before them and of the decision
        and checks after them."""
        import ast

        if "secs" not in self.marks:
            return {}
        t = self.marks["phases_start"]
        spans = {"before": (0.0, t)}
        for name, d in ast.literal_eval(self.marks["secs"]).items():
            spans[name] = (t, t + d)
            t += d
        spans["after"] = (self.marks["phases_end"], total + 60.0)
        return {k: round(v) for k, v in self.sampler.peaks_between(spans).items()}


# ---------------------------------------------------------------- quality on planted pairs
def jaccards(texts, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact word-5-gram Jaccard (curate's normalisation) of row pairs (a[i], b[i]), in chunks."""
    import pyarrow as pa

    from curate.dedup.minhash_core import pair_jaccard, shingle_hashes

    out = np.empty(len(a))
    for lo in range(0, len(a), 100_000):
        aa, bb = a[lo:lo + 100_000], b[lo:lo + 100_000]
        rows = np.unique(np.concatenate([aa, bb]))
        sh, off = shingle_hashes(take_strings(texts, rows), ngram=5, ngram_unspaced=None)
        out[lo:lo + len(aa)] = pair_jaccard(sh, off, np.searchsorted(rows, aa), np.searchsorted(rows, bb))
    return out


def take_strings(col, rows: np.ndarray):
    """``col.take(rows)`` (rows ascending) chunk by chunk: a plain ``take`` first concatenates the
    chunks into one array with 32-bit offsets, which overflows past 2 GiB of text (3M+ documents)."""
    import pyarrow as pa

    bounds = np.cumsum([0] + [len(c) for c in col.chunks])
    which = np.searchsorted(bounds, rows, side="right") - 1
    parts = [col.chunk(k).take(pa.array(rows[which == k] - bounds[k])) for k in np.unique(which)]
    return pa.chunked_array(parts, type=col.type)


def decision_of(job: dict, work: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep, cluster, rep) per row; rep = the row kept for a dropped row's cluster, else -1."""
    import pyarrow.parquet as pq

    if job["tool"] == "datatrove":
        dec = json.loads((work / "decision.json").read_text())
        starts = json.loads((work / "parts.json").read_text())
        keep, cluster = np.ones(n, bool), np.full(n, -1, np.int64)
        for f, d in enumerate(dec):
            keep[np.array(d["removed"], np.int64) + starts[f]] = False
            cluster[np.array(d["cluster_doc"], np.int64) + starts[f]] = np.array(d["cluster_id"], np.int64)
    else:
        t = pq.read_table(work / "selection.parquet")
        keep = t.column("keep").to_numpy(zero_copy_only=False)
        cluster = t.column("dup_cluster").to_numpy()
    rep = np.full(n, -1, np.int64)
    inc = np.flatnonzero(cluster >= 0)
    kept_in = inc[keep[inc]]
    head = np.full(int(cluster.max()) + 1 if len(inc) else 0, -1, np.int64)
    head[cluster[kept_in]] = kept_in
    drop = inc[~keep[inc]]
    rep[drop] = head[cluster[drop]]
    return keep, cluster, rep


def evaluate(job: dict, work: Path, corpus: Path, t: float, sample: int = 20_000) -> dict:
    import pyarrow as pa

    tab = pa.ipc.open_file(pa.memory_map(str(corpus))).read_all()
    texts, copy_of = tab.column("text"), tab.column("copy_of").to_numpy()
    keep, cluster, rep = decision_of(job, work, tab.num_rows)
    copies = np.flatnonzero(copy_of >= 0)
    j = jaccards(texts, copies, copy_of[copies])
    true = j >= t
    found = (cluster[copies] >= 0) & (cluster[copies] == cluster[copy_of[copies]])
    recall = float((found & true).sum() / max(true.sum(), 1))
    dropped = np.flatnonzero(~keep)
    rng = np.random.default_rng(0)
    s = rng.choice(dropped, size=min(sample, len(dropped)), replace=False) if len(dropped) else dropped
    s = s[rep[s] >= 0]
    precision = float((jaccards(texts, s, rep[s]) >= t).mean()) if len(s) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"t_eval": t, "dropped": int(len(dropped)), "planted_pairs": int(len(copies)), "planted_j_ge_t": int(true.sum()),
            "recall_planted": round(recall, 4), "recall_label": round(float(found.mean()), 4),
            "precision_sampled": round(precision, 4), "f1": round(f1, 4)}


# ---------------------------------------------------------------- orchestration
def done_jobs() -> dict[str, dict]:
    if not LOG.exists():
        return {}
    return {r["job"]: r for r in map(json.loads, LOG.read_text().splitlines()) if r.get("job")}


def set_log(path: str | None) -> None:
    global LOG
    if path:
        LOG = Path(path)


def datatrove_inputs(corpus: Path, parts: int = 2) -> tuple[Path, list[int]]:
    """The corpus as ``parts`` Parquet files (id, text) for datatrove's readers, and their first rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = corpus.with_suffix(".parquet.d")
    tab = pa.ipc.open_file(pa.memory_map(str(corpus))).read_all().select(["id", "text"])
    starts = [tab.num_rows * k // parts for k in range(parts)]
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < parts else tab.num_rows
            pq.write_table(tab.slice(a, b - a), tmp / f"part-{k:03d}.parquet", row_group_size=50_000)
        os.replace(tmp, folder)
    return folder, starts


def run_job(name: str, args) -> dict:
    kind, n, tool, params = JOBS[name]
    corpus = corpus_path(kind, n)
    if not corpus.exists():
        raise FileNotFoundError(f"{corpus}: build it first (benchmarks/minhash_corpus.py {kind} {n} {corpus})")
    work = WORK_DIR / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ)
    if tool == "datatrove":
        pdir, starts = datatrove_inputs(corpus)
        (work / "parts.json").write_text(json.dumps(starts))
        cmd = [args.dt_python, str(HERE / "minhash_datatrove.py"), str(pdir), str(work / "dt"), "--workers", "2"]
    else:
        cmd = [sys.executable, __file__, "--child", name, "--work", str(work), "--corpus", str(corpus)]
        if tool == "curate_prev":
            env["PYTHONPATH"] = str(Path(args.prev).resolve())
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise RuntimeError(f"{name} failed:\n{res.stderr[-4000:]}")
    got = json.loads(res.stdout.strip().splitlines()[-1])
    got.update({"job": name, "tool": tool, "kind": kind, "n": n, "params": params})
    if tool == "datatrove":
        got["docs_per_s"] = round(n / got["seconds"])
        (work / "decision.json").write_bytes((work / "dt" / "decision.json").read_bytes())
    t_eval = 0.7 if tool == "datatrove" or params.get("preset") == "fineweb" else params.get("threshold", 0.8)
    got["quality"] = evaluate(got, work, corpus, t_eval)
    got.setdefault("dropped", got["quality"]["dropped"])
    got["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(LOG, "a") as f:
        f.write(json.dumps(got) + "\n")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return got


def render() -> str:
    runs = done_jobs()
    lines = ["## minhash_dedup at scale (2-core machine, shared with a nice-19 training job; one process tree per job)", "",
             "| job | tool | documents | text GiB | wall s | docs/s | peak RSS GiB (anon) | estimate GiB (est/anon) | "
             "peak disk GiB | dropped | recall planted | precision (sampled) | F1 (t) | output hash |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in JOBS:
        r = runs.get(name)
        if r is None:
            continue
        q = r.get("quality", {})
        est = r.get("estimate", {}).get("memory_gb")
        anon = r["peak_anon_mb"] / 1024
        lines.append(f"| {name} | {r['tool']} | {r['n']:,} | {r.get('text_gib', '')} | {r['seconds']:.0f} | "
                     f"{r['docs_per_s']:,} | {r['peak_rss_mb'] / 1024:.2f} ({anon:.2f}) | "
                     f"{'' if est is None else f'{est:.2f} ({est / anon:.2f}x)'} | {r['peak_disk_mb'] / 1024:.2f} | "
                     f"{r.get('dropped', '')} | {q.get('recall_planted', '')} | {q.get('precision_sampled', '')} | "
                     f"{q.get('f1', '')} ({q.get('t_eval', '')}) | {r.get('output_hash', '')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", nargs="*", default=[])
    ap.add_argument("--child")
    ap.add_argument("--work")
    ap.add_argument("--corpus")
    ap.add_argument("--prev", default="/tmp/curate_prev")
    ap.add_argument("--dt-python", default="/tmp/dt-venv/bin/python")
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--log", default=None, help="results file (default runs/bench/minhash_scale/minhash_scale.jsonl, "
                                                "--record: benchmarks/results/minhash_scale.jsonl)")
    add_record_flag(ap)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), Path(args.corpus))), flush=True)
        return
    out_dir = output_dir(args)
    # --render alone reads the committed log (read only) and writes its tables to the run folder
    committed = args.render and not args.jobs and not args.record
    set_log(args.log or (RESULTS if committed else out_dir) / "minhash_scale.jsonl")
    done = done_jobs()
    for name in args.jobs:
        if name in done:
            print(f"{name}: done ({done[name]['finished']}), skipped", flush=True)
            continue
        print(f"{name}: running", flush=True)
        r = run_job(name, args)
        print(json.dumps(r), flush=True)
    md = render()
    if args.log is None:
        (out_dir / "minhash_scale.md").write_text(md + "\n")
        (out_dir / "minhash_scale.json").write_text(json.dumps(list(done_jobs().values()), indent=1))
    print(md)


if __name__ == "__main__":
    main()
