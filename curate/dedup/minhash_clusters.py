"""Clusters from candidate links, out of core: components, the exact-Jaccard check, the keep rule.

The tasks of phases 3-5 of ``minhash_dedup`` (phases 1-2: :mod:`curate.dedup.minhash_bands`).
They work on the rows that have a link only ("touched" nodes), renumbered 0..k-1, so their
memory grows with the number of links, not with the number of rows (a pool of 10M rows with 10%
near-duplicates has ~1M touched rows):

3. :func:`components_task`: connected components of the band partitions' links, merged a
   chunk of links at a time into a star forest of the touched nodes (scipy's union-find/BFS on
   the compact graph); each node's label is the smallest node of its component, whatever order
   the links came in, so the labels are those of :func:`curate.dedup.lsh.connected_components`.
4. :func:`verify_task` (``check_false_positives``): exact Jaccard of the candidate pairs of a
   batch of components (:func:`verify_batches`: every pair of a component of at most
   :data:`ALL_PAIRS_MAX` rows, the LSH links of larger ones); the links that pass are the input
   of a second :func:`components_task`.
5. :func:`decide_task`: each touched node's representative by the keep rule (highest priority,
   ties to the lowest node; :func:`curate.dedup.lsh.representatives`).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pyarrow as pa

from curate.dedup.lsh import connected_components, representatives
from curate.dedup.minhash_core import pair_jaccard, shingle_hashes

log = logging.getLogger(__name__)

ALL_PAIRS_MAX = 64  # candidate clusters up to this size get all pairs checked, larger ones their LSH links
COMPONENT_BYTES_PER_LINK = 64  # endpoints 16, unique nodes 8 (x2 sorting), compact ids 16, CSR 12, slack
COMPONENT_BYTES_PER_NODE = 48  # the star forest (node, label) and its compact renumbering


def link_codes(src: np.ndarray, dst: np.ndarray, n_nodes: int) -> np.ndarray:
    """Links as one int64 each: ``min * n_nodes + max`` (sorts by (min, max))."""
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    return lo.astype(np.int64) * np.int64(n_nodes) + hi.astype(np.int64)


def compact_components(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the nodes that have a link.

    Args:
        src, dst: (e,) int64 link endpoints (node ids of any size).

    Returns:
        (nodes, labels): (k,) int64 sorted distinct endpoints and, for each, the smallest node of
        its component.
    """
    nodes = np.unique(np.concatenate([src, dst]))
    if len(nodes) == 0:
        return nodes, nodes.copy()
    lab = connected_components(len(nodes), np.searchsorted(nodes, src), np.searchsorted(nodes, dst))
    return nodes, nodes[lab]  # compact labels are the smallest compact index, nodes are sorted


def components_task(arg: tuple) -> dict[str, np.ndarray]:
    """Phase 3 task: components of the links in the given result files, in bounded memory.

    Links are read file by file; every ``chunk_links`` of them are merged with the components
    found so far (kept as one link per node to its label, a star forest), so memory holds the
    touched nodes and one chunk of links, whatever the total. Components, and so labels, do not
    depend on the order links come in. A second pass collects the links inside components of
    more than :data:`ALL_PAIRS_MAX` rows, which the exact check needs (smaller ones are checked
    pair by pair).

    Args:
        arg: ``(paths, n_nodes, chunk_links, want_links)``: result files (.npz with
            ``src``/``dst``), the node count, links merged at once, and whether to return the
            links of the large components.

    Returns:
        {"nodes", "labels"}: see :func:`compact_components`; {"src", "dst"}: (e,) int64 unique
        links (src < dst, sorted) of the components larger than ALL_PAIRS_MAX (empty unless
        ``want_links``); {"links"}: (1,) int64 links read (before merging repeats across bands).
    """
    paths, n_nodes, chunk_links, want_links = arg
    nodes = labels = np.zeros(0, np.int64)
    buf_s, buf_d, size, total = [], [], 0, 0

    def merge() -> tuple[np.ndarray, np.ndarray]:
        return compact_components(np.concatenate(buf_s + [nodes]), np.concatenate(buf_d + [labels]))

    for p in paths:
        with np.load(p) as z:
            s, d = z["src"], z["dst"]
        if len(s):
            buf_s.append(s)
            buf_d.append(d)
            size += len(s)
            total += len(s)
        if size >= chunk_links:
            nodes, labels = merge()
            buf_s, buf_d, size = [], [], 0
    if buf_s:
        nodes, labels = merge()
    del buf_s, buf_d
    src = dst = np.zeros(0, np.int64)
    if want_links and len(nodes):
        lab_u, counts = np.unique(labels, return_counts=True)
        big = lab_u[counts > ALL_PAIRS_MAX]
        if len(big):
            codes = []
            for p in paths:
                with np.load(p) as z:
                    s, d = z["src"], z["dst"]
                if len(s):
                    m = np.isin(labels[np.searchsorted(nodes, s)], big)
                    codes.append(link_codes(s[m], d[m], n_nodes))
            code = np.unique(np.concatenate(codes))
            src, dst = code // n_nodes, code % n_nodes
    return {"nodes": nodes, "labels": labels, "src": src, "dst": dst, "links": np.array([total], np.int64)}


def verify_batches(nodes: np.ndarray, labels: np.ndarray, src: np.ndarray, dst: np.ndarray,
                   batch_rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group candidate components into batches of about ``batch_rows`` rows with their pairs.

    Args:
        nodes, labels: touched nodes (sorted) and their component labels.
        src, dst: (e,) int64 candidate links of the components larger than ALL_PAIRS_MAX (the
            others are checked pair by pair; more links do no harm).
        batch_rows: rows per batch (a component larger than that is a batch of its own).

    Returns:
        [(rows, pairs)]: (r,) int64 sorted member nodes of the batch's components and (p, 2)
        int64 node pairs to check (all pairs of a component of <= ALL_PAIRS_MAX rows, its links
        otherwise), in the order the in-memory check made them.
    """
    if len(nodes) == 0:
        return []
    order = np.argsort(labels, kind="stable")  # nodes are sorted: members stay ascending
    lab_sorted = labels[order]
    cuts = np.flatnonzero(np.diff(lab_sorted)) + 1
    comps = np.split(nodes[order], cuts)
    comp_labels = lab_sorted[np.r_[0, cuts]]
    # links by component, for the large ones
    link_lab = labels[np.searchsorted(nodes, src)]
    lorder = np.argsort(link_lab, kind="stable")
    link_lab_sorted = link_lab[lorder]
    out = []
    start = 0
    while start < len(comps):
        stop, size = start, 0
        while stop < len(comps) and (size == 0 or size + len(comps[stop]) <= batch_rows):
            size += len(comps[stop])
            stop += 1
        pairs = []
        for c in range(start, stop):
            comp = comps[c]
            if len(comp) <= ALL_PAIRS_MAX:
                i, j = np.triu_indices(len(comp), 1)
                pairs.append(np.stack([comp[i], comp[j]], 1))
            else:
                a = np.searchsorted(link_lab_sorted, comp_labels[c], side="left")
                b = np.searchsorted(link_lab_sorted, comp_labels[c], side="right")
                sel = np.sort(lorder[a:b])  # in link order, as the in-memory check
                pairs.append(np.stack([src[sel], dst[sel]], 1))
        out.append((np.sort(np.concatenate(comps[start:stop])), np.concatenate(pairs)))
        start = stop
    return out


def verify_task(arg: tuple) -> dict[str, np.ndarray]:
    """Phase 4 task: the pairs of one batch whose exact shingle Jaccard is >= threshold.

    Args:
        arg: ``(rows, texts, pairs, shingle_kw, threshold)``: (r,) sorted nodes, their texts
            (Arrow string array, same order), (p, 2) node pairs, ``shingle_hashes`` keywords.

    Returns:
        {"src", "dst"}: the pairs that pass, and {"checked"}: (1,) int64 number of pairs checked.
    """
    rows, texts, pairs, shingle_kw, threshold = arg
    sh, off = shingle_hashes(texts, **shingle_kw)
    sim = pair_jaccard(sh, off, np.searchsorted(rows, pairs[:, 0]), np.searchsorted(rows, pairs[:, 1]))
    ok = sim >= threshold
    return {"src": pairs[ok, 0].astype(np.int64), "dst": pairs[ok, 1].astype(np.int64),
            "checked": np.array([len(pairs)], np.int64)}


def decide_task(arg: tuple) -> dict[str, np.ndarray]:
    """Phase 5 task: the representative of every touched node.

    Args:
        arg: ``(nodes, labels, priority)``: touched nodes, their labels, and (k,) float64
            priorities (larger wins, NaN lowest) or None (keep the first node).

    Returns:
        {"rep"}: (k,) int64, the node kept for each touched node's cluster.
    """
    nodes, labels, priority = arg
    if len(nodes) == 0:
        return {"rep": np.zeros(0, np.int64)}
    compact = np.searchsorted(nodes, labels)  # a label is a node of the same component
    return {"rep": nodes[representatives(compact, priority)]}


def take_sorted(arr: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> list[pa.Array]:
    """``arr.take(rows)`` for ascending ``rows``, chunk by chunk (one array per chunk touched).

    ``ChunkedArray.take`` concatenates every chunk first: on a memory-mapped 1M-row column that
    copied 1.1 GB and took 7 s per call; this copies only the rows taken.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not isinstance(arr, pa.ChunkedArray):
        return [arr.take(pa.array(rows))]
    out, start = [], 0
    for c in arr.chunks:
        lo, hi = np.searchsorted(rows, [start, start + len(c)])
        if hi > lo:
            out.append(c.take(pa.array(rows[lo:hi] - start)))
        start += len(c)
    return out


def take_rows(arr: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``arr.take(rows)`` for rows in any order, copying only those rows (see :func:`take_sorted`)."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    parts = take_sorted(arr, rows[order])
    got = pa.concat_arrays(parts) if parts else pa.array([], arr.type)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    return got.take(pa.array(back))


def text_getter(texts: pa.Array | pa.ChunkedArray, ref_texts: pa.Array | None, n_ref: int) -> Callable:
    """``text_of(nodes)``: the texts of sorted nodes as one large_string array (node < n_ref:
    the reference's row, else input row node - n_ref)."""
    def text_of(nodes: np.ndarray) -> pa.Array:
        parts = take_sorted(ref_texts, nodes[nodes < n_ref]) if n_ref else []
        parts += take_sorted(texts, nodes[nodes >= n_ref] - n_ref)
        chunks = [c.cast(pa.large_string()) for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])]
        return pa.chunked_array(chunks, pa.large_string()).combine_chunks()

    return text_of

