"""A killed evaluation unit resumes mid-training and mid-evaluation with the uninterrupted result."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_lm import tiny_lm, toy_rows  # noqa: E402

from curate.eval import runner as eval_runner  # noqa: E402
from curate.eval.runner import run_eval  # noqa: E402
from curate.train.checkpoints import training_state  # noqa: E402
from curate.train.lora import LoRATrainer  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(seed=0, n_layers=3, hidden=32)


def _adapter(trainer):
    return {n: p.detach().clone() for n, p in trainer.model_.named_parameters() if p.requires_grad}


def test_fit_resumed_from_any_step_equals_the_uninterrupted_fit(tiny):
    rows = toy_rows(20)  # 5 batches of 4 per epoch, 2 epochs: 10 steps
    kw = dict(model=tiny, layers=2, batch_size=4, epochs=2, show_progress=False, lr=1e-2)
    saved = []
    full = LoRATrainer(**kw).fit(rows, seed=3, checkpoint_every=3,
                                 checkpoint_callback=lambda info: saved.append(training_state(info)))
    # every 3 steps (3, 6, 9), then the finished fit
    assert [len(s["losses"]) for s in saved] == [3, 6, 9, 10]
    assert [(s["epochs_done"], s["batches_done"]) for s in saved] == [(0, 3), (1, 1), (1, 4), (2, 0)]
    want = _adapter(full)
    for state in saved[:3]:  # mid-epoch 0, mid-epoch 1 one batch in, mid-epoch 1 near its end
        resumed = LoRATrainer(**kw).fit(rows, seed=3, resume=state)
        np.testing.assert_array_equal(resumed.losses_, full.losses_)
        assert resumed.steps_ == full.steps_ == 10 and resumed.tokens_ == full.tokens_
        got = _adapter(resumed)
        assert all(torch.equal(got[k], want[k]) for k in want)
    # the finished state: nothing left to train, the same adapter
    done = LoRATrainer(**kw).fit(rows, seed=3, resume=saved[3])
    assert done.steps_ == 10 and done.tokens_ == full.tokens_
    assert all(torch.equal(_adapter(done)[k], want[k]) for k in want)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _config(tmp_path, tiny, out):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta eps zeta eta theta iota kappa".split()
    pool = [{"instruction": f"Task {i}: " + " ".join(rng.choice(words, 4)), "input": "",
             "output": " ".join(rng.choice(words, size=int(rng.integers(2, 20))))} for i in range(40)]
    ev = [{"instruction": f"Question {i}: " + " ".join(rng.choice(words, 4)), "input": "",
           "output": " ".join(rng.choice(words, 6))} for i in range(8)]
    return {"name": "t", "output": str(out), "pool": {"paths": [_write(tmp_path / "pool.jsonl", pool)]},
            "decontaminate": {"exact": True, "minhash_threshold": None, "embed_threshold": None},
            "eval_sets": [{"name": "a", "path": _write(tmp_path / "a.jsonl", ev), "style": "human"},
                          {"name": "b", "path": _write(tmp_path / "b.jsonl", ev[::-1]), "style": "human"}],
            "budget": 16, "seeds": [0], "arms": [{"name": "random", "method": "random"}],
            "train": {"model": tiny, "layers": 2, "batch_size": 4, "epochs": 2, "max_length": 128},
            "eval": {"batch_size": 4, "content_skip": 2}, "n_boot": 50}


class Killed(Exception):
    pass


def _count_calls(monkeypatch, owner, name, kill_at=None):
    """Count calls of ``owner.name``; raise :class:`Killed` at call ``kill_at`` (1-based)."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*a, **k):
        calls["n"] += 1
        if kill_at is not None and calls["n"] == kill_at:
            raise Killed(f"{name} killed at call {kill_at}")
        return real(*a, **k)

    monkeypatch.setattr(owner, name, wrapped)
    return calls


def _unit(res):
    return next(u for u in res["units"] if u["arm"] == "random")


def test_unit_killed_mid_training_then_mid_eval_resumes_with_the_same_result(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_runner, "TRAIN_CHECKPOINT_EVERY", 2)
    want = _unit(run_eval(_config(tmp_path, tiny, tmp_path / "whole"), show_progress=False))
    assert want["steps"] == 8

    out = tmp_path / "killed"
    cfg = _config(tmp_path, tiny, out)
    with monkeypatch.context() as m:  # killed in step 6: steps 1-4 saved (checkpoints after 2 and 4)
        _count_calls(m, LoRATrainer, "token_nll", kill_at=6)
        with pytest.raises(Killed):
            run_eval(cfg, show_progress=False)
    partial = out / "partial" / "random" / "seed0"
    assert (partial / "train_state.pt").exists() and not (out / "units" / "random" / "seed0").exists()

    with monkeypatch.context() as m:  # resumed: 4 steps left; killed in set b's evaluation
        steps = _count_calls(m, LoRATrainer, "token_nll")
        evals = _count_calls(m, eval_runner, "reference_losses", kill_at=2)
        with pytest.raises(Killed):
            run_eval(cfg, show_progress=False)
        assert steps["n"] == 4 and evals["n"] == 2
    assert (partial / "eval_a.npz").exists() and not (partial / "eval_b.npz").exists()

    with monkeypatch.context() as m:  # resumed after training: no step, only set b evaluated
        steps = _count_calls(m, LoRATrainer, "token_nll")
        evals = _count_calls(m, eval_runner, "reference_losses")
        got = _unit(run_eval(cfg, show_progress=False))
        assert steps["n"] == 0 and evals["n"] == 1
    assert not partial.exists()  # removed once the unit's record is committed
    assert got["steps"] == 8 and got["tokens"] == want["tokens"]
    np.testing.assert_array_equal(got["train_losses"], want["train_losses"])
    for s in ("a", "b"):
        for metric, v in want["losses"][s].items():
            np.testing.assert_allclose(got["losses"][s][metric], v, rtol=0, atol=1e-6)


def test_damaged_or_foreign_progress_is_ignored_with_the_same_result(tiny, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(eval_runner, "TRAIN_CHECKPOINT_EVERY", 2)
    want = _unit(run_eval(_config(tmp_path, tiny, tmp_path / "whole"), show_progress=False))

    out = tmp_path / "run"
    cfg = _config(tmp_path, tiny, out)
    partial = out / "partial" / "random" / "seed0"
    with monkeypatch.context() as m:
        _count_calls(m, LoRATrainer, "token_nll", kill_at=6)
        with pytest.raises(Killed):
            run_eval(cfg, show_progress=False)
    (partial / "train_state.pt").write_bytes(b"not a checkpoint")
    with monkeypatch.context() as m:  # damaged: trains all 8 steps again, says why
        steps = _count_calls(m, LoRATrainer, "token_nll", kill_at=6)
        with pytest.raises(Killed):
            run_eval(cfg, show_progress=False)
    assert "damaged" in caplog.text
    # progress of another selection (here: another seed's key) is not mixed in
    from curate.train.checkpoints import load_state, save_state

    state = load_state(partial / "train_state.pt")
    save_state({**state, "unit_key": "another unit"}, partial / "train_state.pt")
    with monkeypatch.context() as m:
        steps = _count_calls(m, LoRATrainer, "token_nll")
        got = _unit(run_eval(cfg, show_progress=False))
        assert steps["n"] == 8
    np.testing.assert_array_equal(got["train_losses"], want["train_losses"])
    np.testing.assert_allclose(got["losses"]["a"]["full"], want["losses"]["a"]["full"], rtol=0, atol=1e-6)


def test_units_on_the_same_rows_share_the_training_prefix_cache_with_identical_results(tiny, tmp_path, monkeypatch):
    from curate.eval import train_prefix
    from curate.train import forward

    def config(out):
        cfg = _config(tmp_path, tiny, out)
        cfg["seeds"] = [0, 1]
        cfg["arms"] = [{"name": "random", "method": "random"},
                       {"name": "longest", "method": "top_k", "params": {"score": "h_chars"}}]  # same rows every seed
        return cfg

    real = forward.prefix_states
    built = []

    def counting(lm, ids, *a, **k):
        if k.get("desc", "prefix cache") == "prefix cache":  # training rows, not an eval set
            built.append(len(ids))
        return real(lm, ids, *a, **k)

    monkeypatch.setattr(forward, "prefix_states", counting)
    shared = run_eval(config(tmp_path / "shared"), show_progress=False)
    # random's two seeds train on different rows; longest's second seed reads its first seed's states
    assert len(built) == 3
    files = list((tmp_path / "shared" / "train_cache").glob("*.npy"))
    assert len(files) == train_prefix.KEEP  # the oldest selection's states were pruned
    # the same run with fit building every cache itself: the same numbers, bit for bit
    monkeypatch.setattr(eval_runner, "train_states", lambda *a, **k: (None, 0.0, False))
    built.clear()
    alone = run_eval(config(tmp_path / "alone"), show_progress=False)
    assert len(built) == 4
    for u, v in zip(shared["units"], alone["units"]):
        assert (u["arm"], u["seed"]) == (v["arm"], v["seed"])
        np.testing.assert_array_equal(u["train_losses"], v["train_losses"])
        for s in ("a", "b"):
            np.testing.assert_array_equal(u["losses"][s]["full"], v["losses"][s]["full"])


def test_damaged_or_foreign_prefix_caches_are_computed_again_with_the_same_results(tiny, tmp_path, caplog):
    cfg = _config(tmp_path, tiny, tmp_path / "out")
    cfg["seeds"] = [0]
    want = _unit(run_eval(cfg, show_progress=False))
    evals = sorted((tmp_path / "out" / "eval_cache").glob("*.npy"))
    trains = sorted((tmp_path / "out" / "train_cache").glob("*.npy"))
    assert evals and trains
    evals[0].write_bytes(evals[0].read_bytes()[:40])  # a cut-off write: no valid header
    np.save(trains[0], np.zeros((3, 32), np.float32))  # a valid file holding other rows' states
    import shutil
    shutil.rmtree(tmp_path / "out" / "units")  # so the unit trains and evaluates again
    with caplog.at_level("WARNING"):
        got = _unit(run_eval(cfg, show_progress=False))
    assert "is damaged" in caplog.text and "token states, these rows need" in caplog.text
    np.testing.assert_array_equal(got["train_losses"], want["train_losses"])
    for s in ("a", "b"):
        np.testing.assert_array_equal(got["losses"][s]["full"], want["losses"][s]["full"])
    # both caches were written again, whole
    assert np.load(evals[0]).shape[0] > 3 and np.load(trains[0]).shape[0] > 3


def test_a_unit_whose_eval_sets_changed_is_scored_again_from_its_kept_adapter_without_training(tiny, tmp_path,
                                                                                                 monkeypatch, caplog):
    cfg = _config(tmp_path, tiny, tmp_path / "out")
    first = _unit(run_eval(cfg, show_progress=False))
    # a set added: every unit key changes, but rows, trainer settings and seed do not
    more = [{"instruction": f"Extra {i}", "input": "", "output": "alpha beta gamma"} for i in range(5)]
    cfg["eval_sets"].append({"name": "c", "path": _write(tmp_path / "c.jsonl", more), "style": "human"})
    with monkeypatch.context() as m:
        fits = _count_calls(m, LoRATrainer, "fit")
        again = _unit(run_eval(cfg, show_progress=False))
        assert fits["n"] == 0
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "eval_cache").glob("*.npy")) == ["a", "b", "c"]
    assert again["rescored_from"] == first["key"] != again["key"]
    np.testing.assert_array_equal(again["train_losses"], first["train_losses"])
    assert (again["steps"], again["tokens"]) == (first["steps"], first["tokens"])
    for s in ("a", "b"):
        np.testing.assert_array_equal(again["losses"][s]["full"], first["losses"][s]["full"])
    # what retraining on the three sets gives, bit for bit
    fresh = _unit(run_eval({**cfg, "output": str(tmp_path / "fresh")}, show_progress=False))
    for s in ("a", "b", "c"):
        np.testing.assert_array_equal(again["losses"][s]["full"], fresh["losses"][s]["full"])
    # a damaged adapter: warned, the unit trains, same numbers
    adapter = tmp_path / "out" / "units" / "random" / "seed0" / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(b"not a safetensors file")
    cfg["eval_sets"].pop()
    with monkeypatch.context() as m, caplog.at_level("WARNING"):
        fits = _count_calls(m, LoRATrainer, "fit")
        redone = _unit(run_eval(cfg, show_progress=False))
        assert fits["n"] == 1
    assert "cannot load the kept adapter" in caplog.text and "rescored_from" not in redone
    # the eval prefix states of the removed set c were deleted, a's and b's kept
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "eval_cache").glob("*.npy")) == ["a", "b"]
    np.testing.assert_array_equal(redone["losses"]["a"]["full"], first["losses"]["a"]["full"])
    # other rows (a smaller budget): the kept adapter is not theirs, the unit trains
    cfg["budget"] = 12
    with monkeypatch.context() as m:
        fits = _count_calls(m, LoRATrainer, "fit")
        other = _unit(run_eval(cfg, show_progress=False))
        assert fits["n"] == 1 and "rescored_from" not in other


def test_load_adapter_restores_the_fitted_weights_and_refuses_a_partial_or_foreign_one(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    kw = dict(model=tiny, layers=2, batch_size=4, epochs=1, show_progress=False, lr=1e-2)
    fitted = LoRATrainer(**kw).fit(toy_rows(12), seed=5)
    fitted.save(tmp_path / "adapter", selection_hash="h")
    loaded = LoRATrainer(**kw).load_adapter(tmp_path / "adapter", seed=5, train_losses=fitted.losses_)
    want, got = _adapter(fitted), _adapter(loaded)
    assert want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (loaded.steps_, loaded.tokens_, loaded.n_rows_) == (fitted.steps_, fitted.tokens_, fitted.n_rows_)
    weights = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    save_file(dict(list(weights.items())[1:]), str(tmp_path / "adapter" / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        LoRATrainer(**kw).load_adapter(tmp_path / "adapter", seed=5)
    with pytest.raises(ValueError, match="other trainer settings"):
        LoRATrainer(**{**kw, "lr": 2e-2}).load_adapter(tmp_path / "adapter", seed=5)
