"""How well our ``ifd`` top-5% agrees with Cherry LLM's published 5% of Alpaca: a SAMPLE estimate.

Cherry (Li et al., NAACL 2024, arXiv 2308.12032) scored all of Alpaca-52k with IFD from its own
"pre-experienced" LLaMA-7B, dropped rows with IFD >= 1 and published the top 5%
(instruct/cherry_alpaca_5_percent.json). We score a seeded random sample of alpaca_44k with
curate's ``ifd`` stage (SmolLM2-135M-Instruct, ~0.5 rows/s on this CPU, so not the whole pool),
apply the same rule inside the sample (IFD < 1, top 5% by IFD), and report:

* base rate: the share of sample rows that are in Cherry's set;
* precision of our top 5% (the share of it in Cherry's set) and lift = precision / base rate,
  with a bootstrap 95% interval (rows resampled, the top 5% recomputed in each resample);
* ROC AUC of IFD for Cherry membership among IFD < 1 rows, with a bootstrap interval.

Agreement, not correctness: different models, and a sample of a few hundred rows holds only a few
dozen of Cherry's rows, so the intervals are wide. Units of ``--unit-size`` rows each run in their
own process (meant for ``flock /work/heavy.lock``)::

    python benchmarks/ifd_cherry.py OUT_DIR --unit 0      # rows 0-99 of the sample
    python benchmarks/ifd_cherry.py OUT_DIR --report      # joins the finished units

Writes runs/bench/ifd_cherry/ifd_cherry.{md,json} (``--record``: benchmarks/results/).

**Whole pool** (``--full RUN_DIR``): the same statistics on every row of an eval's decontaminated
pool (``RUN_DIR/pool/pool.parquet``), with IFD read from the eval's stage cache
(``RUN_DIR/stage_cache``: the ``ifd`` stage that ``configs/eval/alpaca_1k.yaml``'s ``top_k_ifd`` arm
runs has the same cache key, so nothing is recomputed once that arm has scored the pool; a
missing part is computed, resumably, with a progress bar). Adds the agreement of the arm's own
rule (``cherry_ifd``, ``--budget`` rows) with Cherry's set. Writes ``ifd_cherry_full.{md,json}``::

    python benchmarks/ifd_cherry.py --full runs/eval_alpaca_1k --budget 1000
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from results_io import add_record_flag, data_dir, write_results


def _norm(r: dict) -> tuple:
    return tuple(" ".join(str(r.get(k) or "").split()) for k in ("instruction", "input", "output"))


def sample(data: Path, n: int, seed: int):
    """(sample table, in_cherry (n,) bool) for a seeded random sample of alpaca_44k."""
    from curate.ingest.read import read_input

    table = read_input(str(data / "instruct" / "alpaca_44k.json")).table
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=n, replace=False))
    t = table.take(idx)
    return t, in_cherry(t, data)


def run_unit(data: Path, out: Path, i: int, size: int, n: int, seed: int) -> None:
    from curate.core.stage import StageContext
    from curate.score.stages import IFD

    path = out / f"unit_{i:03d}.npz"
    if path.exists():
        return
    t, _ = sample(data, n, seed)
    part = t.slice(i * size, size)
    if part.num_rows == 0:
        raise SystemExit(f"--unit {i} is past the sample's end ({n} rows)")
    t0 = time.perf_counter()
    # the stage's own shards under work_dir make a killed unit resume where it stopped
    res = IFD(show_progress=False).annotate(part, StageContext(work_dir=out / f"work_{i:03d}", show_progress=False))
    dt = time.perf_counter() - t0
    tmp = out / f".unit_{i:03d}.tmp.npz"
    np.savez(tmp, ids=np.array(part.column("id").to_pylist()), ifd=res.column("ifd").to_numpy(zero_copy_only=False),
             seconds=np.float64(dt))
    os.replace(tmp, path)
    with open(out / "progress.log", "a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} unit {i}: {part.num_rows} rows in {dt:.0f}s ({part.num_rows / dt:.2f} rows/s)\n")


def _top_share(ifd: np.ndarray, member: np.ndarray, frac: float) -> tuple[float, int]:
    ok = ~np.isnan(ifd) & (ifd < 1)  # Cherry drops IFD >= 1 before ranking
    k = max(1, int(round(frac * ok.sum())))
    order = np.flatnonzero(ok)[np.argsort(-ifd[ok], kind="stable")[:k]]
    return float(member[order].mean()), k


def _auc(score: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos, neg = y.sum(), (~y).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    r = rankdata(score)
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def in_cherry(table, data: Path) -> np.ndarray:
    """(n,) bool: the row's whitespace-normalised (instruction, input, output) is in Cherry's 5%."""
    cherry = {_norm(r) for r in json.loads((data / "instruct" / "cherry_alpaca_5_percent.json").read_text())}
    rows = zip(*(table.column(c).to_pylist() for c in ("instruction", "input", "output")))
    return np.array([_norm(dict(zip(("instruction", "input", "output"), r))) in cherry for r in rows], dtype=bool)


def report(data: Path, out: Path, n: int, seed: int, frac: float, n_boot: int = 2000) -> dict:
    t, member = sample(data, n, seed)
    ids = t.column("id").to_pylist()
    units = sorted(out.glob("unit_*.npz"))
    got, secs = {}, 0.0
    for u in units:
        with np.load(u) as z:
            got.update(zip(z["ids"].tolist(), z["ifd"].tolist()))
            secs += float(z["seconds"])
    have = np.array([i in got for i in ids])
    ifd = np.array([got.get(i, np.nan) for i in ids], dtype=np.float64)[have]
    res = agreement(ifd, member[have], frac, seed, n_boot)
    return {"sample_rows": int(have.sum()), "sample_planned": n, "seed": seed,
            "rows_per_s": float(have.sum() / secs) if secs else None, **res}


def agreement(ifd: np.ndarray, y: np.ndarray, frac: float, seed: int, n_boot: int) -> dict:
    """Precision / lift of the top ``frac`` by IFD (IFD < 1 rows) and AUC, with bootstrap intervals.

    Args:
        ifd: (n,) float IFD, NaN where unscored.
        y: (n,) bool Cherry membership.
        frac: share of the IFD < 1 rows taken as "our top".
        seed: bootstrap RNG seed (seed + 1 is used, as the sample mode always did).
        n_boot: bootstrap resamples (rows resampled, the top recomputed in each).
    """
    prec, k = _top_share(ifd, y, frac)
    base = float(y.mean())
    ok = ~np.isnan(ifd) & (ifd < 1)
    rng = np.random.default_rng(seed + 1)
    lifts, aucs = [], []
    for _ in range(n_boot):
        b = rng.integers(0, len(ifd), len(ifd))
        p, _ = _top_share(ifd[b], y[b], frac)
        if y[b].mean() > 0:
            lifts.append(p / y[b].mean())
        bo = b[ok[b]]
        aucs.append(_auc(ifd[bo], y[bo]))
    res = {"top_frac": frac, "cherry_in_sample": int(y.sum()), "base_rate": base, "ifd_ge_1": int((~np.isnan(ifd) & (ifd >= 1)).sum()),
           "top_k": k, "top_in_cherry": int(round(prec * k)), "precision": prec, "lift": prec / base if base else None,
           "lift_ci95": [float(np.nanpercentile(lifts, 2.5)), float(np.nanpercentile(lifts, 97.5))] if lifts else None,
           "auc": _auc(ifd[ok], y[ok]),
           "auc_ci95": [float(np.nanpercentile(aucs, 2.5)), float(np.nanpercentile(aucs, 97.5))]}
    return res


def full_pool(data: Path, run_dir: Path, frac: float, budget: int, n_boot: int = 2000) -> dict:
    """The agreement statistics on every row of ``run_dir``'s eval pool (IFD from its stage cache).

    Also the overlap of ``cherry_ifd`` (``budget`` rows: IFD <= 1, not truncated, highest IFD) with
    Cherry's set, against the overlap a random ``budget`` rows would have (the base rate).
    """
    import pyarrow.parquet as pq

    import curate

    pool = pq.read_table(run_dir / "pool" / "pool.parquet")
    t0 = time.perf_counter()
    ds = curate.select(pool, method="ifd", cache_dir=str(run_dir / "stage_cache"), show_progress=True, schema="canonical")
    t = ds.data.table
    ifd = t.column("ifd").to_numpy(zero_copy_only=False).astype(np.float64)
    cut = np.array(t.column("ifd_truncated").to_pylist(), dtype=object)
    y = in_cherry(t, data)
    # the stage's wall time: seconds when its result comes from the stage cache, hours when it scores
    res = {"pool_rows": t.num_rows, "ifd_stage_seconds": round(time.perf_counter() - t0, 1), "run_dir": str(run_dir),
           "unscored": int(np.isnan(ifd).sum()), "truncated": int(sum(c is True for c in cut)),
           **agreement(ifd, y, frac, 0, n_boot)}
    res["cherry_in_pool"] = res.pop("cherry_in_sample")  # here the "sample" is the whole pool
    sel = curate.select(t, method="cherry_ifd", budget=budget, schema="canonical")
    picked = np.isin(np.asarray(t.column("id").to_pylist(), dtype=object), sel["id"])
    res["cherry_ifd"] = {"budget": budget, "in_cherry": int(y[picked].sum()),
                         "precision": float(y[picked].mean()), "lift": float(y[picked].mean() / y.mean())}
    return res


def render_full(r: dict) -> str:
    c = r["cherry_ifd"]
    return "\n".join([
        "# Our IFD vs Cherry LLM's published 5% of Alpaca (whole pool)", "",
        f"Every row of the eval pool in `{r['run_dir']}` ({r['pool_rows']:,} decontaminated alpaca_44k rows), "
        f"scored by curate's `ifd` stage (SmolLM2-135M-Instruct, alpaca template, max_length 512). "
        f"{r['cherry_in_pool']:,} of them are in Cherry's set (base rate {r['base_rate']:.1%}); "
        f"{r['ifd_ge_1']:,} have IFD >= 1, {r['truncated']:,} were cut at max_length, {r['unscored']:,} have no IFD.", "",
        f"- Our top {r['top_frac']:.0%} of the IFD < 1 rows ({r['top_k']:,} rows): {r['top_in_cherry']:,} in Cherry's "
        f"set, precision {r['precision']:.1%}, lift over the base rate {r['lift']:.2f}x (bootstrap 95% interval "
        f"{r['lift_ci95'][0]:.2f}-{r['lift_ci95'][1]:.2f}).",
        f"- ROC AUC of IFD for Cherry membership (IFD < 1 rows): {r['auc']:.3f} (95% interval "
        f"{r['auc_ci95'][0]:.3f}-{r['auc_ci95'][1]:.3f}); 0.5 = no agreement.",
        f"- `cherry_ifd` at {c['budget']:,} rows (the eval's `top_k_ifd` arm): {c['in_cherry']:,} in Cherry's set, "
        f"precision {c['precision']:.1%}, lift {c['lift']:.2f}x.", "",
        "Agreement, not correctness: Cherry scored with its own pre-experienced LLaMA-7B on Alpaca-52k.", ""])


def render(r: dict) -> str:
    return "\n".join([
        "# Our IFD top-5% vs Cherry LLM's published 5% of Alpaca (sample estimate)", "",
        f"Seeded random sample of {r['sample_rows']} alpaca_44k rows (of {r['sample_planned']} planned, seed "
        f"{r['seed']}), scored by curate's `ifd` stage with SmolLM2-135M-Instruct at {r['rows_per_s']:.2f} rows/s. "
        f"{r['cherry_in_sample']} of them are in Cherry's set (base rate {r['base_rate']:.1%}); "
        f"{r['ifd_ge_1']} have IFD >= 1 and are dropped, as Cherry does.", "",
        f"- Our top {r['top_frac']:.0%} ({r['top_k']} rows): {r['top_in_cherry']} in Cherry's set, precision "
        f"{r['precision']:.1%}, lift over the base rate {r['lift']:.2f}x (bootstrap 95% interval "
        f"{r['lift_ci95'][0]:.2f}-{r['lift_ci95'][1]:.2f}).",
        f"- ROC AUC of IFD for Cherry membership (IFD < 1 rows): {r['auc']:.3f} (95% interval "
        f"{r['auc_ci95'][0]:.3f}-{r['auc_ci95'][1]:.3f}); 0.5 = no agreement.", "",
        "A sample estimate of agreement, not of correctness: Cherry scored with its own pre-experienced "
        "LLaMA-7B on the full Alpaca-52k; we use a 135M proxy LM on a few hundred rows.", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="units folder of the sample mode")
    ap.add_argument("--data", default=str(data_dir()), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unit-size", type=int, default=100)
    ap.add_argument("--top", type=float, default=0.05)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--unit", type=int)
    g.add_argument("--report", action="store_true")
    g.add_argument("--full", metavar="RUN_DIR", help="an eval output folder: every row of its pool")
    ap.add_argument("--budget", type=int, default=1000, help="cherry_ifd rows in --full (default 1000)")
    add_record_flag(ap)
    a = ap.parse_args()
    if a.full:
        r = full_pool(Path(a.data), Path(a.full), a.top, a.budget)
        write_results("ifd_cherry_full", r, render_full(r), indent=1)
        return
    if a.out is None:
        ap.error("OUT_DIR is required with --unit and --report")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.report:
        r = report(Path(a.data), out, a.n, a.seed, a.top)
        write_results("ifd_cherry", r, render(r), indent=1)
    else:
        run_unit(Path(a.data), out, a.unit, a.unit_size, a.n, a.seed)


if __name__ == "__main__":
    main()
