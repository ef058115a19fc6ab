"""curate eval: the full loop on a tiny causal LM (two arms, a few steps), resume, statistics, controls."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_lm import tiny_lm  # noqa: E402

from curate.eval.arms import length_matched, make_selection, shuffled_responses  # noqa: E402
from curate.eval.decontam import decontaminate  # noqa: E402
from curate.eval.runner import run_eval  # noqa: E402
from curate.eval.sets import load_eval_set  # noqa: E402
from curate.eval.stats import holm, paired_delta, verdict  # noqa: E402

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(seed=0, n_layers=3, hidden=32)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    pool = [{"instruction": f"Task {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8)))),
             "input": "", "output": " ".join(rng.choice(WORDS, size=int(rng.integers(2, 30))))} for i in range(60)]
    ev = [{"instruction": f"Question {i}: " + " ".join(rng.choice(WORDS, 4)), "input": "",
           "output": " ".join(rng.choice(WORDS, size=6))} for i in range(10)]
    # planted contamination: pool rows that copy an eval prompt exactly and almost exactly
    pool.append({"instruction": ev[0]["instruction"], "input": "", "output": "leak"})
    pool.append({"instruction": ev[1]["instruction"].upper() + "  ", "input": "", "output": "leak"})
    return {"pool": _write(tmp_path / "pool.jsonl", pool), "ev": _write(tmp_path / "ev.jsonl", ev),
            "ev2": _write(tmp_path / "ev2.jsonl", [{"question": r["instruction"], "answer": r["output"] + " #### 4"} for r in ev])}


def _config(files, tiny, out, **over):
    cfg = {"name": "t", "output": str(out), "pool": {"paths": [files["pool"]]},
           "decontaminate": {"exact": True, "minhash_threshold": 0.5, "embed_threshold": None},
           "eval_sets": [{"name": "a", "path": files["ev"], "style": "human"},
                         {"name": "b", "path": files["ev2"], "style": "gsm8k"}],
           "budget": 12, "seeds": [0, 1],
           "arms": [{"name": "random", "method": "random"}, {"name": "longest", "method": "top_k", "params": {"score": "h_chars"}}],
           "train": {"model": tiny, "layers": 2, "batch_size": 4, "epochs": 1, "max_length": 128},
           "eval": {"batch_size": 4, "content_skip": 2}, "n_boot": 200}
    cfg.update(over)
    return cfg


def test_full_loop_two_arms(files, tiny, tmp_path):
    res = run_eval(_config(files, tiny, tmp_path / "run"), show_progress=False)
    out = tmp_path / "run"
    assert (out / "report.md").exists() and (out / "deltas.png").exists() and (out / "loss_vs_step.png").exists()
    data = json.loads((out / "results.json").read_text())
    assert data["decontamination"]["dropped"] == 2 and data["decontamination"]["by_rule"]["exact"] == 2
    assert data["pool_rows"] == 60
    units = res["units"]
    assert len(units) == 4
    # identical compute across arms: same rows and steps (tokens differ and are recorded)
    assert {u["rows"] for u in units} == {12} and {u["steps"] for u in units} == {3}
    assert len({u["tokens"]["target"] for u in units if u["arm"] == "random"}) == 2  # random subsets differ per seed
    comp = data["comparisons"][0]["arms"]["longest"]
    assert set(comp["sets"]) == {"a", "b"}
    # the verdict follows from the intervals (the rule itself is checked by hand in
    # test_paired_delta_null_and_planted_effect), and each delta is the arm's mean loss minus
    # random's, recomputed here from the unit records
    want = {}
    for name in ("a", "b"):
        lo, hi = comp["sets"][name]["full"]["ci"]
        want[name] = -1 if hi < 0 else (1 if lo > 0 else 0)
        means = {arm: np.mean([u["means"][name]["full"] for u in data["units"] if u["arm"] == arm])
                 for arm in ("longest", "random")}
        assert comp["sets"][name]["full"]["delta"] == pytest.approx(means["longest"] - means["random"], abs=1e-9)
    expect = {(-1, -1): "beats random", (1, 1): "worse than random", (-1, 1): "style-dependent",
              (1, -1): "style-dependent", (0, 0): "no detectable difference", (-1, 0): "better on a only",
              (0, -1): "better on b only", (1, 0): "worse on a only", (0, 1): "worse on b only"}
    assert comp["verdict"]["full"] == expect[(want["a"], want["b"])]
    for u in data["units"]:  # every unit moved the model away from the base
        assert u["means"]["a"]["full"] != data["base"]["means"]["a"]["full"]
    assert "| longest |" in (out / "report.md").read_text()


def test_determinism_and_resume_after_a_killed_unit(files, tiny, tmp_path, monkeypatch):
    from curate.train import lora

    cfg = _config(files, tiny, tmp_path / "r1")
    first = run_eval(cfg, show_progress=False)
    # same seed, fresh output dir: identical per-example losses
    again = run_eval(_config(files, tiny, tmp_path / "r2"), show_progress=False)
    for u, v in zip(first["units"], again["units"]):
        for s in ("a", "b"):
            np.testing.assert_allclose(u["losses"][s]["full"], v["losses"][s]["full"], rtol=0, atol=1e-6)
    # kill the third unit of a new run mid-training, then resume
    real_fit = lora.LoRATrainer.fit
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real_fit(self, *a, **k)

    monkeypatch.setattr(lora.LoRATrainer, "fit", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_eval(_config(files, tiny, tmp_path / "r3"), show_progress=False)
    units = tmp_path / "r3" / "units"
    done = sorted(p.parent.name + "/" + p.name for p in units.glob("*/seed*") if (p / "unit.json").exists())
    assert done == ["random/seed0", "random/seed1"]
    mtime = (units / "random" / "seed0" / "unit.json").stat().st_mtime_ns
    calls["n"] = 100
    res = run_eval(_config(files, tiny, tmp_path / "r3"), show_progress=False)
    assert calls["n"] == 102  # only the two unfinished units trained
    assert [u["cached"] for u in res["units"]] == [True, True, False, False]
    assert (units / "random" / "seed0" / "unit.json").stat().st_mtime_ns == mtime
    for u, v in zip(first["units"], res["units"]):
        np.testing.assert_allclose(u["losses"]["a"]["full"], v["losses"]["a"]["full"], atol=1e-6)
    # an unchanged rerun trains nothing
    calls["n"] = 200
    assert all(u["cached"] for u in run_eval(_config(files, tiny, tmp_path / "r3"), show_progress=False)["units"])
    assert calls["n"] == 200


def test_eval_prefix_cache_gives_the_same_losses(files, tiny, tmp_path):
    a = run_eval(_config(files, tiny, tmp_path / "p1", seeds=[0]), show_progress=False)
    cfg = _config(files, tiny, tmp_path / "p2", seeds=[0])
    cfg["train"] = {**cfg["train"], "prefix_cache": False, "response_logits_only": False}
    b = run_eval(cfg, show_progress=False)
    for u, v in zip(a["units"], b["units"]):
        np.testing.assert_allclose(u["train_losses"], v["train_losses"], rtol=1e-4, atol=1e-5)
        for s in ("a", "b"):
            for m in ("full", "content", "end"):
                np.testing.assert_allclose(u["losses"][s][m], v["losses"][s][m], rtol=1e-4, atol=1e-5)
        # the GSM8K-style set also has the `#### N` answer-line NLL, equal on both paths
        assert "answer" not in u["losses"]["a"] and np.isfinite(u["losses"]["b"]["answer"]).all()
        np.testing.assert_allclose(u["losses"]["b"]["answer"], v["losses"]["b"]["answer"], rtol=1e-4, atol=1e-5)


def test_paired_delta_null_and_planted_effect():
    rng = np.random.default_rng(0)
    base = rng.normal(2.0, 0.5, 300)
    runs = base + rng.normal(0, 0.01, (6, 1)) + rng.normal(0, 0.01, (6, 300))
    null = paired_delta(runs[:3], runs[3:], n_boot=2000)
    # with 3 seeds the seed-level bootstrap is too narrow (here it excludes 0 on a null); the Welch
    # interval on per-seed means is wider and the reported CI is the wider of the two
    assert null["ci_boot"][0] > 0 and null["ci"][0] < 0 < null["ci"][1] and null["p"] > 0.05
    better = runs[:3] - 0.1
    eff = paired_delta(better, runs[3:], n_boot=2000)
    assert eff["ci"][1] < 0 and abs(eff["delta"] - (-0.1 + null["delta"])) < 1e-9
    assert verdict({"x": eff, "y": eff}, ["x", "y"]) == "beats random"
    assert verdict({"x": eff, "y": eff}, ["x", "y"], reference="length_matched") == "beats length_matched"
    assert verdict({"x": null, "y": null}, ["x", "y"]) == "no detectable difference"
    assert verdict({"x": eff, "y": null}, ["x", "y"]) == "better on x only"
    worse = paired_delta(runs[:3] + 0.1, runs[3:], n_boot=2000)
    assert verdict({"x": null, "y": worse, "z": worse}, ["x", "y", "z"]) == "worse on y, z only"
    assert verdict({"x": eff, "y": worse}, ["x", "y"]) == "style-dependent"
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_decontamination_rules(tmp_path):
    ev = ["Write a short poem about the sea and the sky at night", "Compute the sum of 2 and 3"]
    pool = pa.table({"id": ["e", "n", "m", "x"], "text": ["t"] * 4, "input": [""] * 4, "output": ["o"] * 4,
                     "instruction": ["write a short poem about the sea and the sky at night",
                                     "Totally unrelated instruction about cooking pasta",
                                     "Write a short poem about the sea and the sky at night please",
                                     "Compute the product of 7 and 9"]})
    drop, rep = decontaminate(pool, ev, embed_threshold=None)
    assert drop.tolist() == [True, False, True, False] and rep["by_rule"] == {"exact": 1, "minhash": 1}


@pytest.mark.parametrize("backend", ["onnx", "sentence_transformers"])
def test_decontamination_embedding_rule_real_minilm(backend):
    """A paraphrase with no shared 5-gram is caught by MiniLM cosine (0.92 here), on either
    backend (the same model; onnx is the default); an unrelated prompt and a 0.87 one are not."""
    ev = ["Write a short poem about the sea and the sky at night", "Compute the sum of 2 and 3"]
    pool = pa.table({"id": ["p", "u", "s"], "text": ["t"] * 3, "input": [""] * 3, "output": ["o"] * 3,
                     "instruction": ["Compose a brief poem about the night sky over the ocean",
                                     "Totally unrelated instruction about cooking pasta", "Add 2 and 3 and give the sum"]})
    drop, rep = decontaminate(pool, ev, embed_threshold=0.9, embed_backend=backend)
    assert drop.tolist() == [True, False, False]
    assert rep["by_rule"] == {"exact": 0, "minhash": 0, "embedding": 1} and rep["params"]["embed_backend"] == backend


def test_controls_length_matched_and_shuffled():
    rng = np.random.default_rng(0)
    lens = rng.integers(1, 400, 2000)
    pool = pa.table({"id": [f"p{i}" for i in range(2000)], "text": ["t"] * 2000, "instruction": [f"q{i}" for i in range(2000)],
                     "input": [""] * 2000, "output": ["x" * int(n) for n in lens]})
    ref = np.sort(lens)[-300:]  # a "longest" selection
    lm = length_matched(pool, ref, 100, seed=0)
    got = np.array([len(o) for o in lm.column("output").to_pylist()])
    assert len(lm) == 100 and abs(np.median(got) - np.median(ref)) < 0.1 * np.median(ref)
    sh = shuffled_responses(pool, 50, seed=1)
    orig = dict(zip(pool.column("instruction").to_pylist(), pool.column("output").to_pylist()))
    assert all(orig[q] != o for q, o in zip(sh.column("instruction").to_pylist(), sh.column("output").to_pylist()))
    assert sorted(sh.column("output").to_pylist()) == sorted(orig[q] for q in sh.column("instruction").to_pylist())
    with pytest.raises(ValueError, match="match"):
        make_selection({"name": "lm", "method": "length_matched_random", "match": "nope"}, pool, 10, 0)
    src = pool.append_column("source", pa.array(["a"] * 1000 + ["b"] * 1000))
    mix = make_selection({"name": "d", "method": "mixture", "fractions": {"a": 0.25, "b": 0.75}}, src, 40, 0)
    assert mix.column("source").to_pylist().count("a") == 10 and len(mix) == 40
    with pytest.raises(ValueError, match="fractions"):
        make_selection({"name": "d", "method": "mixture", "fractions": {"a": 0.5}}, src, 40, 0)


def test_arm_selections_embed_in_fp32_on_every_host(tmp_path, monkeypatch):
    """An arm's MiniLM vectors are fp32 even where the CPU default would be int8, so its rows and
    unit key do not depend on the machine; the environment is restored after."""
    import curate.models.loading
    from curate.embed import quantize

    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: {"avx2", "avx512_vnni"})
    monkeypatch.setattr(quantize, "VARIANTS", {"int8": quantize.Variant("int8", ("avx512_vnni",), 9.0, True, "toy")})
    monkeypatch.delenv(quantize.PRECISION_ENV, raising=False)
    assert quantize.default_precision() == "int8"
    n = 30
    q = [f"Question {i} about topic {i % 5}" for i in range(n)]
    a = [f"Answer {i} " * (i % 7 + 1) for i in range(n)]
    pool = pa.table({"id": [f"p{i}" for i in range(n)], "text": [f"{x}\n\n{y}" for x, y in zip(q, a)],
                     "instruction": q, "input": [""] * n, "output": a})
    sel = make_selection({"name": "kc", "method": "kcenter"}, pool, 5, 0, cache_dir=tmp_path / "cache")
    assert len(sel) == 5 and quantize.PRECISION_ENV not in os.environ
    manifests = [json.loads(m.read_text()) for m in (tmp_path / "cache").glob("*/manifest.json")]
    embed = [m for m in manifests if m["stage"].endswith(":embed")]
    assert len(embed) == 1 and embed[0]["params"]["resolved"]["precision"] == "float32"


def test_eval_set_layouts(tmp_path):
    si = _write(tmp_path / "si.jsonl", [{"id": "t0", "instruction": "Fix grammar.", "instances": [{"input": "i is", "output": "I am"}]}])
    g = _write(tmp_path / "g.jsonl", [{"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}])
    s = load_eval_set(si)
    assert (s.instruction, s.input, s.reference, s.ids) == (["Fix grammar."], ["i is"], ["I am"], ["t0"])
    assert load_eval_set(g, strip_calculator=True).reference == ["2+2=4\n#### 4"]


def test_config_errors_name_the_key(files, tiny, tmp_path):
    from curate.core.errors import ConfigError

    with pytest.raises(ConfigError, match="reference arm 'rnd'"):
        run_eval(_config(files, tiny, tmp_path / "x", reference_arm="rnd"))
    with pytest.raises(ConfigError, match="budgett"):
        run_eval({**_config(files, tiny, tmp_path / "x"), "budgett": 3})


def test_max_new_units_gives_partial_report_then_resumes(files, tiny, tmp_path):
    cfg = _config(files, tiny, tmp_path / "m", seeds=[0])
    part = run_eval(cfg, show_progress=False, max_new_units=1)
    assert part["complete"] is False and [u["arm"] for u in part["units"]] == ["random"]
    assert "Partial report" in (tmp_path / "m" / "report.md").read_text()
    full = run_eval(cfg, show_progress=False, max_new_units=1)
    assert full["complete"] is True and [u["cached"] for u in full["units"]] == [True, False]


def test_partial_invocation_builds_only_the_selections_it_needs(files, tiny, tmp_path, monkeypatch):
    from curate.eval import runner

    built = []
    real = runner.make_selection

    def counting(arm, pool, budget, seed, **kw):
        built.append((arm["name"], seed))
        return real(arm, pool, budget, seed, **kw)

    monkeypatch.setattr(runner, "make_selection", counting)
    cfg = _config(files, tiny, tmp_path / "p")
    cfg["arms"] = cfg["arms"] + [{"name": "lm", "method": "length_matched_random", "match": "longest"}]
    part = run_eval(cfg, show_progress=False, max_new_units=1)
    # one unit trained; the five without a record are reported missing without building their rows
    assert built == [("random", 0)] and part["complete"] is False
    built.clear()
    rest = run_eval(cfg, show_progress=False, seeds=[1])
    # random seed 0's record is checked against its rows; the length-matched arm pools every seed of
    # `longest` (built once each), whichever seeds run now
    assert built == [("random", 0), ("random", 1), ("longest", 1), ("longest", 0), ("lm", 1)]
    assert sorted((u["arm"], u["seed"]) for u in rest["units"]) == [("lm", 1), ("longest", 1), ("random", 0), ("random", 1)]


def test_carried_pool_json_skips_decontamination(files, tiny, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from curate.eval import decontam

    cfg = _config(files, tiny, tmp_path / "c", seeds=[0])
    run_eval(cfg, show_progress=False, max_new_units=0)
    pdir = tmp_path / "c" / "pool"
    ids = pq.read_table(pdir / "pool.parquet").column("id").to_pylist()
    (pdir / "pool.parquet").unlink()  # what a checkout that carried only pool.json has
    real = decontam.decontaminate
    monkeypatch.setattr(decontam, "decontaminate", lambda *a, **k: pytest.fail("decontaminated again"))
    res = run_eval(cfg, show_progress=False, max_new_units=0)
    assert pq.read_table(pdir / "pool.parquet").column("id").to_pylist() == ids and res["decontamination"]["dropped"] == 2
    # a pool.json whose dropped ids do not fit the rows read is not trusted
    meta = json.loads((pdir / "pool.json").read_text())
    meta["report"]["dropped_ids"] = meta["report"]["dropped_ids"][:1]
    (pdir / "pool.json").write_text(json.dumps(meta))
    (pdir / "pool.parquet").unlink()
    calls = []
    monkeypatch.setattr(decontam, "decontaminate", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_eval(cfg, show_progress=False, max_new_units=0)
    assert calls == [1] and pq.read_table(pdir / "pool.parquet").column("id").to_pylist() == ids


def test_pool_is_the_same_table_built_or_read_back(files, tiny, tmp_path):
    """Stage caches key on the pool's content hash, so a freshly built pool (a new checkout that
    carried pool.json) must hash like the pool.parquet a resumed run reads, or cached scores
    (hours of IFD) are recomputed: Parquet renames list items, which changes the hash."""
    import pyarrow.parquet as pq

    from curate.core.hashing import table_fingerprint
    from curate.eval.config import load_eval_config
    from curate.eval.runner import EvalRun, build_pool

    cfg = load_eval_config(_config(files, tiny, tmp_path / "fp", seeds=[0]))
    prompts = [p for s in EvalRun(cfg, show_progress=False).eval_sets() for p in s.prompts()]
    out = tmp_path / "fp"
    built, _ = build_pool(cfg, prompts, out, False)
    assert any(pa.types.is_list(f.type) for f in built.schema)  # the case Parquet changes
    read, _ = build_pool(cfg, prompts, out, False)  # from pool.parquet
    (out / "pool" / "pool.parquet").unlink()
    carried, _ = build_pool(cfg, prompts, out, False)  # from pool.json alone
    assert table_fingerprint(built) == table_fingerprint(read) == table_fingerprint(carried)
    assert table_fingerprint(read) == table_fingerprint(pq.read_table(out / "pool" / "pool.parquet"))


def test_arms_filter_and_unknown_method(files, tiny, tmp_path):
    from curate.core.errors import ConfigError

    cfg = _config(files, tiny, tmp_path / "f", seeds=[0])
    cfg["arms"] = cfg["arms"] + [{"name": "future", "method": "not_a_stage"}]
    with pytest.raises(ConfigError, match="not_a_stage"):
        run_eval(cfg, show_progress=False)
    res = run_eval(cfg, show_progress=False, arms=["longest"])
    assert sorted({u["arm"] for u in res["units"]}) == ["longest", "random"]


def test_arms_filter_keeps_the_match_arm_of_a_length_matched_arm(files, tiny, tmp_path, monkeypatch):
    from curate.eval import runner

    built = []
    real = runner.make_selection
    monkeypatch.setattr(runner, "make_selection", lambda arm, *a, **kw: built.append(arm["name"]) or real(arm, *a, **kw))
    cfg = _config(files, tiny, tmp_path / "lm", seeds=[0])
    cfg["arms"] = cfg["arms"] + [{"name": "lm", "method": "length_matched_random", "match": "longest"}]
    res = run_eval(cfg, show_progress=False, arms=["lm"])
    # `longest` is filtered out: its rows are built as lm's reference, but it is not trained
    assert sorted(u["arm"] for u in res["units"]) == ["lm", "random"] and "longest" in built
    cfg["arms"][2]["match"] = "nope"
    from curate.core.errors import ConfigError

    with pytest.raises(ConfigError, match="must name an earlier arm"):
        run_eval(cfg, show_progress=False, arms=["lm"])


def test_pool_holdout_rows_are_not_in_the_pool(files, tiny, tmp_path):
    cfg = _config(files, tiny, tmp_path / "h", seeds=[0], budget=8)
    cfg["pool"] = {"paths": [files["pool"]], "sample": {"pool.jsonl": 40}, "holdout": {"pool.jsonl": 10}}
    res = run_eval(cfg, show_progress=False, max_new_units=0)
    hold = [json.loads(x) for x in (tmp_path / "h" / "pool" / "holdout_pool.jsonl.jsonl").read_text().splitlines()]
    import pyarrow.parquet as pq

    pool_ids = set(pq.read_table(tmp_path / "h" / "pool" / "pool.parquet").column("id").to_pylist())
    assert len(hold) == 10 and not ({h["id"] for h in hold} & pool_ids) and res["pool_rows"] <= 40


def test_seeds_slice_then_rest(files, tiny, tmp_path):
    cfg = _config(files, tiny, tmp_path / "s")
    first = run_eval(cfg, show_progress=False, seeds=[0])
    assert first["complete"] is False and sorted((u["arm"], u["seed"]) for u in first["units"]) == [("longest", 0), ("random", 0)]
    rest = run_eval(cfg, show_progress=False, seeds=[1])
    assert rest["complete"] is True and len(rest["units"]) == 4 and sum(not u["cached"] for u in rest["units"]) == 2


def test_pool_key_keeps_the_settings_of_pools_built_before_embed_backend():
    from curate.eval.config import DecontamConfig
    from curate.eval.runner import _decontam_key

    legacy = {"exact": True, "minhash_threshold": 0.5, "embed_threshold": 0.9}  # the key's dict before the option
    assert _decontam_key(DecontamConfig(embed_backend="sentence_transformers")) == legacy
    assert _decontam_key(DecontamConfig()) == {**legacy, "embed_backend": "onnx"}  # new default: a new pool
