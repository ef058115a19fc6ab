"""``less_gradients`` + ``less_influence`` + ``less`` (LESS, Xia et al., ICML 2024)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from tiny_lm import save_tiny_lm, tiny_lm, toy_rows

import curate
import curate.train.less_warmup as warm_mod
from curate.core.stage import StageContext
from curate.select.base import NOT_SELECTED
from curate.select.less import LESS, REASON, less_scores
from curate.train.grads import (
    adam_direction,
    example_gradients,
    rademacher_project,
    unit_rows,
)
from curate.train.less import LESSGradients, LESSInfluence
from curate.train.less_warmup import epoch_weights, warmup_dir, warmup_rows
from curate.train.lora import LoRATrainer


@pytest.fixture(autouse=True)
def _model_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_MODEL_CACHE", str(tmp_path / "models"))  # warm-ups land in the test's folder


def test_influence_rule_by_hand():
    # two checkpoints of d = 2, weights 0.75 / 0.25
    pool = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], np.float32)
    targets = {"A": np.array([[1, 0, 1, 0]], np.float32),
               "B": np.array([[0, 1, 0, 1], [0, 1, 1, 0]], np.float32)}
    score, task = less_scores(pool, targets, np.array([0.75, 0.25]))
    # row 0: A = .75*1 + .25*0 = .75; B = mean(.75*0 + .25*1, .75*0 + .25*0) = .125 -> .75 (A)
    # row 1: A = .75*0 + .25*1 = .25; B = mean(.75*1 + .25*0, .75*1 + .25*1) = .875 -> .875 (B)
    np.testing.assert_allclose(score, [0.75, 0.875])
    assert task.tolist() == [0, 1]
    np.testing.assert_allclose(less_scores(pool, targets, np.array([0.75, 0.25]), chunk=1)[0], score)
    with pytest.raises(ValueError, match="targets\\['A'\\] have 3 values"):
        less_scores(pool, {"A": np.ones((1, 3), np.float32)}, np.array([0.5, 0.5]))


def test_adam_direction_and_weights_by_hand():
    g, m, v = torch.tensor([[2.0]]), torch.tensor([1.0]), torch.tensor([4.0])
    # m' = .9 * 1 + .1 * 2 = 1.1; v' = .999 * 4 + .001 * 4 = 4
    assert float(adam_direction(g, m, v)) == pytest.approx(1.1 / (2 + 1e-8), rel=1e-6)
    assert float(adam_direction(g, m, v, eps=1.0)) == pytest.approx(1.1 / 3.0, rel=1e-6)
    assert float(adam_direction(g, m, v, eps=5.0, eps_inside_sqrt=True)) == pytest.approx(1.1 / 3.0, rel=1e-6)
    np.testing.assert_allclose(epoch_weights(np.array([1, 1, 3, 3, 2, 2.0]), 2, 3), [1 / 6, 3 / 6, 2 / 6])


def test_rademacher_projection():
    d = 64
    r = rademacher_project(torch.eye(5, 300), d, seed=7)
    assert set(np.round(np.unique(r.numpy()) * np.sqrt(d), 5)) == {-1.0, 1.0}
    x = torch.randn(4, 300)
    full = rademacher_project(x, d, seed=7, block=128)
    np.testing.assert_allclose(rademacher_project(x[2:3], d, seed=7, block=128)[0], full[2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full, rademacher_project(x, d, seed=8, block=128))
    big = torch.randn(2, 4000)  # Johnson-Lindenstrauss: norms kept to within a few percent at d = 4096
    ratio = torch.linalg.vector_norm(rademacher_project(big, 4096, 0), dim=1) / torch.linalg.vector_norm(big, dim=1)
    assert torch.all((ratio > 0.9) & (ratio < 1.1))
    np.testing.assert_allclose(torch.linalg.vector_norm(unit_rows(full), dim=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("prefix", [False, True])
def test_batched_per_example_gradients_equal_one_row_backward(prefix):
    from curate.train.forward import prefix_states

    lm, tok = tiny_lm()
    tr = LoRATrainer(model=(lm, tok), layers=2, target_modules=("q_proj", "v_proj"), prefix_cache=prefix,
                     show_progress=False)
    enc = tr.encode(toy_rows(6))
    model = tr.new_model(0)
    with torch.no_grad():  # a trained-looking adapter (B = 0 at init would zero A's gradient)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    states = prefix_states(model.get_base_model(), enc.ids, tr.layers_[0], tok.pad_token_id, 8) if prefix else None
    g = example_gradients(tr, model, enc, np.arange(6), states)
    for i in range(6):
        model.zero_grad()
        tr.token_nll(model.get_base_model(), enc, [i], states).mean().backward()
        want = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.requires_grad])
        torch.testing.assert_close(g[i], want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("less") / "lm")


def feats(path: str, **kw) -> dict:
    return {"model": path, "layers": 2, "epochs": 2, "warmup_fraction": 0.25, "proj_dim": 64, "batch_size": 4,
            "device": "cpu", "show_progress": False, **kw}


def test_warmup_checkpoints_weights_resume_and_cache(tiny_path, monkeypatch):
    rows = toy_rows(24)
    st = LESSGradients(**feats(tiny_path, epochs=3))
    warm = warmup_rows(np.ones(24, bool), 0.25, 0)
    assert len(warm) == 6 and warm.tolist() == sorted(warm.tolist())
    tr, key, folder = st.warmup(rows, warm)
    meta, ckpts = warm_mod.load_checkpoints(folder)
    assert len(ckpts) == 3 and meta["rows"] == 6 and sum(meta["weights"]) == pytest.approx(1.0)
    # cosine decay: later epochs have lower mean learning rates, so lower weights
    assert meta["weights"][0] > meta["weights"][1] > meta["weights"][2]
    np.testing.assert_allclose(meta["weights"], epoch_weights(tr.lrs_, meta["steps_per_epoch"], 3))
    assert ckpts[0]["m"].shape == ckpts[0]["v"].shape and float(ckpts[2]["v"].min()) >= 0
    # found in the model cache: no training the second time
    with monkeypatch.context() as m:
        m.setattr(LoRATrainer, "fit", lambda *a, **k: pytest.fail("trained again"))
        assert st.warmup(rows, warm)[2] == folder
    # killed after epoch 1: the rerun resumes and ends with the same checkpoints
    import shutil

    shutil.rmtree(folder)
    real = warm_mod.save_state

    def dies_at_epoch_2(obj, path):
        if path.name == "ckpt_2.pt":
            raise KeyboardInterrupt
        return real(obj, path)

    monkeypatch.setattr(warm_mod, "save_state", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        st.warmup(rows, warm)
    monkeypatch.setattr(warm_mod, "save_state", real)
    assert (folder.with_name(key + ".work") / "state_1.pt").exists()
    meta2, again = warm_mod.load_checkpoints(st.warmup(rows, warm)[2])
    assert meta2["weights"] == pytest.approx(meta["weights"])
    for a, b in zip(ckpts, again):
        for n in a["adapter"]:
            torch.testing.assert_close(a["adapter"][n], b["adapter"][n])
        torch.testing.assert_close(a["v"], b["v"])


def test_planted_copies_of_the_targets_rank_first(tiny_path, tmp_path):
    rows = toy_rows(30, seed=1)
    targets = [{"instruction": "Spell the word zebra backwards.", "output": "arbez arbez arbez"},
               {"instruction": "Spell the word quartz backwards.", "output": "ztrauq ztrauq ztrauq"}]
    planted = pa.table({"id": ["copy0", "copy1"], "text": ["x", "y"],
                        "instruction": [t["instruction"] for t in targets], "input": ["", ""],
                        "output": [t["output"] for t in targets], "source": ["toy", "toy"]}, schema=rows.schema)
    pool = pa.concat_tables([rows, planted])
    f = feats(tiny_path, proj_dim=256)
    g = LESSGradients(**f).annotate(pool, StageContext(work_dir=tmp_path / "g", show_progress=False))
    assert g.column_names == ["less_grads", "less_warmup", "less_ckpt"]
    x = np.asarray(g.column("less_grads").combine_chunks().flatten().to_numpy(zero_copy_only=False), np.float32)
    x = x.reshape(len(pool), -1)
    np.testing.assert_allclose(np.linalg.norm(x.reshape(len(pool), 2, 256), axis=2), 1.0, atol=2e-3)  # unit blocks
    table = pa.concat_tables([pool]).append_column("less_grads", g.column("less_grads")) \
        .append_column("less_warmup", g.column("less_warmup")).append_column("less_ckpt", g.column("less_ckpt"))
    # one task per target row: each copy's own task scores it by its gradient's cosine with the target's
    tasks = {"zebra": targets[:1], "quartz": targets[1:]}
    inf = LESSInfluence(targets=tasks, **f).annotate(table, StageContext(work_dir=tmp_path / "i"))
    s = inf.column("less_score").to_numpy()
    assert set(np.argsort(-s)[:2]) == {30, 31}, np.argsort(-s)[:5]
    assert inf.column("less_task").to_pylist()[30:] == ["zebra", "quartz"]


def test_selector_budgets_reasons_and_targets_check():
    n = 40
    s = np.random.default_rng(0).normal(size=n)
    t = pa.table({"id": [f"r{i}" for i in range(n)], "text": ["t"] * n, "less_score": pa.array(s),
                  "less_task": ["gsm8k"] * n, "n_tokens": pa.array(np.full(n, 10))})
    tg = [{"question": "1 + 1?", "answer": "2"}]
    for budget, k in ((1, 1), (0.05, 2), (13, 13), (40, 40)):
        sel = LESS(budget=budget, targets=tg).select(t, None)
        assert sel.n_kept == k and set(sel.keep.nonzero()[0]) == set(np.argsort(-s)[:k])
        assert set(sel.reason[~sel.keep]) <= {REASON, NOT_SELECTED}
    assert LESS(budget={"tokens": 55}, targets=tg).select(t, None).n_kept == 5
    wrong = t.append_column("less_targets", pa.array(["not-these"] * n))
    with pytest.raises(ValueError, match="computed for other targets"):
        LESS(budget=3, targets=tg).select(wrong, None)
    steps = LESS(budget=3, targets=tg, features={"proj_dim": 256}).prerequisites(["id", "text"])
    assert [x.name for x in steps] == ["less_gradients", "less_influence"] and steps[1].proj_dim == 256
    assert [x.name for x in LESS(budget=3, targets=tg).prerequisites(["less_grads"])] == ["less_influence"]
    with pytest.raises(ValueError, match="features"):
        LESS(budget=3, targets=tg, features="big")
    with pytest.raises(ValueError, match="warmup_fraction"):
        LESSGradients(warmup_fraction=0)
    assert "grad_batch_size" not in LESSGradients().cache_params()


def test_raw_rows_through_curate_select_twice(tiny_path, tmp_path, monkeypatch):
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in toy_rows(20, seed=2).to_pylist()]
    tg = {"math": [{"instruction": "Repeat 1: alpha", "output": "alpha beta"}],
          "words": [{"instruction": "Repeat 3: gamma", "output": "delta eps"}]}
    ds, prov = curate.select(rows, method="less", budget=5, targets=tg, features=feats(tiny_path),
                             cache_dir=str(tmp_path / "c"), return_provenance=True)
    assert len(ds) == 5
    p = prov.to_pylist()
    assert {r["less_task"] for r in p} <= {"math", "words"}
    # the pool's features are cached: new targets only compute the targets' gradients
    from curate.train import less as less_mod

    calls = []
    real = less_mod.LESSGradients.features
    monkeypatch.setattr(less_mod.LESSGradients, "features",
                        lambda self, *a, **k: calls.append(k.get("adam")) or real(self, *a, **k))
    tg2 = {"math": [{"instruction": "Repeat 2: zeta", "output": "eta theta"}]}
    assert len(curate.select(rows, method="less", budget=5, targets=tg2, features=feats(tiny_path),
                             cache_dir=str(tmp_path / "c"))) == 5
    assert calls == [False]  # one target task, no pool gradients
    assert len(list(warmup_dir("x").parent.glob("*/meta.json"))) == 1  # one warm-up in the model cache


@pytest.mark.slow  # the whole recipe with its embedding steps (about 50 s on a loaded 2-core box)
def test_the_shipped_recipe(tiny_path, tmp_path, monkeypatch):
    import yaml
    from select_toys import REPO
    from test_select_rds import write_sample_pool

    cfg = yaml.safe_load((REPO / "configs" / "instruction" / "less.yaml").read_text())
    assert cfg["extends"] == "base.yaml" and cfg["stages"][-1]["type"] == "less"
    small = feats(tiny_path, warmup_fraction=0.1)
    stages = []
    for s in cfg["stages"]:
        if s["type"] in ("less_gradients", "less_influence"):
            s = {**s, **small}
        elif s["type"] == "less":
            s = {**s, "budget": 10, "features": small}
        stages.append(s)
    monkeypatch.chdir(REPO)  # the recipe's targets path is relative to the repository root
    res = curate.run({"name": "less", "input": {"path": str(write_sample_pool(tmp_path))}, "stages": stages,
                      "output": {"dir": str(tmp_path / "o")}}, show_progress=False, cache_dir=str(tmp_path / "c"))
    assert res.counts["n_selected"] == 10
    steps = [s["type"] for s in res.report["stages"]]
    assert steps[-3:] == ["less_gradients", "less_influence", "less"]  # nothing added twice
