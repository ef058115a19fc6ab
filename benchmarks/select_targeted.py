"""Targeted-selection sanity check and costs for ``rds`` / ``zipfit`` (and SAE selection timings).

Pool = dolly_15k + 5% (of dolly's size) rows drawn from gsm8k_train (seed 0); targets = the
first 8 GSM8K *test* questions with their answers (the same 8 as
``sample_targets/gsm8k_test_8.jsonl``). A targeted method at a 5% budget should pick mostly
GSM8K rows. The GSM8K share of the pool is 4.8%, so random selection gets ~5%, and since the
budget (5% of the pool) is a little larger than the number of GSM8K rows, the best possible
fraction is n_gsm8k / budget (~0.95).

Each ``--step`` is one resumable unit (embedding shards and stage outputs are cached under
``--cache``); results go to ``--out/<step>.json`` (default
runs/bench/select_targeted/select_targeted/; ``--record``: benchmarks/results/select_targeted/) and
``summary`` merges them. Run each step under the shared lock, e.g.::

    flock /work/heavy.lock python benchmarks/select_targeted.py --step cost --data "$CURATE_DATA"

Steps:
    cost         rows/s of the two rds embedders (MiniLM vs lm_pooling) on the same 200-row sample
                 of alpaca_44k, in one process, and the extrapolation to all 44,657 rows.
    zipfit       zipfit on the full targeted pool.
    rds_minilm   rds (MiniLM) on the full targeted pool (embeds it first; resumable by shard).
    sub_minilm / sub_zipfit
                 rds (MiniLM) and zipfit on a subsample (3,000 Dolly + 150 GSM8K rows).
    small        rds with MiniLM, rds with lm_pooling (the paper's embedding) and zipfit on a
                 small subsample (600 Dolly + 30 GSM8K rows): lm_pooling encodes ~1 row/s on
                 this CPU, too slow for the full pool (embedding shards of 100 rows resume).
    sae          sae_greedy / sae_simscale on the full pool's MiniLM embeddings: SAE training
                 time, selection time, feature coverage vs random at 1,000 rows and 5%.
    sae_curve    the same coverage comparison at 25..400 rows (after ``sae``; seconds).
    summary      merge the step results into ``--out/../select_targeted.json`` and print a table.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir

from curate.cache.store import StageStore
from curate.core.hashing import table_fingerprint
from curate.engine.pipeline import Runner  # noqa: E402
from curate.engine.provenance import Ledger  # noqa: E402
from curate.ingest import read as cio

SUB_DOLLY, SUB_GSM = 3000, 150
SMALL_DOLLY, SMALL_GSM = 600, 30  # lm_pooling runs ~1 row/s here: the subsample it can afford


def build_pool(data: Path, sub: bool | str = False) -> tuple[pa.Table, list[dict]]:
    dolly = cio.read_input(data / "instruct" / "dolly_15k.json").table
    gsm = cio.read_input(data / "instruct" / "gsm8k_train.jsonl").table
    rng = np.random.default_rng(0)
    n_gsm = round(0.05 * dolly.num_rows)
    gsm = gsm.take(np.sort(rng.choice(gsm.num_rows, n_gsm, replace=False)))
    if sub:
        nd, ng = (SMALL_DOLLY, SMALL_GSM) if sub == "small" else (SUB_DOLLY, SUB_GSM)
        dolly = dolly.take(np.sort(np.random.default_rng(1).choice(dolly.num_rows, nd, replace=False)))
        gsm = gsm.take(np.sort(np.random.default_rng(2).choice(gsm.num_rows, ng, replace=False)))
    pool = pa.concat_tables([dolly, gsm.cast(dolly.schema)])
    targets = [json.loads(line) for line in open(data / "eval" / "gsm8k_test.jsonl")][:8]
    return pool, [{"question": t["question"], "answer": t["answer"]} for t in targets]


def run_method(pool, stage, cache: Path, extra_stages=()) -> dict:
    """Run [extra annotators..., stage] through the Runner; time every step and the bare select."""
    runner = Runner(StageStore(cache), show_progress=True)
    ledger = Ledger(pool.column("id").to_pylist(), [], pool.column("source").to_pylist())
    t0 = time.perf_counter()
    table, _, records = runner.run_stages(list(extra_stages) + [stage], pool, table_fingerprint(pool), ledger)
    total = time.perf_counter() - t0
    ids = table.column("id").to_pylist()
    n_gsm_pool = sum("gsm8k" in i for i in pool.column("id").to_pylist())
    n_gsm = sum("gsm8k" in i for i in ids)
    out = {"rows": pool.num_rows, "gsm8k_in_pool": n_gsm_pool, "selected": len(ids), "gsm8k_selected": n_gsm,
           "gsm8k_fraction": n_gsm / max(len(ids), 1), "best_possible_fraction": min(n_gsm_pool, len(ids)) / max(len(ids), 1),
           "random_expected_fraction": n_gsm_pool / pool.num_rows,
           "steps": [{"step": r.label, "seconds": round(r.seconds, 2), "cached": r.cached, "auto": r.auto} for r in records],
           "total_seconds": round(total, 2)}
    # the selection step alone on the annotated table (annotations present), twice: the first call
    # includes loading the embedder for the 8 targets (rds), the second reuses them
    annotated = annotate(pool, cache, extra_stages)
    for name in ("select_seconds_first", "select_seconds_again"):
        t = time.perf_counter()
        stage.select(annotated, None)
        out[name] = round(time.perf_counter() - t, 3)
    return out


def annotate(pool, cache: Path, stages) -> pa.Table:
    """``pool`` with the columns of ``stages`` (annotators; cached after a first run)."""
    runner = Runner(StageStore(cache), show_progress=False)
    ledger = Ledger(pool.column("id").to_pylist(), [], pool.column("source").to_pylist())
    return runner.run_stages(list(stages), pool, table_fingerprint(pool), ledger)[0]


def step_cost(data: Path) -> dict:
    from curate.embed.stage import Embed, build_texts

    alpaca = cio.read_input(data / "instruct" / "alpaca_44k.json").table
    sample = alpaca.take(np.sort(np.random.default_rng(0).choice(alpaca.num_rows, 200, replace=False)))
    texts = build_texts(sample)
    res = {"sample_rows": 200, "sample_from": "alpaca_44k.json", "alpaca_rows": alpaca.num_rows}
    for backend in ("sentence_transformers", "lm_pooling"):
        emb = Embed(backend=backend, show_progress=False)
        t = time.perf_counter()
        emb.encode(texts[:2])  # loads the model
        load = time.perf_counter() - t
        t = time.perf_counter()
        emb.encode(texts)
        secs = time.perf_counter() - t
        res[backend] = {"load_seconds": round(load, 2), "encode_seconds": round(secs, 2),
                        "rows_per_second": round(200 / secs, 2),
                        "alpaca_44k_minutes_extrapolated": round(alpaca.num_rows / (200 / secs) / 60, 1)}
    res["lm_pooling_over_minilm_time"] = round(res["lm_pooling"]["encode_seconds"] / res["sentence_transformers"]["encode_seconds"], 2)
    return res


def step_select(data: Path, cache: Path, method: str, sub: bool, backend: str = "sentence_transformers") -> dict:
    from curate.embed.stage import Embed
    from curate.select.rds import RDS
    from curate.select.zipfit import ZipFit

    pool, targets = build_pool(data, sub)
    if method == "zipfit":
        return run_method(pool, ZipFit(budget=0.05, targets=targets), cache)
    stage = RDS(budget=0.05, targets=targets, backend=backend)
    embed = Embed(backend=backend, column=stage.column_, shard_size=100 if backend == "lm_pooling" else 4096)
    out = run_method(pool, stage, cache, [embed])
    out["backend"] = backend
    return out


def step_small(data: Path, cache: Path) -> dict:
    """RDS+ with MiniLM and with lm_pooling (the paper's pooling) and zipfit on the same small sample."""
    out = {}
    for name, method, backend in (("rds_minilm", "rds", "sentence_transformers"), ("zipfit", "zipfit", None),
                                  ("rds_lm_pooling", "rds", "lm_pooling")):
        t = time.perf_counter()
        out[name] = step_select(data, cache, method, "small", backend or "sentence_transformers")
        out[name]["wall_seconds"] = round(time.perf_counter() - t, 1)
    return out


def step_sae(data: Path, cache: Path) -> dict:
    from curate.embed.stage import Embed
    from curate.select.sae import (
        SAEFeatures,
        SAEGreedy,
        SAESimScale,
        feature_coverage_vs_random,
    )

    pool, _ = build_pool(data)
    pre = [Embed(), SAEFeatures()]
    t = time.perf_counter()
    annotated = annotate(pool, cache, pre)
    out = {"annotate_seconds_embed_cached": round(time.perf_counter() - t, 2)}
    for budget in (1000, 0.05):
        for cls in (SAESimScale, SAEGreedy):
            stage = cls(budget=budget)
            res = run_method(pool, stage, cache, pre)
            sel = stage.select(annotated, None)
            res["coverage"] = feature_coverage_vs_random(annotated, sel.keep, seed=0)
            out[f"{stage.name}@{budget}"] = res
    return out


def step_sae_curve(data: Path, cache: Path) -> dict:
    """Feature coverage vs random at small budgets (after ``sae``: everything is cached, seconds)."""
    from curate.embed.stage import Embed
    from curate.select.sae import (
        SAEFeatures,
        SAEGreedy,
        SAESimScale,
        feature_coverage_vs_random,
    )

    pool, _ = build_pool(data)
    annotated = annotate(pool, cache, [Embed(), SAEFeatures()])
    ids = np.array(annotated.column("id").to_pylist())
    out = {}
    for budget in (25, 50, 100, 200, 400):
        for cls in (SAEGreedy, SAESimScale):
            stage = cls(budget=budget)
            t = time.perf_counter()
            sel = stage.select(annotated, None)
            res = feature_coverage_vs_random(annotated, sel.keep, seed=0)
            res["select_seconds"] = round(time.perf_counter() - t, 3)
            res["gsm8k_selected"] = int(sum("gsm8k" in i for i in ids[sel.keep]))
            out[f"{stage.name}@{budget}"] = res
    return out


def summary(out_dir: Path) -> dict:
    res = {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))}
    (out_dir.parent / "select_targeted.json").write_text(json.dumps(res, indent=2))
    flat = {}
    for name, r in res.items():
        if name == "small":
            flat.update({f"small/{k}": v for k, v in r.items()})
        elif "gsm8k_fraction" in r:
            flat[name] = r
    for name, r in flat.items():
        if "gsm8k_fraction" in r:
            print(f"{name:20s} rows={r['rows']:6d} budget={r['selected']:5d} gsm8k_fraction={r['gsm8k_fraction']:.3f} "
                  f"(best {r['best_possible_fraction']:.3f}, random {r['random_expected_fraction']:.3f}) "
                  f"select={r['select_seconds_first']}s/{r['select_seconds_again']}s total={r['total_seconds']}s")
    if "cost" in res:
        c = res["cost"]
        for b in ("sentence_transformers", "lm_pooling"):
            print(f"cost {b:22s} {c[b]['rows_per_second']:7.2f} rows/s  load {c[b]['load_seconds']}s  "
                  f"alpaca_44k ~{c[b]['alpaca_44k_minutes_extrapolated']} min")
        print(f"lm_pooling / MiniLM encode time: {c['lm_pooling_over_minilm_time']}x")
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", required=True, choices=["cost", "zipfit", "rds_minilm", "sub_minilm",
                                                      "sub_zipfit", "small", "sae", "sae_curve", "summary"])
    ap.add_argument("--data", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--cache", type=Path, default=None, help="stage cache (default $CURATE_CACHE)")
    ap.add_argument("--out", type=Path, default=None,
                    help="step results folder (default select_targeted/ in the run folder or, with --record, "
                         "in benchmarks/results/)")
    add_record_flag(ap)
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = output_dir(a, "select_targeted") / "select_targeted"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from curate.cache.store import default_cache_dir

    cache = a.cache or default_cache_dir()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.step == "summary":
        summary(a.out)
        return
    if a.step == "cost":
        res = step_cost(a.data)
    elif a.step == "sae":
        res = step_sae(a.data, cache)
    elif a.step == "sae_curve":
        res = step_sae_curve(a.data, cache)
    elif a.step == "small":
        res = step_small(a.data, cache)
    else:
        method = "zipfit" if "zipfit" in a.step else "rds"
        res = step_select(a.data, cache, method, a.step.startswith("sub"))
    res["step"] = a.step
    (a.out / f"{a.step}.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
