"""A small learned quality scorer: standardised features -> linear log-odds.

CaR (Ge et al., EMNLP 2024, arXiv 2402.18191) fine-tunes a 550M XLM-R regressor on expert-
revised Alpaca responses (label 1) versus the originals (label 0). This is the cheap offline
counterpart: features curate already computes, and a logistic regression (0/1 labels), a ridge
regression (real-valued labels) or a Bradley-Terry logistic model on pair differences
((pos, neg) pairs), all giving a score s(x) = w . z(x) + b with z the standardised features.

Feature groups (``features``):
    ``embedding``  - all-MiniLM-L6-v2 embedding (L2-normalised) of the row's canonical ``text``
                     (``embedding_text="text"``, the default since issue 12: the very vector the
                     pool's ``embed`` stage stores, so the stage reuses that column instead of
                     embedding every row a second time), or of CaR's "Instruction: … Response: …"
                     string (``embedding_text="car"``, the layout of scorers fitted before).
                     ``embed_params`` (backend, precision, max_length) say which ``embed`` stage
                     settings produce it; they are saved with the model.
    ``heuristics`` - the ``h_*`` Gopher heuristics of the response, counts as log1p.
    ``lm``         - SmolLM2 IFD losses s(A|Q), s(A) and their ratio (alpaca template, 512 tokens).

A fitted model is one ``.npz`` file holding the arrays and a JSON spec (features, embedder,
proxy LM, training summary).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from curate.score.heuristics import HEURISTIC_COLUMNS, heuristics_matrix
from curate.score.rows import RowFields, car_string

log = logging.getLogger(__name__)

FEATURE_GROUPS = ("embedding", "heuristics", "lm")
_LOG_COLUMNS = {"h_chars", "h_words", "h_lines", "h_stop_words"}


def default_model_path() -> Path:
    """The scorer shipped in curate/assets/ (fitted on CaR's APE train split)."""
    return Path(__file__).resolve().parent.parent / "assets" / "quality_car_ape.npz"


EMBEDDING_TEXTS = ("text", "car")
LEGACY_EMBED_PARAMS = {"backend": "sentence_transformers", "precision": None, "max_length": None}


def default_embed_params() -> dict:
    """The ``embed`` stage's own defaults (backend, precision, max_length), resolved now."""
    from curate.embed.stage import Embed

    e = Embed()
    # onnx/static precision does not depend on the device: save it resolved, so a later change
    # of the default cannot silently change what a saved scorer expects
    precision = e.effective_precision() if e.backend in ("onnx", "static") else e.precision
    return {"backend": e.backend, "precision": precision, "max_length": e.max_length}


def _min_cosine(got: np.ndarray, ref: np.ndarray) -> float | str:
    """Smallest row cosine between (k, d) ``got`` and ``ref``, or why they cannot be compared."""
    if got.shape != ref.shape:
        return f"the column has {got.shape[1]}-d vectors, the scorer's embedder gives {ref.shape[1]}-d"
    cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return float(cos.min())


def _cpu_default_variant(embedder: str, params: dict) -> str | None:
    """The onnx variant ``precision=None`` runs on this CPU when it is not the scorer's fp32, else None."""
    if params.get("backend") != "onnx" or params.get("precision") not in (None, "float32"):
        return None
    from curate.embed.quantize import default_precision

    alt = default_precision(embedder)
    return None if alt == "float32" else alt


def embedding_strings(f: RowFields, embedding_text: str = "text") -> list[str]:
    """The strings the ``embedding`` group embeds: canonical ``text`` or CaR's layout.

    Structured rows without a ``text`` (label files) get :func:`curate.ingest.formats.render_text`,
    the same rendering ingest gives them.
    """
    from curate.ingest.formats import render_text

    if embedding_text == "car":
        return [car_string(a, x, o) if s else t
                for a, x, o, t, s in zip(f.instruction, f.input, f.output, f.text, f.structured)]
    if embedding_text != "text":
        raise ValueError(f"embedding_text must be one of {EMBEDDING_TEXTS}, got {embedding_text!r}")
    return [t if t else (render_text(a, x, o) if s else "")
            for a, x, o, t, s in zip(f.instruction, f.input, f.output, f.text, f.structured)]


def embed_stage(embedder: str, embed_params: dict, device: str | None = None, batch_size: int | None = None):
    """The ``embed`` stage that computes (and can verify) the scorer's embedding feature."""
    from curate.embed.stage import Embed

    return Embed(model=None if embedder == "all-MiniLM-L6-v2" else embedder, device=device,
                 batch_size=batch_size, show_progress=False, **embed_params)


def compute_features(f: RowFields, features: tuple[str, ...], *, embedder: str = "all-MiniLM-L6-v2",
                     proxy_lm: str = "SmolLM2-135M-Instruct", batch_size: int | None = None,
                     device: str | None = None, show_progress: bool = False, embedding_text: str = "car",
                     embed_params: dict | None = None, embeddings: np.ndarray | None = None) -> np.ndarray:
    """(n, d) float64 raw feature matrix for the requested groups, in FEATURE_GROUPS order.

    Args:
        f: the rows.
        features: groups to compute.
        embedder, proxy_lm: models of the ``embedding`` and ``lm`` groups.
        batch_size, device, show_progress: execution settings (batch_size None = the embed
            backend's own default: 1 for onnx, 64 for torch).
        embedding_text: ``"car"`` (default, the layout before issue 12) or ``"text"``.
        embed_params: ``embed`` stage settings for the embedding (default None = torch
            sentence-transformers, the layout before issue 12).
        embeddings: optional (n, d) precomputed embeddings of exactly these strings with these
            settings (the pool's ``embedding`` column); skips the encoder.
    """
    bad = [g for g in features if g not in FEATURE_GROUPS]
    if bad:
        raise ValueError(f"features must be a subset of {FEATURE_GROUPS}, got {list(features)!r}")
    blocks = []
    if "embedding" in features:
        if embeddings is None:
            enc = embed_stage(embedder, embed_params or LEGACY_EMBED_PARAMS, device, batch_size)
            embeddings = enc.encode(embedding_strings(f, embedding_text), show_progress=show_progress)
        if len(embeddings) != len(f):
            raise ValueError(f"embeddings has {len(embeddings)} rows for {len(f)} rows")
        blocks.append(np.asarray(embeddings, dtype=np.float64).reshape(len(f), -1))
    if "heuristics" in features:
        texts = [o if s else t for o, t, s in zip(f.output, f.text, f.structured)]
        h = heuristics_matrix(texts)
        for j, c in enumerate(HEURISTIC_COLUMNS):
            if c in _LOG_COLUMNS:
                h[:, j] = np.log1p(h[:, j])
        blocks.append(h)
    if "lm" in features:
        from curate.models.loading import load_causal_lm
        from curate.score import lm as lmlib
        from curate.score.lm import ifd_losses

        model, tok = load_causal_lm(proxy_lm, device, None)
        prompts = [lmlib.build_prompt(a, x, "alpaca") if s else "" for a, x, s in
                   zip(f.instruction, f.input, f.structured)]
        answers = [o if s else t for o, t, s in zip(f.output, f.text, f.structured)]
        r = ifd_losses(model, tok, prompts, answers, "### Response:", batch_size=8)
        blocks.append(lm_feature_block(r["loss_cond"], r["loss_uncond"]))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(f), 0))


def lm_feature_block(loss_cond: np.ndarray, loss_uncond: np.ndarray) -> np.ndarray:
    """(n, 3) [s(A|Q), s(A), IFD]; NaNs (plain rows) become 0 after standardisation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = loss_cond / loss_uncond
    return np.stack([loss_cond, loss_uncond, ifd], axis=1)


class QualityModel:
    """Linear scorer over standardised features.

    Args:
        features: feature groups, a subset of ("embedding", "heuristics", "lm").
        C: inverse L2 strength for the logistic models; ridge uses alpha = 1 / C (default 1.0).
        embedder: sentence-transformers model for ``embedding`` (default all-MiniLM-L6-v2).
        proxy_lm: causal LM for ``lm`` (default SmolLM2-135M-Instruct).
        embedding_text: what ``embedding`` embeds: ``"text"`` (default; the canonical text,
            reusable from the pool's ``embedding`` column) or ``"car"`` (CaR's string).
        embed_params: ``embed`` stage settings {backend, precision, max_length} (default None =
            the ``embed`` stage's defaults when the model is created; saved resolved).

    Attributes (after ``fit``):
        mean_, scale_: (d,) standardisation; coef_: (d,); intercept_: float; kind_: "logistic",
        "ridge" or "pairwise"; info_: dict of training facts saved with the model.
    """

    def __init__(self, *, features=("embedding", "heuristics"), C: float = 1.0,
                 embedder: str = "all-MiniLM-L6-v2", proxy_lm: str = "SmolLM2-135M-Instruct",
                 embedding_text: str = "text", embed_params: dict | None = None):
        features = tuple(features)
        if embedding_text not in EMBEDDING_TEXTS:
            raise ValueError(f"embedding_text must be one of {EMBEDDING_TEXTS}, got {embedding_text!r}")
        if embed_params is not None and (not isinstance(embed_params, dict)
                                         or set(embed_params) - set(LEGACY_EMBED_PARAMS)):
            raise ValueError(f"embed_params must be a dict with keys from {sorted(LEGACY_EMBED_PARAMS)}, "
                             f"got {embed_params!r}")
        if not features or any(g not in FEATURE_GROUPS for g in features):
            raise ValueError(f"features must be a non-empty subset of {FEATURE_GROUPS}, got {features!r}")
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C!r}")
        self.features = tuple(g for g in FEATURE_GROUPS if g in features)
        self.C, self.embedder, self.proxy_lm = float(C), embedder, proxy_lm
        self.embedding_text, self.embed_params = embedding_text, embed_params

    def resolved_embed_params(self) -> dict:
        """``embed_params`` with the ``embed`` stage's defaults filled in."""
        return {**default_embed_params(), **(self.embed_params or {})}

    def featurize(self, f: RowFields, **kw) -> np.ndarray:
        return compute_features(f, self.features, embedder=self.embedder, proxy_lm=self.proxy_lm,
                                embedding_text=self.embedding_text, embed_params=self.resolved_embed_params(), **kw)

    def embeddings_match(self, f: RowFields, embeddings: np.ndarray, n_check: int = 16,
                         min_cos: float = 0.999) -> tuple[bool, str]:
        """Whether ``embeddings`` (n, d) are what this scorer's embedder gives for rows ``f``.

        Re-embeds ``n_check`` rows spread over the table and compares cosines: identical
        settings give 1 up to float16 storage (> 0.9999); another backend, precision, model,
        max_length or text layout gives less. Returns (match, reason for the log).
        """
        if "embedding" not in self.features:
            return False, "the scorer has no embedding feature"
        n = len(f)
        if n == 0:
            return True, "no rows"
        idx = np.unique(np.linspace(0, n - 1, min(n_check, n)).astype(int))
        sub = RowFields([f.instruction[i] for i in idx], [f.input[i] for i in idx], [f.output[i] for i in idx],
                        [f.text[i] for i in idx], f.structured[idx])
        strings = embedding_strings(sub, self.embedding_text)
        got = np.asarray(embeddings[idx], dtype=np.float32)
        params = self.resolved_embed_params()
        cos = _min_cosine(got, embed_stage(self.embedder, params).encode(strings))
        if isinstance(cos, str):
            return False, cos
        if cos >= min_cos:
            return True, f"{len(idx)} re-embedded rows agree (min cosine {cos:.6f})"
        alt = _cpu_default_variant(self.embedder, params)
        if alt is not None:
            # An fp32-fitted scorer reads the int8 vectors this CPU embeds by default as well as its
            # own (the shipped scorer's APE accuracy: 89.4% on both, docs/embeddings.md), so a pool
            # embedded once with the default is reused instead of embedded again in fp32.
            cos_alt = _min_cosine(got, embed_stage(self.embedder, {**params, "precision": alt}).encode(strings))
            if not isinstance(cos_alt, str) and cos_alt >= min_cos:
                return True, (f"{len(idx)} re-embedded rows agree with the {alt} variant this CPU runs by "
                              f"default (min cosine {cos_alt:.6f}); the scorer was fitted on {params['precision']}")
        return False, (f"re-embedding {len(idx)} rows as the scorer does (its embedder and text layout "
                       f"{self.embedding_text!r}) gives cosine {cos:.4f} < {min_cos}: the column was "
                       f"embedded from another text layout (e.g. a template) or with another model")

    def fit(self, X: np.ndarray, y: np.ndarray | None = None, *, X_neg: np.ndarray | None = None,
            info: dict | None = None) -> "QualityModel":
        """Fit on a raw feature matrix.

        Args:
            X: (n, d) features; with ``X_neg``, the preferred member of each pair.
            y: (n,) labels: 0/1 gives logistic regression, other reals ridge regression.
                Omit when ``X_neg`` is given.
            X_neg: (n, d) features of the rejected member of each pair (Bradley-Terry fit on
                z(pos) - z(neg), no intercept).
            info: facts to store with the model (data file, sizes, validation accuracy).
        """
        from sklearn.linear_model import LogisticRegression, Ridge

        allX = X if X_neg is None else np.concatenate([X, X_neg])
        self.mean_ = np.nanmean(allX, axis=0)
        sd = np.nanstd(allX, axis=0)
        # Constant columns (std ~ rounding noise) get scale 1 so they cannot blow up z.
        self.scale_ = np.where(sd > 1e-9 * (1.0 + np.abs(self.mean_)), sd, 1.0)
        if X_neg is not None:
            d = self._z(X) - self._z(X_neg)
            Z, t = np.concatenate([d, -d]), np.r_[np.ones(len(d)), np.zeros(len(d))]
            clf = LogisticRegression(C=self.C, fit_intercept=False, max_iter=5000).fit(Z, t)
            self.coef_, self.intercept_, self.kind_ = clf.coef_.ravel(), 0.0, "pairwise"
        else:
            y = np.asarray(y, dtype=np.float64)
            Z = self._z(X)
            if set(np.unique(y)) <= {0.0, 1.0}:
                clf = LogisticRegression(C=self.C, max_iter=5000).fit(Z, y.astype(int))
                self.coef_, self.intercept_, self.kind_ = clf.coef_.ravel(), float(clf.intercept_[0]), "logistic"
            else:
                reg = Ridge(alpha=1.0 / self.C).fit(Z, y)
                self.coef_, self.intercept_, self.kind_ = reg.coef_.ravel(), float(reg.intercept_), "ridge"
        self.info_ = dict(info or {})
        return self

    def _z(self, X: np.ndarray) -> np.ndarray:
        Z = (np.asarray(X, dtype=np.float64) - self.mean_) / self.scale_
        return np.nan_to_num(Z, nan=0.0)  # missing feature (e.g. IFD of a plain row) = average

    def decision(self, X: np.ndarray) -> np.ndarray:
        """(n,) scores w . z + b from a raw feature matrix (higher = better)."""
        return self._z(X) @ self.coef_ + self.intercept_

    def score(self, f: RowFields, *, batch_size: int | None = None, device: str | None = None,
              embeddings: np.ndarray | None = None, show_progress: bool = False) -> np.ndarray:
        """(n,) scores for rows, computing their features first (``embeddings``: precomputed, (n, d);
        ``show_progress``: the embedder's per-batch bar, default False)."""
        if len(f) == 0:
            return np.zeros(0)
        return self.decision(self.featurize(f, batch_size=batch_size, device=device, embeddings=embeddings,
                                            show_progress=show_progress))

    def save(self, path: str | Path) -> Path:
        """Write one .npz (arrays + JSON spec); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        spec = {"format": "curate.quality_model/1", "features": list(self.features), "C": self.C,
                "embedder": self.embedder, "proxy_lm": self.proxy_lm, "kind": self.kind_,
                "embedding_text": self.embedding_text, "embed_params": self.resolved_embed_params(),
                "heuristic_columns": list(HEURISTIC_COLUMNS), "info": self.info_}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, mean=self.mean_.astype(np.float64), scale=self.scale_.astype(np.float64),
                                coef=self.coef_.astype(np.float64), intercept=np.float64(self.intercept_),
                                spec=np.array(json.dumps(spec)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "QualityModel":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"quality model file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            spec = json.loads(str(z["spec"]))
            if spec.get("format") != "curate.quality_model/1":
                raise ValueError(f"{path} is not a curate quality model (format {spec.get('format')!r})")
            if spec["heuristic_columns"] != list(HEURISTIC_COLUMNS) and "heuristics" in spec["features"]:
                raise ValueError(f"{path} was fitted on heuristics {spec['heuristic_columns']}, "
                                 f"this curate computes {list(HEURISTIC_COLUMNS)}; refit it")
            # Files written before issue 12 embedded CaR's string with torch sentence-transformers.
            m = cls(features=spec["features"], C=spec["C"], embedder=spec["embedder"], proxy_lm=spec["proxy_lm"],
                    embedding_text=spec.get("embedding_text", "car"),
                    embed_params=spec.get("embed_params", LEGACY_EMBED_PARAMS))
            m.mean_, m.scale_ = z["mean"].astype(np.float64), z["scale"].astype(np.float64)
            m.coef_, m.intercept_ = z["coef"].astype(np.float64), float(z["intercept"])
        m.kind_, m.info_ = spec["kind"], spec.get("info", {})
        return m
