"""Response lengths of each arm's selections against the pool's (table and plot of a ``curate eval`` report).

Long responses explain most of what the alpaca 1k arms gained (docs/evaluation.md), so every report
shows how far each arm's rows sit from the pool's response-length distribution: the share of its
rows in each of the pool's length deciles (a ``length_neutral`` selection has the pool's shares to
within rounding; random has them up to sampling noise) and a histogram per arm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.select.length_bins import assign_bins, length_edges, response_chars

HIST_BINS = 40  # log-spaced histogram bins of the plot


def selection_lengths(pool: pa.Table, selections: dict, bins: int = 10) -> dict:
    """Length summary of the pool and of every arm's selections (pooled over its seeds).

    Args:
        pool: the decontaminated pool.
        selections: {(arm, seed): selected table}, the selections built in this invocation.
        bins: pool quantile bins (default 10, deciles).

    Returns:
        ``{"edges", "pool": {...}, "arms": {arm: {...}}, "hist_edges"}``; each entry has
        ``seeds``, ``rows``, ``mean_chars``, ``median_chars``, ``share`` (fraction of rows per pool
        decile), ``max_share_diff`` (largest |share - pool share|) and ``hist`` (share of rows per
        bin of ``hist_edges``, log-spaced characters).
    """
    lens = response_chars(pool)
    edges = length_edges(lens, bins)
    nb = len(edges) + 1
    hist_edges = np.unique(np.geomspace(1, max(int(lens.max(initial=1)), 2) + 1, HIST_BINS + 1))

    def summary(x: np.ndarray, seeds: list) -> dict:
        share = np.bincount(assign_bins(x, edges), minlength=nb) / max(len(x), 1)
        # share of rows per log-spaced bin (a density per character would inflate the short bins)
        hist = np.histogram(np.maximum(x, 1), bins=hist_edges)[0] / max(len(x), 1)
        return {"seeds": seeds, "rows": len(x), "mean_chars": float(x.mean()) if len(x) else None,
                "median_chars": float(np.median(x)) if len(x) else None, "share": share.round(4).tolist(),
                "hist": hist.tolist()}

    out = {"edges": edges.tolist(), "hist_edges": hist_edges.tolist(), "pool": summary(lens, []), "arms": {}}
    by_arm: dict = {}
    for (arm, seed), tab in selections.items():
        by_arm.setdefault(arm, []).append((seed, response_chars(tab)))
    pool_share = np.array(out["pool"]["share"])
    for arm, got in by_arm.items():
        got.sort(key=lambda t: t[0])
        e = summary(np.concatenate([x for _, x in got]), [s for s, _ in got])
        e["max_share_diff"] = float(np.abs(np.array(e["share"]) - pool_share).max().round(4))
        out["arms"][arm] = e
    return out


def markdown(lengths: dict | None) -> list[str]:
    """Report lines: per arm, mean/median response characters and the share of rows per pool decile."""
    if not lengths or not lengths.get("arms"):
        return []
    p = lengths["pool"]
    head = " | ".join(f"d{i + 1}" for i in range(len(p["share"])))
    lines = ["", "## Response length of the selections (characters; rows per pool length decile)", "",
             f"Pool decile edges: {', '.join(f'{e:.0f}' for e in lengths['edges'])}. A `length_neutral` arm has the "
             "pool's shares to within rounding; `max |Δ|` is the largest difference to them.", "",
             f"| arm | seeds | mean | median | {head} | max \\|Δ\\| |", "|---|---|---|---|" + "---|" * len(p["share"]) + "---|",
             f"| pool | - | {p['mean_chars']:.0f} | {p['median_chars']:.0f} | "
             + " | ".join(f"{v:.3f}" for v in p["share"]) + " | 0 |"]
    for arm, e in lengths["arms"].items():
        lines.append(f"| {arm} | {len(e['seeds'])} | {e['mean_chars']:.0f} | {e['median_chars']:.0f} | "
                     + " | ".join(f"{v:.3f}" for v in e["share"]) + f" | {e['max_share_diff']:.3f} |")
    return lines


def plot(lengths: dict | None, path: Path) -> str | None:
    """Share of rows per log-spaced response-length bin, pool and each arm; returns the file or None."""
    if not lengths or not lengths.get("arms"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.array(lengths["hist_edges"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.stairs(lengths["pool"]["hist"], edges, fill=True, color="#cccccc", label="pool")
    for arm, e in lengths["arms"].items():
        ax.stairs(e["hist"], edges, label=f"{arm} ({e['rows']} rows)")
    ax.set_xscale("log")
    ax.set_xlabel("response length (characters)")
    ax.set_ylabel("share of rows")
    ax.set_title("Response length: each arm's selections (pooled over seeds) vs the pool", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
