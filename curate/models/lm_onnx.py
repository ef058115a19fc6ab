"""ONNX Runtime for a causal LM's decoder body on CPU: the proxy-LM scores' ``runtime: onnx``.

The LM scorers spend most of their time in the decoder body (SmolLM2-135M: ~106M of its
~135M multiply-adds per token; the 49k x 576 LM head runs only where a loss is needed,
:func:`curate.score.lm._selected_nll`). On a 2-core AVX2 CPU, onnxruntime ran SmolLM2's body
1.43x faster than torch fp32 on the same 40 alpaca rows (batch 1, two single-threaded runs at
once against torch's length-sorted batches of 8; hidden states equal to 1e-4), so the body can
run there while the LM head, the loss and the pooling stay in torch (issue 12; measured in
``benchmarks/lm_speed.py``, docs/scoring.md).

:class:`OnnxBodyLM` wraps a loaded ``*ForCausalLM``: ``base_model(input_ids, attention_mask)``
runs every row of a right-padded batch *unpadded* through the exported graph (one row per run,
a thread pool of single-threaded runs: onnxruntime releases the GIL) and returns the padded
``last_hidden_state``; everything else (``get_output_embeddings``, ``config``, ``parameters``)
is the torch model's. The body is exported once per model with ``torch.onnx.export``
(TorchScript exporter, opset 17, eager attention, dynamic batch and sequence axes, an all-ones
attention mask traced in: rows are never padded in a run) and cached under
``$CURATE_MODEL_CACHE/lm_onnx/<name>-<weights hash>/``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
RUNTIMES = (None, "torch", "onnx")


def check_runtime(runtime) -> None:
    """Raise ValueError unless ``runtime`` is one of :data:`RUNTIMES`."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def resolve_runtime(runtime: str | None, device: str, dtype: str) -> str:
    """The runtime of the decoder body: ``runtime`` if given, else ``"onnx"`` for a float32 model
    on the CPU (faster there, same scores to float rounding; docs/scoring.md) and ``"torch"``
    otherwise (CUDA, bf16/fp16 weights, int8).

    Raises:
        ValueError: ``runtime`` is unknown, or ``"onnx"`` with another device or dtype.
    """
    check_runtime(runtime)
    cpu_fp32 = str(device).startswith("cpu") and dtype == "float32"
    if runtime == "onnx" and not cpu_fp32:
        raise ValueError(f"runtime='onnx' runs float32 weights on the CPU; got device={device!r}, dtype={dtype!r} "
                         f"(set dtype: float32 and device: cpu, or runtime: torch)")
    return runtime or ("onnx" if cpu_fp32 else "torch")


def export_body(lm, out: Path) -> Path:
    """Export ``lm``'s decoder body (``lm.base_model``) to ``out/body.onnx``; returns its path.

    Args:
        lm: a ``transformers`` causal LM in float32 on CPU.
        out: folder to create (written atomically: a temp folder, then renamed).
    """
    import torch
    import transformers

    graph = out / "body.onnx"
    if graph.is_file() and (out / "curate_lm_onnx.json").is_file():
        return graph
    body = lm.base_model
    prev = getattr(lm.config, "_attn_implementation", None)
    if prev and hasattr(lm, "set_attn_implementation"):
        lm.set_attn_implementation("eager")  # plain ops trace to a shape-generic graph

    class _Body(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids):
            # rows run unpadded, so an all-ones mask is exact; passing it keeps transformers'
            # packed-sequence detection (aten::diff, not exportable) out of the trace
            return self.m(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), use_cache=False).last_hidden_state

    from curate.models.onnx_runtime import publish_dir

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    log.info("exporting the decoder body of %s to ONNX under %s (one time)", type(lm).__name__, out)
    dummy = torch.ones(1, 8, dtype=torch.long)
    try:
        with torch.inference_mode():
            torch.onnx.export(_Body(body).eval(), (dummy,), str(tmp / "body.onnx"), input_names=["input_ids"],
                              output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "last_hidden_state": {0: "batch", 1: "seq"}})
    finally:
        if prev and hasattr(lm, "set_attn_implementation"):
            lm.set_attn_implementation(prev)  # the torch model (cached per process) stays as loaded, even on failure
    meta = {"model": type(lm).__name__, "hidden_size": int(lm.config.hidden_size), "opset": OPSET,
            "torch": torch.__version__, "transformers": transformers.__version__}
    (tmp / "curate_lm_onnx.json").write_text(json.dumps(meta, indent=2))
    publish_dir(tmp, out)
    return graph


def export_dir(model: str, revision: str | None = None) -> Path:
    """Cache folder of the body export of proxy LM ``model`` (keyed by the weights' content hash
    and the torch/transformers versions that traced it)."""
    import torch
    import transformers

    from curate.core.hashing import stable_hash
    from curate.models.loading import model_cache_dir, proxy_lm_fingerprint

    key = stable_hash({"w": proxy_lm_fingerprint(model, revision), "torch": torch.__version__,
                       "transformers": transformers.__version__, "opset": OPSET})
    return model_cache_dir() / "lm_onnx" / f"{Path(str(model)).name.replace('/', '_')}-{key[:16]}"


class OnnxBodyLM:
    """A causal LM whose decoder body runs in onnxruntime; see the module docstring.

    Args:
        lm: the float32 CPU ``*ForCausalLM`` the graph was exported from (LM head, config).
        graph: path of its ``body.onnx``.
        workers: rows run at once (default None = one per core), each single-threaded.
    """

    def __init__(self, lm, graph: Path, workers: int | None = None):
        from curate.models.onnx_runtime import ort_session, usable_cores

        self.lm, self.config = lm, lm.config
        self.workers = max(1, int(workers or usable_cores()))
        # one single-threaded run per worker (as the MiniLM backend); the session is cached per process
        self.session = ort_session(str(graph), 1 if self.workers > 1 else None)

    def base_model(self, input_ids, attention_mask=None, **_):
        """``last_hidden_state`` (b, L, d) float32 of a right-padded batch (zeros at padding)."""
        import torch

        ids = input_ids.cpu().numpy()
        lengths = (attention_mask.cpu().numpy().sum(1) if attention_mask is not None
                   else np.full(len(ids), ids.shape[1])).astype(int)
        out = np.zeros((*ids.shape, self.config.hidden_size), np.float32)

        def run(j: int) -> None:
            if lengths[j]:
                out[j, :lengths[j]] = self.session.run(None, {"input_ids": ids[j:j + 1, :lengths[j]]})[0][0]

        if self.workers == 1:
            for j in range(len(ids)):
                run(j)
        else:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(run, range(len(ids))))  # list(): re-raise a row's error here
        return SimpleNamespace(last_hidden_state=torch.from_numpy(out))

    def get_output_embeddings(self):
        return self.lm.get_output_embeddings()

    def parameters(self):
        return self.lm.parameters()


def onnx_lm(lm, model: str, workers: int | None = None, revision: str | None = None) -> OnnxBodyLM:
    """Wrap loaded proxy LM ``model`` (float32, CPU) with its cached body export (made on first use).

    Raises:
        RuntimeError: the architecture does not export (the message says to use ``runtime: torch``).
    """
    try:
        graph = export_body(lm, export_dir(model, revision))
    except Exception as e:  # an architecture the TorchScript exporter cannot trace
        raise RuntimeError(f"exporting {model!r} ({type(lm).__name__}) to ONNX failed: {type(e).__name__}: {e}. "
                           f"Set `runtime: torch` on the stage to score it with torch.") from e
    return OnnxBodyLM(lm, graph, workers)
