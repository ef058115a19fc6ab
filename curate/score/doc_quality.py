"""Document quality classifier in the DCLM / FineWeb-Edu pattern: ``doc_quality`` = P(good).

DCLM (Li et al. 2024, arXiv 2406.11794) filters web text with a fastText classifier (unigrams +
bigrams) trained on reference-quality text as positives (OpenHermes-2.5 + ELI5) against random
web pages (RefinedWeb) as negatives, and keeps the pages with the highest P(hq) (about the top
10%: P(hq) >= 0.018112). FineWeb-Edu has an LLM label pages and a small model learn the labels.
Both ship a small model that scores the whole pool cheaply.

curate's shipped model (``curate/assets/doc_quality_fasttext.ftz``, data card
``curate/assets/doc_quality_fasttext.md``) is the same kind of model: fastText supervised,
word bigrams, trained offline and deterministically (one thread, fixed seed, shuffled with a
seeded RNG) on the texts and labels named in its card, then product-quantised by fastText
(``quantize``: the 50,000 largest-norm embedding rows kept, 2 dims a byte) into a ~1 MB
``.ftz``. ``benchmarks/doc_quality.py`` rebuilds it and measures ROC AUC on DCLM's human quality
labels against simple baselines (``benchmarks/results/doc_quality.md``): 0.789 on the 281
held-out agreement pages, below plain length (0.857), above the instruction-data scorer (0.629).

Texts are normalised before fastText sees them (:func:`normalize`): lower-cased, split into
word and punctuation tokens, joined by single spaces (fastText reads one line per document).

Keep DCLM's top 10% with ``top_k: {score: doc_quality, budget: ...}`` or
``score_filter: {column: doc_quality, min: ...}``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)

GOOD, BAD = "__label__hq", "__label__cc"  # DCLM's label names (high quality / CommonCrawl)
MODEL_FORMAT = "curate.doc_quality/1"
_TOKEN = re.compile(r"\w+|[^\w\s]")
# DCLM-like fastText settings; small buckets and dim keep the shipped file small
DEFAULT_FASTTEXT = {"wordNgrams": 2, "dim": 16, "epoch": 5, "lr": 0.1, "bucket": 200_000, "minCount": 1,
                    "loss": "softmax"}
QUANTIZE_CUTOFF = 50_000


def default_model_path() -> Path:
    """The classifier shipped in curate/assets/ (its card: doc_quality_fasttext.md)."""
    return Path(__file__).resolve().parent.parent / "assets" / "doc_quality_fasttext.ftz"


def meta_path(model_path: str | Path) -> Path:
    """The JSON written next to a model (training facts, probe predictions)."""
    return Path(model_path).with_suffix(".json")


def normalize(text: str) -> str:
    """One fastText line: lower-cased word and punctuation tokens joined by single spaces."""
    return " ".join(_TOKEN.findall((text or "").lower()))


def _fasttext():
    try:
        import fasttext
    except ImportError as e:  # optional dependency of this stage only
        raise ImportError("doc_quality needs fastText: pip install fasttext-wheel==0.9.2") from e
    return fasttext


class DocQualityModel:
    """A loaded fastText doc-quality classifier.

    Args:
        path: the ``.ftz`` / ``.bin`` model file (default None = the shipped one).
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_model_path()
        if not self.path.is_file():
            raise FileNotFoundError(f"doc_quality model file not found: {self.path}")
        self.model = _fasttext().load_model(str(self.path))
        labels = set(self.model.get_labels())
        if labels != {GOOD, BAD}:
            raise ValueError(f"{self.path}: labels {sorted(labels)}, expected {GOOD!r} and {BAD!r}")

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) float64 P(good) of each text (P(bad) = 1 - P(good); empty text gets fastText's prior).

        Uses fastText's top-1 prediction and its complement: with two labels and a softmax the
        two probabilities sum to 1 (its ``k=-1`` list path returns wrong arrays under numpy 2).
        The float32 output saturates: P(bad) within ~1e-7 of 1 gives P(good) = 0.
        """
        if len(texts) == 0:
            return np.zeros(0)
        labels, probs = self.model.predict([normalize(t) for t in texts], k=1)
        # fastText reports exp(log(p + 1e-5)) for the top label: take the 1e-5 off again
        p = np.array([float(q[0]) for q in probs], dtype=np.float64) - 1e-5
        good = np.array([lab[0] == GOOD for lab in labels])
        return np.clip(np.where(good, p, 1.0 - p), 0.0, 1.0)


def load_model(path: str | Path) -> DocQualityModel:
    """:class:`DocQualityModel` of ``path``, cached per process by the file's content: the stage's
    shards share one load, and a file replaced in place (even with the same size and mtime) is
    read again."""
    from curate.models.loading import weights_fingerprint

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"doc_quality model file not found: {p}")
    return _cached_model(str(p.resolve()), weights_fingerprint(p))


@lru_cache(maxsize=4)
def _cached_model(path: str, content: str) -> DocQualityModel:
    return DocQualityModel(path)


def train_doc_quality(texts: Sequence[str], labels: Sequence[int], out: str | Path, *, seed: int = 0,
                      fasttext_params: dict | None = None, quantize: int | None = QUANTIZE_CUTOFF,
                      info: dict | None = None, probe_texts: Sequence[str] | None = None) -> DocQualityModel:
    """Train a fastText good-vs-bad classifier and save it (``out``) with a JSON card next to it.

    Deterministic: the lines are shuffled with ``random.Random(seed)`` and fastText trains with
    one thread and ``seed``, so the same inputs give the same model file (quantisation too is
    deterministic: fastText seeds its product-quantiser's k-means itself).

    Args:
        texts: n training documents.
        labels: n labels, 1 = good (positive), 0 = bad.
        out: output path (``.ftz`` when quantised, else ``.bin``); ``<out>.json`` gets the
            training facts.
        seed: shuffling and fastText seed (default 0).
        fasttext_params: overrides of :data:`DEFAULT_FASTTEXT` (wordNgrams, dim, epoch, lr,
            bucket, minCount, loss).
        quantize: keep this many embedding rows (largest norms) and product-quantise them, 2
            dimensions a byte, without retraining (default 50,000: a ~1 MB file; None = save
            the full float model, ~17 MB with the defaults).
        info: extra facts stored in the JSON (data sources, sizes).
        probe_texts: texts whose predictions are stored in the JSON, so a later load can check
            that it scores as the trained model did.

    Returns:
        The trained model, loaded back from ``out``.
    """
    texts, y = list(texts), np.asarray(labels)
    if len(texts) != len(y) or not len(texts):
        raise ValueError(f"texts ({len(texts)}) and labels ({len(y)}) must be non-empty and of equal length")
    if not set(np.unique(y)) <= {0, 1} or len(np.unique(y)) != 2:
        raise ValueError(f"labels must hold both 0 (bad) and 1 (good), got values {sorted(set(y.tolist()))}")
    params = {**DEFAULT_FASTTEXT, **(fasttext_params or {})}
    bad = set(params) - set(DEFAULT_FASTTEXT)
    if bad:
        raise ValueError(f"fasttext_params: unknown keys {sorted(bad)}; allowed {sorted(DEFAULT_FASTTEXT)}")
    lines = [f"{GOOD if v else BAD} {normalize(t)}" for t, v in zip(texts, y)]
    random.Random(seed).shuffle(lines)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".txt", prefix="doc_quality_train_")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        ft = _fasttext().train_supervised(tmp, thread=1, seed=seed, verbose=0, **params)
    finally:
        os.unlink(tmp)
    if quantize is not None:
        ft.quantize(cutoff=int(quantize), retrain=False, qnorm=False, dsub=2, thread=1, verbose=0)
    ft.save_model(str(out))
    model = DocQualityModel(out)
    meta = {"format": MODEL_FORMAT, "fasttext": params, "seed": seed, "quantize_cutoff": quantize, "normalize": "lower-case \\w+|[^\\w\\s] tokens",
            "n": len(texts), "n_good": int(y.sum()), "n_bad": int(len(y) - y.sum()), "info": dict(info or {})}
    if probe_texts is not None:
        meta["probe"] = {"texts": list(probe_texts), "p_good": model.predict_proba(list(probe_texts)).tolist()}
    meta_path(out).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    log.info("saved doc_quality model (%d good, %d bad) to %s", meta["n_good"], meta["n_bad"], out)
    return model


def train_doc_quality_file(labels: str | Path, out: str | Path, *, seed: int = 0, epoch: int | None = None,
                           probe: str | Path | None = None) -> DocQualityModel:
    """``curate train-doc-quality LABELS --out OUT``: train from a ``text, label`` JSONL/CSV file.

    Args:
        labels: label file with ``text`` and ``label`` (1 good / 0 bad) columns (the layouts of
            ``curate train-scorer``'s :func:`curate.score.train_scorer.read_labels`).
        out: output ``.ftz``; use it as ``doc_quality: {model_path: OUT}``.
        seed: shuffling and fastText seed (default 0).
        epoch: fastText epochs (default None = :data:`DEFAULT_FASTTEXT`'s).
        probe: optional JSONL of ``{"text": ...}`` rows whose predictions are stored with the model.
    """
    from curate.score.train_scorer import read_labels

    kind, f, y = read_labels(labels)
    if kind != "rows" or f.structured.any():
        raise ValueError(f"{labels}: doc_quality trains on `text, label` rows, got a {kind} / structured layout")
    probe_texts = None
    if probe is not None:
        with open(probe, encoding="utf-8") as fh:
            probe_texts = [json.loads(line)["text"] for line in fh if line.strip()]
    return train_doc_quality(f.text, y.astype(int), out, seed=seed, probe_texts=probe_texts,
                             fasttext_params=None if epoch is None else {"epoch": int(epoch)},
                             info={"labels": Path(labels).name})


@register
class DocQuality(Annotator):
    """P(good) of each document's ``text`` under a fastText quality classifier (module docstring).

    Column: ``doc_quality`` in [0, 1], higher is better. DCLM keeps about the top 10% of its pool
    (``top_k`` on ``doc_quality``, or ``score_filter`` with a ``min`` chosen on a sample).

    Args:
        model_path: a model written by :func:`train_doc_quality` (default None = the shipped
            classifier). Keyed by the file's content hash, not its path.
    """

    name = "doc_quality"
    version = "1"
    row_local = True  # one row's probability depends on its own text only
    produces = ("doc_quality",)

    def __init__(self, *, model_path: str | None = None):
        if model_path is not None and (not isinstance(model_path, str) or not model_path):
            raise ValueError(f"model_path must be None or a path string, got {model_path!r}")
        self.model_path = model_path

    def required_columns(self) -> list[str]:
        return ["text"]

    def output_columns(self) -> list[str]:
        return ["doc_quality"]

    def cache_params(self) -> dict:
        """Parameters with the model file replaced by its content hash (a retrained file reruns)."""
        from curate.score.perplexity_bucket import file_content_hash

        path = Path(self.model_path) if self.model_path else default_model_path()
        params = {k: v for k, v in super().cache_params().items() if k != "model_path"}
        params["model"] = file_content_hash(path) if path.is_file() else None
        return params

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.score.rows import row_fields

        path = str(Path(self.model_path) if self.model_path else default_model_path())
        load_model(path)  # fail before any shard when the file is missing or not a classifier
        texts = row_fields(table).text

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            # loaded by path in the process that runs the shard: a fastText model does not pickle
            return {"p": load_model(path).predict_proba(texts[start:stop])}

        out = ctx.map_shards(len(table), fn, shard_size=65536, desc="doc_quality")
        return pa.table({"doc_quality": pa.array(out["p"], pa.float64())})
