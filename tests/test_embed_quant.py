"""int8 MiniLM variants: the default follows the CPU's int8 dot products, the mixed graph keeps
the measured MatMuls in fp32 and stays closer to fp32 than all-int8, and the cache key separates them."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

import curate.models.loading
from curate.core.hashing import stage_key
from curate.embed import quantize
from curate.embed.stage import Embed

DATA = Path(__file__).parent / "data" / "embed" / "gsm8k_planted.jsonl"
AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})  # an AVX2-only CPU: no int8 dot products


def _texts():
    return [json.loads(line)["text"] for line in DATA.read_text().splitlines()]


def test_default_follows_int8_dot_flags(monkeypatch):
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: AVX2)
    avx2 = Embed()
    assert quantize.int8_dot_flags() == () and avx2.effective_precision() == "float32"
    assert "cpu_int8_dot" not in avx2.cache_params()["resolved"]  # fp32 keys are what they were
    avx2_key = stage_key("p", avx2)  # the key is computed from the flags at the time
    eligible = [v.name for v in quantize.VARIANTS.values() if v.passed]
    for flag in quantize.INT8_DOT_FLAGS:
        monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda flag=flag: AVX2 | {flag, "avx512_bf16"})
        e = Embed()
        want = max((quantize.VARIANTS[n] for n in eligible), key=lambda v: v.speedup).name if eligible else "float32"
        assert e.effective_precision() == want
        if want != "float32":
            r = e.cache_params()["resolved"]
            assert r["precision"] == want and r["cpu_int8_dot"] == [flag] and r["batch_size"] == 1
            assert stage_key("p", e) != avx2_key  # vectors of two variants never share a key
        assert Embed(precision="float32").effective_precision() == "float32"  # explicit wins
        # the variants' quality was measured on MiniLM only: another model stays fp32
        assert quantize.default_precision("sentence-transformers/all-mpnet-base-v2") == "float32"


def test_only_variants_that_passed_are_eligible(monkeypatch):
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: AVX2 | {"avx512_vnni"})
    failed = {k: quantize.Variant(v.name, v.needs, v.speedup, False, v.measured) for k, v in quantize.VARIANTS.items()}
    monkeypatch.setattr(quantize, "VARIANTS", failed)
    assert quantize.default_precision() == "float32"
    fast = dict(failed, int8=quantize.Variant("int8", ("avx512_vnni",), 9.0, True, "toy"))
    monkeypatch.setattr(quantize, "VARIANTS", fast)
    assert quantize.default_precision() == "int8"
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: AVX2)
    assert quantize.default_precision() == "float32"  # passed, but this CPU lacks what it needs


def test_environment_pins_the_default_on_every_host(monkeypatch):
    """$CURATE_ONNX_PRECISION overrides what the CPU would choose, for MiniLM only, and is checked."""
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: AVX2 | {"avx512_vnni"})
    fast = {"int8": quantize.Variant("int8", ("avx512_vnni",), 9.0, True, "toy")}
    monkeypatch.setattr(quantize, "VARIANTS", fast)
    assert quantize.default_precision() == "int8"
    monkeypatch.setenv(quantize.PRECISION_ENV, "float32")
    assert quantize.default_precision() == Embed().effective_precision() == "float32"
    assert Embed().cache_params()["resolved"]["precision"] == "float32"
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: AVX2)
    monkeypatch.setenv(quantize.PRECISION_ENV, "int8")
    assert quantize.default_precision() == "int8"  # pinned even where the CPU would not choose it
    assert quantize.default_precision("sentence-transformers/all-mpnet-base-v2") == "float32"
    monkeypatch.setenv(quantize.PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="CURATE_ONNX_PRECISION='fp16'"):
        quantize.default_precision()


def test_int8_flags_in_key_for_explicit_int8(monkeypatch):
    keys = set()
    for flags in (AVX2, AVX2 | {"avx512_vnni"}, AVX2 | {"avx_vnni"}):
        monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda flags=flags: flags)
        keys.add(stage_key("p", Embed(precision="int8_mixed")))
        assert Embed(precision="float32").cache_params()["resolved"]["precision"] == "float32"
    assert len(keys) == 3
    with pytest.raises(ValueError, match="precision='int8_mixed' needs backend='onnx'"):
        Embed(backend="sentence_transformers", precision="int8_mixed")


def test_mixed_graph_keeps_measured_matmuls_fp32():
    import onnx

    from curate.embed.onnx_backend import ensure_export

    fp32 = ensure_export(precision="float32")
    path = ensure_export(precision="int8_mixed")
    assert path.name == "model_int8_mixed.onnx" and path.parent == fp32.parent
    g = onnx.load(str(path))
    names = {n.name for n in g.graph.node if n.op_type == "MatMul"}
    assert set(quantize.INT8_MIXED_FP32) <= names  # kept as float MatMuls
    n_weights = len(quantize.weight_matmuls(onnx.load(str(fp32))))
    assert n_weights == 36  # 6 layers x (Q, K, V, attention output, 2 feed-forward)
    quantised = [n for n in g.graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert len(quantised) == n_weights - len(quantize.INT8_MIXED_FP32)
    assert not list(path.parent.glob("*.tmp*"))  # published by rename, no leftovers


def test_mixed_closer_to_fp32_than_int8_and_keeps_neighbours():
    texts = _texts()
    ref = Embed(precision="float32").encode(texts)
    cos = {p: (Embed(precision=p).encode(texts) * ref).sum(1) for p in ("int8", "int8_mixed")}
    assert cos["int8_mixed"].mean() > cos["int8"].mean()
    assert cos["int8_mixed"].min() > 0.98 and cos["int8_mixed"].min() < 0.99999  # really quantised
    x = Embed(precision="int8_mixed").encode(texts)
    s, s_ref = x @ x.T, ref @ ref.T
    np.fill_diagonal(s, -1)
    np.fill_diagonal(s_ref, -1)
    assert (s.argmax(1) == s_ref.argmax(1)).mean() >= 0.9


def test_matmul_sensitivity_ranks_feed_forward_above_query():
    from curate.embed.onnx_backend import encode_onnx, ensure_export

    src = ensure_export(precision="float32")
    ffn2, query = "/m/encoder/layer.0/output/dense/MatMul", "/m/encoder/layer.0/attention/self/query/MatMul"
    texts = _texts()[:12]
    loss = quantize.matmul_sensitivity(src, lambda g, t: encode_onnx(t, graph=g), texts, names=[ffn2, query])
    assert list(loss) == [ffn2, query]
    assert loss[ffn2] > 10 * loss[query] > 0  # measured on 300 alpaca rows: 11e-4 vs 0.06e-4
    assert not list(src.parent.glob("sensitivity*"))
    with pytest.raises(ValueError, match="nodes"):
        quantize.quantize_graph(src, src.parent / "unused.onnx", "int8", nodes=[])


def test_quantiser_root_logger_records_go_to_debug(tmp_path, caplog):
    from curate.embed.onnx_backend import ensure_export

    src = ensure_export(precision="float32")
    with caplog.at_level("DEBUG"):
        quantize.quantize_graph(src, tmp_path / "q.onnx", "int8", nodes=["/m/encoder/layer.0/output/dense/MatMul"])
    # onnxruntime writes its per-tensor lines to the root logger; at INFO a curate run would print them
    assert not [r for r in caplog.records if r.name == "root"]
    moved = [r for r in caplog.records if r.name == "curate.embed.quantize" and r.getMessage().startswith("onnxruntime: ")]
    assert moved and {r.levelname for r in moved} == {"DEBUG"}
    assert logging.getLogger().filters == []  # the filter is removed after the call


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "int8_mixed"])
def test_int8_on_packaged_rows_stays_within_float_neighbourhoods(precision):
    """2,000 dolly rows: the int8 vectors stay close to fp32, and k-means agrees with fp32's at
    least as well as re-seeding it does (the recorded QQP/APE tolerances: benchmarks/embed_backends.py)."""
    from sklearn.metrics import adjusted_rand_score

    from curate.cluster.faiss_utils import default_k
    from curate.cluster.kmeans import KMeans

    rows = [json.loads(line) for line in (Path(__file__).parents[1] / "sample_data" / "dolly_2k.jsonl").read_text().splitlines()]
    texts = [f"{r['instruction']}\n{r.get('input') or ''}\n{r['output']}" for r in rows]
    ref = Embed(precision="float32").encode(texts)
    x = Embed(precision=precision).encode(texts)
    cos = (x * ref).sum(1)
    assert cos.mean() > 0.99 and cos.min() > 0.97  # alpaca_44k, 400 rows: int8 0.9945 / 0.985
    k = default_k(len(x))
    a, b = KMeans(k=k, seed=1234).fit_predict(ref)[0], KMeans(k=k, seed=1234).fit_predict(x)[0]
    reseed = adjusted_rand_score(a, KMeans(k=k, seed=4321).fit_predict(ref)[0])
    assert adjusted_rand_score(a, b) >= reseed
