"""The seed papers' last methods on real pools: deita, llm_rating, learning_percentage (+ clust_rand), less.

Units, each written to ``OUT/units/<unit>.json`` and skipped when present (everything heavy goes
through the curate stage cache in ``OUT/cache``, so a killed unit resumes shard by shard):

* ``pool44k``: alpaca_44k (44,657 rows): MiniLM ``embedding`` + ``quality`` once, then random,
  top_k(quality), car, kmq, deita, clust_rand at 1,000 rows as recipe runs (one output folder
  each); the selection step's seconds come from each run's report; ``curate compare`` over the
  folders gives the overlap.
* ``rating``: ``llm_rater`` with SmolLM2-135M-Instruct, both scorings. (a) CaR's APE test pairs
  (expert-revised vs original Alpaca response, same instruction): pairwise accuracy; (b) a seeded
  sample of alpaca_44k: the rating distribution next to GPT-4's 1-10 scores of Alpaca's
  (text-davinci-003) outputs in gpt4llm_cmp_data_scores.json. That file holds numbers only, no
  text, and alpaca_44k's order is not the original, so rows cannot be matched: distributions only.
* ``lp``: learning_percentage, clust_rand and random on an N-row alpaca sub-pool (the fit on the
  whole pool is the cost: seconds per 1,000 rows).
* ``less``: the targeted check of docs/methods/rds.md on a small pool: alpaca rows + 10% GSM8K
  train rows, targets = the 8 GSM8K test questions of sample_targets/; share of GSM8K rows in
  LESS's picks vs rds (MiniLM) and random; cost of each LESS stage per 1,000 rows; then a second
  selection with other targets (self-instruct seed tasks) to show the pool's features are reused.

* ``proj``: LESS's Rademacher projection alone, 64 gradients of SmolLM2's LoRA size, d = 1024 and 8192.

``--pool-rows N`` runs ``pool44k`` on a seeded N-row sample (this session: 10,000; the whole pool's
MiniLM embedding would have taken about 28 minutes on the loaded CPU).

    python benchmarks/select_new_methods.py --unit pool44k [--pool-rows 10000] [--data "$CURATE_DATA"] [--out runs/bench_new_methods]
    python benchmarks/select_new_methods.py --report

Writes select_new_methods.{md,json} (+ select_new_methods_overlap.{md,png}) under
runs/bench/select_new_methods/ (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.environ.get("CURATE_ROOT", str(Path(__file__).resolve().parent.parent)))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_io import add_record_flag, data_dir, output_dir, write_results

REPO = Path(__file__).resolve().parent.parent
EMBED_QUALITY = [{"type": "embed", "show_progress": False}, {"type": "quality_model", "show_progress": False}]
POOL44K_METHODS = {
    "random": {"type": "random", "seed": 0},
    "top_k_quality": {"type": "top_k", "score": "quality"},
    "car": {"type": "car"},
    "kmq": {"type": "kmq"},
    "deita": {"type": "deita"},
    "clust_rand": {"type": "clust_rand"},
}


def load_new_stages() -> None:
    """Register the new modules (until the registry lists them)."""
    import curate.score.llm_rating
    import curate.select.deita
    import curate.select.learning_percentage
    import curate.select.less
    import curate.select.llm_rating
    import curate.train.learning_percentage
    import curate.train.less


def run_recipe(name: str, pool: Path, stages: list[dict], out: Path) -> dict:
    """One recipe run; returns {step label: (seconds, cached)} and the run's counts."""
    import curate

    t0 = time.perf_counter()
    res = curate.run({"name": name, "input": {"path": str(pool)}, "stages": stages, "output": {"dir": str(out)}},
                     show_progress=False, cache_dir=str(OUT / "cache"))
    steps = {s["label"]: {"seconds": round(float(s["seconds"]), 2), "cached": bool(s["cached"])}
             for s in res.report["stages"]}
    return {"steps": steps, "counts": res.counts, "wall": round(time.perf_counter() - t0, 1), "dir": str(out)}


def write_pool(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca(data: Path) -> list[dict]:
    return json.loads((data / "instruct" / "alpaca_44k.json").read_text())


# -- units -----------------------------------------------------------------------------------
def unit_pool44k(data: Path, budget: int = 1000) -> dict:
    from curate.report.compare import compare, render_markdown

    pool = data / "instruct" / "alpaca_44k.json"
    n_pool = 44657
    if POOL_ROWS:  # a seeded sub-pool when the whole one is not practical on the machine at hand (stated)
        rows = alpaca(data)
        pick = np.sort(np.random.default_rng(0).choice(len(rows), size=min(POOL_ROWS, len(rows)), replace=False))
        pool = write_pool([rows[i] for i in pick], OUT / "pool" / f"alpaca_44k_sample_{len(pick)}.jsonl")
        n_pool = len(pick)
    runs, dirs = {}, []
    for label, spec in POOL44K_METHODS.items():
        out = OUT / "alpaca_44k" / label
        runs[label] = run_recipe(label, pool, EMBED_QUALITY + [{**spec, "budget": budget}], out)
        dirs.append(out)
        print(label, runs[label]["steps"], flush=True)
    res = compare(dirs, OUT / "alpaca_44k" / "compare", plots=True)
    md = render_markdown(res)
    (output_dir() / "select_new_methods_overlap.md").write_text(md)
    png = OUT / "alpaca_44k" / "compare" / "overlap.png"
    if png.exists():
        shutil.copy(png, output_dir() / "select_new_methods_overlap.png")
    return {"budget": budget, "pool": str(pool), "pool_rows": n_pool, "runs": runs, "compare": res}


def rate(fields, work: Path, scoring: str, max_new_tokens: int = 64) -> tuple[np.ndarray, float]:
    """Ratings of RowFields rows with SmolLM2 (cached shards under ``work``); (ratings, seconds)."""
    import pyarrow as pa

    from curate.core.stage import StageContext
    from curate.score.llm_rating import LLMRater

    n = len(fields.instruction)
    t = pa.table({"id": [f"r{i}" for i in range(n)], "text": [""] * n, "instruction": fields.instruction,
                  "input": fields.input, "output": fields.output, "source": ["bench"] * n})
    st = LLMRater(scoring=scoring, max_new_tokens=max_new_tokens, device="cpu", show_progress=False)
    t0 = time.perf_counter()
    out = st.annotate(t, StageContext(work_dir=work, show_progress=False))
    return out.column("llm_rating").to_numpy(), time.perf_counter() - t0


def pair_stats(pos: np.ndarray, neg: np.ndarray) -> dict:
    ok = ~np.isnan(pos) & ~np.isnan(neg)
    win, tie = (pos > neg) & ok, (pos == neg) & ok
    return {"pairs": len(pos), "both_rated": int(ok.sum()), "revised_higher": int(win.sum()), "ties": int(tie.sum()),
            "original_higher": int((ok & (pos < neg)).sum()),
            "accuracy_ties_half": float((win.sum() + 0.5 * tie.sum()) / max(1, ok.sum())),
            "accuracy_strict": float(win.sum() / max(1, ok.sum())),
            "unparsed_ratings": int(np.isnan(pos).sum() + np.isnan(neg).sum())}


def dist(r: np.ndarray) -> dict:
    ok = r[~np.isnan(r)]
    hist = np.histogram(ok, bins=[0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.01])[0] if len(ok) else np.zeros(6)
    return {"n": len(r), "rated": len(ok), "mean": float(ok.mean()) if len(ok) else None,
            "share_ge_4_5": float((ok >= 4.5).mean()) if len(ok) else None,
            "hist_0_1_2_3_4_5": [int(x) for x in hist]}


def unit_rating(data: Path, n_pairs_generate: int = 24, n_alpaca: int = 120, n_alpaca_generate: int = 0,
                n_pairs_expected: int | None = 120) -> dict:
    from score_common import load_pairs, subset

    pos, neg = load_pairs(data, "test")
    n = len(pos.instruction)
    out = {"ape_pairs_split": "test", "n_pairs_total": n}
    rng = np.random.default_rng(0)
    perm = rng.permutation(n)  # generation is slow: its pairs are the first of the expected-score sample
    every = np.sort(perm[:n if n_pairs_expected is None else min(n, n_pairs_expected)])
    sample = np.sort(perm[:min(n_pairs_generate, len(every))])
    for scoring, idx in (("expected", every), ("generate", sample)):
        rp, sp = rate(subset(pos, idx), OUT / "rating" / f"ape_pos_{scoring}", scoring)
        rn, sn = rate(subset(neg, idx), OUT / "rating" / f"ape_neg_{scoring}", scoring)
        out[f"ape_{scoring}"] = {**pair_stats(rp, rn), "seconds": round(sp + sn, 1), "rows": 2 * len(idx)}
        print(scoring, out[f"ape_{scoring}"], flush=True)
    rows = alpaca(data)
    pick = np.sort(np.random.default_rng(0).choice(len(rows), size=n_alpaca, replace=False))
    from curate.score.rows import RowFields

    f = RowFields([rows[i]["instruction"] for i in pick], [rows[i].get("input") or "" for i in pick],
                  [rows[i]["output"] for i in pick], [""] * n_alpaca, np.ones(n_alpaca, bool))
    for scoring, m in (("expected", n_alpaca), ("generate", n_alpaca_generate)):
        if not m:  # generation is slow (about 14 s a row here) and SmolLM2's answers did not parse on APE rows
            continue
        r, s = rate(subset(f, np.arange(m)), OUT / "rating" / f"alpaca_{scoring}", scoring)
        out[f"alpaca_{scoring}"] = {**dist(r), "seconds": round(s, 1), "seconds_per_1k_rows": round(1000 * s / m, 1)}
        print(scoring, out[f"alpaca_{scoring}"], flush=True)
    g = json.loads((data / "quality" / "gpt4llm_cmp_data_scores.json").read_text())
    ref = np.asarray(g["text-davinci-003"], float) / 2.0  # GPT-4's 1-10 scale onto AlpaGasus' 0-5
    out["gpt4_scores_of_alpaca_outputs_halved"] = dist(ref)
    out["alpagasus_paper_share_ge_4_5"] = 9229 / 52002
    return out


def unit_lp(data: Path, n: int = 300, budget: int = 30) -> dict:
    rows = alpaca(data)
    pick = np.sort(np.random.default_rng(0).choice(len(rows), size=n, replace=False))
    pool = write_pool([rows[i] for i in pick], OUT / "lp" / f"alpaca_{n}.jsonl")
    emb = {"type": "embed", "template": "Instruction: {instruction} {input} Response: {output}", "show_progress": False}
    k = max(2, round(n / 52))  # the paper's 52 rows per cluster (1000 clusters on Alpaca's 52k)
    res = {"n": n, "budget": budget, "k": k}
    res["learning_percentage"] = run_recipe("lp", pool, [emb, {"type": "lp_scores", "show_progress": False},
                                                         {"type": "learning_percentage", "budget": budget, "k": k}],
                                            OUT / "lp" / "learning_percentage")
    res["lp_app"] = run_recipe("lp_app", pool, [emb, {"type": "lp_scores", "show_progress": False},
                                                {"type": "learning_percentage", "budget": budget, "k": k,
                                                 "score": "lp_app"}], OUT / "lp" / "lp_app")
    res["clust_rand"] = run_recipe("cr", pool, [emb, {"type": "clust_rand", "budget": budget, "k": k}],
                                   OUT / "lp" / "clust_rand")
    res["random"] = run_recipe("rnd", pool, [{"type": "random", "budget": budget}], OUT / "lp" / "random")
    import pyarrow.parquet as pq

    prov = pq.read_table(OUT / "lp" / "learning_percentage" / "provenance.parquet").to_pandas()
    sel = {m: set(pq.read_table(OUT / "lp" / m / "provenance.parquet").to_pandas().query("status == 'selected'").id)
           for m in ("learning_percentage", "lp_app", "clust_rand", "random")}
    lp = prov["lp"].to_numpy()
    out_len = np.array([len(rows[i]["output"]) for i in pick])
    res["lp_stats"] = {"mean": float(np.nanmean(lp)), "quantiles_10_50_90": np.nanquantile(lp, [0.1, 0.5, 0.9]).tolist(),
                       "spearman_lp_vs_response_chars": spearman(lp, out_len),
                       "mean_ppl": {e: float(np.nanmean(prov[f"lp_ppl_{e}"])) for e in range(4)}}
    res["overlap"] = {f"{a}|{b}": len(sel[a] & sel[b]) for a in sel for b in sel if a < b}
    return res


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~np.isnan(a) & ~np.isnan(b)
    ra = np.argsort(np.argsort(a[ok]))
    rb = np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def unit_less(data: Path, n_alpaca: int = 108, n_gsm: int = 12, budget: int = 12, proj_dim: int = 1024) -> dict:
    rows = alpaca(data)
    a = [rows[i] for i in np.sort(np.random.default_rng(0).choice(len(rows), n_alpaca, replace=False))]
    gsm = [json.loads(x) for x in (data / "instruct" / "gsm8k_train.jsonl").read_text().splitlines()]
    g = [gsm[i] for i in np.sort(np.random.default_rng(1).choice(len(gsm), n_gsm, replace=False))]
    mixed = [{"id": f"alpaca{i}", **r} for i, r in enumerate(a)] + \
        [{"id": f"gsm8k{i}", "instruction": r["question"], "input": "", "output": r["answer"]} for i, r in enumerate(g)]
    pool = write_pool(mixed, OUT / "less" / "pool.jsonl")
    targets = str(REPO / "sample_targets" / "gsm8k_test_8.jsonl")
    feats = {"proj_dim": proj_dim, "show_progress": False}
    res = {"n": len(mixed), "gsm8k_rows": n_gsm, "budget": budget, "proj_dim": proj_dim}
    res["less"] = run_recipe("less", pool, [{"type": "less_gradients", **feats},
                                            {"type": "less_influence", "targets": targets, **feats},
                                            {"type": "less", "budget": budget, "targets": targets, "features": feats}],
                             OUT / "less" / "less")
    res["rds"] = run_recipe("rds", pool, [{"type": "rds", "budget": budget, "targets": targets}], OUT / "less" / "rds")
    res["random"] = run_recipe("random", pool, [{"type": "random", "budget": budget}], OUT / "less" / "random")
    import pyarrow.parquet as pq

    for m in ("less", "rds", "random"):
        prov = pq.read_table(OUT / "less" / m / "provenance.parquet").to_pandas()
        picked = prov[prov.status == "selected"].id
        res[m]["gsm8k_share"] = float(picked.str.startswith("gsm8k").mean())
    # other targets over the same pool and checkpoints: only the targets' gradients are computed
    seed_tasks = [json.loads(x) for x in (data / "instruct" / "alpaca_seed_tasks_175.jsonl").read_text().splitlines()]
    other = [{"instruction": t["instruction"], "input": t["instances"][0]["input"], "output": t["instances"][0]["output"]}
             for t in seed_tasks[:8]]
    tpath = write_pool(other, OUT / "less" / "seed_tasks_8.jsonl")
    res["less_other_targets"] = run_recipe("less2", pool, [
        {"type": "less_gradients", **feats}, {"type": "less_influence", "targets": str(tpath), **feats},
        {"type": "less", "budget": budget, "targets": str(tpath), "features": feats}], OUT / "less" / "less2")
    res["gsm8k_share_best_possible"] = min(1.0, n_gsm / budget)
    res["gsm8k_share_random_expected"] = n_gsm / len(mixed)
    return res


def unit_proj(data: Path, rows: int = 64, params: int = 491520) -> dict:
    """LESS's projection alone: seconds for ``rows`` gradients of SmolLM2's LESS LoRA size (P = 491,520)."""
    import torch

    from curate.train.grads import rademacher_project

    g = torch.randn(rows, params, generator=torch.Generator().manual_seed(0))
    res = {"rows": rows, "params": params}
    for d in (1024, 8192):
        t0 = time.perf_counter()
        rademacher_project(g, d, seed=0)
        sec = time.perf_counter() - t0
        # R is drawn again for every call (one call per shard of 256 rows and checkpoint)
        res[f"d{d}"] = {"seconds_per_call": round(sec, 1)}
        print(d, res[f"d{d}"], flush=True)
    return res


# -- the report -------------------------------------------------------------------------------
def steps_table(runs: dict, n_rows: int) -> list[str]:
    """One line per (run, step): seconds, cached, seconds per 1,000 rows."""
    lines = ["| run | step | seconds | s / 1k rows | cached |", "|---|---|---|---|---|"]
    for name, r in runs.items():
        for label, st in r["steps"].items():
            lines.append(f"| {name} | {label} | {st['seconds']:.1f} | {1000 * st['seconds'] / max(1, n_rows):.1f} | "
                         f"{st['cached']} |")
    return lines


def render(units: dict) -> str:
    """select_new_methods.md (benchmarks/results/ under ``--record``) from the finished units."""
    out = ["# The seed papers' last methods on real pools (benchmarks/select_new_methods.py)", "",
           ("CPU only (2 cores shared with other jobs: the load average at each unit's end is given); "
           "seconds are wall time of each recipe step from the run report."), ""]
    if "pool44k" in units:
        u = units["pool44k"]
        out += [f"## Selection time and overlap: {u.get('pool_rows', 44657)} rows of alpaca_44k, budget {u['budget']}",
                "", (f"Pool: `{u.get('pool', 'alpaca_44k.json')}`; load average at end "
                f"{[round(x, 1) for x in u['load_average_at_end']]}."), ""]
        out += steps_table(u["runs"], u.get("pool_rows", 44657)) + [""]
        from curate.report.compare import render_markdown

        out += [render_markdown(u["compare"]).replace("# curate compare", "### Overlap (`curate compare`)"), ""]
    if "rating" in units:
        u = units["rating"]
        out += ["## llm_rater (SmolLM2-135M-Instruct) agreement", "",
                ("APE test pairs (CaR's expert-revised vs original Alpaca response, same instruction): does the "
                "rater rate the revised response higher?"), "",
                ("| scoring | pairs | both rated | revised higher | ties | original higher | accuracy (ties 1/2) | "
                "unparsed ratings | seconds |"), "|---|---|---|---|---|---|---|---|---|"]
        for sc in ("expected", "generate"):
            a = u[f"ape_{sc}"]
            out.append(f"| {sc} | {a['pairs']} | {a['both_rated']} | {a['revised_higher']} | {a['ties']} | "
                       f"{a['original_higher']} | {a['accuracy_ties_half']:.3f} | {a['unparsed_ratings']} | "
                       f"{a['seconds']} |")
        out += ["", ("Alpaca rows (seeded sample of alpaca_44k) next to GPT-4's 1-10 scores of Alpaca's outputs "
                "(gpt4llm_cmp_data_scores.json, `text-davinci-003`, halved onto 0-5; numbers only, so rows cannot "
                "be matched: distributions only):"), "",
                "| ratings | n | rated | mean | share >= 4.5 | histogram 0/1/2/3/4/5 | s / 1k rows |",
                "|---|---|---|---|---|---|---|"]
        for key in ("alpaca_expected", "alpaca_generate", "gpt4_scores_of_alpaca_outputs_halved"):
            if key not in u:
                continue
            d = u[key]
            mean = "" if d["mean"] is None else f"{d['mean']:.2f}"
            share = "" if d["share_ge_4_5"] is None else f"{d['share_ge_4_5']:.3f}"
            out.append(f"| {key} | {d['n']} | {d['rated']} | {mean} | {share} | {d['hist_0_1_2_3_4_5']} | "
                       f"{d.get('seconds_per_1k_rows', '')} |")
        if "seconds_from_the_first_run_log" in u:
            out += ["", f"Seconds: {json.dumps(u['seconds_from_the_first_run_log'])}"]
        out += ["", (f"AlpaGasus' share >= 4.5 with ChatGPT: {u['alpagasus_paper_share_ge_4_5']:.3f} (9,229 of "
                "52,002)."), ""]
    if "lp" in units:
        u = units["lp"]
        out += [f"## learning_percentage on a {u['n']}-row alpaca_44k sample (budget {u['budget']}, k {u['k']})", ""]
        out += steps_table({k: u[k] for k in ("learning_percentage", "lp_app", "clust_rand", "random")}, u["n"])
        out += ["", f"LP(1): {json.dumps(u['lp_stats'])}", "", f"Overlap (shared rows): {json.dumps(u['overlap'])}", ""]
    if "less" in units:
        u = units["less"]
        out += [(f"## less on {u['n']} rows ({u['gsm8k_rows']} GSM8K train rows among alpaca rows), budget "
                f"{u['budget']}, d = {u['proj_dim']}, targets: 8 GSM8K test questions"), ""]
        out += steps_table({k: u[k] for k in ("less", "rds", "random", "less_other_targets")}, u["n"])
        out += ["", "| method | GSM8K share of the picks |", "|---|---|"]
        out += [f"| {m} | {u[m]['gsm8k_share']:.2f} |" for m in ("less", "rds", "random")]
        out += [f"| best possible | {u['gsm8k_share_best_possible']:.2f} |",
                f"| random, expected | {u['gsm8k_share_random_expected']:.2f} |", ""]
    if "proj" in units:
        u = units["proj"]
        out += [f"## LESS's Rademacher projection alone ({u['rows']} rows x P = {u['params']:,} LoRA parameters)", "",
                "| d | seconds per call |", "|---|---|"]
        out += [f"| {d} | {u[f'd{d}']['seconds_per_call']} |" for d in (1024, 8192)] + [""]
    return "\n".join(out)


UNITS = {"pool44k": unit_pool44k, "rating": unit_rating, "lp": unit_lp, "less": unit_less, "proj": unit_proj}
OUT = REPO / "runs" / "bench_new_methods"
POOL_ROWS = 0  # --pool-rows: 0 = the whole alpaca_44k


def main() -> None:
    global OUT, POOL_ROWS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--unit", choices=sorted(UNITS))
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--data", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--pool-rows", type=int, default=0, help="pool44k on a seeded sample of this many rows (0: all)")
    add_record_flag(ap)
    args = ap.parse_args()
    OUT, POOL_ROWS = args.out, args.pool_rows
    (OUT / "units").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_new_stages()
    if args.unit:
        path = OUT / "units" / f"{args.unit}.json"
        if path.exists():
            print(f"{args.unit}: done already ({path})")
            return
        t0 = time.perf_counter()
        res = UNITS[args.unit](args.data)
        res["unit_seconds"] = round(time.perf_counter() - t0, 1)
        res["load_average_at_end"] = os.getloadavg()
        path.write_text(json.dumps(res, indent=1, default=str))
    if args.report:
        units = {p.stem: json.loads(p.read_text()) for p in sorted((OUT / "units").glob("*.json"))}
        write_results("select_new_methods", units, render(units), default=str)


if __name__ == "__main__":
    main()
