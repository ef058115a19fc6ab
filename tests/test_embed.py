"""embed stage: parameters, text building, RDS+ pooling maths, real MiniLM embeddings, shard resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.core.schema import embedding_matrix
from curate.core.stage import StageContext
from curate.embed.stage import CAR_TEMPLATE, Embed, build_texts

DATA = Path(__file__).parent / "data" / "embed" / "gsm8k_planted.jsonl"


def _rows():
    return [json.loads(line) for line in DATA.read_text().splitlines()]


def _table(rows):
    return pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})


@pytest.mark.parametrize("kw, name", [
    ({"backend": "openai"}, "backend"), ({"dtype": "int8"}, "dtype"), ({"max_length": 0}, "max_length"),
    ({"template": "no fields"}, "template"), ({"embedding_dim": -3}, "embedding_dim"),
    ({"precision": "fp8"}, "precision"), ({"shard_size": 0}, "shard_size"),
])
def test_init_rejects_bad_params_naming_them(kw, name):
    with pytest.raises(ValueError, match=name):
        Embed(**kw)


def test_cache_params_exclude_execution_only():
    p = Embed(batch_size=7, device="cpu", shard_size=10, model="m", revision="abc").cache_params()
    assert "batch_size" not in p and "device" not in p and "shard_size" not in p
    assert p["model"] == "m" and p["revision"] == "abc"


def test_build_texts_template_fills_nulls_with_empty():
    t = pa.table({"instruction": ["Add", "Sum"], "input": [None, "1 2"], "output": ["3", "3"]})
    assert build_texts(t, template=CAR_TEMPLATE) == [
        "Instruction: Add Input:  Response: 3", "Instruction: Sum Input: 1 2 Response: 3"]
    with pytest.raises(KeyError, match="missing|not in table"):
        build_texts(t, template="{question}")


def test_position_weighted_mean_hand_computed():
    torch = pytest.importorskip("torch")
    from curate.embed.lm_pooling import position_weighted_mean

    h = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]],
                      [[2.0, 0.0], [0.0, 0.0], [0.0, 4.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    e = position_weighted_mean(h, mask, normalize=False).numpy()
    # row 0: weights 1/3, 2/3 over two real tokens; the padded third token counts for nothing
    np.testing.assert_allclose(e[0], [1 / 3, 2 / 3], atol=1e-6)
    # row 1: weights 1/6, 2/6, 3/6
    np.testing.assert_allclose(e[1], [2 / 6, 12 / 6], atol=1e-6)
    en = position_weighted_mean(h, mask).numpy()
    np.testing.assert_allclose(np.linalg.norm(en, axis=1), 1.0, atol=1e-6)


def test_minilm_embeddings_real_text(tmp_path):
    rows = _rows()
    ctx = StageContext(work_dir=tmp_path / "w", artifact_dir=tmp_path / "a", show_progress=False)
    stage = Embed(shard_size=8)
    out = stage.annotate(_table(rows), ctx)
    assert out.column_names == ["embedding"]
    x = embedding_matrix(out, "embedding")
    assert x.shape == (22, 384) and x.dtype == np.float32 and stage.embedding_dim_ == 384
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    s = x @ x.T
    np.fill_diagonal(s, -1)
    # each planted copy's nearest neighbour is its original, far above any two originals
    for i, r in enumerate(rows):
        if r["planted"]:
            assert rows[int(s[i].argmax())]["id"] == r["planted"] and s[i].max() > 0.98
    assert s[:20, :20].max() < 0.8
    # order restored: row 5 embedded alone equals row 5 embedded in the batch
    np.testing.assert_allclose(stage.encode([rows[5]["text"]])[0], x[5], atol=1e-5)
    assert json.loads((tmp_path / "a" / "embed.json").read_text())["embedding_dim"] == 384
    # 22 rows in shards of 8 -> 3 finished shards kept in work_dir for resume
    assert len(list((tmp_path / "w" / "shards").glob("*.npz"))) == 3


def test_resume_skips_finished_shards(tmp_path, monkeypatch):
    rows = _rows()[:6]
    ctx = StageContext(work_dir=tmp_path / "w", artifact_dir=None, show_progress=False)
    calls = []

    def fake_encode(self, texts, show_progress=False):
        calls.append(list(texts))
        return np.tile(np.eye(3, dtype=np.float32)[0], (len(texts), 1))

    monkeypatch.setattr(Embed, "encode", fake_encode)
    stage = Embed(shard_size=2)
    shard_dir = tmp_path / "w" / "shards"
    shard_dir.mkdir(parents=True)
    # a killed run left shard [0, 2) finished and [2, 4) half-written (a .tmp file)
    np.savez(shard_dir / "000000000000-000000000002.npz", embedding=np.full((2, 3), 7, np.float32))
    (shard_dir / "000000000002-000000000004.tmp.npz").write_bytes(b"garbage")
    x = embedding_matrix(stage.annotate(_table(rows), ctx), "embedding")
    assert calls == [[rows[2]["text"], rows[3]["text"]], [rows[4]["text"], rows[5]["text"]]]
    assert (x[:2] == 7).all() and (x[2:, 0] == 1).all()


def test_float16_storage_and_dim_check(tmp_path, monkeypatch):
    monkeypatch.setattr(Embed, "encode", lambda self, texts, show_progress=False:
                        np.full((len(texts), 4), 0.5, np.float32))
    ctx = StageContext(work_dir=tmp_path / "w", show_progress=False)
    t = _table(_rows()[:3])
    out = Embed(dtype="float16").annotate(t, ctx)
    assert out.schema.field("embedding").type == pa.list_(pa.float16(), 4)
    assert embedding_matrix(out, "embedding").dtype == np.float32  # readers get float32 back
    with pytest.raises(ValueError, match="embedding_dim=8"):
        Embed(embedding_dim=8).annotate(t, StageContext(work_dir=tmp_path / "w2", show_progress=False))


@pytest.mark.slow
def test_lm_pooling_smollm2_real(tmp_path):
    rows = _rows()
    ctx = StageContext(work_dir=tmp_path / "w", show_progress=False)
    stage = Embed(backend="lm_pooling", max_length=128, batch_size=4)
    x = embedding_matrix(stage.annotate(_table(rows), ctx), "embedding")
    assert x.shape == (22, 576)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    # padding must not change a row's embedding: batched equals alone
    np.testing.assert_allclose(stage.encode([rows[3]["text"]])[0], x[3], atol=2e-3)
    s = x @ x.T
    np.fill_diagonal(s, -1)
    # the LM is case-sensitive (cosine 0.88 for the lower-cased copy) but each planted copy's
    # nearest neighbour is still its original
    assert s[20].argmax() == 0 and s[21].argmax() == 1


@pytest.mark.parametrize("backend", ["onnx", "static"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
def test_cpu_only_backends_refuse_another_device(backend, device):
    # they used to ignore `device` and run on the CPU, so a "GPU" run was a CPU run
    with pytest.raises(ValueError, match=f"backend='{backend}' runs on the CPU only, got device='{device}'"):
        Embed(backend=backend, device=device)
    Embed(backend=backend, device="cpu")  # accepted


def test_embed_bar_moves_per_batch_inside_a_shard(tmp_path, monkeypatch):
    # one shard of 10 rows in batches of 4: an inner bar counts rows (4, 8, 10); the shard bar
    # alone would sit at 0/1 for the whole shard
    import tqdm.auto

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.steps, self.shown = [], not self.disable  # (close() sets disable)
            bars.append(self)

        def update(self, n=1):
            self.steps.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    texts = [f"row number {i} about tides" for i in range(10)]
    t = pa.table({"id": [str(i) for i in range(10)], "text": texts})
    Embed(batch_size=4, num_workers=1).annotate(t, StageContext(work_dir=tmp_path, show_progress=True))
    inner = [b for b in bars if b.desc == "onnx embed"]
    assert len(inner) == 1 and inner[0].shown
    assert inner[0].total == 10 and inner[0].steps == [4, 4, 2]


def test_select_draws_bars_only_where_someone_watches(monkeypatch):
    import io
    import sys

    from curate.api import interactive

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a pipe or a log file: no bars
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert not interactive()
    tty = io.StringIO()
    tty.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", tty)
    assert interactive()
