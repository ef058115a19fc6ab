"""Exact duplicate removal on a normalised-text hash (as datatrove's ExactDedup / NeMo's ExactDuplicates).

Normalisation (``normalize=True``): Unicode NFKC, lowercase, whitespace runs collapsed to one
space, stripped. Two rows are duplicates when the 128-bit xxh3 hashes of their normalised
texts match. The first occurrence (input order) is kept; every later copy is dropped with
reason ``exact_duplicate`` and ``dup_of`` = the kept row's id.
"""
from __future__ import annotations

import re
import unicodedata

import numpy as np
import pyarrow as pa
import xxhash

from curate.core.registry import register
from curate.core.schema import ID
from curate.core.stage import Selection, Selector, StageContext

_WS = re.compile(r"\s+")


def normalize_for_exact(text: str) -> str:
    """NFKC, lowercase, collapse whitespace, strip: case/spacing variants hash alike."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_hashes(texts: list[str | None], normalize: bool = True) -> np.ndarray:
    """(n,) array of 128-bit digests as 16-byte ``bytes`` objects (None texts hash as "")."""
    out = np.empty(len(texts), dtype=object)
    for i, t in enumerate(texts):
        t = t or ""
        out[i] = xxhash.xxh3_128_digest((normalize_for_exact(t) if normalize else t).encode("utf-8"))
    return out


@register
class ExactDedup(Selector):
    """Drop rows whose (normalised) text exactly repeats an earlier row's.

    Args:
        column: text column to hash (default ``"text"``).
        normalize: fold case, Unicode form and whitespace before hashing (default True).
    """

    name = "exact_dedup"
    reasons = {"exact_duplicate": "same normalised text as an earlier row (dup_of names it)"}

    def __init__(self, *, column: str = "text", normalize: bool = True):
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        self.column = column
        self.normalize = normalize

    def required_columns(self) -> list[str]:
        return [self.column, ID]  # dup_of names the kept row by its id

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = table.column(self.column).to_pylist()
        ids = table.column(ID).to_pylist()
        hashes = text_hashes(texts, self.normalize)
        first_seen: dict[bytes, int] = {}
        keep = np.ones(len(texts), dtype=bool)
        dup_of = np.full(len(texts), None, dtype=object)
        for i, h in enumerate(hashes):
            j = first_seen.setdefault(h, i)
            if j != i:
                keep[i] = False
                dup_of[i] = ids[j]
        return Selection.keep_mask(keep, "exact_duplicate", dup_of=dup_of)
