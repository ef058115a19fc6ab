"""MinHash building blocks: normalisation, shingles, signatures, band keys, band choice.

Array-in / array-out functions (faiss-contrib manners) used by the ``minhash_dedup`` stage, the
signature index and the benchmarks. The maths is Broder's MinHash (Broder 1997, "On the
resemblance and containment of documents") with LSH banding (Leskovec, Rajaraman & Ullman,
"Mining of Massive Datasets", ch. 3); normalisation follows datatrove's ``simplify_text``.

Pipeline for a batch of n texts::

    normalize_texts -> token hashes (flat uint64 + (n+1,) offsets)
      -> ngram_hashes (flat uint64 shingle hashes + offsets)
      -> minhash_signatures (n, P) uint32 -> band_keys (n, b) uint64
"""
from __future__ import annotations

import functools
import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from curate.dedup.minhash_jaccard import jaccard, pair_jaccard  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

MERSENNE = (1 << 61) - 1
_U64 = np.uint64
_C1, _C2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_GOLD = _U64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, vectorised: (m,) uint64 -> (m,) uint64 well-mixed bits."""
    x = x.astype(_U64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> _U64(30)
        x *= _C1
        x ^= x >> _U64(27)
        x *= _C2
        x ^= x >> _U64(31)
    return x


def normalize_texts(texts: pa.Array, normalize: bool = True, collapse_whitespace: bool = True) -> pa.Array:
    """Normalise a string array like datatrove's ``simplify_text`` (vectorised in Arrow/RE2).

    Lowercase; strip combining diacritics (NFD then drop ``\\p{Mn}``); every number
    (``\\d+(\\.\\d+)?``) becomes ``0``; punctuation, symbols and ``_`` become spaces; whitespace
    runs collapse to one space; trimmed. Nulls become "".

    Args:
        texts: (n,) Arrow string array.
        normalize: when False only nulls are replaced (tokens are then whitespace-split as is).
        collapse_whitespace: fold whitespace runs to one space (default True). Word shingling
            skips it (whitespace splitting ignores runs anyway) because it is the slowest regex.

    Returns:
        (n,) Arrow string array.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not pa.types.is_string(texts.type):
        texts = texts.cast(pa.string())  # one shard: int32 offsets suffice; the kernels below want them
    if texts.null_count:
        texts = pc.coalesce(texts, pa.scalar("", texts.type))  # (pc.fill_null imports pandas: 1 s)
    if not normalize:
        return texts
    nonascii = pc.invert(pc.string_is_ascii(texts))
    n_uni = pc.sum(nonascii).as_py() or 0
    if n_uni == 0:
        return _normalize_ascii(texts, collapse_whitespace)
    # Unicode-class regexes are ~4x slower in RE2: run them on the non-ASCII rows only.
    uni = pc.utf8_normalize(pc.utf8_lower(texts.filter(nonascii)), form="NFD")
    uni = pc.replace_substring_regex(uni, r"\p{Mn}+", "")
    uni = pc.replace_substring_regex(uni, r"\d+(\.\d+)?", "0")
    uni = pc.replace_substring_regex(uni, r"[\p{P}\p{S}\p{Z}_]+", " ")
    if collapse_whitespace:
        uni = pc.replace_substring_regex(uni, r"\s+", " ")
    uni = pc.utf8_trim_whitespace(uni)
    if n_uni == len(texts):
        return uni
    asc = _normalize_ascii(texts.filter(pc.invert(nonascii)), collapse_whitespace)
    out = pc.replace_with_mask(texts, pc.invert(nonascii), asc)
    return pc.replace_with_mask(out, nonascii, uni)


# Byte map for ASCII rows: A-Z -> a-z, a-z/0-9/whitespace kept, every other byte -> space.
_ASCII_LUT = np.array([c + 32 if 65 <= c <= 90 else c if (97 <= c <= 122 or 48 <= c <= 57 or c in b" \t\n\r\x0b\x0c")
                       else 32 for c in range(256)], dtype=np.uint8)


def _normalize_ascii(t: pa.Array, collapse_whitespace: bool) -> pa.Array:
    # ASCII twin of the Unicode path: every ASCII non-alphanumeric, non-space is P or S, so after
    # the number regex one table lookup per byte does lowercase + punctuation in a single pass.
    t = pc.replace_substring_regex(t, r"\d+(\.\d+)?", "0")
    if isinstance(t, pa.ChunkedArray):
        t = t.combine_chunks()
    if t.null_count == 0:  # normalize_texts already turned nulls into ""
        offs = np.frombuffer(t.buffers()[1], dtype=np.int32)[t.offset:t.offset + len(t) + 1]
        data = np.frombuffer(t.buffers()[2], dtype=np.uint8)[offs[0]:offs[-1]]
        t = pa.StringArray.from_buffers(len(t), pa.py_buffer((offs - offs[0]).astype(np.int32)),
                                        pa.py_buffer(_ASCII_LUT[data]), None, 0, 0)
    else:
        t = pc.replace_substring_regex(pc.ascii_lower(t), r"[^a-z0-9\s]+", " ")
    if collapse_whitespace:
        t = pc.replace_substring_regex(t, r"\s+", " ")
    return pc.ascii_trim_whitespace(t) if collapse_whitespace else t


def _hash_strings(values: list[str]) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(v.encode("utf-8")) for v in values), dtype=_U64, count=len(values))


def word_token_hashes(norm: pa.Array, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace tokens of normalised texts as 64-bit xxh3 hashes.

    Args:
        norm: (n,) normalised Arrow string array.
        normalized: True when ``norm`` came from :func:`normalize_texts` with normalize=True
            (then only ASCII whitespace separates tokens and the faster splitter is used).

    Returns:
        (hashes, offsets): (m,) uint64 token hashes of all texts in order, and (n+1,) int64
        offsets; text i owns hashes[offsets[i]:offsets[i+1]].
    """
    # Unicode spaces (\p{Z}) became " " in normalisation, so ASCII splitting is enough there.
    lists = pc.ascii_split_whitespace(norm) if normalized else pc.utf8_split_whitespace(norm)
    tokens = lists.flatten()
    # Arrow yields "" tokens for empty strings and leading/trailing blanks; str.split() does not.
    nonempty = pc.greater(pc.binary_length(tokens), 0)
    parent = pc.list_parent_indices(lists).to_numpy()
    keep = nonempty.to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(norm) + 1, np.int64)
    np.cumsum(np.bincount(parent[keep], minlength=len(norm)), out=offsets[1:])
    if not keep.all():
        tokens = tokens.filter(nonempty)
    if len(tokens) == 0:
        return np.zeros(0, _U64), offsets
    # Hash each distinct token once (Arrow's C++ hash table finds them), not each occurrence.
    enc = pc.dictionary_encode(tokens).combine_chunks() if isinstance(tokens, pa.ChunkedArray) \
        else pc.dictionary_encode(tokens)
    vocab_hash = _hash_strings(enc.dictionary.to_pylist())
    return vocab_hash[enc.indices.to_numpy()], offsets


def char_token_hashes(norm: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Unicode code points of normalised texts (mixed to 64 bits), for character shingles.

    Returns:
        (hashes, offsets) as in :func:`word_token_hashes`, one "token" per character.
    """
    strs = norm.to_pylist()
    lens = np.fromiter((len(s) for s in strs), dtype=np.int64, count=len(strs))
    offsets = np.zeros(len(strs) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    cps = np.frombuffer("".join(strs).encode("utf-32-le"), dtype=np.uint32)
    return mix64(cps.astype(_U64) + _GOLD), offsets


def ngram_hashes(tok: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash every contiguous n-gram of tokens (order-sensitive), per text.

    A text with 0 < len < n tokens gets ONE shingle made of all its tokens (text-dedup's rule;
    datatrove would give it no signature). A text with no tokens gets no shingle.

    Args:
        tok: (m,) uint64 token hashes.
        offsets: (n_texts+1,) int64 offsets into ``tok``.
        n: shingle length in tokens (>= 1).

    Returns:
        (shingles, sh_offsets): (k,) uint64 shingle hashes and (n_texts+1,) int64 offsets.
    """
    lens = np.diff(offsets)
    counts = np.where(lens >= n, lens - n + 1, (lens > 0).astype(np.int64))
    sh_off = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(counts, out=sh_off[1:])
    total = int(sh_off[-1])
    if total == 0:
        return np.zeros(0, _U64), sh_off
    doc = np.repeat(np.arange(len(lens)), counts)
    pos = offsets[:-1][doc] + (np.arange(total) - sh_off[:-1][doc])
    m = len(tok)
    # Combine n consecutive tokens at EVERY flat position using shifted views (no gathers), then
    # pick the shingle starts; texts shorter than n are recomputed below without crossing
    # into the next text.
    pad = np.concatenate([tok, np.zeros(n - 1, _U64)])
    acc = pad[:m].copy()
    with np.errstate(over="ignore"):
        for j in range(1, n):
            acc *= _GOLD
            acc ^= pad[j:m + j]
            acc ^= acc >> _U64(29)
        h = acc[pos]
        short_docs = np.flatnonzero((lens > 0) & (lens < n))
        if len(short_docs):
            first, last = offsets[short_docs], offsets[short_docs + 1] - 1
            hs = tok[first].copy()
            for j in range(1, n):
                # A short text repeats its last token to length n, then gets a flag (below).
                hs *= _GOLD
                hs ^= tok[np.minimum(first + j, last)]
                hs ^= hs >> _U64(29)
            h[sh_off[short_docs]] = hs
        h = mix64(h)
        if len(short_docs):
            h[sh_off[short_docs]] ^= _C2
    return h, sh_off


def shingle_hashes(texts: pa.Array, *, ngram: int = 5, shingle: str = "word",
                   normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> flat 64-bit shingle hashes and per-text offsets.

    Args:
        texts: (n,) Arrow string array (nulls count as empty).
        ngram: shingle length, in words (``shingle="word"``) or characters (``"char"``). Default 5.
        shingle: ``"word"`` or ``"char"``.
        normalize: apply :func:`normalize_texts` first (default True).

    Returns:
        ((k,) uint64 shingle hashes, (n+1,) int64 offsets).
    """
    norm = normalize_texts(texts, normalize, collapse_whitespace=shingle != "word")
    tok, off = word_token_hashes(norm, normalize) if shingle == "word" else char_token_hashes(norm)
    return ngram_hashes(tok, off, ngram)


@functools.lru_cache(maxsize=8)
def _perm_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, MERSENNE, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, MERSENNE, size=num_perm, dtype=np.uint64)
    return a, b


def _numpy_signatures(sh: np.ndarray, off: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    # Reference implementation of METHODS 7a: min_s ((a*H(s) + b) mod (2^61-1)) & (2^32-1),
    # with H(s) the low 32 bits of the shingle hash (as datasketch/text-dedup). a*H wraps mod
    # 2^64 before the reduction exactly as datasketch's uint64 code does.
    a, b = _perm_params(num_perm, seed)
    n = len(off) - 1
    out = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    h = (sh & _U64(0xFFFFFFFF))
    M = _U64(MERSENNE)
    nonempty = np.flatnonzero(np.diff(off) > 0)
    step = max(1, 2_000_000 // max(num_perm, 1))  # bound the (shingles, P) temporary to ~16 MB
    for lo in range(0, len(nonempty), 64):
        docs = nonempty[lo:lo + 64]
        s0, s1 = int(off[docs[0]]), int(off[docs[-1] + 1])
        for c0 in range(s0, s1, step):
            c1 = min(s1, c0 + step)
            with np.errstate(over="ignore"):
                x = h[c0:c1, None] * a[None, :] + b[None, :]
            x = (x & M) + (x >> _U64(61))
            x[x >= M] -= M
            x = (x & _U64(0xFFFFFFFF)).astype(np.uint32)
            # Rows of docs inside [c0, c1): reduceat over their starts clipped to the chunk.
            sel = docs[(off[docs + 1] > c0) & (off[docs] < c1)]
            bounds = np.maximum(off[sel], c0) - c0
            part = np.minimum.reduceat(x, bounds, axis=0)
            out[sel] = np.minimum(out[sel], part)
    return out


def minhash_signatures(sh: np.ndarray, off: np.ndarray, *, num_perm: int = 128, seed: int = 42,
                       backend: str = "rensa") -> np.ndarray:
    """MinHash signatures of shingle sets.

    Args:
        sh: (k,) uint64 shingle hashes (from :func:`shingle_hashes`).
        off: (n+1,) int64 offsets; text i's shingles are sh[off[i]:off[i+1]].
        num_perm: number of hash permutations P (default 128).
        seed: seeds the permutations (default 42).
        backend: ``"rensa"`` (R-MinHash in Rust, rensa >= 0.5: seeded permutations of 64-bit
            hashes, 32-bit slots; about 100x the numpy path) or ``"numpy"`` (the textbook
            ``(a*h+b) mod (2^61-1)`` family of METHODS 7a; reference, slow).

    Returns:
        (n, P) uint32. Rows of texts without shingles are all 0xFFFFFFFF (numpy) or rensa's
        empty value; callers must mask them out (see ``has_shingles``).
    """
    n = len(off) - 1
    if backend == "numpy":
        return _numpy_signatures(sh, off, num_perm, seed)
    if backend != "rensa":
        raise ValueError(f"backend must be 'rensa' or 'numpy', got {backend!r}")
    import rensa

    if n == 0:
        return np.zeros((0, num_perm), np.uint32)
    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(sh, dtype=_U64), np.ascontiguousarray(off, dtype=_U64), num_perm, seed)
    return np.array(m.to_rows(), dtype=np.uint32).reshape(n, num_perm)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Hash each band of r signature values to one 64-bit key.

    Args:
        sig: (n, P) uint32 signatures with P >= bands * rows.
        bands: b.
        rows: r.

    Returns:
        (n, b) uint64; two texts share band i iff (up to 2^-64 collisions) keys[:, i] match.
    """
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    out = np.empty((sig.shape[0], bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for i in range(bands):
            h = np.full(sig.shape[0], _U64(i) * _GOLD, dtype=_U64)
            for j in range(i * rows, (i + 1) * rows):
                h = mix64(h * _GOLD + sig[:, j].astype(_U64))
            out[:, i] = h
    return out


def candidate_probability(s, bands: int, rows: int):
    """P(candidate | Jaccard s) = 1 - (1 - s^r)^b (the S-curve); s scalar or array."""
    return 1.0 - (1.0 - np.asarray(s, dtype=np.float64) ** rows) ** bands


@functools.lru_cache(maxsize=64)
def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """Bands b and rows r minimising w_fp * FP + w_fn * FN over all b * r <= P (METHODS 7a).

    FP(b, r) = int_0^t 1 - (1 - s^r)^b ds and FN(b, r) = int_t^1 (1 - s^r)^b ds: the areas
    under / above the S-curve on the wrong side of the threshold (datasketch / text-dedup
    ``optimal_param``; the integrals here use composite Simpson on 2001 points, accurate to
    ~1e-12 for these smooth integrands, vectorised over b: ~30 ms for P = 256).

    Args:
        threshold: Jaccard threshold t in (0, 1).
        num_perm: P.
        false_positive_weight: w_fp (default 0.5).
        false_negative_weight: w_fn (default 0.5).

    Returns:
        (bands, rows).
    """
    def simpson_weights(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        x = np.linspace(lo, hi, 2001)
        w = np.ones_like(x)
        w[1:-1:2], w[2:-1:2] = 4, 2
        return x, w * (hi - lo) / (3 * (len(x) - 1))

    xs_fp, w_fp = simpson_weights(0.0, threshold)
    xs_fn, w_fn = simpson_weights(threshold, 1.0)
    best, best_err = (1, 1), np.inf
    for r in range(1, num_perm + 1):  # vectorised over b for each r: ~30 ms for P = 256
        bs = np.arange(1, num_perm // r + 1, dtype=np.float64)[:, None]
        fp = ((1 - (1 - xs_fp ** r) ** bs) * w_fp).sum(axis=1)
        fn = (((1 - xs_fn ** r) ** bs) * w_fn).sum(axis=1)
        err = false_positive_weight * fp + false_negative_weight * fn
        # scan in (b, r) order as the reference loop does, so ties resolve the same way
        for k in range(len(err)):
            b = k + 1
            cand = (err[k], b, r)
            if cand[0] < best_err - 1e-15 or (abs(cand[0] - best_err) <= 1e-15 and (b, r) < best):
                best, best_err = (b, r), float(cand[0])
    return best


def text_band_keys(texts: pa.Array, *, num_perm: int, bands: int, rows: int, ngram: int = 5,
                   shingle: str = "word", normalize: bool = True, seed: int = 42,
                   backend: str = "rensa") -> tuple[np.ndarray, np.ndarray]:
    """Texts -> band keys in one call (one shard's work; the full signatures are not kept).

    Args:
        texts: (n,) Arrow string array.
        num_perm, bands, rows, ngram, shingle, normalize, seed, backend: see ``minhash_dedup``.

    Returns:
        (keys, valid): (n, bands) uint64 band keys and (n,) bool, False for texts with no token
        (empty after normalisation), which get no signature and are never candidates.
    """
    sh, off = shingle_hashes(texts, ngram=ngram, shingle=shingle, normalize=normalize)
    valid = np.diff(off) > 0
    n = len(off) - 1
    keys = np.empty((n, bands), dtype=_U64)
    # Signatures leave rensa as Python lists: convert 4096 rows at a time to bound that memory.
    for lo in range(0, n, 4096):
        hi = min(n, lo + 4096)
        sub_off = off[lo:hi + 1] - off[lo]
        sig = minhash_signatures(sh[off[lo]:off[hi]], sub_off, num_perm=num_perm, seed=seed, backend=backend)
        keys[lo:hi] = band_keys(sig, bands, rows)
    return keys, valid
