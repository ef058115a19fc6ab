"""Int8 variants of the ONNX MiniLM export, and the precision ``precision=None`` runs on this CPU.

Both variants are made from the fp32 export by onnxruntime's dynamic quantisation
(``onnxruntime.quantization.quantize_dynamic``): weights int8 with one scale per output channel,
activations uint8 with one scale per run computed at run time (the integer-arithmetic scheme of
Jacob et al. 2018, arXiv 1712.05877; dynamic activation ranges for BERT as in Zafrir et al. 2019,
Q8BERT, arXiv 1910.06188).

* ``int8``: every MatMul, the attention score products included.
* ``int8_mixed``: the MatMuls with a weight matrix, except the few measured to carry most of the
  error (:data:`INT8_MIXED_FP32`), which stay fp32 with the attention score products. Closer to
  fp32 (cosine 0.998 against 0.9945) but, at the stage's batch size 1, it failed the QQP check that
  ``int8`` passed: that check moves by a few hundredths with the k-means seed (docs/embeddings.md).

Which MatMuls carry the error was measured, not guessed: :func:`matmul_sensitivity` quantises
one MatMul at a time and takes the mean cosine loss of the sentence vectors against fp32 on real
rows (``benchmarks/embed_backends.py --units sensitivity``; docs/embeddings.md "int8 where the CPU
has int8 dot products"). The losses add up: the sum over single MatMuls is close to the loss of
quantising all of them. The second feed-forward MatMul of the first three layers (its input is the
GELU output, with a long positive tail that one uint8 scale per run resolves badly) carries 42% of
it, the first feed-forward MatMuls most of the rest; Q, K and the attention output carry almost none.

The default follows the CPU, like the causal-LM dtype (:func:`curate.models.loading.cpu_lm_dtype`):
the fastest variant in :data:`VARIANTS` whose quality check passed and whose instructions this CPU
has, else fp32. int8 pays only with int8 dot-product instructions (VNNI): without them onnxruntime
multiplies u8 x s8 with ``vpmaddubsw``, which measured no faster than fp32 on an AVX2 CPU.
``$CURATE_ONNX_PRECISION`` (:data:`PRECISION_ENV`) pins the default on every host (an
environment variable, so shard worker processes see it too); the evaluation sets it to fp32 so
that an arm's rows, and so its unit key, do not depend on the machine.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# int8 dot products onnxruntime's x86 kernels use: AVX-512 VNNI, AVX-VNNI (256-bit), AMX int8.
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
INT8_PRECISIONS = ("int8", "int8_mixed")

# The MatMuls int8_mixed keeps in fp32 (node names of our export, see onnx_backend._export): the
# five with the largest cosine loss when quantised alone, measured on 300 alpaca_44k rows at batch 64
# (1 - mean cosine to fp32 x 1e4: 11.0, 7.9, 5.1, 4.0, 3.6; every other MatMul <= 3.2).
INT8_MIXED_FP32 = (
    "/m/encoder/layer.0/output/dense/MatMul",
    "/m/encoder/layer.2/output/dense/MatMul",
    "/m/encoder/layer.1/output/dense/MatMul",
    "/m/encoder/layer.4/intermediate/dense/MatMul",
    "/m/encoder/layer.3/intermediate/dense/MatMul",
)


@dataclass(frozen=True)
class Variant:
    """One precision of the onnx backend, with the measurement that makes it eligible as default.

    Attributes:
        name: the ``precision`` value.
        needs: CPU flags of which at least one must be present for the variant to pay.
        speedup: measured embedding speed vs fp32 on a CPU with ``needs`` (same run).
        passed: whether it held every quality tolerance of docs/embeddings.md against torch.
        measured: where the figures come from.
    """

    name: str
    needs: tuple[str, ...]
    speedup: float
    passed: bool
    measured: str


# Measured on a 2-core AMD EPYC with avx512_vnni against onnx fp32 in the same run, at the stage's
# batch size 1, with the tolerances of docs/embeddings.md ("int8 where the CPU has int8 dot
# products"; benchmarks/embed_backends.py, benchmarks/results/embed_backends.md).
VARIANTS = {
    "int8": Variant("int8", INT8_DOT_FLAGS, 2.30, True,
                    "QQP best F1 0.624 vs torch 0.625, APE 90.6% vs 89.4%, alpaca k-means ARI to torch "
                    "0.65 vs re-seeding 0.41 (at batch 64, on an AVX2 CPU, it failed QQP: 0.595)"),
    "int8_mixed": Variant("int8_mixed", INT8_DOT_FLAGS, 1.61, False,
                          "QQP best F1 0.584 vs torch 0.625: fails by 0.04 at k-means seed 1234"),
}


def int8_dot_flags() -> tuple[str, ...]:
    """The int8 dot-product flags this CPU has (sorted; from :func:`curate.models.loading.cpu_flags`, read once)."""
    from curate.models import loading

    return tuple(sorted(f for f in INT8_DOT_FLAGS if f in loading.cpu_flags()))


PRECISION_ENV = "CURATE_ONNX_PRECISION"
PINNABLE = ("float32", *INT8_PRECISIONS)


def default_precision(model: str | None = None) -> str:
    """What ``precision=None`` means for the onnx backend on this CPU.

    Args:
        model: the stage's ``model`` (default None = all-MiniLM-L6-v2). The variants' quality was
            measured on MiniLM only, so any other model runs fp32.

    Returns:
        ``"float32"`` for another model than MiniLM; ``$CURATE_ONNX_PRECISION`` when set (one of
        :data:`PINNABLE`); else the fastest :data:`VARIANTS` entry that passed its quality check
        and whose ``needs`` this CPU has, else ``"float32"``.

    Raises:
        ValueError: ``$CURATE_ONNX_PRECISION`` is set to something else than :data:`PINNABLE`.
    """
    from curate.models.loading import DEFAULT_EMBEDDER, resolve_embedder

    if model is not None and resolve_embedder(model) != resolve_embedder(DEFAULT_EMBEDDER):
        return "float32"
    pinned = os.environ.get(PRECISION_ENV)
    if pinned:
        if pinned not in PINNABLE:
            raise ValueError(f"${PRECISION_ENV}={pinned!r}: must be one of {PINNABLE}")
        return pinned
    have = set(int8_dot_flags())
    ok = [v for v in VARIANTS.values() if v.passed and have.intersection(v.needs)]
    return max(ok, key=lambda v: v.speedup).name if ok else "float32"


def weight_matmuls(graph) -> list[str]:
    """Names of the MatMul nodes of an ``onnx.ModelProto`` whose second input is a weight (initializer)."""
    inits = {i.name for i in graph.graph.initializer}
    return [n.name for n in graph.graph.node if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits]


def quantize_graph(src: str | Path, dst: str | Path, precision: str = "int8_mixed",
                   nodes: list[str] | None = None) -> None:
    """Write the dynamically int8-quantised copy of the fp32 graph ``src`` to ``dst``.

    Args:
        src: fp32 ``.onnx`` path.
        dst: output path (written in place: callers publish it with ``os.replace``).
        precision: ``"int8"`` (every MatMul) or ``"int8_mixed"`` (weight MatMuls but
            :data:`INT8_MIXED_FP32`); default ``"int8_mixed"``.
        nodes: quantise exactly these MatMul names instead (default None; for measurements).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if precision not in INT8_PRECISIONS:
        raise ValueError(f"precision must be one of {INT8_PRECISIONS}, got {precision!r}")
    if nodes is None and precision == "int8_mixed":
        nodes = [n for n in weight_matmuls(onnx.load(str(src), load_external_data=False)) if n not in INT8_MIXED_FP32]
    if nodes is not None and not nodes:
        raise ValueError(f"nodes must name at least one MatMul (onnxruntime reads [] as all), got {nodes!r}")
    log.info("quantising %s to %s (dynamic, weights per channel)", src, precision)
    # nodes None (int8): onnxruntime's default op types, as int8 graphs were always made
    chosen = {} if nodes is None else {"nodes_to_quantize": nodes}
    with _quantiser_logs_to_debug():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, **chosen)


class _OnnxruntimeToDebug(logging.Filter):
    """Moves the records onnxruntime's quantiser writes to the *root* logger onto this module's
    logger at DEBUG: one line per tensor ("Quantization parameters for tensor ... not specified") and
    advice to pre-process the graph, which a curate run at INFO would otherwise print."""

    def filter(self, record: logging.LogRecord) -> bool:
        if f"onnxruntime{os.sep}quantization" not in record.pathname:
            return True
        log.debug("onnxruntime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quantiser_logs_to_debug():
    """Within the block, onnxruntime quantiser records on the root logger go to DEBUG (:class:`_OnnxruntimeToDebug`)."""
    root, quiet = logging.getLogger(), _OnnxruntimeToDebug()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def matmul_sensitivity(src: str | Path, encode, texts: list[str], names: list[str] | None = None,
                       work: str | Path | None = None) -> dict[str, float]:
    """Cosine loss of the sentence vectors when one MatMul alone is quantised to int8.

    Args:
        src: fp32 ``.onnx`` path.
        encode: ``encode(graph_path, texts) -> (n, d)`` L2-normalised float32 vectors.
        texts: real rows to measure on (a few hundred suffice; the loss is a mean over them).
        names: MatMuls to measure (default None = :func:`weight_matmuls` of ``src``).
        work: folder for the one-MatMul graphs (default None = beside ``src``); each is deleted
            after use.

    Returns:
        {MatMul name: 1 - mean cosine to the fp32 vectors}, in graph order.
    """
    import onnx

    names = names if names is not None else weight_matmuls(onnx.load(str(src), load_external_data=False))
    ref = encode(Path(src), texts)
    out = {}
    for i, name in enumerate(names):
        # one file name per MatMul: sessions are cached by path
        tmp = Path(work or Path(src).parent) / f"sensitivity{i}.tmp{os.getpid()}.onnx"
        try:
            quantize_graph(src, tmp, "int8", nodes=[name])
            out[name] = float(1.0 - (encode(tmp, texts) * ref).sum(1).mean())
        finally:
            tmp.unlink(missing_ok=True)
    return out
