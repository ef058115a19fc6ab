"""ONNX and static embedding backends against torch MiniLM; cache keys that follow what changes results."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from curate.embed.stage import Embed

DATA = Path(__file__).parent / "data" / "embed" / "gsm8k_planted.jsonl"


def _rows():
    return [json.loads(line) for line in DATA.read_text().splitlines()]


@pytest.fixture(scope="module")
def torch_emb():
    rows = _rows()
    return rows, Embed(backend="sentence_transformers", device="cpu").encode([r["text"] for r in rows])


def _planted_neighbours_found(rows, x):
    s = x @ x.T
    np.fill_diagonal(s, -1)
    return all(rows[int(s[i].argmax())]["id"] == r["planted"] for i, r in enumerate(rows) if r["planted"])


def test_onnx_matches_torch(torch_emb):
    rows, ref = torch_emb
    x = Embed(backend="onnx", precision="float32").encode([r["text"] for r in rows])
    assert x.shape == ref.shape and x.dtype == np.float32
    cos = (x * ref).sum(1)
    assert cos.min() > 0.9999  # same graph, float32: rounding only
    # max_length is honoured the same way (truncation to 16 word pieces)
    short_t = Embed(backend="sentence_transformers", max_length=16, device="cpu").encode([rows[0]["text"]])
    short_o = Embed(backend="onnx", precision="float32", max_length=16).encode([rows[0]["text"]])
    assert float(short_t[0] @ short_o[0]) > 0.9999 and float(short_o[0] @ x[0]) < 0.999


def test_onnx_workers_give_identical_vectors():
    """Concurrent single-threaded runs (num_workers 2) and one two-threaded run give the same bits,
    which is why num_workers is execution-only (not in the cache key)."""
    texts = [r["text"] for r in _rows()]
    one = Embed(backend="onnx", num_workers=1).encode(texts)
    two = Embed(backend="onnx", num_workers=2).encode(texts)
    assert np.array_equal(one, two)
    assert Embed(backend="onnx", num_workers=1).cache_params() == Embed(backend="onnx", num_workers=2).cache_params()
    with pytest.raises(ValueError, match="num_workers"):
        Embed(num_workers=0)


def test_onnx_int8_close_to_torch_and_keeps_neighbours(torch_emb):
    rows, ref = torch_emb
    x = Embed(backend="onnx", precision="int8").encode([r["text"] for r in rows])
    cos = (x * ref).sum(1)
    assert cos.min() > 0.95 and cos.mean() > 0.98
    assert cos.min() < 0.99999  # really the quantised graph, not the float one
    assert _planted_neighbours_found(rows, x)


def test_static_backend_hand_computed_and_neighbours(torch_emb):
    from curate.embed import static

    rows, _ = torch_emb
    texts = [r["text"] for r in rows]
    x = Embed(backend="static").encode(texts)
    assert x.shape == (len(rows), 256)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert _planted_neighbours_found(rows, x)
    # one text by hand: mean of its tokens' rows (no special tokens, unknown dropped), normalised
    table, tok, meta = static._load(str(static.ensure_distilled()))
    tok.no_truncation()
    ids = [i for i in tok.encode(texts[3], add_special_tokens=False).ids if i != meta["unk_token_id"]]
    e = table[ids].mean(0)
    np.testing.assert_allclose(x[3], e / np.linalg.norm(e), atol=1e-5)
    assert np.all(Embed(backend="static").encode([""]) == 0)  # no token: zeros, not NaN


def test_params_rejected_with_their_name():
    with pytest.raises(ValueError, match="precision"):
        Embed(backend="sentence_transformers", precision="int8")
    with pytest.raises(ValueError, match="precision"):
        Embed(backend="onnx", precision="bfloat16")
    with pytest.raises(ValueError, match="backend"):
        Embed(backend="model2vec")


def test_cache_key_follows_backend_precision_and_weights(tmp_path, monkeypatch):
    from curate.core.hashing import stage_key

    keys = {stage_key("p", Embed(backend=b, precision=p)) for b, p in
            [("onnx", "float32"), ("onnx", "int8"), ("onnx", "int8_mixed"), ("static", None),
             ("sentence_transformers", None)]}
    assert len(keys) == 5
    # same YAML, another device: bf16 autocast on a GPU is another result, so another key
    e = Embed(backend="sentence_transformers")
    cpu = e.cache_params()
    import torch

    import curate.models.loading

    monkeypatch.setattr(curate.models.loading, "pick_device", lambda device=None: device or "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = e.cache_params()
    assert cpu["resolved"]["precision"] == "float32" and gpu["resolved"]["precision"] == "bfloat16"
    assert stage_key("p", e) != stage_key("p", Embed(backend="sentence_transformers", device="cpu"))
    monkeypatch.undo()
    # weights: the content hash, not the path or alias
    a, b = tmp_path / "a", tmp_path / "b"
    for d, byte in ((a, b"\x00"), (b, b"\x01")):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"weights" + byte)
        (d / "config.json").write_text("{}")
    wa = Embed(model=str(a)).cache_params()["resolved"]["weights"]
    wb = Embed(model=str(b)).cache_params()["resolved"]["weights"]
    assert wa != wb
    (b / "model.safetensors").write_bytes(b"weights\x00")
    assert Embed(model=str(b)).cache_params()["resolved"]["weights"] == wa


def test_several_gguf_files_fail_clearly(tmp_path):
    from curate.models.loading import proxy_lm_fingerprint, resolve_proxy_lm

    (tmp_path / "m.Q4_1.gguf").write_bytes(b"q4")
    assert resolve_proxy_lm(str(tmp_path)) == (str(tmp_path), "m.Q4_1.gguf")
    h1 = proxy_lm_fingerprint(str(tmp_path))
    (tmp_path / "m.Q4_1.gguf").write_bytes(b"q4 other")
    assert proxy_lm_fingerprint(str(tmp_path)) != h1
    (tmp_path / "m.Q8_0.gguf").write_bytes(b"q8")
    with pytest.raises(ValueError, match=r"2 GGUF files.*m\.Q4_1\.gguf.*m\.Q8_0\.gguf"):
        resolve_proxy_lm(str(tmp_path))
    assert resolve_proxy_lm(str(tmp_path / "m.Q8_0.gguf")) == (str(tmp_path), "m.Q8_0.gguf")


def test_onnx_export_is_cached_by_weights(tmp_path, monkeypatch):
    from curate.embed import onnx_backend

    path = onnx_backend.ensure_export()
    assert path.name == "model.onnx" and (path.parent / "curate_onnx.json").is_file()
    meta = json.loads((path.parent / "curate_onnx.json").read_text())
    from curate.models.loading import resolve_embedder, weights_fingerprint

    assert meta["weights"] == weights_fingerprint(resolve_embedder())
    calls = []
    monkeypatch.setattr(onnx_backend, "_export", lambda *a: calls.append(a))
    assert onnx_backend.ensure_export() == path and calls == []  # second use: no export
