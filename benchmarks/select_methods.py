"""Selection methods side by side on real pools, given cached annotations (issue 8's table).

For each pool (alpaca_44k, dolly_15k) and budget (1k, 5k) every registered selection method is
called directly, ``stage.select(table, ctx)``, on one Arrow table that already holds the
annotations (from benchmarks/select_annotate.py: MiniLM embeddings (``--via-curate``: the canonical text, as ``curate.select`` does by default; otherwise CaR's string), ``quality``
from the shipped scorer on that same embedding, ``h_*`` heuristics; plus, computed here once and
cached, k-means ``cluster_id`` with the ``kmeans`` stage defaults and ``n_tokens`` from the proxy
LM's tokenizer), so the time measured is the selection itself. A method whose prerequisites are
not in that table (e.g. ``lm_pooling`` embeddings) is skipped with a note instead of silently
annotating inside the timing. Methods not registered in the curate being run are skipped with a
note, so the script runs on any branch.

Reported per pool x budget x method: seconds and the ratio to ``random``'s seconds in the same run
(timings are noisy on a shared machine: read the ratios), rows selected (must equal the budget),
cluster coverage (clusters with >= 1 selected row / all clusters, on the shared k-means ids), mean
quality, mean response words and tokens, SAE feature coverage (distinct SAE features of the picks /
of the pool, with ``curate.select.sae``'s ``sae_features`` trained once per pool in ``--prepare``
when that module exists, ``--prepare-sae``), the Jaccard overlap matrix
between methods, and for alpaca_44k the overlap of ``car`` with CaR's published selection
(agreement, not correctness: they used other models) against the random base rate.

Units (one pool x method, both budgets) are resumable: each writes ``units/<pool>__<label>.json``
(+ ``.npz`` of picked indices); ``--report`` joins whatever exists::

    python benchmarks/select_methods.py --annotations DIR --unit alpaca_44k:car
    python benchmarks/select_methods.py --annotations DIR --report
    benchmarks/run_select_methods.sh DIR       # every unit under flock, then the report

Writes select_methods.{md,json} and select_methods_*.png under runs/bench/select_methods/
(``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# this checkout's curate (or CURATE_ROOT's, to measure another branch's methods)
sys.path.insert(0, os.environ.get("CURATE_ROOT", str(Path(__file__).resolve().parent.parent)))

from results_io import add_record_flag, data_dir, output_dir, write_results

POOLS = {"alpaca_44k": "instruct/alpaca_44k.json", "dolly_15k": "instruct/dolly_15k.json"}
BUDGETS = (1000, 5000)
N_TARGETS = 8  # GSM8K test questions used as targets by rds/zipfit (timing only; see module doc)


def method_specs(data: Path) -> list[tuple[str, str, dict]]:
    """(label, stage type, params) for every method the issue names, in table order."""
    from curate.embed.stage import CAR_TEMPLATE

    tgt = [json.loads(line) for line in (data / "eval" / "gsm8k_test.jsonl").read_text().splitlines()[:N_TARGETS]]
    tgt = [{"question": r["question"], "answer": r["answer"]} for r in tgt]
    return [
        ("random", "random", {"seed": 0}),
        ("top_k_quality", "top_k", {"score": "quality"}),
        ("longest", "longest", {}),
        ("kcenter", "kcenter", {"show_progress": False}),
        ("car", "car", {}),
        ("kmq", "kmq", {}),
        ("kmq_iterative", "kmq_iterative", {}),
        ("sae_greedy", "sae_greedy", {"show_progress": False}),
        ("sae_simscale", "sae_simscale", {"show_progress": False}),
        # targeted methods: pool vectors = the shared CaR-string MiniLM column; targets embedded alike
        ("rds", "rds", {"targets": tgt, "embedding_column": "embedding", "template": CAR_TEMPLATE}),
        ("zipfit", "zipfit", {"targets": tgt, "show_progress": False}),
    ]


def _accepted(stage_type: str, params: dict) -> dict:
    """``params`` restricted to what the registered class takes (names differ across branches)."""
    from curate.core.registry import get_stage

    names = set(get_stage(stage_type).param_names())
    return {k: v for k, v in params.items() if k in names}


def pool_table(data: Path, pool: str, ann: Path):
    """The canonical pool table with every cached annotation column (computes cluster_id/n_tokens once)."""
    import pyarrow as pa

    from curate.core.schema import embedding_column
    from curate.ingest.read import read_input
    from curate.score.heuristics import HEURISTIC_COLUMNS

    table = read_input(str(data / POOLS[pool])).table
    d = ann / pool
    with np.load(d / "annotations.npz") as z:
        if z["ids"].tolist() != table.column("id").to_pylist():
            raise SystemExit(f"{d}/annotations.npz was made from another version of {pool}")
        emb, heur, quality = z["embedding"], z["heuristics"], z["quality"]
    table = table.append_column("embedding", embedding_column(emb)).append_column("quality", pa.array(quality))
    for j, c in enumerate(HEURISTIC_COLUMNS):
        table = table.append_column(c, pa.array(heur[:, j].astype(np.float64)))
    derived = {}
    if not (d / "cluster_id.npy").exists():
        from curate.cluster.kmeans import KMeans
        from curate.core.stage import StageContext

        t0 = time.perf_counter()
        out = KMeans().annotate(table, StageContext(work_dir=d / "kmeans_work", artifact_dir=d / "kmeans_art",
                                                    show_progress=False))
        np.save(d / "cluster_id.npy", out.column("cluster_id").to_numpy())
        derived["kmeans_seconds"] = time.perf_counter() - t0
    if not (d / "n_tokens.npy").exists():
        from curate.score.tokens import count_tokens

        t0 = time.perf_counter()
        np.save(d / "n_tokens.npy", count_tokens(table.column("text").to_pylist(), "SmolLM2-135M-Instruct"))
        derived["token_count_seconds"] = time.perf_counter() - t0
    if derived:
        p = d / "derived.json"
        old = json.loads(p.read_text()) if p.exists() else {}
        p.write_text(json.dumps({**old, **derived}, indent=1))
    table = table.append_column("cluster_id", pa.array(np.load(d / "cluster_id.npy").astype(np.int64)))
    table = table.append_column("n_tokens", pa.array(np.load(d / "n_tokens.npy").astype(np.int64)))
    if (d / "sae_latents.npy").exists():
        table = table.append_column("sae_latents", embedding_column(np.load(d / "sae_latents.npy")))
        table = table.append_column("sae_acts", embedding_column(np.load(d / "sae_acts.npy")))
    return table


def prepare_sae(data: Path, ann: Path, pool: str) -> None:
    """Train the SAE once per pool (``curate.select.sae``'s ``sae_features``) and cache its features.

    This is the ``sae_*`` methods' own annotation; its time is reported with the annotation costs.
    """
    from curate.core.schema import embedding_matrix
    from curate.core.stage import StageContext
    from curate.select.sae import SAEFeatures

    d = ann / pool
    if (d / "sae_latents.npy").exists():
        return
    table = pool_table(data, pool, ann)
    t0 = time.perf_counter()
    out = SAEFeatures(show_progress=False).annotate(table, StageContext(
        work_dir=d / "sae_work", artifact_dir=d / "sae_artifact", show_progress=False))
    np.save(d / "sae_acts.npy", embedding_matrix(out, "sae_acts"))
    np.save(d / "sae_latents.npy", embedding_matrix(out, "sae_latents", dtype=np.int32))  # written last: marks done
    p = d / "derived.json"
    old = json.loads(p.read_text()) if p.exists() else {}
    p.write_text(json.dumps({**old, "sae_features_seconds": time.perf_counter() - t0,
                             "sae_features_curate": _curate_version()}, indent=1))


def run_unit(data: Path, ann: Path, work: Path, pool: str, label: str, budgets=BUDGETS) -> dict:
    """Run one method at every budget on one pool; save picks and timings."""
    from curate.core.errors import ConfigError
    from curate.core.registry import known_stages
    from curate.core.stage import StageContext
    from curate.engine.config import build_stage

    spec = {lab: (typ, params) for lab, typ, params in method_specs(data)}
    typ, params = spec[label]
    unit = {"pool": pool, "method": label, "type": typ, "budgets": {}, "curate": _curate_version()}
    out = work / "units" / f"{pool}__{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if typ not in known_stages():
        unit["skipped"] = f"stage type {typ!r} is not registered in this curate"
        out.write_text(json.dumps(unit, indent=1))
        return unit
    table = pool_table(data, pool, ann)
    picks = {}
    # untimed warm-up on a small slice: imports, model loads (rds embeds its targets), JIT, so the
    # timed calls measure the selection itself
    try:
        w = work / "ctx" / pool / label / "warmup"
        build_stage({"type": typ, "budget": 10, **_accepted(typ, params)}, where=label).select(
            table.slice(0, min(2000, len(table))), StageContext(work_dir=w, artifact_dir=w / "artifacts", show_progress=False))
    except Exception as e:  # the timed calls below report the failure properly
        unit["warmup_error"] = f"{type(e).__name__}: {e}"
    for b in budgets:
        kw = _accepted(typ, params)
        try:
            stage = build_stage({"type": typ, "budget": b, **kw}, where=label)
        except ConfigError as e:
            unit["skipped"] = f"cannot build with params {sorted(kw)}: {e}"
            break
        missing = [p.name for p in stage.prerequisites(table.column_names)]
        if missing:
            unit["skipped"] = f"needs annotations not in the cached set: {missing}"
            break
        wd = work / "ctx" / pool / label / str(b)
        ctx = StageContext(work_dir=wd, artifact_dir=wd / "artifacts", seed=0, show_progress=False)
        t0 = time.perf_counter()
        try:
            sel = stage.select(table, ctx)
        except Exception as e:  # a method that fails on real data is a result to report, not a crash
            unit["budgets"][str(b)] = {"error": f"{type(e).__name__}: {e}"}
            continue
        dt = time.perf_counter() - t0
        idx = np.flatnonzero(sel.keep)
        picks[str(b)] = idx
        unit["budgets"][str(b)] = {"seconds": dt, "n_selected": int(idx.size), "params": {k: v for k, v in kw.items()
                                                                                            if k != "targets"}}
    np.savez(work / "units" / f"{pool}__{label}.npz", **picks)
    out.write_text(json.dumps(unit, indent=1, default=str))
    return unit


def _curate_version() -> dict:
    """Which curate checkout ran a unit (CURATE_ROOT lets a unit measure another branch's methods)."""
    import subprocess

    import curate

    root = Path(curate.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "curate"], capture_output=True,
                                    text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"root": str(root), "commit": commit, "uncommitted_changes": dirty}


def _norm(r: dict) -> tuple:
    return tuple(" ".join(str(r.get(k) or "").split()) for k in ("instruction", "input", "output"))


def published_overlap(data: Path, pool_rows: list[dict], ours: np.ndarray | None, n_pool: int, what: str) -> dict:
    """Overlap of our picks with a published selection, matched on whitespace-normalised text."""
    pub = json.loads((data / "instruct" / what).read_text())
    index = {}
    for i, r in enumerate(pool_rows):
        index.setdefault(_norm(r), i)
    theirs = {index[k] for k in map(_norm, pub) if k in index}
    res = {"published_rows": len(pub), "found_in_pool": len(theirs)}
    if ours is not None:
        k, m = len(ours), len(theirs)
        inter = len(theirs & set(ours.tolist()))
        base = k * m / n_pool  # expected overlap of a random k-subset
        res.update({"our_rows": k, "overlap": inter, "expected_random": base, "lift": inter / base if base else None,
                    "share_of_theirs": inter / m if m else None})
    return res


def report(data: Path, ann: Path, work: Path) -> dict:
    from curate.report.compare import plot_overlap

    res = {"pools": {}, "notes": []}
    labels = [lab for lab, _, _ in method_specs(data)]
    for pool in POOLS:
        units = {lab: json.loads((work / "units" / f"{pool}__{lab}.json").read_text())
                 for lab in labels if (work / "units" / f"{pool}__{lab}.json").exists()}
        if not units:
            continue
        d = ann / pool
        with np.load(d / "annotations.npz") as z:
            quality = z["quality"]
        clusters, tokens = np.load(d / "cluster_id.npy"), np.load(d / "n_tokens.npy")
        n, k_clusters = len(quality), int(clusters.max()) + 1
        rows = json.loads((data / POOLS[pool]).read_text())
        words = np.array([len((r.get("output") or "").split()) for r in rows])
        meta = json.loads((d / "meta.json").read_text())
        P = {"n": n, "clusters": k_clusters, "annotation": meta, "methods": {}, "overlap": {}}
        if (d / "derived.json").exists():
            P["annotation"]["derived"] = json.loads((d / "derived.json").read_text())
        sae_cov = _sae_coverage_fn(ann, pool)
        picks_all = {}
        P["curate"] = {lab: u.get("curate") for lab, u in units.items()}
        for lab, u in units.items():
            if "skipped" in u and not u["budgets"]:
                P["methods"][lab] = {"skipped": u["skipped"]}
                continue
            with np.load(work / "units" / f"{pool}__{lab}.npz") as z:
                picks = {b: z[b] for b in z.files}
            P["methods"][lab] = {}
            for b, info in u["budgets"].items():
                if "error" in info:
                    P["methods"][lab][b] = info
                    continue
                idx = picks[b]
                picks_all.setdefault(b, {})[lab] = idx
                m = {**info, "exact": int(idx.size) == min(int(b), n),
                     "cluster_coverage": len(np.unique(clusters[idx])) / k_clusters,
                     "quality_mean": float(quality[idx].mean()), "words_mean": float(words[idx].mean()),
                     "tokens_mean": float(tokens[idx].mean()), "tokens_total": int(tokens[idx].sum())}
                if sae_cov is not None:
                    m["sae_feature_coverage"] = float(sae_cov(idx))
                P["methods"][lab][b] = m
        for b, sel in picks_all.items():
            rnd = P["methods"].get("random", {}).get(b, {}).get("seconds")
            for lab in sel:
                s = P["methods"][lab][b]["seconds"]
                P["methods"][lab][b]["seconds_vs_random"] = s / rnd if rnd else None
            names = list(sel)
            sets = [set(sel[x].tolist()) for x in names]
            inter = [[len(a & c) for c in sets] for a in sets]
            jac = [[len(a & c) / len(a | c) if a | c else float("nan") for c in sets] for a in sets]
            P["overlap"][b] = {"methods": names, "intersection": inter, "jaccard": jac}
            fake = {"runs": [{"name": x} for x in names], "overlap": {"jaccard": jac, "intersection": inter}}
            png = output_dir() / f"select_methods_overlap_{pool}_{b}.png"
            plot_overlap(fake, png)
            P["overlap"][b]["plot"] = png.name
        if pool == "alpaca_44k":
            car = _car_for_published(work, pool)
            P["car_vs_published"] = published_overlap(data, rows, car, n, "car_alpaca_selected.json")
            if car is None:
                P["car_vs_published"]["note"] = "no car unit at the published size (car not registered or not run)"
        res["pools"][pool] = P
    for p in res["pools"]:
        if not (ann / p / "sae_latents.npy").exists():
            res["notes"].append(f"SAE feature coverage on {p}: no cached SAE features (run --prepare-sae {p} "
                                "with a curate that has curate.select.sae)")
    return res


def _sae_coverage_fn(ann: Path, pool: str):
    """idx (m,) -> SAE feature coverage of those rows, or None when the pool has no cached features.

    Coverage as ``curate.select.sae.feature_coverage`` defines it: distinct features (latents with
    activation > 0) of the picked rows / distinct features of the whole pool; computed here from the
    cached arrays so the report does not need the SAE code.
    """
    if not (ann / pool / "sae_latents.npy").exists():
        return None
    lat, act = np.load(ann / pool / "sae_latents.npy"), np.load(ann / pool / "sae_acts.npy")
    on = act > 0
    n_pool = len(np.unique(lat[on]))
    return lambda idx: len(np.unique(lat[idx][on[idx]])) / max(n_pool, 1)


def _car_for_published(work: Path, pool: str) -> np.ndarray | None:
    p = work / "units" / f"{pool}__car_published.npz"
    if p.exists():
        with np.load(p) as z:
            return z["idx"]
    return None


def run_car_published(data: Path, ann: Path, work: Path) -> None:
    """``car`` on alpaca_44k at the published selection's size (rows of it found in the pool)."""
    from curate.core.registry import known_stages
    from curate.core.stage import StageContext
    from curate.engine.config import build_stage

    if "car" not in known_stages():
        print("car not registered: skipped")
        return
    table = pool_table(data, "alpaca_44k", ann)
    rows = [dict(zip(("instruction", "input", "output"), t)) for t in
            zip(*(table.column(c).to_pylist() for c in ("instruction", "input", "output")))]
    k = published_overlap(data, rows, None, len(rows), "car_alpaca_selected.json")["found_in_pool"]
    stage = build_stage({"type": "car", "budget": k})
    wd = work / "ctx" / "alpaca_44k" / "car_published"
    sel = stage.select(table, StageContext(work_dir=wd, artifact_dir=wd / "artifacts", show_progress=False))
    np.savez(work / "units" / "alpaca_44k__car_published.npz", idx=np.flatnonzero(sel.keep))


def _embed_note(a: dict) -> str:
    """How the pool's embeddings were made (select_annotate.py's meta.json)."""
    what = f"MiniLM embedding of {a.get('embed_string', 'CAR_TEMPLATE')}"
    reused = a.get("embeddings_reused")
    if reused:
        return (f"{what}: {reused['rows_reused']} rows reused from the 44k recipe's embed step ({reused['from']}; "
                f"benchmarks/results/alpaca_full.md has its time), {reused['rows_embedded_here']} embedded here in "
                f"{reused['seconds_embedding_missing']:.0f} s")
    return f"{what} {a['embed_rows_per_s']:.1f} rows/s ({a['embed_seconds']:.0f} s)"


def render(res: dict) -> str:
    lines = ["# Selection methods on real pools (given cached annotations)", "",
             "Generated by `benchmarks/select_methods.py`; see its docstring for the protocol. Seconds are the "
             "selection call alone on a shared 2-core CPU; compare methods by `x random` (same run).", ""]
    for pool, P in res["pools"].items():
        a = P["annotation"]
        lines += [f"## {pool} ({P['n']} rows, {P['clusters']} k-means clusters)", "",
                  f"Annotation: {_embed_note(a)}, heuristics {a['heuristics_rows_per_s']:.0f} rows/s; quality from "
                  "the same embedding." + "".join(f" {k.replace('_seconds', '').replace('_', ' ')} {v:.1f} s."
                                                 for k, v in a.get("derived", {}).items() if k.endswith("_seconds")), "",
                  "| method | budget | seconds | x random | rows | cluster coverage | mean quality | words/row | "
                  "tokens/row | SAE coverage |", "|---" * 10 + "|"]
        for lab, per in P["methods"].items():
            if "skipped" in per:
                lines.append(f"| {lab} | - | skipped: {per['skipped']} | | | | | | | |")
                continue
            for b, m in per.items():
                if "error" in m:
                    lines.append(f"| {lab} | {b} | error: {m['error'][:120]} | | | | | | | |")
                    continue
                xr = f"{m['seconds_vs_random']:.1f}" if m.get("seconds_vs_random") else "-"
                sae = f"{m['sae_feature_coverage']:.3f}" if "sae_feature_coverage" in m else "-"
                lines.append(f"| {lab} | {b} | {m['seconds']:.2f} | {xr} | {m['n_selected']}{'' if m['exact'] else ' (!)'} | "
                             f"{m['cluster_coverage']:.1%} | {m['quality_mean']:.3f} | {m['words_mean']:.1f} | "
                             f"{m['tokens_mean']:.1f} | {sae} |")
        by_src: dict[str, list[str]] = {}
        for lab, v in P.get("curate", {}).items():
            if v and lab in P["methods"] and "skipped" not in P["methods"][lab]:
                src = f"{v['root']}@{v['commit']}" + (" (uncommitted changes)" if v.get("uncommitted_changes") else "")
                by_src.setdefault(src, []).append(lab)
        if by_src:
            lines += ["", "Code measured: " + "; ".join(f"{', '.join(labs)} from {src}" for src, labs in by_src.items()) + "."]
        for b, o in P["overlap"].items():
            lines += ["", f"Jaccard overlap at budget {b}:", "", "| | " + " | ".join(o["methods"]) + " |",
                      "|---" * (len(o["methods"]) + 1) + "|"]
            lines += [f"| {x} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for x, row in zip(o["methods"], o["jaccard"])]
            lines += ["", f"![overlap {pool} {b}]({o['plot']})"]
        c = P.get("car_vs_published")
        if c:
            lines += ["", f"CaR's published selection: {c['published_rows']} rows, {c['found_in_pool']} found in {pool}."]
            if "overlap" in c:
                lines.append(f"Our `car` at {c['our_rows']} rows shares {c['overlap']} with it; a random subset of that "
                             f"size would share {c['expected_random']:.1f} on average (lift {c['lift']:.2f}x). "
                             "Agreement, not correctness: CaR used its own 550M scorer and embeddings.")
            else:
                lines.append(f"Our `car`: {c.get('note')}.")
        lines.append("")
    lines += [f"- {n}" for n in res["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(data_dir()), help="the public datasets folder (default: $CURATE_DATA, docs/data.md)")
    ap.add_argument("--annotations", required=True, help="OUT_ROOT of benchmarks/run_select_annotate.sh")
    ap.add_argument("--work", default=None, help="unit results (default ANNOTATIONS/select_methods)")
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS), help="rows (default 1000 5000)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--unit", help="POOL:METHOD, e.g. alpaca_44k:car")
    g.add_argument("--car-published", action="store_true", help="car at the published selection's size")
    g.add_argument("--list", action="store_true", help="print the units")
    g.add_argument("--prepare", help="POOL: compute the cached cluster_id / n_tokens columns only")
    g.add_argument("--prepare-sae", help="POOL: train the SAE once and cache its features (needs curate.select.sae)")
    g.add_argument("--report", action="store_true")
    add_record_flag(ap)
    a = ap.parse_args()
    data, ann = Path(a.data), Path(a.annotations)
    work = Path(a.work) if a.work else ann / "select_methods"
    if a.list:
        for pool in POOLS:
            for lab, _, _ in method_specs(data):
                print(f"{pool}:{lab}")
    elif a.prepare:
        pool_table(data, a.prepare, ann)
    elif a.prepare_sae:
        prepare_sae(data, ann, a.prepare_sae)
    elif a.unit:
        pool, lab = a.unit.split(":")
        print(json.dumps(run_unit(data, ann, work, pool, lab, tuple(a.budgets)), default=str))
    elif a.car_published:
        run_car_published(data, ann, work)
    else:
        res = report(data, ann, work)
        write_results("select_methods", res, render(res), indent=1, default=str)


if __name__ == "__main__":
    main()
