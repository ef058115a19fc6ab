"""See why rows went: duplicate clusters from provenance, printed with word-level diff markers.

Used by ``curate report RUN --dups`` (see curate/report/dup_view.py) and usable on its own::

    prov = pq.read_table("out/provenance.parquet")
    clusters = dup_clusters_from_provenance(prov)          # {cluster id: [kept id, member ids...]}
    print(format_dup_cluster(rows, kept_id=clusters[0][0]))
"""
from __future__ import annotations

import difflib
import textwrap
from collections import defaultdict

import numpy as np
import pyarrow as pa


def dup_clusters_from_provenance(provenance: pa.Table) -> dict[int, list[str]]:
    """Group the provenance's rows into duplicate clusters.

    Clusters come from the ``dup_cluster`` column when present (MinHash: every member, the kept
    row included, carries the cluster id; -1/null = none). Rows that only have ``dup_of``
    (exact or semantic dedup) are grouped with their representative under new ids after the
    largest ``dup_cluster`` id.

    Args:
        provenance: table with at least ``id``; optionally ``dup_cluster`` and ``dup_of``.

    Returns:
        {cluster id: [kept id, other member ids in provenance order]}, clusters ordered by id.
    """
    ids = provenance.column("id").to_pylist()
    dup_of = provenance.column("dup_of").to_pylist() if "dup_of" in provenance.column_names else [None] * len(ids)
    rep_of = dict(zip(ids, dup_of))
    clusters: dict[int, list[str]] = defaultdict(list)
    seen: set[str] = set()
    if "dup_cluster" in provenance.column_names:
        for i, c in zip(ids, provenance.column("dup_cluster").to_pylist()):
            if c is not None and not (isinstance(c, float) and np.isnan(c)) and int(c) >= 0:
                clusters[int(c)].append(i)
                seen.add(i)
    out: dict[int, list[str]] = {}
    for c, members in sorted(clusters.items()):
        # The kept row is the member no other member points away from (its dup_of is None).
        kept = [m for m in members if rep_of.get(m) is None]
        reps = {rep_of[m] for m in members if rep_of.get(m) is not None}
        head = kept[0] if kept else (sorted(reps)[0] if reps else members[0])
        out[c] = [head] + [m for m in members if m != head]
    nxt = max(out, default=-1) + 1
    groups: dict[str, list[str]] = defaultdict(list)
    for i, d in zip(ids, dup_of):
        if d is not None and i not in seen:
            groups[d].append(i)
    for rep, members in groups.items():
        out[nxt] = [rep] + members
        nxt += 1
    return out


def _diff_words(kept: str, other: str) -> str:
    """Word diff of ``other`` against ``kept``: ``[-gone-]`` and ``{+new+}`` around changes."""
    a, b = kept.split(), other.split()
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.extend(b[j1:j2])
        if op in ("delete", "replace"):
            out.append("[-" + " ".join(a[i1:i2]) + "-]")
        if op in ("insert", "replace"):
            out.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(out)


def _shingle_jaccard(x: str, y: str, n: int = 5) -> float:
    from curate.dedup.minhash_core import jaccard, shingle_hashes

    sh, off = shingle_hashes(pa.array([x, y], pa.string()), ngram=n)
    return jaccard(sh[off[0]:off[1]], sh[off[1]:off[2]])


def format_dup_cluster(rows: list[dict], kept_id: str, width: int = 100, max_lines: int = 6) -> str:
    """Render one duplicate cluster: the kept row, then each member diffed against it.

    Args:
        rows: members as dicts with ``id`` and ``text`` (optional ``status``, ``reason``).
        kept_id: id of the representative that survived.
        width: characters per line (default 100).
        max_lines: lines of text shown per member before ``...`` (default 6).

    Returns:
        Multi-line string: a header with the cluster size, the kept text, and for every other
        member its reason, the exact word-5-gram Jaccard to the kept text, and a word diff
        (``[-removed-]`` / ``{+added+}``).
    """
    by_id = {str(r["id"]): r for r in rows}
    kept = by_id.get(str(kept_id))
    kept_text = (kept or {}).get("text") or ""

    def block(text: str) -> list[str]:
        lines = textwrap.wrap(text.replace("\n", " ⏎ "), width=max(20, width - 4)) or [""]
        if len(lines) > max_lines:
            lines = lines[:max_lines] + ["..."]
        return ["    " + ln for ln in lines]

    out = [f"== duplicate cluster of {len(rows)} rows, kept {kept_id} " + "=" * max(0, width - 40 - len(str(kept_id)))]
    out.append(f"  KEPT {kept_id}" + ("" if kept else "  (text not available)"))
    out += block(kept_text)
    for r in rows:
        if str(r["id"]) == str(kept_id):
            continue
        text = r.get("text") or ""
        j = _shingle_jaccard(kept_text, text) if kept else float("nan")
        why = r.get("reason") or r.get("status") or "member"
        out.append(f"  DROP {r['id']}  [{why}]  jaccard(word 5-grams) vs kept = {j:.2f}")
        out += block(_diff_words(kept_text, text) if kept else text)
    return "\n".join(out)
