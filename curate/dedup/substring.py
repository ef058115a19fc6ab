"""``substring_dedup``: cut repeated spans of >= 50 tokens out of documents (Lee et al. 2022).

Method: ExactSubstr of "Deduplicating Training Data Makes Language Models Better" (Lee et al.,
ACL 2022, arXiv 2107.06499, §4.1): all documents are concatenated, a suffix array finds every
span of at least ``min_length`` units that occurs more than once, and the repeated spans are cut
out of the text. Kernels: :mod:`curate.dedup.suffix_array`; units: :mod:`curate.dedup.substring_units`.

Which copies are cut (``keep``):

* ``"first"`` (default, the paper): "that substring is removed from one of them": the copy
  earliest in input order stays, every later copy is cut. A phrase repeated back to back inside
  one document (a run of period P and length >= min_length + P) keeps its first period only.
* ``"none"``: the released code (google-research/deduplicate-text-datasets ``self-similar`` +
  ``collect``) cuts every copy, the first included (its README: "Initially the sequence
  `a b c d` is repeated twice. So we remove them both").

Units (``unit``): ``"token"`` (default) follows the paper, whose threshold is 50 BPE tokens,
with the proxy LM's tokenizer (the tokens the model will be trained on); it also needs fewer
bytes per character of text in the suffix array (16 bytes per token of ~4.3 characters against
12.5 per byte). ``"byte"`` needs no tokenizer, is several times faster (no tokenisation) and cuts
exactly at character boundaries; its default threshold is 50 tokens scaled by 4.26 UTF-8 bytes
per SmolLM2 token (measured on the English Wikipedia paragraphs of Dolly): 213 bytes.

After the cut, a document left empty (or whitespace only) is dropped as ``substring_emptied``,
one left with fewer than ``min_words`` words (curate.core.text_units) as ``substring_too_short``
(datatrove's ESRangeRemover drops below 50 words; it also drops untouched short documents, this
stage only judges documents it cut). The new texts go to ``Selection.rewrite[text_column]``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import ID
from curate.core.stage import EXECUTION_PARAMS, Selection, Selector, StageContext
from curate.core.text_units import count_units
from curate.dedup.substring_units import (
    byte_cuts_to_chars,
    cut_text,
    token_cuts_to_chars,
    token_sequence,
    utf8_sequence,
)
from curate.dedup.suffix_array import find_repeated_spans, max_pass_units

log = logging.getLogger(__name__)

DEFAULT_MIN_TOKENS = 50  # the paper's k
BYTES_PER_TOKEN = 4.26  # UTF-8 bytes per SmolLM2 token on Dolly's Wikipedia paragraphs (5.28 MB, 1.24M tokens)


@register
class SubstringDedup(Selector):
    """Cut every repeated span of >= ``min_length`` units (all copies after the first by default).

    Args:
        unit: ``"token"`` (default; ids of ``tokenizer``) or ``"byte"`` (UTF-8 bytes).
        tokenizer: fast tokenizer for ``unit="token"``: alias, HF id, folder or GGUF path as in
            :func:`curate.models.tokenizers.load_tokenizer` (default ``SmolLM2-135M-Instruct``).
        min_length: shortest span that is cut, in units; None (default) means 50 tokens, or
            213 bytes (50 x 4.26) with ``unit="byte"``.
        keep: ``"first"`` (default, the paper: the earliest copy stays) or ``"none"`` (the
            released code: every copy is cut).
        min_words: a document that lost text and has fewer words left is dropped as
            ``substring_too_short`` (default 50, datatrove's ``min_doc_words``; 0 keeps any
            non-empty rest).
        memory_gb: bound in GiB on one suffix-array pass (sequence + SA + LCP; the input table
            and the unit sequence of the whole corpus, 1 byte per byte or 2 per token, are
            outside it). A corpus over the bound is cut into shards (default 8.0).
        cross_shard: with several shards, pass over every pair of shards so that spans
            repeated across shards are cut too (default True: the result equals the one-pass
            result; costs S(S-1)/2 passes). False passes over each shard alone and MISSES
            spans whose copies are all in different shards.
        text_column: column to deduplicate and rewrite (default ``"text"``).
        batch_size: texts per tokenizer call (default 1024; execution only).

    Extras in the Selection: ``substr_chars_removed`` (int64 characters cut from the row) and
    ``substr_spans_removed`` (int64 disjoint cut intervals). ``rewrite`` holds the new texts.
    """

    name = "substring_dedup"
    version = "1"
    execution_params = EXECUTION_PARAMS
    reasons = {
        "substring_emptied": "nothing but whitespace left after cutting repeated spans",
        "substring_too_short": "fewer than min_words words left after cutting repeated spans",
    }

    def __init__(self, *, unit: str = "token", tokenizer: str = "SmolLM2-135M-Instruct", min_length: int | None = None,
                 keep: str = "first", min_words: int = 50, memory_gb: float = 8.0, cross_shard: bool = True,
                 text_column: str = "text", batch_size: int = 1024):
        def isint(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if unit not in ("token", "byte"):
            raise ValueError(f"unit must be 'token' or 'byte', got {unit!r}")
        if not isinstance(tokenizer, str) or not tokenizer:
            raise ValueError(f"tokenizer must be a non-empty string, got {tokenizer!r}")
        if min_length is not None and not (isint(min_length) and min_length >= 1):
            raise ValueError(f"min_length must be None or a positive int, got {min_length!r}")
        if keep not in ("first", "none"):
            raise ValueError(f"keep must be 'first' or 'none', got {keep!r}")
        if not (isint(min_words) and min_words >= 0):
            raise ValueError(f"min_words must be an int >= 0, got {min_words!r}")
        if isinstance(memory_gb, bool) or not isinstance(memory_gb, (int, float)) or not memory_gb > 0:
            raise ValueError(f"memory_gb must be a number > 0, got {memory_gb!r}")
        if not isinstance(cross_shard, bool):
            raise ValueError(f"cross_shard must be true or false, got {cross_shard!r}")
        if not isinstance(text_column, str) or not text_column:
            raise ValueError(f"text_column must be a column name, got {text_column!r}")
        if not (isint(batch_size) and batch_size >= 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.unit = unit
        self.tokenizer = tokenizer
        self.min_length = min_length
        self.keep = keep
        self.min_words = min_words
        self.memory_gb = memory_gb
        self.cross_shard = cross_shard
        self.text_column = text_column
        self.batch_size = batch_size

    def required_columns(self) -> list[str]:
        return [self.text_column, ID]

    def cache_params(self) -> dict:
        """Parameters that change the result: ``memory_gb`` only matters without ``cross_shard``,
        and ``tokenizer`` only with ``unit="token"``."""
        p = super().cache_params()
        if self.cross_shard:
            p.pop("memory_gb")
        if self.unit == "byte":
            p.pop("tokenizer")
        return p

    def length_units(self) -> int:
        """The threshold k in units (``min_length`` or its default for the unit)."""
        if self.min_length is not None:
            return int(self.min_length)
        return DEFAULT_MIN_TOKENS if self.unit == "token" else round(DEFAULT_MIN_TOKENS * BYTES_PER_TOKEN)

    def _backend(self):
        from curate.models.tokenizers import load_tokenizer

        tok = load_tokenizer(self.tokenizer)
        if not getattr(tok, "is_fast", False):
            raise ValueError(f"tokenizer={self.tokenizer!r} is not a fast tokenizer (character offsets are needed)")
        return tok.backend_tokenizer

    def find_cuts(self, texts: pa.Array | pa.ChunkedArray) -> SubstringCuts:
        """Find the repeated spans and cut them (no keep/drop decision).

        Args:
            texts: (D,) Arrow string array (nulls count as "").

        Returns:
            :class:`SubstringCuts` for the D texts.
        """
        py = [t if t is not None else "" for t in texts.to_pylist()]
        k = self.length_units()
        t0 = time.perf_counter()
        if self.unit == "byte":
            seq, starts = utf8_sequence(texts)
            backend = None
        else:
            backend = self._backend()
            seq, starts = token_sequence(py, backend, batch_size=int(self.batch_size))
        t1 = time.perf_counter()
        stats: dict = {"n_units": len(seq), "k": k}
        lo, hi = find_repeated_spans(seq, starts, k, keep=self.keep,
                                     max_units=max_pass_units(self.memory_gb, seq.itemsize),
                                     cross_shard=self.cross_shard, stats=stats)
        del seq
        t2 = time.perf_counter()
        cuts = cut_documents(py, starts, lo, hi, backend=backend, batch_size=int(self.batch_size))
        stats.update(encode_s=t1 - t0, suffix_s=t2 - t1, cut_s=time.perf_counter() - t2)
        cuts.stats = stats
        return cuts

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        if self.text_column not in table.column_names:
            raise ValueError(f"text_column={self.text_column!r} not in table; have {table.column_names}")
        col = table.column(self.text_column)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            raise ValueError(f"text_column={self.text_column!r} has type {col.type}, expected strings")
        cuts = self.find_cuts(col)
        n = len(cuts.texts)
        cut = np.flatnonzero(cuts.spans > 0)
        emptied = np.zeros(n, dtype=bool)
        short = np.zeros(n, dtype=bool)
        if len(cut):
            rest = cuts.texts[cut].tolist()
            emptied[cut] = [not r.strip() for r in rest]
            if self.min_words:
                words = count_units(pa.array(rest, pa.large_string()))
                short[cut] = (words < self.min_words) & ~emptied[cut]
        reason = np.full(n, None, dtype=object)
        reason[emptied] = "substring_emptied"
        reason[short] = "substring_too_short"
        st = cuts.stats
        log.info("substring_dedup: %d units in %d pass(es) over %d shard(s), k=%d %ss; cut %d spans (%d chars) "
                 "from %d of %d docs; dropped %d emptied, %d too short; encode %.1fs, suffix arrays %.1fs, cut %.1fs",
                 st["n_units"], st["n_passes"], st["n_shards"], st["k"], self.unit, int(cuts.spans.sum()),
                 int(cuts.chars.sum()), len(cut), n, int(emptied.sum()), int(short.sum()), st["encode_s"],
                 st["suffix_s"], st["cut_s"])
        sel = Selection(keep=~(emptied | short), reason=reason,
                        extras={"substr_chars_removed": cuts.chars, "substr_spans_removed": cuts.spans})
        sel.rewrite = {self.text_column: cuts.texts}  # engine contract: new values, one per input row
        return sel


@dataclass
class SubstringCuts:
    """What :meth:`SubstringDedup.find_cuts` cut.

    Attributes:
        texts: (D,) object array of the new texts (uncut ones unchanged).
        chars: (D,) int64 characters cut per text.
        spans: (D,) int64 disjoint cut intervals per text.
        row: (r,) int64 text of each cut interval; ``char_lo``/``char_hi``: (r,) int64 the
            interval [lo, hi) in characters of the ORIGINAL text.
        stats: ``n_units``, ``k``, ``n_shards``, ``n_passes`` and seconds per phase.
    """

    texts: np.ndarray
    chars: np.ndarray
    spans: np.ndarray
    row: np.ndarray
    char_lo: np.ndarray
    char_hi: np.ndarray
    stats: dict = field(default_factory=dict)


def cut_documents(texts: list[str], starts: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, backend=None,
                  batch_size: int = 1024) -> SubstringCuts:
    """Cut global unit intervals out of the documents they fall in.

    Args:
        texts: (D,) documents.
        starts: (D,) int64 start of each document in the unit sequence.
        lo, hi: (r,) int64 sorted disjoint global unit intervals, each inside one document.
        backend: the ``tokenizers.Tokenizer`` the units came from, or None for UTF-8 bytes. Cut
            documents are tokenized again for their character offsets (cheaper in memory than
            keeping 8 bytes of offsets for every token of the corpus).
        batch_size: texts per tokenizer call.

    Returns:
        :class:`SubstringCuts` (``stats`` empty).
    """
    d = len(texts)
    new_texts = np.empty(d, dtype=object)
    new_texts[:] = texts
    chars = np.zeros(d, np.int64)
    spans = np.zeros(d, np.int64)
    rows, clos, chis = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    if len(lo):
        doc = np.searchsorted(starts, lo, side="right") - 1
        lo_l, hi_l = lo - starts[doc], hi - starts[doc]
        brk = np.flatnonzero(np.diff(doc)) + 1
        groups = np.split(np.arange(len(doc)), brk)
        docs = doc[np.r_[0, brk]]
        offsets = {}
        if backend is not None:
            for a in range(0, len(docs), batch_size):
                part = docs[a:a + batch_size]
                enc = backend.encode_batch([texts[i] for i in part], add_special_tokens=False)
                for i, e in zip(part.tolist(), enc):
                    offsets[i] = np.asarray(e.offsets, dtype=np.int64).reshape(-1, 2)
        for i, g in zip(docs.tolist(), groups):
            if backend is None:
                clo, chi = byte_cuts_to_chars(texts[i], lo_l[g], hi_l[g])
            else:
                clo, chi = token_cuts_to_chars(offsets.pop(i), lo_l[g], hi_l[g])
            if len(clo):
                new_texts[i] = cut_text(texts[i], clo, chi)
                chars[i] = int((chi - clo).sum())
                spans[i] = len(clo)
                rows.append(np.full(len(clo), i, np.int64))
                clos.append(clo)
                chis.append(chi)
    return SubstringCuts(new_texts, chars, spans, np.concatenate(rows), np.concatenate(clos), np.concatenate(chis))
