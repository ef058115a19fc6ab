"""Suffix-array kernels for exact-substring dedup (Lee et al. 2022, arXiv 2107.06499).

Array-in / array-out helpers used by the ``substring_dedup`` stage and its benchmark.

Sequence layout: the documents' units (UTF-8 bytes, or token ids) concatenated in input order,
each document followed by ONE separator unit that never occurs in text (0xFF for bytes: it is
never part of UTF-8; the dtype's maximum for token ids). A *k-gram* is k consecutive units; it is
*valid* when it lies inside one document (it holds no separator), so no match ever crosses a
document boundary.

Method (the paper's §4.1): build the suffix array SA of the sequence (libdivsufsort via
``pydivsufsort``) and the LCP array (Kasai et al. 2001). Suffixes whose first k units are equal
form one contiguous run of SA with LCP >= k between neighbours, so every repeated k-gram is one
run of length >= 2. What is cut:

* ``keep="first"`` (the paper: "that substring is removed from one of them"): every occurrence
  of a repeated k-gram except the one at the smallest position (the first in input order);
* ``keep="none"`` (the released code: ``self-similar`` writes every member of a run and
  ``collect`` merges them into byte ranges, so all copies go, the first included).

The units cut are the union of the windows [p, p+k) of those k-grams: a copy of a repeated span
of L >= k units loses all L units, a span shorter than k is never touched, and every unit cut
lies in some repeated k-gram (a cut interval as a whole need not be repeated: two overlapping
k-grams repeated in different places, the caveat of the released code's README).

Memory bound and shards: one pass holds the sequence, its SA and its LCP array
(:func:`pass_bytes`: 12.5 bytes per byte unit, 16 per 16-bit token with 32-bit indices). When
the corpus does not fit in ``max_units`` per pass, documents are cut into consecutive shards.
With ``cross_shard=True`` every PAIR of shards is one pass (shard i then shard j, i < j, so
positions stay in input order): a k-gram and its earlier copy always share some pass, and the
result equals the one-pass result exactly, at the price of S(S-1)/2 passes over 2/S of the
corpus each. With ``cross_shard=False`` each shard is deduplicated alone: spans repeated only
across shards (a copy in shard 2 of text first seen in shard 1) are MISSED; that is all it misses.
"""
from __future__ import annotations

import logging
from itertools import combinations

import numpy as np

log = logging.getLogger(__name__)

BYTE_SEPARATOR = 0xFF  # never occurs in UTF-8
_CHUNK = 1 << 20  # most SA entries per step when filtering aligned suffixes (bounds the temporaries)


def separator_for(dtype: np.dtype) -> int:
    """The separator unit for a sequence dtype: 0xFF for uint8, else the dtype's maximum."""
    dtype = np.dtype(dtype)
    return BYTE_SEPARATOR if dtype == np.uint8 else int(np.iinfo(dtype).max)


def suffix_array_lcp(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Suffix array and LCP array of a unit sequence.

    Args:
        seq: (n,) uint8, uint16 or uint32 C-contiguous array (writable: libdivsufsort needs it).

    Returns:
        (sa, lcp): (n,) int32 (int64 when the byte length reaches 2**31) each; ``sa`` lists
        suffix start positions in lexicographic order, ``lcp[i]`` is the number of units
        suffixes ``sa[i]`` and ``sa[i+1]`` share (``lcp[n-1] = 0``).
    """
    from pydivsufsort import divsufsort, kasai

    if seq.dtype not in (np.uint8, np.uint16, np.uint32):
        raise ValueError(f"seq must be uint8, uint16 or uint32, got {seq.dtype}")
    seq = np.ascontiguousarray(seq)
    if len(seq) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    if seq.dtype == np.uint8:
        sa = divsufsort(seq)
    else:
        # Sort the raw bytes and keep the suffixes starting on a unit boundary. Any byte order
        # puts suffixes with equal leading units next to each other (all we need: runs of equal
        # k-grams); it avoids the big-endian copy and 2x index temporaries pydivsufsort's own
        # integer path makes (20 -> 16 bytes per 16-bit token at peak, measured 11).
        w = seq.itemsize
        byte_sa = divsufsort(seq.view(np.uint8))
        sa = np.empty(len(seq), dtype=byte_sa.dtype)
        got = 0
        step = min(_CHUNK, max(1 << 16, len(byte_sa) // 16))  # temporaries ~ 9 bytes x step
        for a in range(0, len(byte_sa), step):
            part = byte_sa[a:a + step]
            part = part[(part & (w - 1)) == 0] // w
            sa[got:got + len(part)] = part
            got += len(part)
        del byte_sa
        if got != len(seq):
            raise RuntimeError(f"aligned suffixes: expected {len(seq)}, got {got}")
    lcp = kasai(seq, sa)
    return sa, lcp


def mark_repeated_kgrams(sa: np.ndarray, lcp: np.ndarray, seg_ends: np.ndarray, k: int, keep: str = "first",
                         block: int | None = None) -> np.ndarray:
    """Mark the start of every k-gram to cut, from a sequence's SA and LCP.

    SA is walked in blocks of about ``block`` entries cut at run boundaries (a run of equal
    k-grams never straddles two blocks), so the temporaries stay O(block) however much of the
    corpus is repeated; the result is one byte per unit.

    Args:
        sa: (n,) suffix array (from :func:`suffix_array_lcp`).
        lcp: (n,) LCP array, ``lcp[i]`` between ``sa[i]`` and ``sa[i+1]``.
        seg_ends: (D,) sorted int64 positions of the separators (each document's exclusive end);
            the sequence must end with one, and the separator value must occur nowhere else.
        k: window length in units (>= 1).
        keep: ``"first"`` (cut every occurrence but the first in position order) or ``"none"``
            (cut every occurrence).
        block: SA entries per block (default n/16, clipped to [4096, 2**20]).

    Returns:
        (n,) bool: True at p when the valid k-gram seq[p:p+k] is cut.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if keep not in ("first", "none"):
        raise ValueError(f"keep must be 'first' or 'none', got {keep!r}")
    n = len(sa)
    marked = np.zeros(n, dtype=bool)
    block = int(block or min(1 << 20, max(4096, n // 16)))
    seg_ends = np.asarray(seg_ends, dtype=np.int64)
    a = 0
    while a < n:
        b = min(n, a + block)
        while b < n and lcp[b - 1] >= k:  # move the cut to the end of the run
            nxt = np.flatnonzero(lcp[b - 1:min(n, b - 1 + block)] < k)
            b = b + int(nxt[0]) if len(nxt) else min(n, b - 1 + block)
        link = lcp[a:b] >= k  # link[i]: sa[a+i] and sa[a+i+1] share their first k units (false at b-1)
        if link.any():
            left = np.zeros(b - a, dtype=bool)
            left[1:] = link[:-1]
            cand = np.flatnonzero(link | left)  # members of runs of >= 2 equal k-prefixes
            pos = sa[a + cand].astype(np.int64)
            head = ~left[cand]  # first member of each run
            run = np.cumsum(head) - 1  # run id, nondecreasing along cand
            del link, left, cand
            # Inside one document (no separator in the window)? All members of a run share their
            # k units, so one member per run decides; sorted needles make searchsorted cache-friendly
            # (random ones cost 10 s on 16M candidates).
            rp = pos[head]
            order = np.argsort(rp)
            ok_run = np.empty(len(rp), dtype=bool)
            ok_run[order] = rp[order] + k <= seg_ends[np.searchsorted(seg_ends, rp[order], side="left")]
            ok = ok_run[run]
            pos, run = pos[ok], run[ok]
            if len(run):
                multi = np.bincount(run)[run] >= 2
                pos, run = pos[multi], run[multi]
            if len(run) and keep == "first":
                new = np.ones(len(run), dtype=bool)
                new[1:] = run[1:] != run[:-1]
                first = np.minimum.reduceat(pos, np.flatnonzero(new))
                pos = pos[pos != first[np.cumsum(new) - 1]]
            marked[pos] = True
        a = b
    return marked


def marked_to_intervals(marked: np.ndarray, k: int, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Union of the windows [p, p+k) at the marked starts, scanned in chunks (O(chunk) temporaries).

    Args:
        marked: (n,) bool window starts.
        k: window length.
        chunk: positions per scan step.

    Returns:
        (lo, hi): (r,) int64 sorted disjoint, non-touching intervals [lo, hi).
    """
    los, his = [], []
    for c in range(0, len(marked), chunk):
        lo, hi = windows_to_intervals(np.flatnonzero(marked[c:c + chunk]) + c, k)
        if len(lo) and his and lo[0] <= his[-1][-1]:  # continues the previous chunk's last interval
            his[-1][-1] = max(his[-1][-1], hi[0])
            lo, hi = lo[1:], hi[1:]
        if len(lo):
            los.append(lo)
            his.append(hi)
    if not los:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(los), np.concatenate(his)


def windows_to_intervals(starts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Union of the windows [s, s+k) as disjoint, non-touching intervals.

    Args:
        starts: (m,) sorted int64 window starts.
        k: window length.

    Returns:
        (lo, hi): (r,) int64 each; intervals [lo, hi), sorted, with lo[i+1] > hi[i].
    """
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.flatnonzero(starts[1:] > starts[:-1] + k) + 1  # same-length windows: prev end = prev start + k
    lo = starts[np.r_[0, brk]]
    hi = starts[np.r_[brk - 1, len(starts) - 1]] + k
    return lo, hi


def union_intervals(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of intervals [lo, hi) (any order, may overlap) as sorted disjoint, non-touching ones."""
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if len(lo) == 0:
        return lo, hi
    order = np.lexsort((hi, lo))
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    brk = np.flatnonzero(lo[1:] > reach[:-1]) + 1
    return lo[np.r_[0, brk]], reach[np.r_[brk - 1, len(lo) - 1]]


def pass_bytes(n_units: int, width: int) -> int:
    """Peak bytes of one pass over ``n_units`` units of ``width`` bytes (uint8/16/32).

    The model counts the arrays alive at the two peaks (checked against sampled RSS in
    benchmarks/substring_dedup.py): suffix sorting (sequence + byte SA, + aligned SA and the
    filter's temporaries for tokens) and the run search (sequence + SA + LCP + the marks, 1 byte per unit, + one block's
    temporaries, at most about 40 bytes x n/16 entries = 2.5 bytes per unit).
    """
    idx = 4 if n_units * width < 2**31 - 1 else 8
    # tokens: byte SA + aligned SA + the filter's temporaries (about 9 bytes x 2n/16 entries)
    sort_peak = n_units * width + (n_units * width * idx + n_units * idx + n_units * idx // 2 if width > 1
                                   else n_units * idx)
    run_peak = n_units * width + 2 * n_units * idx + n_units + 5 * n_units // 2
    return int(max(sort_peak, run_peak))


def max_pass_units(memory_gb: float, width: int) -> int:
    """Largest pass (in units) whose :func:`pass_bytes` fits ``memory_gb`` GiB."""
    budget = float(memory_gb) * 2**30
    lo, hi = 1, max(2, int(budget))  # pass_bytes is increasing: bisect
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pass_bytes(mid, width) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def plan_shards(doc_units: np.ndarray, shard_units: int) -> np.ndarray:
    """Cut documents into consecutive shards of at most ``shard_units`` units each.

    Args:
        doc_units: (D,) int64 units per document INCLUDING its separator.
        shard_units: capacity of one shard (a longer document gets a shard of its own).

    Returns:
        (S+1,) int64 document boundaries: shard s holds documents [b[s], b[s+1]).
    """
    doc_units = np.asarray(doc_units, dtype=np.int64)
    if len(doc_units) == 0:
        return np.zeros(1, np.int64)
    bounds = [0]
    acc = 0
    for d, u in enumerate(doc_units.tolist()):
        if acc and acc + u > shard_units:
            bounds.append(d)
            acc = 0
        acc += u
    bounds.append(len(doc_units))
    return np.asarray(bounds, dtype=np.int64)


def find_repeated_spans(seq: np.ndarray, doc_starts: np.ndarray, k: int, *, keep: str = "first",
                        max_units: int | None = None, cross_shard: bool = True,
                        stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit intervals to cut from a separator-terminated corpus sequence, in bounded passes.

    Args:
        seq: (N,) uint8/uint16/uint32 sequence; document d is seq[doc_starts[d]:sep_d] with the
            separator (:func:`separator_for`) at sep_d = doc_starts[d+1] - 1 (the last at N-1).
        doc_starts: (D,) int64 start position of each document.
        k: minimum repeated-span length in units.
        keep: ``"first"`` or ``"none"`` (see :func:`mark_repeated_kgrams`).
        max_units: most units one pass may hold (None: everything in one pass).
        cross_shard: with several shards, run every pair of shards (exact) instead of each
            shard alone (misses spans repeated only across shards).
        stats: optional dict that receives ``n_shards`` and ``n_passes``.

    Returns:
        (lo, hi): (r,) int64 sorted disjoint global intervals [lo, hi) to cut; each lies inside
        one document.
    """
    n = len(seq)
    doc_starts = np.asarray(doc_starts, dtype=np.int64)
    bounds_pos = np.r_[doc_starts, n]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if max_units is None or n <= max_units:
        shards = np.array([0, len(doc_starts)], dtype=np.int64)
    else:
        per_shard = max_units // 2 if cross_shard else max_units
        shards = plan_shards(np.diff(bounds_pos), max(per_shard, 1))
    n_shards = len(shards) - 1
    if n_shards == 1:
        passes = [(0,)]
    elif cross_shard:
        passes = list(combinations(range(n_shards), 2))
    else:
        passes = [(s,) for s in range(n_shards)]
    if stats is not None:
        stats.update(n_shards=n_shards, n_passes=len(passes))
    if max_units is not None and n_shards > 1:
        per_shard = max_units // 2 if cross_shard else max_units
        big = int(np.diff(bounds_pos).max())
        if big > per_shard:
            log.warning("substring dedup: a document of %d units is longer than a shard (%d units): the passes "
                        "holding it exceed the memory budget", big, per_shard)
    seg_ends_all = bounds_pos[1:] - 1
    los, his = [], []
    for p in passes:
        pieces = [(int(bounds_pos[shards[s]]), int(bounds_pos[shards[s + 1]])) for s in p]
        local = seq[pieces[0][0]:pieces[0][1]] if len(pieces) == 1 else np.concatenate([seq[a:b] for a, b in pieces])
        ends = [seg_ends_all[shards[s]:shards[s + 1]] - a + off for s, (a, _), off in
                zip(p, pieces, np.cumsum([0] + [b - a for a, b in pieces[:-1]]))]
        sa, lcp = suffix_array_lcp(local)
        marked = mark_repeated_kgrams(sa, lcp, np.concatenate(ends), k, keep)
        del sa, lcp, local
        lo, hi = marked_to_intervals(marked, k)
        del marked
        # back to global positions: a window never crosses a piece (each piece ends with a separator)
        if len(pieces) == 2:
            len0 = pieces[0][1] - pieces[0][0]
            shift = np.where(lo < len0, pieces[0][0], pieces[1][0] - len0)
        else:
            shift = pieces[0][0]
        los.append(lo + shift)
        his.append(hi + shift)
    return union_intervals(np.concatenate(los), np.concatenate(his))
