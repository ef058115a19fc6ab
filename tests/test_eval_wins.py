"""``curate eval`` for "beating random on every style": selection queries per eval set (disjoint from
the scored examples), RDS+ over them (``query_targets``), an out-of-target set, length-neutral arms."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_lm import tiny_lm  # noqa: E402

from curate.core.errors import ConfigError  # noqa: E402
from curate.eval.config import load_eval_config  # noqa: E402
from curate.eval.queries import build_sets, check_disjoint  # noqa: E402
from curate.eval.runner import run_eval  # noqa: E402
from curate.eval.sets import EvalSet, load_eval_set  # noqa: E402

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu nu xi omicron pi rho".split()


def _write(path, rows, array: bool = False):
    path.write_text(json.dumps(rows) if array else "".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hash_encode(self, texts, show_progress=False):
    """Bag of words hashed into 32 dimensions: a deterministic stand-in for MiniLM."""
    out = np.zeros((len(texts), 32), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % 32] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def fake_embed(monkeypatch):
    import curate.select.rds as rds
    from curate.embed.stage import Embed

    monkeypatch.setattr(Embed, "encode", hash_encode)
    monkeypatch.setattr(rds, "_TARGET_CACHE", {})


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(seed=0, n_layers=3, hidden=32)


@pytest.fixture
def files(tmp_path):
    """A self-instruct-like file whose 12 prompts all reappear in an AlpacaEval-like file of 30
    (joined with a blank line, as AlpacaEval does), a GSM8K-like test and train split, an
    IFEval-like prompt/response file, and a pool."""
    rng = np.random.default_rng(0)
    si = [{"id": f"si{i}", "instruction": f"Rewrite task {i}: " + " ".join(rng.choice(WORDS, 3)),
           "instances": [{"input": f"text {i}", "output": " ".join(rng.choice(WORDS, 4))}]} for i in range(12)]
    ae = [{"dataset": "selfinstruct", "instruction": f"{r['instruction']}\n\n{r['instances'][0]['input']}",
           "output": " ".join(rng.choice(WORDS, 5))} for r in si]
    ae += [{"dataset": "oasst", "instruction": f"Open question {i}: " + " ".join(rng.choice(WORDS, 4)),
            "output": " ".join(rng.choice(WORDS, int(rng.integers(3, 12))))} for i in range(18)]
    ae_long = [{**r, "output": r["output"] + " " + " ".join(rng.choice(WORDS, 10))} for r in ae]  # "GPT-4" references
    g_test = [{"question": f"Sum {i} and {i + 1} apples", "answer": f"{i} + {i + 1} = <<{i}+{i + 1}={2 * i + 1}>>{2 * i + 1}\n#### {2 * i + 1}"}
              for i in range(10)]
    g_train = [{"question": f"Add {i} pears to {i + 2} pears", "answer": f"{i} + {i + 2} = {2 * i + 2}\n#### {2 * i + 2}"}
               for i in range(20)]
    ife = [{"prompt": f"Answer in lowercase only: name {i} " + " ".join(rng.choice(WORDS, 2)),
            "response": " ".join(rng.choice(WORDS, int(rng.integers(1, 9))))} for i in range(8)]
    pool = [{"instruction": f"Task {i}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(2, 8)))),
             "input": "", "output": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 60))))} for i in range(60)]
    pool += [{"instruction": f"Add {i} apples to {i} pears", "input": "", "output": f"{2 * i}\n#### {2 * i}"} for i in range(12)]
    return {"si": _write(tmp_path / "si.jsonl", si), "ae": _write(tmp_path / "ae.json", ae, array=True),
            "ae4": _write(tmp_path / "ae4.json", ae_long, array=True), "gt": _write(tmp_path / "gt.jsonl", g_test),
            "gtr": _write(tmp_path / "gtr.jsonl", g_train), "ife": _write(tmp_path / "ife.jsonl", ife),
            "pool": _write(tmp_path / "pool.jsonl", pool)}


def _sets(files, q: int = 4):
    return [
        {"name": "self_instruct", "path": files["si"], "style": "human",
         "queries": {"n": q, "seed": 0, "draw": "queries_first"}},
        {"name": "ae_davinci", "path": files["ae"], "style": "davinci003", "n": 10, "seed": 0, "stratify": "dataset",
         "queries": {"n": q, "seed": 0, "stratify": "dataset"}},
        {"name": "ae_gpt4", "path": files["ae4"], "style": "gpt4", "n": 10, "seed": 0, "stratify": "dataset",
         "queries": {"n": q, "seed": 0, "stratify": "dataset"}},
        {"name": "gsm8k", "path": files["gt"], "style": "gsm8k", "n": 6, "strip_calculator": True,
         "queries": {"n": q, "seed": 0, "path": files["gtr"]}},
        {"name": "ifeval", "path": files["ife"], "style": "gpt4_ifeval"},
    ]


def _config(files, tiny, out, **over):
    multi = ["self_instruct", "ae_davinci", "ae_gpt4", "gsm8k"]
    cfg = {"name": "wins", "output": str(out), "pool": {"paths": [files["pool"]]},
           "decontaminate": {"exact": True, "minhash_threshold": 0.5, "embed_threshold": None},
           "eval_sets": _sets(files), "verdict_sets": ["self_instruct", "ae_davinci", "ae_gpt4"],
           "out_of_target": ["ifeval"], "budget": 12, "seeds": [0],
           "arms": [{"name": "random", "method": "random", "seeds": [0, 1]},
                    {"name": "longest", "method": "top_k", "params": {"score": "h_chars"}, "selection_only": True},
                    {"name": "length_matched", "method": "length_matched_random", "match": "longest"},
                    {"name": "rds_multi", "method": "rds", "query_targets": multi},
                    {"name": "longest_ln", "method": "top_k", "params": {"score": "h_chars", "length_neutral": True}},
                    {"name": "rds_multi_ln", "method": "rds", "query_targets": multi, "params": {"length_neutral": True}}],
           "compare_also": ["length_matched"],
           "train": {"model": tiny, "layers": 2, "batch_size": 4, "epochs": 1, "max_length": 128},
           "eval": {"batch_size": 4, "content_skip": 2}, "n_boot": 200}
    cfg.update(over)
    return cfg


def test_queries_are_disjoint_from_every_scored_example(files):
    cfg = load_eval_config({"name": "q", "pool": {"paths": [files["pool"]]}, "eval_sets": _sets(files), "budget": 4,
                            "arms": [{"name": "random", "method": "random"}]})
    sets, queries = build_sets(cfg.eval_sets)
    by = {s.name: s for s in sets}
    norm = {s.name: {" ".join(p.split()).lower() for p in s.prompts()} for s in sets}
    scored = set().union(*norm.values())
    assert sorted(queries) == ["ae_davinci", "ae_gpt4", "gsm8k", "self_instruct"]
    assert {len(q) for q in queries.values()} == {4}  # the same count per task
    for name, q in queries.items():
        assert not {" ".join(p.split()).lower() for p in q.prompts()} & scored, name
    # self-instruct: queries first, from the prompts AlpacaEval does not score; scored = the other 8
    si_in_ae = {" ".join(p.split()).lower() for p in by["ae_davinci"].prompts()} & \
        {" ".join(p.split()).lower() for p in load_eval_set(files["si"]).prompts()}
    assert si_in_ae and len(by["self_instruct"]) == 12 - 4
    assert not set(queries["self_instruct"].ids) & set(by["self_instruct"].ids)
    # AlpacaEval: the scored 10 are the rows drawn without queries; both reference styles share the prompts
    plain = load_eval_set(files["ae"], n=10, seed=0, stratify="dataset")
    assert by["ae_davinci"].ids == plain.ids
    assert queries["ae_davinci"].meta["rows"] == queries["ae_gpt4"].meta["rows"]  # ids name the file: rows match
    assert queries["ae_davinci"].prompts() == queries["ae_gpt4"].prompts()
    assert queries["ae_davinci"].reference != queries["ae_gpt4"].reference
    # GSM8K: queries from the train file, calculator annotations stripped like the scored set
    assert all(i.startswith("gtr.jsonl:") for i in queries["gsm8k"].ids)
    # deterministic
    again = build_sets(cfg.eval_sets)[1]
    assert all(again[k].ids == q.ids for k, q in queries.items())


def test_check_disjoint_fails_loudly_on_a_shared_row_or_prompt():
    s = EvalSet("a", ["x1", "x2"], ["Say hi", "Say bye"], ["", ""], ["hi", "bye"], meta={"path": "f.json"})
    ok = EvalSet("a", ["x3"], ["Other"], [""], ["o"], meta={"path": "f.json"})
    check_disjoint([s], {"a": ok})
    with pytest.raises(ValueError, match="scored row"):
        check_disjoint([s], {"a": EvalSet("a", ["x2"], ["changed"], [""], ["o"], meta={"path": "f.json"})})
    with pytest.raises(ValueError, match="prompt of scored example a:x1"):
        check_disjoint([s], {"b": EvalSet("b", ["y"], ["  say   HI "], [""], ["o"], meta={"path": "g.json"})})


def test_too_few_query_candidates_names_the_set(files):
    sets = _sets(files, q=5)
    sets[0]["queries"]["n"] = 12  # self-instruct has 12 rows, some scored by AlpacaEval
    cfg = load_eval_config({"name": "q", "pool": {"paths": [files["pool"]]}, "eval_sets": sets, "budget": 4,
                            "arms": [{"name": "random", "method": "random"}]})
    with pytest.raises(ValueError, match=r"eval_sets\['self_instruct'\].queries.n=12: only"):
        build_sets(cfg.eval_sets)


@pytest.mark.parametrize("change,match", [
    (lambda c: c["arms"][3].update(query_targets=["ifeval"]), "not an eval set with queries"),
    (lambda c: c["arms"][3].update(method="top_k", params={"score": "h_chars"}), "needs a targeted method"),
    (lambda c: c["arms"][3].update(params={"targets": "x"}), "either query_targets or params.targets"),
    (lambda c: c.update(verdict_sets=["self_instruct", "ifeval"]), "also in verdict_sets"),
    (lambda c: c["eval_sets"][4].update(queries={"n": 2}), "has queries"),
    (lambda c: c["arms"].append({"name": "z", "method": "zipfit", "params": {"targets": c["eval_sets"][4]["path"]}}),
     "out-of-target set 'ifeval'"),
    (lambda c: c.update(reference_arm="longest"), "selection_only"),
    (lambda c: c["eval_sets"][0]["queries"].update(path="x.jsonl"), "queries_first"),
])
def test_config_errors_name_the_problem(files, tiny, tmp_path, change, match):
    cfg = _config(files, tiny, tmp_path / "x")
    change(cfg)
    with pytest.raises(ConfigError, match=match):
        load_eval_config(cfg)


def test_smoke_rds_multi_and_length_neutral_arms_end_to_end(files, tiny, tmp_path, fake_embed):
    out = tmp_path / "run"
    res = run_eval(_config(files, tiny, out), show_progress=False)
    data = json.loads((out / "results.json").read_text())
    # every split written, and disjoint
    for name, e in data["eval_sets"].items():
        assert not set(e["scored_ids"]) & set(e["query_ids"]), name
    assert data["eval_sets"]["ifeval"]["n_queries"] == 0 and data["eval_sets"]["ifeval"]["n_scored"] == 8
    assert data["eval_sets"]["self_instruct"]["n_scored"] == 8 and data["eval_sets"]["gsm8k"]["n_queries"] == 4
    assert sorted(p.name for p in (out / "queries").iterdir()) == ["ae_davinci.jsonl", "ae_gpt4.jsonl", "gsm8k.jsonl",
                                                                   "self_instruct.jsonl"]
    # the selection_only arm is built (length_matched's reference) but never trained
    arms = {u["arm"] for u in res["units"]}
    assert arms == {"random", "length_matched", "rds_multi", "longest_ln", "rds_multi_ln"}
    lengths = data["selection_lengths"]["arms"]
    assert "longest" in lengths and lengths["longest"]["max_share_diff"] > 0.5
    # length-neutral arms hold the pool's decile shares to within one row of 12
    for a in ("longest_ln", "rds_multi_ln"):
        assert lengths[a]["max_share_diff"] < 1 / 12 + 1e-9, (a, lengths[a])
    # rds_multi selects toward the GSM8K queries: the pool's arithmetic rows, which random rarely draws
    sel = {u["arm"]: u["selection_hash"] for u in res["units"] if u["seed"] == 0}
    assert len(set(sel.values())) == len(sel)
    import pyarrow.parquet as pq

    ids = pq.read_table(out / "units" / "rds_multi" / "seed0" / "selected_ids.parquet").column("id").to_pylist()
    pool = pq.read_table(out / "pool" / "pool.parquet")
    apples = {i for i, a in zip(pool.column("id").to_pylist(), pool.column("instruction").to_pylist()) if "apples" in a}
    assert len(apples & set(ids)) >= 3
    comp = data["comparisons"][0]
    assert comp["out_of_target"] == ["ifeval"] and "ifeval" not in comp["verdict_sets"]
    assert all("verdict_out_of_target" in r for r in comp["arms"].values())
    md = (out / "report.md").read_text()
    assert "out-of-target verdict (ifeval)" in md and "## Scored examples and selection queries" in md
    assert "## Response length of the selections" in md and (out / "lengths.png").exists()
    # a rerun trains nothing; a changed query draw changes only the arms that use the queries
    again = run_eval(_config(files, tiny, out), show_progress=False)
    assert all(u["cached"] for u in again["units"])
    cfg = _config(files, tiny, out)
    for s in cfg["eval_sets"][1:3]:
        s["queries"]["seed"] = 1
    third = run_eval(cfg, show_progress=False)
    retrained = {u["arm"] for u in third["units"] if not u["cached"]}
    assert retrained <= {"rds_multi", "rds_multi_ln"} and "random" not in retrained


def test_ifeval_prompt_response_layout(tmp_path):
    f = _write(tmp_path / "ife.jsonl", [{"prompt": "Write in caps.", "response": "OK"}, {"prompt": "Two", "response": "2"}])
    s = load_eval_set(f)
    assert (s.instruction, s.input, s.reference, s.ids) == (["Write in caps.", "Two"], ["", ""], ["OK", "2"],
                                                            ["ife.jsonl:1", "ife.jsonl:2"])


def test_shipped_wins_config_validates_and_splits_as_documented(monkeypatch):
    """configs/eval/alpaca_1k_wins.yaml loads; with its data present, the split is the documented one."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    # its data paths are under $CURATE_DATA; unset, the benchmarks' default folder (results_io.data_dir)
    monkeypatch.setenv("CURATE_DATA", os.environ.get("CURATE_DATA") or str(root.parent / "shared" / "data"))
    cfg = load_eval_config(root / "configs" / "eval" / "alpaca_1k_wins.yaml")
    assert cfg.out_of_target == ["ifeval"] and "ifeval" not in cfg.verdict_sets
    assert [a["name"] for a in cfg.arms if not a.get("selection_only")] == [
        "random", "length_matched", "rds_multi", "top_k_quality_ln", "top_k_quality_lnt", "car_ln", "rds_multi_ln"]
    if not all(Path(p).exists() for s in cfg.eval_sets for p in (s.path, (s.queries and s.queries.path) or s.path)):
        pytest.skip("the eval data files are not on this machine")
    sets, queries = build_sets(cfg.eval_sets)
    assert [len(s) for s in sets] == [202, 300, 300, 400, 540]
    assert {k: len(q) for k, q in queries.items()} == {"self_instruct": 50, "alpaca_davinci": 50, "alpaca_gpt4": 50,
                                                       "gsm8k": 50}
