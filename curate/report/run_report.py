"""report.json / report.md / plots: rows in and out per stage and per reason, timings, scores.

Plots (matplotlib, Agg backend) land in ``plots/``: the row funnel across stages, score
distributions (all rows that were scored vs the selected ones), and duplicate-cluster and
k-means cluster sizes when those columns exist. Each selection method step adds a map of its
pool's embeddings, its cluster sizes and its score distributions (:mod:`curate.report.selection`).
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.report import selection as report_selection

log = logging.getLogger(__name__)

_NOT_SCORES = {"dup_cluster", "cluster_id"}
_PLOT_FIRST = ("quality", "reward", "ppl_response", "ppl_text", "ifd", "h_words", "centroid_distance")


def _score_columns(provenance: pa.Table) -> list[str]:
    return [f.name for f in provenance.schema
            if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type)) and f.name not in _NOT_SCORES]


def _cluster_sizes(values: list) -> dict[str, int]:
    """Histogram {cluster size: number of clusters} over non-null, non-negative cluster ids."""
    sizes = Counter(v for v in values if v is not None and v >= 0)
    hist = Counter(sizes.values())
    return {str(k): hist[k] for k in sorted(hist)}


def build_report(cfg, ing, ledger, records, provenance: pa.Table, seconds: float) -> dict:
    """The report as a dict (what report.json holds)."""
    status = np.array(provenance.column("status").to_pylist(), dtype=object)
    reasons = Counter()
    for st, stage, reason in zip(status, provenance.column("stage").to_pylist(), provenance.column("reason").to_pylist()):
        if st != "selected":
            reasons[f"{stage} / {reason}"] += 1
    rep = {
        "name": cfg.name,
        "counts": ledger.counts,
        "seconds": round(seconds, 3),
        "input": {"files": ing.files, "rows_read": len(ing.table), "cached": ing.cached,
                  "seconds": round(ing.seconds, 3), "warnings": ing.warnings},
        "quarantine_by_reason": dict(Counter(r.get("reason") for r in ing.quarantine)),
        "quarantine_examples": [{k: r.get(k) for k in ("file", "line", "reason", "error")} for r in ing.quarantine[:20]],
        "stages": [asdict(r) for r in records],
        "dropped_by_stage_and_reason": dict(reasons),
        "scores": {},
    }
    for name in ("dup_cluster", "cluster_id"):
        if name in provenance.column_names:
            rep[f"{name}_size_histogram"] = _cluster_sizes(provenance.column(name).to_pylist())
    sel = status == "selected"
    for col in _score_columns(provenance):
        v = provenance.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = ~np.isnan(v)
        if not ok.any():
            continue
        summary = lambda x: {"n": int(x.size), "mean": float(x.mean()), "p10": float(np.quantile(x, 0.1)),
                             "median": float(np.median(x)), "p90": float(np.quantile(x, 0.9))} if x.size else {"n": 0}
        rep["scores"][col] = {"scored": summary(v[ok]), "selected": summary(v[ok & sel])}
    from curate.cache.store import StageStore

    rep["selection"] = report_selection.summarize(rep["stages"], provenance,
                                                  store_root=str(StageStore(cfg.cache_dir).root))
    return rep


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _stages_table(rep: dict) -> str:
    """Rows (and, after a ``token_count`` step, tokens) in and out of every step."""
    c = rep["counts"]
    tokens = any(r.get("tokens_in") is not None for r in rep["stages"])
    header = ["step", "kind", "rows in", "rows out"] + (["tokens in", "tokens out"] if tokens else []) + \
        ["dropped (reason: rows)", "cached", "seconds"]
    rows = [["ingest", "reader", rep["input"]["rows_read"] + c["n_quarantined"], rep["input"]["rows_read"]] +
            (["", ""] if tokens else []) +
            [", ".join(f"{k}: {v}" for k, v in rep["quarantine_by_reason"].items()) or "-",
             rep["input"]["cached"], f"{rep['input']['seconds']:.2f}"]]
    for r in rep["stages"]:
        tok = [] if not tokens else ["" if r.get("tokens_in") is None else f"{r['tokens_in']:,}",
                                     "" if r.get("tokens_out") is None else f"{r['tokens_out']:,}"]
        rows.append([r["label"] + (" (auto)" if r["auto"] else ""), r["kind"], r["rows_in"], r["rows_out"]] + tok +
                    [", ".join(f"{k}: {v}" for k, v in r["dropped"].items()) or "-", r["cached"], f"{r['seconds']:.2f}"])
    return _md_table(header, rows)


def _examples_markdown(stages: list[dict]) -> list[str]:
    """A few rows each step dropped (per reason) or rewrote, to read (seeded draws)."""
    parts: list[str] = []
    fence = "`" * 3
    for r in stages:
        if not r.get("examples"):
            continue
        if not parts:
            parts = ["", "## What each step removed (examples)", "",
                     "Up to 3 rows per drop reason, drawn at random (seeded by the step's key); for steps that "
                     "rewrite text, the lines they removed. Every decision is in provenance.parquet.", ""]
        parts += [f"<details><summary>{r['label']}</summary>", ""]
        for e in r["examples"]:
            body = e.get("text", e.get("removed", "")).replace(fence, "'''")
            what = f"{e['chars']} chars" if "chars" in e else f"{e.get('chars_before')} -> {e.get('chars_after')} chars"
            parts += [f"**{e['reason']}** `{e['id']}` ({what})", "", fence + "text", body, fence, ""]
        parts += ["</details>", ""]
    return parts


def render_markdown(rep: dict, plots: list[str]) -> str:
    c = rep["counts"]
    parts = [f"# curate report{': ' + rep['name'] if rep.get('name') else ''}", "",
             f"**{c['n_input']}** input rows → **{c['n_selected']}** selected, {c['n_dropped']} dropped, "
             f"{c['n_quarantined']} quarantined (invariant n_input = selected + dropped + quarantined holds). "
             f"Total {rep['seconds']:.1f} s; output hash `{rep.get('output_hash', '')}`.", "",
             "## Stages", "",
             _stages_table(rep)]
    if rep["quarantine_examples"]:
        parts += ["", f"## Quarantine (first {len(rep['quarantine_examples'])}; all in quarantine.jsonl)", "",
                  _md_table(["file", "line", "reason", "error"],
                            [[q["file"], q["line"], q["reason"], str(q["error"]).replace("|", "\\|")[:160]]
                             for q in rep["quarantine_examples"]])]
    if rep["input"]["warnings"]:
        parts += ["", "## Input warnings", ""] + [f"- {w}" for w in rep["input"]["warnings"]]
    if rep["scores"]:
        parts += ["", "## Scores (scored rows vs selected rows)", "",
                  _md_table(["column", "n scored", "mean", "median", "n selected", "selected mean", "selected median"],
                            [[k, v["scored"]["n"], f"{v['scored']['mean']:.4g}", f"{v['scored']['median']:.4g}",
                              v["selected"]["n"], f"{v['selected'].get('mean', float('nan')):.4g}",
                              f"{v['selected'].get('median', float('nan')):.4g}"] for k, v in rep["scores"].items()])]
    for name in ("dup_cluster", "cluster_id"):
        hist = rep.get(f"{name}_size_histogram")
        if hist:
            parts += ["", f"## {name} sizes", "", _md_table(["cluster size", "clusters"], [[k, v] for k, v in hist.items()])]
    dm = rep.get("datamap")
    if dm:
        parts += ["", "## Data map", "",
                  f"[datamap.html](datamap.html): {dm['points']:,} rows that reached {dm['embeddings']} on a PCA map of "
                  f"their embeddings, picked vs not picked and dropped by reason, clusters named by their most "
                  f"distinctive words (c-TF-IDF); hover a point to read it. Self-contained: opens offline."
                  if "file" in dm else f"No data map: {dm.get('missing')}"]
    parts += _examples_markdown(rep["stages"])
    parts += report_selection.render_markdown(rep.get("selection", []))
    if plots:
        parts += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(parts) + "\n"


def _datamap(rep: dict, provenance: pa.Table, out: Path, store_root: str | None, texts) -> dict:
    from curate.report.datamap import build_datamap

    if store_root is None:
        from curate.cache.store import StageStore

        store_root = next((e["cache_dir"] for e in rep.get("selection", []) if e.get("cache_dir")), None) \
            or str(StageStore(None).root)
    try:
        return build_datamap(provenance, rep["stages"], store_root, out / "datamap.html", texts=texts,
                             title=rep.get("name") or "")
    except Exception as e:  # noqa: BLE001 - a map failure must not lose the run's results
        log.warning("data map skipped: %s", e)
        return {"missing": f"{type(e).__name__}: {e}"}


def make_plots(rep: dict, provenance: pa.Table, out: Path) -> list[str]:
    """Write PNG plots under ``out/plots``; returns their paths relative to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)
    made = []
    labels = ["input", "ingest"] + [r["label"] for r in rep["stages"]]
    rows = [rep["counts"]["n_input"], rep["input"]["rows_read"]] + [r["rows_out"] for r in rep["stages"]]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels)), 3.5))
    ax.bar(range(len(rows)), rows, color="#4878a8")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right")
    ax.set_ylabel("rows")
    ax.set_title("rows after each step")
    for i, v in enumerate(rows):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_dir / "funnel.png", dpi=100)
    plt.close(fig)
    made.append("plots/funnel.png")
    status = np.array(provenance.column("status").to_pylist(), dtype=object)
    # the scores people select by first (a selector's own score column, then the LM/quality
    # scores), then whatever else was computed
    used = [r["params"].get("score") or r["params"].get("column") for r in rep["stages"] if r["kind"] == "selector"]
    first = [c for c in used if c in rep["scores"]] + [c for c in _PLOT_FIRST if c in rep["scores"]]
    cols = list(dict.fromkeys(first + list(rep["scores"])))[:8]
    if cols:
        ncol = min(4, len(cols))
        nrow = (len(cols) + ncol - 1) // ncol
        fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
        for ax in axes.flat[len(cols):]:
            ax.axis("off")
        for ax, col in zip(axes.flat, cols):
            v = provenance.column(col).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = ~np.isnan(v)
            bins = np.histogram_bin_edges(v[ok], bins=40)
            ax.hist(v[ok], bins=bins, alpha=0.5, label="scored")
            ax.hist(v[ok & (status == "selected")], bins=bins, alpha=0.7, label="selected")
            ax.set_title(col, fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(plot_dir / "scores.png", dpi=100)
        plt.close(fig)
        made.append("plots/scores.png")
    for name in ("dup_cluster", "cluster_id"):
        hist = rep.get(f"{name}_size_histogram")
        if hist:
            fig, ax = plt.subplots(figsize=(5, 3))
            ax.bar([int(k) for k in hist], list(hist.values()), color="#a85848")
            ax.set_xlabel(f"{name} size (rows)")
            ax.set_ylabel("clusters")
            ax.set_yscale("log")
            fig.tight_layout()
            fig.savefig(plot_dir / f"{name}_sizes.png", dpi=100)
            plt.close(fig)
            made.append(f"plots/{name}_sizes.png")
    made += report_selection.make_plots(rep.get("selection", []), provenance, rep["stages"], plot_dir)
    return made


def write_report(rep: dict, out: Path, provenance: pa.Table, plots: bool = True, store_root: str | None = None,
                 texts=None) -> None:
    """Write report.json, report.md, and with ``plots`` the PNGs and ``datamap.html``.

    Args:
        rep: :func:`build_report`'s dict (gets ``plots`` and ``datamap`` added).
        out: the (temporary) output folder.
        provenance: the run's provenance table.
        plots: draw the plots and the data map (default True).
        store_root: the stage cache the data map reads the embeddings from (default None: the
            ``cache_dir`` the selection entries name, else the default cache).
        texts: the ingested rows' ``text`` in ingest order, for the map's hover text and cluster
            labels (default None: neither).
    """
    made = []
    if plots:
        try:
            made = make_plots(rep, provenance, out)
        except Exception as e:  # a plotting failure must not lose the run's results
            log.warning("plots skipped: %s", e)
            rep["plot_error"] = str(e)
        rep["datamap"] = _datamap(rep, provenance, out, store_root, texts)
    rep["plots"] = made
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str))
    (out / "report.md").write_text(render_markdown(rep, made))


def top_drop_reasons(rep: dict, n: int = 5) -> list[tuple[str, int]]:
    """The ``n`` largest ``(step reason, rows)`` drops of a run, quarantine included."""
    got = Counter({f"{r['label']} {k}": v for r in rep["stages"] for k, v in (r.get("dropped") or {}).items()})
    got.update({f"ingest {k}": v for k, v in rep.get("quarantine_by_reason", {}).items()})
    return got.most_common(n)


def stage_rows(rep: dict) -> list[dict]:
    """One dict per step (ingest first): rows in and out, its drops by reason, cached, seconds."""
    c = rep["counts"]
    rows = [{"step": "ingest", "kind": "reader", "rows_in": c["n_input"], "rows_out": rep["input"]["rows_read"],
             "dropped": ", ".join(f"{k}: {v:,}" for k, v in rep.get("quarantine_by_reason", {}).items()) or "-",
             "cached": rep["input"]["cached"], "seconds": round(rep["input"]["seconds"], 2)}]
    rows += [{"step": r["label"] + (" (auto)" if r.get("auto") else ""), "kind": r["kind"], "rows_in": r["rows_in"],
              "rows_out": r["rows_out"], "dropped": ", ".join(f"{k}: {v:,}" for k, v in r["dropped"].items()) or "-",
              "cached": r["cached"], "seconds": round(r["seconds"], 2)} for r in rep["stages"]]
    return rows


def funnel_markdown(rep: dict, out_dir: str | Path, *, links: bool = True) -> str:
    """A run's funnel in a few lines of markdown (the Prefect artifact, the quick start's summary).

    Args:
        rep: the run's report dict (report.json).
        out_dir: its output folder (made absolute for the links).
        links: link report.md, datamap.html and README.md as ``file://`` URIs (default True).
    """
    c, out = rep["counts"], Path(out_dir).resolve()
    lines = [f"# curate: {rep.get('name') or out.name}", "",
             f"**{c['n_input']:,}** input rows → **{c['n_selected']:,}** selected · {c['n_dropped']:,} dropped · "
             f"{c['n_quarantined']:,} quarantined", "",
             _md_table(["step", "rows in", "rows out", "dropped (reason: rows)"],
                       [[r["step"], f"{r['rows_in']:,}", f"{r['rows_out']:,}", r["dropped"]] for r in stage_rows(rep)]),
             "", "**Top drop reasons:** " + (", ".join(f"{k} ({v:,})" for k, v in top_drop_reasons(rep)) or "none"),
             "", f"**Quarantine:** {c['n_quarantined']:,} rows"
             + (f" ({', '.join(f'{k} {v}' for k, v in rep['quarantine_by_reason'].items())}) in "
                f"`{out / 'quarantine.jsonl'}`" if c["n_quarantined"] else ""),
             "", f"**Output:** `{out}` · hash `{rep.get('output_hash', '')}`"]
    if links:
        docs = [("report.md", "report"), ("datamap.html", "data map"), ("README.md", "dataset card")]
        lines += ["", "**Read:** " + " · ".join(f"[{what}]({(out / f).as_uri()})" for f, what in docs
                                                if (out / f).exists())]
    return "\n".join(lines) + "\n"


def print_summary(out_dir: str | Path) -> None:
    """Print a finished run's funnel, top drop reasons and where to look (``make quickstart``)."""
    out = Path(out_dir)
    rep = json.loads((out / "report.json").read_text())
    c = rep["counts"]
    print(f"\n{rep.get('name') or out.name}: {c['n_input']:,} rows in -> {c['n_selected']:,} selected "
          f"({c['n_dropped']:,} dropped, {c['n_quarantined']:,} quarantined)")
    for r in stage_rows(rep):
        print(f"  {r['step']:<20} {r['rows_in']:>7,} -> {r['rows_out']:<7,} {r['dropped'] if r['dropped'] != '-' else ''}")
    print("top drop reasons: " + ", ".join(f"{k} {v:,}" for k, v in top_drop_reasons(rep, 3)))
    where = [("report.md", "the funnel, drop reasons with example rows, score plots"),
             ("datamap.html", "the pool's map in a browser: picked, dropped by reason, hover to read a row"),
             ("README.md", "the dataset card (licences, recipe, methods and papers)"),
             ("provenance.parquet", "every input row's fate: status, stage, reason, scores")]
    print("where to look:")
    for f, what in where:
        if (out / f).exists():
            print(f"  {out / f}  {what}")
    print(f"  the dataset: datasets.load_dataset({str(out)!r}) or datasets.load_from_disk({str(out / 'dataset')!r})")
