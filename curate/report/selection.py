"""The report's section for selection methods: what each one picked from the pool it saw.

A *selection step* is a step whose stage type is a :class:`~curate.select.base.BudgetSelector`
(``random``, ``top_k``, ``car``, ``kmq``, ...), that wrote a ``<type>_score`` column to the
ledger, or that takes a ``budget`` (``d4``). For each one the report gives, over its *pool* (the rows that reached it) and its
*picks* (the pool rows it kept):

* a 2-D map of the pool's embeddings with the picks highlighted: PCA (numpy SVD, deterministic
  signs) fitted on a seeded sample of at most ``max_points`` pool rows, the picks drawn from
  their own seeded sample of at most ``max_points`` so a small budget stays visible;
* cluster sizes before/after and cluster coverage (clusters with >= 1 pick / clusters in the
  pool) when the ledger has ``cluster_id``;
* score distributions, pool vs picks, of the method's ``<type>_score`` and of the quality and
  LM scores present (``quality``, ``reward``, ``ifd``, ``ppl_response``, ...);
* the response-length histogram, pool vs picks, and the picks' share per pool length decile, when
  the ledger has ``response_chars`` (a ``length_neutral`` step writes it, and ``response_tokens``
  with ``length_unit: tokens``: docs/selection.md; one plot per unit).

Where the embeddings come from: they are not in the provenance (a vector per row), and the
final table holds only the selected rows. The pool's vectors are read back from the stage cache:
the cached output of the nearest ``embed``-like step (any annotator that added the column) before
the selection step; the step record carries its ``StageStore`` key. The rows of that table are the ledger's rows that reached that step, in
ingest order, so no ids need to be stored with the vectors. When the cache was cleared or no step
made embeddings, the map is left out and the report says why.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

SCORE_COLUMNS = ("quality", "reward", "ifd", "ppl_response", "ppl_text")
MAX_POINTS = 3000
LENGTH_COLUMNS = {"response_chars": "characters", "response_tokens": "tokens"}  # ledger column -> unit


def step_index(label) -> int | None:
    """Position of a step from its ledger label ``"3:kmeans"``; None for ``ingest``/unset."""
    if not isinstance(label, str) or ":" not in label:
        return None
    head = label.split(":", 1)[0]
    return int(head) if head.isdigit() else None


def is_selection_step(step: dict, columns: list[str]) -> bool:
    """True when ``step`` (a report ``stages`` entry) is a selection method.

    Args:
        step: dict with ``type`` and ``kind``.
        columns: provenance column names.
    """
    if step.get("kind") != "selector":
        return False
    if f"{step['type']}_score" in columns or "budget" in (step.get("params") or {}):
        return True  # a budgeted selector (e.g. d4) is a selection method even off the contract
    from curate.core.registry import get_stage

    try:
        return get_stage(step["type"]).budgeted
    except (KeyError, ValueError):
        return False


def step_masks(provenance: pa.Table, index: int, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(pool, picks) boolean masks over the provenance rows for the step at ``index``.

    pool = readable rows not dropped by an earlier step; picks = pool rows this step kept.
    """
    status = np.array(provenance.column("status").to_pylist(), dtype=object)
    stage = provenance.column("stage").to_pylist()
    where = np.array([step_index(s) if st == "dropped" else None for st, s in zip(status, stage)], dtype=object)
    dropped_before = np.array([w is not None and w < index for w in where], dtype=bool)
    pool = (status != "quarantined") & ~dropped_before
    dropped_here = np.array([st == "dropped" and s == label for st, s in zip(status, stage)], dtype=bool)
    return pool, pool & ~dropped_here


def _floats(provenance: pa.Table, col: str) -> np.ndarray:
    return provenance.column(col).to_numpy(zero_copy_only=False).astype(np.float64)


def _summary(x: np.ndarray) -> dict:
    x = x[~np.isnan(x)]
    if not x.size:
        return {"n": 0}
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "p10": float(np.quantile(x, 0.1)), "p90": float(np.quantile(x, 0.9))}


def cluster_stats(cluster_ids: np.ndarray, pool: np.ndarray, picks: np.ndarray) -> dict | None:
    """Cluster sizes and coverage; None when no pool row has a cluster id.

    Args:
        cluster_ids: (n,) object/float array of cluster ids (None/NaN/negative = none).
        pool, picks: (n,) boolean masks.

    Returns:
        {"n_clusters", "n_covered", "coverage", "sizes_pool", "sizes_picked"} where the size
        lists are per cluster, in the order of the pool's clusters sorted by id.
    """
    ok = np.array([c is not None and not (isinstance(c, float) and np.isnan(c)) and c >= 0 for c in cluster_ids])
    if not (ok & pool).any():
        return None
    before = Counter(int(c) for c in cluster_ids[ok & pool])
    after = Counter(int(c) for c in cluster_ids[ok & picks])
    ids = sorted(before)
    covered = sum(1 for c in ids if after.get(c, 0) > 0)
    return {"n_clusters": len(ids), "n_covered": covered, "coverage": covered / len(ids),
            "sizes_pool": [before[c] for c in ids], "sizes_picked": [after.get(c, 0) for c in ids]}


def find_embeddings(steps: list[dict], index: int, store_root: str | None, column: str = "embedding") -> dict:
    """Locate the cached embedding table for the pool of the step at ``index``.

    Returns:
        {"key", "step_index", "label", "column"} of the nearest earlier annotator step that
        added ``column``, or {"missing": why}.
    """
    from curate.cache.store import StageStore

    store = StageStore(store_root)
    for j in range(index - 1, -1, -1):
        s = steps[j]
        if s.get("kind") == "annotator" and column in (s.get("columns_added") or []):
            if not store.has(s["key"]):
                return {"missing": f"the cached output of step {s['label']} ({s['key']}) is no longer in {store.root}"}
            return {"key": s["key"], "step_index": j, "label": s["label"], "column": column}
    return {"missing": f"no step before it made an {column!r} column (add an `embed` stage to see the map)"}


def load_pool_embeddings(provenance: pa.Table, steps: list[dict], src: dict, store_root: str | None,
                         pool: np.ndarray) -> np.ndarray:
    """(n_pool, d) float32 vectors of the ``pool`` rows, from the cached table ``src`` names."""
    from curate.cache.store import StageStore
    from curate.core.schema import embedding_matrix

    table = StageStore(store_root).load_table(src["key"])
    at_embed, _ = step_masks(provenance, src["step_index"], steps[src["step_index"]]["label"])
    if len(table) != int(at_embed.sum()):
        raise RuntimeError(f"cached {src['label']} table has {len(table)} rows, the ledger says {int(at_embed.sum())}")
    rows = np.searchsorted(np.flatnonzero(at_embed), np.flatnonzero(pool))
    return embedding_matrix(table.select([src["column"]]).take(pa.array(rows)), src["column"])


def pca_2d(x: np.ndarray, *, max_points: int = MAX_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fit a 2-component PCA on a seeded sample of ``x``; returns (mean (d,), components (2, d)).

    Signs are fixed (largest-magnitude loading positive) so the same data draws the same map.
    """
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fit = x[rng.choice(len(x), size=max_points, replace=False)] if len(x) > max_points else x
    mean = fit.mean(axis=0)
    centred = fit - mean
    if centred.shape[0] > centred.shape[1]:
        # eigenvectors of the (d, d) covariance: the same axes as the SVD's, at a fraction of its
        # cost for n >> d (a 3k x 384 SVD took seconds on a loaded 2-core machine)
        vals, vecs = np.linalg.eigh(centred.T @ centred)
        vt = vecs[:, np.argsort(-vals, kind="stable")].T
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comp = vt[:2]
    if comp.shape[0] < 2:  # one row or one dimension: pad so the plot still draws
        comp = np.vstack([comp, np.zeros((2 - comp.shape[0], x.shape[1]))])
    signs = np.sign(comp[np.arange(2), np.abs(comp).argmax(axis=1)])
    return mean, comp * np.where(signs == 0, 1, signs)[:, None]


def length_summary(chars: np.ndarray, pool: np.ndarray, picks: np.ndarray, bins: int = 10) -> dict | None:
    """Response length (characters) of the pool and the picks, and the picks' share per pool decile.

    Args:
        chars: (n,) response characters per provenance row (NaN where the step did not see the row).
        pool, picks: (n,) boolean masks.
        bins: pool quantile bins (default 10, deciles).

    Returns:
        {"pool", "picked": summaries, "edges": interior pool quantile edges, "pool_share",
        "picked_share": fraction of rows per bin}; None when no pool row has a length.
    """
    from curate.select.length_bins import assign_bins, length_edges

    ok = ~np.isnan(chars)
    a, b = chars[pool & ok], chars[picks & ok]
    if not a.size:
        return None
    edges = length_edges(a, bins)
    nb = len(edges) + 1
    share = lambda x: (np.bincount(assign_bins(x, edges), minlength=nb) / max(len(x), 1)).round(4).tolist()
    return {"pool": _summary(a), "picked": _summary(b), "edges": edges.tolist(),
            "pool_share": share(a), "picked_share": share(b)}


def summarize(steps: list[dict], provenance: pa.Table, *, store_root: str | None = None) -> list[dict]:
    """One dict per selection step for report.json's ``selection`` list (no vectors in it)."""
    cols = provenance.column_names
    out = []
    for i, s in enumerate(steps):
        if not is_selection_step(s, cols):
            continue
        pool, picks = step_masks(provenance, i, s["label"])
        entry = {"label": s["label"], "type": s["type"], "pool_rows": int(pool.sum()), "picked_rows": int(picks.sum()),
                 "scores": {}, "cache_dir": store_root}
        for c in [f"{s['type']}_score", *SCORE_COLUMNS]:
            if c in cols:
                v = _floats(provenance, c)
                if (~np.isnan(v[pool])).any():
                    entry["scores"][c] = {"pool": _summary(v[pool]), "picked": _summary(v[picks])}
        if "cluster_id" in cols:
            cs = cluster_stats(np.array(provenance.column("cluster_id").to_pylist(), dtype=object), pool, picks)
            if cs:
                entry["clusters"] = cs
        for col in LENGTH_COLUMNS:  # written by a length_neutral step (response_tokens when binning tokens)
            if col in cols and (lengths := length_summary(_floats(provenance, col), pool, picks)):
                entry[col] = lengths
        emb_col = (s.get("params") or {}).get("embedding_column") or "embedding"
        entry["embeddings"] = find_embeddings(steps, i, store_root, emb_col)
        out.append(entry)
    return out


def render_markdown(entries: list[dict]) -> list[str]:
    """Markdown lines for report.md (empty when there is no selection step)."""
    if not entries:
        return []
    lines = ["", "## Selection methods (pool = rows reaching the step, picked = rows it kept)", "",
             "| step | pool | picked | cluster coverage | score: pool mean → picked mean | map from |", "|---|---|---|---|---|---|"]
    for e in entries:
        cl = e.get("clusters")
        cov = f"{cl['n_covered']}/{cl['n_clusters']} ({cl['coverage']:.1%})" if cl else "no cluster_id"
        sc = "; ".join(f"{k}: {v['pool']['mean']:.3g} → {v['picked'].get('mean', float('nan')):.3g}"
                       for k, v in e["scores"].items()) or "-"
        emb = e["embeddings"]
        src = emb.get("label") or f"none: {emb.get('missing')}"
        lines.append(f"| {e['label']} | {e['pool_rows']} | {e['picked_rows']} | {cov} | {sc} | {src} |")
    for e in entries:
        for col, unit in LENGTH_COLUMNS.items():
            if rc := e.get(col):
                lines += ["", f"{e['label']}: response length ({unit}) median {rc['pool']['median']:.0f} in the pool, "
                          f"{rc['picked'].get('median', float('nan')):.0f} picked; picks per pool length decile "
                          f"{', '.join(f'{v:.3f}' for v in rc['picked_share'])} "
                          f"(pool {', '.join(f'{v:.3f}' for v in rc['pool_share'])})."]
    return lines


def make_plots(entries: list[dict], provenance: pa.Table, steps: list[dict], plot_dir: Path, *,
               max_points: int = MAX_POINTS, seed: int = 0) -> list[str]:
    """Write the map / cluster / score PNGs per selection step; returns paths relative to the run dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for e in entries:
        i = step_index(e["label"])
        pool, picks = step_masks(provenance, i, e["label"])
        tag = e["label"].replace(":", "_")
        if "key" in e["embeddings"]:
            try:
                x = load_pool_embeddings(provenance, steps, e["embeddings"], e["cache_dir"], pool)
            except Exception as err:  # a stale cache must not lose the rest of the report
                e["embeddings"] = {"missing": f"could not read cached embeddings: {err}"}
            else:
                made.append(_plot_map(plt, x, picks[pool], e, plot_dir / f"select_{tag}_map.png", max_points, seed))
        if e.get("clusters"):
            made.append(_plot_clusters(plt, e, plot_dir / f"select_{tag}_clusters.png"))
        if e["scores"]:
            made.append(_plot_scores(plt, e, provenance, pool, picks, plot_dir / f"select_{tag}_scores.png"))
        for col in LENGTH_COLUMNS:
            if e.get(col):
                suffix = "" if col == "response_chars" else "_tokens"  # the characters' plot keeps its name
                made.append(_plot_lengths(plt, e, col, _floats(provenance, col), pool, picks,
                                          plot_dir / f"select_{tag}_lengths{suffix}.png"))
    return [f"plots/{p.name}" for p in made]


def _plot_lengths(plt, e: dict, col: str, lengths: np.ndarray, pool: np.ndarray, picks: np.ndarray,
                  path: Path) -> Path:
    """Share of rows per log-spaced response-length bin, pool vs picked, the pool's decile edges dotted.

    ``col`` is a :data:`LENGTH_COLUMNS` key; ``lengths`` its (n,) values per provenance row (NaN: unseen)."""
    ok = ~np.isnan(lengths)
    a, b = np.maximum(lengths[pool & ok], 1), np.maximum(lengths[picks & ok], 1)
    bins = np.unique(np.geomspace(1, a.max() + 1, 41))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    # share of rows per log-spaced bin (a density per character would inflate the short bins)
    ax.hist(a, bins=bins, weights=np.full(len(a), 1 / len(a)), alpha=0.5, color="#888888", label=f"pool ({len(a)})")
    if len(b):
        ax.hist(b, bins=bins, weights=np.full(len(b), 1 / len(b)), alpha=0.6, color="#d0342c", label=f"picked ({len(b)})")
    for x in e[col]["edges"]:
        ax.axvline(max(x, 1), color="#444444", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(f"response length ({LENGTH_COLUMNS[col]}); dotted: pool deciles")
    ax.set_ylabel("share of rows")
    ax.set_title(f"{e['label']}: response length, pool vs picked", fontsize=9)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (100 dpi) and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_map(plt, x: np.ndarray, picked: np.ndarray, e: dict, path: Path, max_points: int, seed: int) -> Path:
    mean, comp = pca_2d(x, max_points=max_points, seed=seed)
    rng = np.random.default_rng(seed + 1)
    idx_pool = np.arange(len(x))
    idx_sel = np.flatnonzero(picked)
    if len(idx_pool) > max_points:
        idx_pool = np.sort(rng.choice(idx_pool, size=max_points, replace=False))
    if len(idx_sel) > max_points:
        idx_sel = np.sort(rng.choice(idx_sel, size=max_points, replace=False))
    p, s = (x[idx_pool] - mean) @ comp.T, (x[idx_sel] - mean) @ comp.T
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter(p[:, 0], p[:, 1], s=4, c="#bbbbbb", alpha=0.6, linewidths=0,
               label=f"pool ({len(idx_pool)} of {len(x)} shown)")
    ax.scatter(s[:, 0], s[:, 1], s=7, c="#d0342c", alpha=0.8, linewidths=0,
               label=f"picked ({len(idx_sel)} of {int(picked.sum())} shown)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{e['label']}: pool embeddings (PCA, {e['embeddings']['label']})", fontsize=9)
    ax.legend(fontsize=7, markerscale=2)
    _save(plt, fig, path)
    e["map"] = {"method": "pca", "points_pool": int(len(idx_pool)), "points_picked": int(len(idx_sel)), "seed": seed}
    return path


def _plot_clusters(plt, e: dict, path: Path) -> Path:
    pool_sizes = np.array(e["clusters"]["sizes_pool"])
    pick_sizes = np.array(e["clusters"]["sizes_picked"])
    order = np.argsort(-pool_sizes, kind="stable")
    fig, ax = plt.subplots(figsize=(max(5, min(14, 0.06 * len(order) + 4)), 3.5))
    xs = np.arange(len(order))
    ax.bar(xs, pool_sizes[order], width=1.0, color="#bbbbbb", label="pool")
    ax.bar(xs, pick_sizes[order], width=1.0, color="#d0342c", alpha=0.85, label="picked")
    ax.set_yscale("log")
    ax.set_xlabel("cluster (sorted by pool size)")
    ax.set_ylabel("rows")
    c = e["clusters"]
    ax.set_title(f"{e['label']}: cluster sizes; {c['n_covered']}/{c['n_clusters']} clusters covered", fontsize=9)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _plot_scores(plt, e: dict, provenance: pa.Table, pool: np.ndarray, picks: np.ndarray, path: Path) -> Path:
    cols = list(e["scores"])
    fig, axes = plt.subplots(1, len(cols), figsize=(3.4 * len(cols), 2.8), squeeze=False)
    for ax, col in zip(axes.flat, cols):
        v = _floats(provenance, col)
        a, b = v[pool & ~np.isnan(v)], v[picks & ~np.isnan(v)]
        bins = np.histogram_bin_edges(a, bins=40)
        ax.hist(a, bins=bins, density=True, alpha=0.5, color="#888888", label=f"pool ({len(a)})")
        if len(b):
            ax.hist(b, bins=bins, density=True, alpha=0.6, color="#d0342c", label=f"picked ({len(b)})")
        ax.set_title(col, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{e['label']}: score density, pool vs picked", fontsize=9)
    return _save(plt, fig, path)
