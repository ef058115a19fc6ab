"""One embedding pass per pool (quality_model reuses `embedding`), LM cache keys, int8 LM loading."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pytest

from curate.core.schema import embedding_column
from curate.core.stage import StageContext
from curate.embed.stage import Embed
from curate.score.quality_model import (
    LEGACY_EMBED_PARAMS,
    QualityModel,
    default_embed_params,
)
from curate.score.rows import RowFields
from curate.score.stages import QualityModelStage

GOOD = ["Photosynthesis turns light, water and carbon dioxide into glucose and oxygen inside chloroplasts.",
        "To reverse a list in Python, call lst.reverse() in place or use lst[::-1] for a new list.",
        "The French Revolution began in 1789 and ended the absolute monarchy of Louis XVI.",
        "A prime number has exactly two divisors: one and itself. Seven is prime; nine is not."]
BAD = ["idk", "yes", "no idea lol", "maybe"]


def _fields(outputs):
    n = len(outputs)
    return RowFields([f"Question {i}" for i in range(n)], [""] * n, list(outputs), [""] * n, np.ones(n, bool))


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    f = _fields(GOOD + BAD)
    m = QualityModel(features=("embedding", "heuristics"), C=1.0)
    m.fit(m.featurize(f), np.r_[np.ones(len(GOOD)), np.zeros(len(BAD))])
    return str(m.save(tmp_path_factory.mktemp("q") / "q.npz"))


def _table(with_embedding: str | None):
    from curate.ingest.formats import render_text

    outs = GOOD + BAD
    texts = [render_text(f"Question {i}", "", o) for i, o in enumerate(outs)]
    cols = {"id": [str(i) for i in range(len(outs))], "text": texts, "instruction": [f"Question {i}" for i in range(len(outs))],
            "input": [""] * len(outs), "output": outs}
    if with_embedding:
        cols["embedding"] = embedding_column(Embed(backend=with_embedding).encode(texts))
    return pa.table(cols)


def _spy(monkeypatch):
    calls = []
    real = Embed.encode

    def enc(self, texts, show_progress=False):
        calls.append(len(texts))
        return real(self, texts, show_progress)

    monkeypatch.setattr(Embed, "encode", enc)
    return calls


def test_quality_model_reuses_matching_embedding_column(scorer, tmp_path, monkeypatch, caplog):
    base = QualityModelStage(model_path=scorer, show_progress=False).annotate(
        _table(None), StageContext(work_dir=tmp_path / "a", show_progress=False)).column("quality").to_numpy()
    t = _table(default_embed_params()["backend"])
    calls = _spy(monkeypatch)
    with caplog.at_level(logging.INFO, logger="curate.score.stages"):
        q = QualityModelStage(model_path=scorer, show_progress=False).annotate(
            t, StageContext(work_dir=tmp_path / "b", show_progress=False)).column("quality").to_numpy()
    assert calls == [min(16, len(t))]  # only the match check re-embeds (16 rows at most), never the pool
    assert "reusing column 'embedding'" in caplog.text
    np.testing.assert_allclose(q, base, atol=1e-4)
    assert q[: len(GOOD)].min() > q[len(GOOD):].max()


def test_quality_model_does_not_reuse_another_embedder(scorer, tmp_path, monkeypatch, caplog):
    t = _table("static")  # another backend wrote the column: 256-d, other vectors
    calls = _spy(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="curate.score.stages"):
        q = QualityModelStage(model_path=scorer, show_progress=False).annotate(
            t, StageContext(work_dir=tmp_path / "c", show_progress=False)).column("quality").to_numpy()
    assert "not reusing column 'embedding'" in caplog.text
    assert calls[-1] == len(t)  # embedded every row itself
    base = QualityModelStage(model_path=scorer, embedding_column=None, show_progress=False).annotate(
        _table(None), StageContext(work_dir=tmp_path / "d", show_progress=False)).column("quality").to_numpy()
    np.testing.assert_allclose(q, base, atol=1e-6)


def test_embeddings_match_detects_layout_and_max_length(scorer):
    from curate.score.rows import row_fields

    qm = QualityModel.load(scorer)
    t = _table(None)
    f = row_fields(t)
    x = Embed(**qm.resolved_embed_params()).encode(t.column("text").to_pylist())
    assert qm.embeddings_match(f, x)[0]
    assert not qm.embeddings_match(f, x[:, ::-1].copy())[0]
    car = Embed(**qm.resolved_embed_params()).encode([f"Instruction: {a} Response: {o}" for a, o in
                                                       zip(f.instruction, f.output)])
    assert not qm.embeddings_match(f, car)[0]


def test_legacy_scorer_files_keep_their_embedder(tmp_path):
    import json

    m = QualityModel(features=("heuristics",)).fit(np.random.default_rng(0).normal(size=(20, 17)),
                                                   np.r_[np.ones(10), np.zeros(10)])
    p = m.save(tmp_path / "new.npz")
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    spec = json.loads(str(arrays["spec"]))
    for k in ("embedding_text", "embed_params"):
        spec.pop(k)
    arrays["spec"] = np.array(json.dumps(spec))
    np.savez(tmp_path / "old.npz", **arrays)
    old = QualityModel.load(tmp_path / "old.npz")
    assert old.embedding_text == "car" and old.resolved_embed_params() == LEGACY_EMBED_PARAMS
    assert QualityModel.load(p).embedding_text == "text"


def _cpu_with(monkeypatch, vnni: bool) -> None:
    import curate.models.loading
    from curate.embed.quantize import INT8_DOT_FLAGS

    flags = (curate.models.loading.cpu_flags() - set(INT8_DOT_FLAGS)) | ({"avx512_vnni"} if vnni else set())
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: flags)


def test_shipped_scorer_embeds_like_the_default_embed_stage(monkeypatch):
    from curate.score.quality_model import default_model_path

    _cpu_with(monkeypatch, vnni=False)  # no int8 dot products: the default is the scorer's own fp32
    m = QualityModel.load(default_model_path())
    assert m.embedding_text == "text" and m.resolved_embed_params() == default_embed_params()


def test_shipped_scorer_reuses_the_int8_column_a_vnni_cpu_embeds_by_default(monkeypatch):
    """On a CPU with int8 dot products the embed stage's default column is int8 (issue 33); the
    fp32-fitted scorer accepts it (measured: same APE accuracy) instead of embedding the pool again,
    and still refuses a column of another text layout."""
    from curate.score.quality_model import default_model_path, embedding_strings

    _cpu_with(monkeypatch, vnni=True)
    m = QualityModel.load(default_model_path())
    f = _fields([f"Answer number {i}: the capital of country {i} is city {i * 7}." for i in range(12)])
    assert Embed().effective_precision() == "int8"
    col = Embed().encode(embedding_strings(f, m.embedding_text))
    ok, why = m.embeddings_match(f, col)
    assert ok and "int8 variant" in why, why
    templated = Embed().encode([f"Instruction: {a} Input: {b} Response: {c}" for a, b, c in
                                zip(f.instruction, f.input, f.output)])
    assert not m.embeddings_match(f, templated)[0]


def test_quality_model_cache_key_follows_the_scorer_file(scorer, tmp_path):
    import shutil

    other = tmp_path / "other.npz"
    shutil.copy(scorer, other)
    k1 = QualityModelStage(model_path=str(other)).cache_params()["resolved"]["scorer"]
    m = QualityModel.load(other)
    m.coef_ = m.coef_ + 1
    m.save(other)
    assert QualityModelStage(model_path=str(other)).cache_params()["resolved"]["scorer"] != k1


def test_lm_stage_key_has_dtype_and_weights(tmp_path, monkeypatch):
    from curate.score.stages import IFD, Perplexity

    (tmp_path / "m.gguf").write_bytes(b"weights")
    p = Perplexity(model=str(tmp_path / "m.gguf"))
    r = p.cache_params()["resolved"]
    import curate.models.loading

    assert r["dtype"] == curate.models.loading.cpu_lm_dtype() and len(r["weights"]) == 32
    # the CPU default follows the CPU's bf16 support (and so does the key)
    for native, want in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(curate.models.loading, "cpu_has_native_bf16", lambda native=native: native)
        assert Perplexity(model=str(tmp_path / "m.gguf")).cache_params()["resolved"]["dtype"] == want
    monkeypatch.undo()
    assert Perplexity(model=str(tmp_path / "m.gguf"), dtype="float32").cache_params()["resolved"]["dtype"] == "float32"
    assert Perplexity(model=str(tmp_path / "m.gguf"), dtype="int8").cache_params()["resolved"]["dtype"] == "int8"
    monkeypatch.setattr(curate.models.loading, "pick_device", lambda device=None: device or "cuda")
    assert IFD(model=str(tmp_path / "m.gguf")).cache_params()["resolved"]["dtype"] == "bfloat16"
    monkeypatch.undo()
    (tmp_path / "m.gguf").write_bytes(b"weights 2")
    assert Perplexity(model=str(tmp_path / "m.gguf")).cache_params()["resolved"]["weights"] != r["weights"]
    with pytest.raises(ValueError, match="dtype"):
        Perplexity(dtype="int4")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama with a word-level tokenizer, saved like a real model."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = sorted({w for t in GOOD + BAD for w in t.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, pad_token_id=0)
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_lm_pooling_body_only_equals_last_hidden_state(tiny_llama):
    import torch

    from curate.embed.lm_pooling import encode_with, position_weighted_mean
    from curate.models.loading import load_causal_lm

    lm, tok = load_causal_lm(tiny_llama, "cpu", "float32")
    texts = GOOD + BAD
    x = encode_with(lm, tok, texts, batch_size=3)
    tok.padding_side = "right"
    for i, t in enumerate(texts):  # one at a time, full model, last entry of hidden_states (the old path)
        enc = tok([t], return_tensors="pt")
        with torch.inference_mode():
            hs = lm(**enc, output_hidden_states=True).hidden_states[-1]
        np.testing.assert_allclose(x[i], position_weighted_mean(hs, enc["attention_mask"])[0].numpy(), atol=1e-5)


def test_int8_lm_scores_follow_fp32(tiny_llama):
    import torch
    from scipy.stats import spearmanr

    from curate.models.loading import load_causal_lm
    from curate.score import lm as lmlib

    fp, tok = load_causal_lm(tiny_llama, "cpu", "float32")
    q, _ = load_causal_lm(tiny_llama, "cpu", "int8")
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q.modules())
    prompts, answers = [f"Question {i} " for i in range(8)], GOOD + BAD
    a = lmlib.span_losses(fp, tok, prompts, answers, batch_size=4)["loss_target"]
    b = lmlib.span_losses(q, tok, prompts, answers, batch_size=4)["loss_target"]
    assert np.isfinite(b).all() and not np.allclose(a, b, atol=1e-7)
    assert spearmanr(a, b)[0] > 0.9 and np.abs(a - b).max() < 0.05 * np.abs(a).max()
    with pytest.raises(ValueError, match="int8"):
        load_causal_lm(tiny_llama, "cuda", "int8")


def test_onnx_body_runtime_matches_torch(tiny_llama, tmp_path, monkeypatch):
    """The decoder body in onnxruntime: same hidden states on padded batches, same losses and pooling."""
    import torch

    from curate.embed.lm_pooling import encode_with
    from curate.models.lm_onnx import onnx_lm
    from curate.models.loading import load_causal_lm
    from curate.score import lm as lmlib

    monkeypatch.setenv("CURATE_MODEL_CACHE", str(tmp_path / "models"))
    lm, tok = load_causal_lm(tiny_llama, "cpu", "float32")
    ox = onnx_lm(lm, tiny_llama)
    assert list((tmp_path / "models" / "lm_onnx").glob("*/body.onnx"))  # exported into the model cache
    texts = GOOD + BAD
    tok.padding_side = "right"
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        ref = lm.base_model(**enc).last_hidden_state.numpy()
    got = ox.base_model(**enc).last_hidden_state.numpy()
    m = enc["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(got[m], ref[m], atol=1e-4, rtol=1e-4)
    assert not got[~m].any()  # padding positions stay zero (rows run unpadded)
    prompts = [f"Question {i} " for i in range(8)]
    a = lmlib.span_losses(lm, tok, prompts, texts, batch_size=3)
    b = lmlib.span_losses(ox, tok, prompts, texts, batch_size=3)
    for k in ("loss_target", "loss_all"):
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode_with(ox, tok, texts, batch_size=3), encode_with(lm, tok, texts, batch_size=3),
                               atol=1e-5)


def test_lm_runtime_resolution_and_keys(tmp_path, monkeypatch):
    import curate.models.loading
    from curate.models.lm_onnx import resolve_runtime
    from curate.score.stages import IFD, Perplexity

    assert resolve_runtime(None, "cpu", "float32") == "onnx"
    assert resolve_runtime(None, "cpu", "bfloat16") == resolve_runtime(None, "cuda", "float32") == "torch"
    assert resolve_runtime("torch", "cpu", "float32") == "torch"
    with pytest.raises(ValueError, match="float32 weights on the CPU"):
        resolve_runtime("onnx", "cpu", "int8")
    with pytest.raises(ValueError, match="runtime must be one of"):
        Perplexity(runtime="tensorrt")
    (tmp_path / "m.gguf").write_bytes(b"weights")
    monkeypatch.setattr(curate.models.loading, "cpu_has_native_bf16", lambda: False)
    on = Perplexity(model=str(tmp_path / "m.gguf")).cache_params()
    off = Perplexity(model=str(tmp_path / "m.gguf"), runtime="torch").cache_params()
    assert on["resolved"]["runtime"] == "onnx" and off["resolved"]["runtime"] == "torch"
    with pytest.raises(ValueError, match="float32 weights on the CPU"):
        IFD(model=str(tmp_path / "m.gguf"), dtype="int8", runtime="onnx").cache_params()
    # the embed stage: runtime belongs to lm_pooling; MiniLM backends keep the keys they had
    assert "runtime" not in Embed().cache_params() and "runtime" not in Embed().cache_params()["resolved"]
    with pytest.raises(ValueError, match="lm_pooling' only"):
        Embed(backend="onnx", runtime="onnx")
