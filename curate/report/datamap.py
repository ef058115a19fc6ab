"""``datamap.html``: an interactive, self-contained map of the pool a person can read.

Every row that reached the recipe's embedding step is a point (its embedding projected to 2-D),
coloured by its fate: picked (selected), not picked by the selection method (its budget reason),
or dropped by a later step, one colour per ``step / reason``. Hovering a point shows its id and
source, its fate, its scores from the provenance and the first ~300 characters of its text.
k-means clusters (a ``cluster_id`` column) are labelled by their most distinctive words, by
class-based TF-IDF as BERTopic does (Grootendorst 2022, arXiv 2203.05794): each cluster's rows
are one document, a word's weight in a cluster is its share of that cluster's words times
``log(1 + A / f)`` (A: mean words per cluster, f: the word's count over all clusters), and the
three heaviest words name the cluster.

Choices:

* **plotly**, not datamapplot or bokeh: ``write_html(include_plotlyjs=True)`` inlines plotly.js
  (4.8 MB), so the file opens offline with no CDN (datamapplot's interactive maps load deck.gl
  and fonts from CDNs, and it needs numba/UMAP); its WebGL scatter (``Scattergl``) has hover,
  zoom and legend toggles (click a fate to hide it) built in, which bokeh would need hand-written
  tools and callbacks for. A 50,000-point map: 34.9 MB, drawn by headless Chromium in 4.6 s, a
  hover box in 0.34 s (docs/selection.md).
* **PCA** (the report's deterministic projection, :func:`curate.report.selection.pca_2d`), not
  UMAP or t-SNE: seconds at any size and the same data always draws the same map, where
  scikit-learn's t-SNE took 83 s on the quick start's 2,874 rows (a loaded 2-core machine) and
  UMAP needs numba. Axes are the two directions of largest variance; neighbours on the map are
  close in embedding space along them, not necessarily the other way round.
* **At most 50,000 points** (``max_points``). Above that, a stated subsample, seeded: the picked
  rows (all of them, or a uniform sample of ``max_points // 2`` when there are more), then a
  uniform sample of the other rows filling the rest. The counts shown and the rule are in the
  page's title and in ``report.json`` (``datamap``).

Rows dropped before the embedding step have no vector and are not drawn; the page lists them
by step and reason.
"""
from __future__ import annotations

import html
import logging
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.report.selection import find_embeddings, pca_2d, step_index, step_masks

log = logging.getLogger(__name__)

MAX_POINTS = 50_000
HOVER_CHARS = 300
LABEL_WORDS = 3
PICKED = "picked"
PICKED_COLOUR = "#d62728"
NOT_PICKED_COLOUR = "#b0b0b0"
# distinct colours for the drop reasons (Okabe-Ito, colour-blind safe, then tab10's remainder)
REASON_COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#8c564b",
                  "#9467bd", "#17becf", "#bcbd22", "#7f7f7f"]
_NOT_SCORES = {"cluster_id", "dup_cluster"}


def ctfidf_labels(texts: list[str], clusters: np.ndarray, n_words: int = LABEL_WORDS) -> dict[int, list[str]]:
    """The ``n_words`` most distinctive words of every cluster by class-based TF-IDF (BERTopic).

    Args:
        texts: one text per row.
        clusters: (n,) int cluster id per row (negative: no cluster, left out).
        n_words: words per label (default 3).

    Returns:
        {cluster id: words, heaviest first}; empty when no cluster has a word.
    """
    from sklearn.feature_extraction.text import CountVectorizer

    ids = sorted({int(c) for c in clusters if c >= 0})
    if not ids:
        return {}
    docs = [" ".join(t for t, c in zip(texts, clusters) if c == k) for k in ids]
    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b", lowercase=True,
                          max_features=50_000)
    try:
        counts = vec.fit_transform(docs).toarray().astype(np.float64)  # (clusters, words)
    except ValueError:  # no word at all (e.g. only digits)
        return {}
    words = vec.get_feature_names_out()
    per_class = counts.sum(axis=1, keepdims=True)
    tf = counts / np.maximum(per_class, 1.0)
    f = counts.sum(axis=0)
    a = per_class.mean()
    w = tf * np.log(1.0 + a / np.maximum(f, 1.0))
    out = {}
    for row, k in enumerate(ids):
        top = np.argsort(-w[row], kind="stable")[:n_words]
        out[k] = [str(words[j]) for j in top if w[row, j] > 0]
    return out


def subsample(picked: np.ndarray, max_points: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Indices of the points drawn (sorted): all when ``len(picked) <= max_points``, else the
    stated rule (module docstring): picked rows first, up to ``max_points // 2``, then a uniform
    sample of the others filling the rest. Seeded, so the same run draws the same points."""
    n = len(picked)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    p, o = np.flatnonzero(picked), np.flatnonzero(~picked)
    keep_p = p if len(p) <= max_points // 2 else rng.choice(p, size=max_points // 2, replace=False)
    keep_o = rng.choice(o, size=min(len(o), max_points - len(keep_p)), replace=False)
    return np.sort(np.concatenate([keep_p, keep_o]))


def _fates(provenance: pa.Table, mask: np.ndarray, steps: list[dict]) -> np.ndarray:
    """Fate label per masked provenance row: ``picked``, ``not picked: <step> <reason>`` for a
    budgeted selection step's own drop, else ``dropped: <step> <reason>``."""
    from curate.report.selection import is_selection_step

    cols = provenance.column_names
    selecting = {s["label"] for s in steps if is_selection_step(s, cols)}
    status = provenance.column("status").to_pylist()
    stage = provenance.column("stage").to_pylist()
    reason = provenance.column("reason").to_pylist()
    out = []
    for i in np.flatnonzero(mask):
        if status[i] == "selected":
            out.append(PICKED)
        else:
            kind = "not picked" if stage[i] in selecting else "dropped"
            out.append(f"{kind}: {stage[i]} {reason[i]}")
    return np.array(out, dtype=object)


def _score_columns(provenance: pa.Table) -> list[str]:
    return [f.name for f in provenance.schema if (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))
            and f.name not in _NOT_SCORES]


def _hover(ids, sources, fates, texts, scores: dict[str, np.ndarray], clusters, labels) -> list[str]:
    out = []
    for j in range(len(ids)):
        raw = texts[j] or ""
        raw = raw[:HOVER_CHARS] + ("…" if len(raw) > HOVER_CHARS else "")
        # plotly's hover box does not wrap: break lines at ~90 characters, blank lines dropped
        lines = [w for para in raw.split("\n") if para.strip() for w in textwrap.wrap(para, 90)]
        body = "<br>".join(html.escape(w) for w in lines)
        sc = ", ".join(f"{k} {v[j]:.3g}" for k, v in scores.items() if not np.isnan(v[j]))
        cl = ""
        if clusters is not None and clusters[j] >= 0:
            cl = f"<br>cluster {int(clusters[j])}: {html.escape(' · '.join(labels.get(int(clusters[j]), [])))}"
        out.append(f"<b>{html.escape(str(ids[j]))}</b> ({html.escape(str(sources[j]))})<br>"
                   f"<b>{html.escape(fates[j])}</b>{cl}<br>{html.escape(sc)}<br><br>{body}")
    return out


def _colours(fates: list[str]) -> dict[str, str]:
    out, k = {}, 0
    for f in fates:
        if f == PICKED:
            out[f] = PICKED_COLOUR
        elif f.startswith("not picked"):
            out[f] = NOT_PICKED_COLOUR
        else:
            out[f] = REASON_COLOURS[k % len(REASON_COLOURS)]
            k += 1
    return out


def build_datamap(provenance: pa.Table, steps: list[dict], store_root: str | None, path: Path, *,
                  texts: pa.Array | pa.ChunkedArray | list | None = None, title: str = "",
                  max_points: int = MAX_POINTS, seed: int = 0) -> dict:
    """Write the data map to ``path`` (a self-contained HTML file).

    Args:
        provenance: the run's provenance table.
        steps: the report's ``stages`` entries (label, type, kind, key, columns_added).
        store_root: the stage cache holding the embedding step's table.
        path: where to write the HTML.
        texts: the ingested rows' ``text``, in ingest order (the provenance's first rows, before
            the quarantined ones); None: hover shows no text and clusters get no labels.
        title: the page title's prefix (the recipe name).
        max_points: most points drawn (default 50,000; the subsample rule is in the module docstring).
        seed: subsample and PCA-fit seed (default 0).

    Returns:
        What ``report.json`` records under ``datamap``: the file, the embedding step, counts of
        rows, points drawn and the rule, or ``{"missing": why}`` when there are no embeddings.
    """
    src = find_embeddings(steps, len(steps), store_root)
    if "key" not in src:
        return {"missing": src["missing"]}
    from curate.cache.store import StageStore
    from curate.core.schema import embedding_matrix

    j = src["step_index"]
    at, _ = step_masks(provenance, j, steps[j]["label"])
    table = StageStore(store_root).load_table(src["key"])
    if len(table) != int(at.sum()):
        return {"missing": f"cached {src['label']} table has {len(table)} rows, the ledger says {int(at.sum())}"}
    if not at.any():
        return {"missing": f"no row reached {src['label']}"}
    fates = _fates(provenance, at, steps)
    shown = subsample(fates == PICKED, max_points, seed)
    x = embedding_matrix(table.select([src["column"]]).take(pa.array(shown)), src["column"])
    mean, comp = pca_2d(x, max_points=min(max_points, 5000), seed=seed)
    xy = (x - mean) @ comp.T
    pool_rows = np.flatnonzero(at)  # provenance rows that reached the embedding step (= ingest rows)
    rows = pool_rows[shown]  # provenance rows drawn
    pool_text = _take_text(texts, pool_rows)
    shown_text = [pool_text[i] for i in shown]
    ids = provenance.column("id").take(pa.array(rows)).to_pylist()
    sources = (provenance.column("source").take(pa.array(rows)).to_pylist()
               if "source" in provenance.column_names else [""] * len(rows))
    scores = {c: provenance.column(c).take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.float64)
              for c in _score_columns(provenance)}
    clusters, labels = None, {}
    if "cluster_id" in provenance.column_names:
        cl = provenance.column("cluster_id").take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.float64)
        clusters = np.where(np.isnan(cl), -1, cl).astype(np.int64)
        all_cl = provenance.column("cluster_id").take(pa.array(pool_rows)).to_numpy(zero_copy_only=False)
        all_cl = np.where(np.isnan(all_cl.astype(np.float64)), -1, all_cl).astype(np.int64)
        if texts is not None:
            labels = ctfidf_labels(pool_text, all_cl)  # words from every row of the cluster, drawn or not
    fates_shown = fates[shown]
    hover = _hover(ids, sources, fates_shown, shown_text, scores, clusters, labels)
    before = _dropped_before(provenance, j)
    info = {"file": path.name, "embeddings": src["label"], "projection": "pca", "rows": int(at.sum()),
            "points": len(shown), "max_points": max_points, "seed": seed,
            "rule": ("all rows" if len(shown) == int(at.sum()) else
                     f"picked rows (all, or a seeded sample of {max_points // 2:,}), then a seeded uniform "
                     f"sample of the others up to {max_points:,} points"),
            "fates": dict(Counter(fates.tolist())), "not_on_map": before, "clusters_labelled": len(labels)}
    _write_html(path, xy, fates_shown, hover, clusters, labels, info, title)
    return info


def _take_text(texts, rows: np.ndarray) -> list[str]:
    if texts is None:
        return [""] * len(rows)
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        return ["" if t is None else t for t in texts.take(pa.array(rows)).to_pylist()]
    return ["" if texts[i] is None else texts[i] for i in rows]


def _dropped_before(provenance: pa.Table, index: int) -> dict[str, int]:
    """Rows that never reached the embedding step, by ``step reason`` (quarantine included)."""
    status = provenance.column("status").to_pylist()
    stage = provenance.column("stage").to_pylist()
    reason = provenance.column("reason").to_pylist()
    out = Counter()
    for st, s, r in zip(status, stage, reason):
        k = step_index(s)
        if st == "quarantined" or (st == "dropped" and k is not None and k < index):
            out[f"{s} {r}"] += 1
    return dict(out)


def place_labels(xy: np.ndarray, clusters: np.ndarray, labels: dict[int, list[str]]) -> tuple[list, list, list]:
    """Label positions (each cluster's median point) that do not overlap, biggest clusters first.

    A label whose box (about 6 px per character by 16 px on an ~1000 x 700 px plot) would overlap
    one already placed is left off the map; its words still show in every point's hover text.

    Returns:
        (x, y, text) of the labels drawn.
    """
    span = np.ptp(xy, axis=0) if len(xy) else np.ones(2)
    span = np.where(span > 0, span, 1.0)
    boxes, lx, ly, lt = [], [], [], []
    sizes = Counter(int(c) for c in clusters if c >= 0)
    for k, _ in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        words = labels.get(k)
        if not words:
            continue
        m = clusters == k
        cx, cy = float(np.median(xy[m, 0])), float(np.median(xy[m, 1]))
        text = " · ".join(words)
        w, h = 0.0065 * len(text) * span[0], 0.025 * span[1]
        box = (cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2)
        if any(not (box[1] < b[0] or b[1] < box[0] or box[3] < b[2] or b[3] < box[2]) for b in boxes):
            continue
        boxes.append(box)
        lx.append(cx)
        ly.append(cy)
        lt.append(text)
    return lx, ly, lt


def _write_html(path: Path, xy: np.ndarray, fates: np.ndarray, hover: list[str], clusters, labels: dict,
                info: dict, title: str) -> None:
    import plotly.graph_objects as go

    order = sorted(set(fates.tolist()), key=lambda f: (f != PICKED, f.startswith("dropped"), f))
    colours = _colours(order)
    fig = go.Figure()
    hover = np.array(hover, dtype=object)
    # the grey "not picked" first, so picks and reasons draw on top of them
    for f in sorted(order, key=lambda f: (not f.startswith("not picked"), f == PICKED)):
        m = fates == f
        fig.add_trace(go.Scattergl(
            x=xy[m, 0], y=xy[m, 1], mode="markers", name=f"{f} ({int(m.sum()):,})",
            marker={"size": 6 if f == PICKED else 5, "color": colours[f], "opacity": 0.85 if f == PICKED else 0.6,
                    "line": {"width": 0}},
            text=hover[m], hovertemplate="%{text}<extra></extra>"))
    if labels and clusters is not None:
        lx, ly, lt = place_labels(xy, clusters, labels)
        # annotations, not a text trace: a half-opaque box keeps a label readable over the points
        fig.update_layout(annotations=[
            {"x": a, "y": b, "text": html.escape(t), "showarrow": False, "font": {"size": 10, "color": "#111111"},
             "bgcolor": "rgba(255,255,255,0.75)", "borderpad": 1} for a, b, t in zip(lx, ly, lt)])
        info["labels_drawn"] = len(lt)
    gone = sum(info["not_on_map"].values())
    sub = [(f"{info['points']:,} of {info['rows']:,} rows that reached {info['embeddings']} ({info['rule']}); PCA "
            f"of the embeddings. {gone:,} rows dropped or quarantined before it are not drawn."),
           ("Labels: a k-means cluster's most distinctive words (c-TF-IDF), the biggest clusters first where labels "
            "would overlap. Click a legend entry to hide it; hover a point to read it.")]
    fig.update_layout(
        title={"text": f"{html.escape(title)} data map<br><sup>{'<br>'.join(html.escape(x) for x in sub)}</sup>",
               "x": 0.01},
        template="plotly_white", hovermode="closest", legend={"itemsizing": "constant", "font": {"size": 11}},
        xaxis={"title": "PC 1", "zeroline": False}, yaxis={"title": "PC 2", "zeroline": False},
        hoverlabel={"align": "left", "bgcolor": "white", "font": {"size": 11, "color": "#222222"}}, margin={"l": 40, "r": 10, "t": 95, "b": 40},
        height=800)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True, include_mathjax=False,
                   config={"displaylogo": False, "scrollZoom": True, "responsive": True},
                   div_id="datamap")
