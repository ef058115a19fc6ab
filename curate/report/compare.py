"""``curate compare RUN [RUN ...]``: how much several runs' selections overlap, and what each covers.

For runs over the same pool (e.g. one recipe per selection method at the same budget), this
reads each run's ``provenance.parquet`` (the selection = rows with status ``selected``) and its
``data/`` shards, and writes to ``--out``:

* ``overlap.png`` and the matrices in ``compare.json``: |A∩B|, Jaccard |A∩B|/|A∪B| and the share
  of the row run's selection also taken by the column run, |A∩B|/|A| (= |A∩B|/budget when the
  budgets are equal);
* per run: rows selected, cluster coverage (clusters with >= 1 selected row / clusters in the
  pool), mean quality and other scores, response length and token statistics, and SAE feature
  coverage (``curate.select.sae.feature_coverage``) when a run computed SAE features.

Annotations are looked up by row id across the runs, so every run is measured on the same ruler:
the clusters are those of the first run (in the order given) whose ledger has ``cluster_id``, and
each score column comes from the first run that has it (a ``random`` run without quality scores
still gets a mean quality). ``compare.md`` names the run each ruler came from; each run's coverage
under its own clustering is reported too. Runs over different pools can be compared, but rows not
in the ruler run's pool have no cluster and are counted as such.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.report.selection import SCORE_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class RunSelection:
    """One run's selection as read from its output dir.

    Attributes:
        name: display name (recipe ``name``, else the folder name; made unique).
        path: the run's output dir.
        provenance: its provenance table.
        selected: ids of the selected rows, in ledger order.
        pool: ids of all readable rows (selected or dropped).
        reached: ids of the rows that reached the run's last selection step (the pool it selected
            from, after dedup and filters); ``pool`` when the run has no report or no selector.
        report: the run's ``report.json`` (read once), or None when it has none.
    """

    name: str
    path: Path
    provenance: pa.Table
    selected: list[str]
    pool: list[str]
    reached: list[str] | None = None
    report: dict | None = None

    def data(self, columns: list[str] | None = None) -> pa.Table:
        """The selected rows as written in ``data/`` (only ``columns`` that exist, when given)."""
        files = sorted((self.path / "data").glob("part-*.parquet"))
        if not files:
            raise FileNotFoundError(f"{self.path}/data has no part-*.parquet files")
        schema = pq.read_schema(files[0])
        cols = None if columns is None else [c for c in columns if c in schema.names]
        return pa.concat_tables([pq.read_table(f, columns=cols) for f in files])


def load_run(path: str | Path) -> RunSelection:
    """Read a run's output dir (needs ``provenance.parquet``; ``manifest.json`` for the name)."""
    path = Path(path)
    prov_path = path / "provenance.parquet"
    if not prov_path.is_file():
        raise FileNotFoundError(f"{path}: no provenance.parquet (not a finished curate run output?)")
    prov = pq.read_table(prov_path)
    name = path.name
    man = path / "manifest.json"
    if man.is_file():
        name = json.loads(man.read_text()).get("config", {}).get("name") or name
    status = prov.column("status").to_pylist()
    ids = prov.column("id").to_pylist()
    pool = [i for i, s in zip(ids, status) if s != "quarantined"]
    rep_path = path / "report.json"
    report = json.loads(rep_path.read_text()) if rep_path.is_file() else None
    return RunSelection(name, path, prov, [i for i, s in zip(ids, status) if s == "selected"], pool,
                        _reached_last_selector(report, prov) or pool, report)


def _reached_last_selector(report: dict | None, prov: pa.Table) -> list[str] | None:
    """Ids of the rows that entered the run's last Selector step (from its report.json), or None."""
    from curate.report.selection import step_masks

    if report is None:
        return None
    stages = report.get("stages", [])
    last = next((j for j in range(len(stages) - 1, -1, -1) if stages[j].get("kind") == "selector"), None)
    if last is None:
        return None
    reached, _ = step_masks(prov, last, stages[last]["label"])
    return np.array(prov.column("id").to_pylist(), dtype=object)[reached].tolist()


def overlap(runs: list[RunSelection]) -> dict[str, list[list[float]]]:
    """Pairwise overlap matrices (m, m): ``intersection``, ``jaccard``, ``shared_of_row`` (|A∩B|/|A|)."""
    sets = [set(r.selected) for r in runs]
    m = len(sets)
    inter = np.zeros((m, m), dtype=np.int64)
    for a in range(m):
        for b in range(m):
            inter[a, b] = len(sets[a] & sets[b])
    size = np.array([len(s) for s in sets], dtype=np.float64)
    union = size[:, None] + size[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        jac = np.where(union > 0, inter / union, np.nan)
        share = np.where(size[:, None] > 0, inter / size[:, None], np.nan)
    return {"intersection": inter.tolist(), "jaccard": jac.tolist(), "shared_of_row": share.tolist()}


def _lookup(runs: list[RunSelection], column: str) -> tuple[dict, str] | tuple[None, None]:
    """{id: value} for ``column`` from the first run whose ledger has non-null values of it."""
    for r in runs:
        if column in r.provenance.column_names:
            vals = r.provenance.column(column).to_pylist()
            got = {i: v for i, v in zip(r.provenance.column("id").to_pylist(), vals)
                   if v is not None and not (isinstance(v, float) and np.isnan(v))}
            if got:
                return got, r.name
    return None, None


def _coverage(cluster_of: dict, pool: list[str], selected: list[str]) -> dict:
    pool_c = {cluster_of[i] for i in pool if i in cluster_of}
    sel_c = {cluster_of[i] for i in selected if i in cluster_of}
    return {"clusters": len(pool_c), "covered": len(sel_c & pool_c),
            "coverage": len(sel_c & pool_c) / len(pool_c) if pool_c else float("nan"),
            "selected_without_cluster": sum(1 for i in selected if i not in cluster_of)}


def _length_stats(run: RunSelection) -> dict:
    t = run.data(["output", "text", "n_tokens"])
    out = {}
    for col in ("output", "text"):
        if col in t.column_names:
            words = np.array([len((s or "").split()) for s in t.column(col).to_pylist()], dtype=np.float64)
            if words.size and words.sum() > 0:
                out.update({"length_field": col, "words_mean": float(words.mean()),
                            "words_median": float(np.median(words)), "words_total": int(words.sum())})
                break
    if "n_tokens" in t.column_names:
        tok = t.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.float64)
        out.update({"tokens_mean": float(tok.mean()) if tok.size else float("nan"), "tokens_total": int(tok.sum())})
    return out


def _sae_features(run: RunSelection) -> tuple[dict, str] | None:
    """{row id: SAE feature ids} for the rows that reached the run's ``sae_features`` step, or None.

    The features are read back from that step's cached output (as the report reads embeddings),
    and turned into sets by ``curate.select.sae.feature_sets`` (latents with activation > 0).
    """
    from curate.cache.store import StageStore
    from curate.report.selection import step_masks
    from curate.select.sae import LATENTS, feature_sets

    rep = run.report
    if rep is None:
        return None
    for j, s in enumerate(rep.get("stages", [])):
        if s.get("kind") == "annotator" and LATENTS in (s.get("columns_added") or []):
            root = next((e["cache_dir"] for e in rep.get("selection", []) if e.get("cache_dir")), None)
            store = StageStore(root)
            if not store.has(s["key"]):
                return None
            pool, _ = step_masks(run.provenance, j, s["label"])
            ids = np.array(run.provenance.column("id").to_pylist(), dtype=object)[pool]
            return dict(zip(ids.tolist(), feature_sets(store.load_table(s["key"])))), f"{run.name} step {s['label']}"
    return None


def sae_coverage(runs: list[RunSelection]) -> tuple[dict[str, float] | None, str]:
    """SAE feature coverage per run, or (None, why not).

    Coverage = distinct SAE features of a run's selected rows / distinct features of the pool
    (``curate.select.sae.feature_coverage``), with the features of the first run that computed
    them (an ``sae_greedy``/``sae_simscale``/``sae_features`` step), looked up by row id.
    """
    try:
        from curate.select.sae import feature_coverage
        found = next((f for f in map(_sae_features, runs) if f is not None), None)
    except ImportError as e:
        return None, f"skipped (curate.select.sae not importable: {e})"
    if found is None:
        return None, "skipped: no run has cached SAE features (run an sae_greedy or sae_simscale recipe)"
    fmap, src = found
    ids, feats = list(fmap), list(fmap.values())
    out = {}
    for r in runs:
        sel = set(r.selected)
        out[r.name] = float(feature_coverage(feats, np.array([i in sel for i in ids], dtype=bool)))
    missing = {r.name: sum(1 for i in r.selected if i not in fmap) for r in runs}
    note = f"features from run {src}"
    if any(missing.values()):
        note += "; selected rows without features (not counted): " + ", ".join(f"{k} {v}" for k, v in missing.items() if v)
    return out, note


def compare(paths: list[str | Path], out: str | Path | None = None, plots: bool = True) -> dict:
    """Compare runs' selections; write compare.{md,json} and overlap.png to ``out`` when given.

    Args:
        paths: run output dirs (at least one).
        out: folder for the results (default None = write nothing).
        plots: draw overlap.png (default True).

    Returns:
        The compare.json content.
    """
    if not paths:
        raise ValueError("paths must name at least one run dir, got none")
    runs = [load_run(p) for p in paths]
    seen: dict[str, int] = {}
    for r in runs:  # two runs of the same recipe name must stay apart in the tables
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}#{seen[r.name]}"
    res = {"runs": [{"name": r.name, "path": str(r.path), "ingested_rows": len(r.pool),
                     "pool_rows": len(r.reached if r.reached is not None else r.pool), "selected": len(r.selected)}
                    for r in runs],
           "overlap": overlap(runs), "notes": []}
    clusters, cl_src = _lookup(runs, "cluster_id")
    res["cluster_source"] = cl_src
    if clusters is None:
        res["notes"].append("cluster coverage: no run has cluster_id (add kmeans to a recipe)")
    for r, row in zip(runs, res["runs"]):
        if clusters is not None:
            row["cluster_coverage"] = _coverage(clusters, r.pool, r.selected)
            own, _ = _lookup([r], "cluster_id")
            if own is not None and r.name != cl_src:
                row["own_cluster_coverage"] = _coverage(own, r.pool, r.selected)
        row.update(_length_stats(r))
    res["score_sources"] = {}
    for col in SCORE_COLUMNS:
        vals, src = _lookup(runs, col)
        if vals is None:
            continue
        res["score_sources"][col] = src
        for r, row in zip(runs, res["runs"]):
            v = np.array([vals[i] for i in r.selected if i in vals], dtype=np.float64)
            row[f"{col}_mean"] = float(v.mean()) if v.size else float("nan")
            row[f"{col}_n"] = int(v.size)
    if "quality" not in res["score_sources"]:
        res["notes"].append("mean quality: no run has a quality column (add quality_model to a recipe)")
    sae, note = sae_coverage(runs)
    res["notes"].append(f"SAE feature coverage: {note}")
    if sae is not None:
        for r, row in zip(runs, res["runs"]):
            row["sae_feature_coverage"] = sae[r.name]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        res["plots"] = [plot_overlap(res, out / "overlap.png")] if plots and len(runs) > 1 else []
        (out / "compare.json").write_text(json.dumps(res, indent=1, default=str))
        (out / "compare.md").write_text(render_markdown(res))
    return res


def _fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def render_markdown(res: dict) -> str:
    """compare.md: overlap matrices and per-run statistics."""
    names = [r["name"] for r in res["runs"]]
    lines = ["# curate compare", "", "## Runs", "",
             "| run | ingested | pool (reached selection) | selected | cluster coverage | "
             + " | ".join(f"mean {c}" for c in res["score_sources"])
             + " | words/row (mean) | tokens (total) | SAE feature coverage |",
             "|---" * (8 + len(res["score_sources"])) + "|"]
    for r in res["runs"]:
        cc = r.get("cluster_coverage")
        cov = f"{cc['covered']}/{cc['clusters']} ({cc['coverage']:.1%})" if cc else "-"
        if r.get("own_cluster_coverage"):
            o = r["own_cluster_coverage"]
            cov += f"; own clusters {o['covered']}/{o['clusters']}"
        scores = " | ".join(_fmt(r.get(f"{c}_mean"), ".4g") for c in res["score_sources"])
        lines.append(f"| {r['name']} | {r.get('ingested_rows', '-')} | {r['pool_rows']} | {r['selected']} | {cov} | {scores}{' | ' if scores else ''}"
                     f"{_fmt(r.get('words_mean'), '.1f')} | {r.get('tokens_total', '-')} | "
                     f"{_fmt(r.get('sae_feature_coverage'), '.3f')} |")
    for title, key, spec in (("Shared rows |A∩B|", "intersection", "d"), ("Jaccard |A∩B| / |A∪B|", "jaccard", ".3f"),
                             ("Share of the row run's selection also in the column run, |A∩B| / |A|", "shared_of_row", ".3f")):
        lines += ["", f"## {title}", "", "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for n, row in zip(names, res["overlap"][key]):
            lines.append(f"| {n} | " + " | ".join(_fmt(v, spec) for v in row) + " |")
    src = [f"clusters from run {res['cluster_source']}"] if res.get("cluster_source") else []
    src += [f"{c} from run {s}" for c, s in res["score_sources"].items()]
    lines += ["", "## Notes", ""]
    if src:
        lines.append(f"- annotations looked up by row id: {', '.join(src)}")
    lines += [f"- {n}" for n in res["notes"]]
    if res.get("plots"):
        lines += ["", "![overlap](overlap.png)"]
    return "\n".join(lines) + "\n"


def plot_overlap(res: dict, path: Path) -> str:
    """Heatmap of the Jaccard matrix with |A∩B| in each cell; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in res["runs"]]
    jac = np.array(res["overlap"]["jaccard"], dtype=np.float64)
    inter = res["overlap"]["intersection"]
    m = len(names)
    fig, ax = plt.subplots(figsize=(1.0 * m + 2.5, 0.9 * m + 1.8))
    im = ax.imshow(jac, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(m), names, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(m), names, fontsize=8)
    for a in range(m):
        for b in range(m):
            ax.text(b, a, f"{_fmt(jac[a, b], '.2f')}\n({inter[a][b]})", ha="center", va="center", fontsize=7,
                    color="white" if not jac[a, b] > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Jaccard")
    ax.set_title("selection overlap: Jaccard (shared rows)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name


