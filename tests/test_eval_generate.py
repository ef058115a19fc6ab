"""curate eval's generation-based sets and the GSM8K answer-line NLL, on a tiny causal LM."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_lm import tiny_lm  # noqa: E402

import curate.eval.generate as G  # noqa: E402
from curate.eval.losses import reference_losses  # noqa: E402
from curate.eval.runner import run_eval  # noqa: E402
from curate.eval.sets import answer_span  # noqa: E402
from curate.eval.stats import paired_delta, verdict  # noqa: E402
from curate.train.encode import encode_texts, render_prompt  # noqa: E402

# five gold solutions from /work/shared/data/eval/gsm8k_test.jsonl (rows 1, 3, 147, 490, 1114):
# plain, commas in the body, a comma in the answer, negative answers
GSM8K = [
    ("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the "
     "farmer\u2019s market.\n#### 18", "18"),
    ("The cost of the house and repairs came out to 80,000+50,000=$<<80000+50000=130000>>130,000\nHe increased the "
     "value of the house by 80,000*1.5=<<80000*1.5=120000>>120,000\nSo the new value of the house is "
     "120,000+80,000=$<<120000+80000=200000>>200,000\nSo he made a profit of "
     "200,000-130,000=$<<200000-130000=70000>>70,000\n#### 70000", "70000"),
    ("The first set had 500 pieces, and the second set had 3 times as many as the first set, so the second set has "
     "500*3=<<500*3=1500>>1500 pieces\nThe third set had one-quarter of the 500 pieces, so that means it had 500*.25= "
     "<<500*.25=125>>125 pieces\nIn total, that means Johnny picked up 500 + 1500+ 125= <<500+1500+125=2125>>2125 "
     "blocks\n#### 2,125", "2125"),
    ("-48 + 21 + (-3) = <<-48+21+(-3)=-30>>-30\n-30/3 = <<-30/3=-10>>-10 degrees\nThe average highest temperature "
     "recorded in Southlandia, Northlandia, and Midlandia is -10 degrees Fahrenheit.\n#### -10", "-10"),
    ("Start = +<<2=2>>2 degrees\nDrop 8 degrees = 2 - 8 = -6 degrees\nIncrease 3 degrees = -6 + 3 = -3 degrees\nIt "
     "was -3 degrees Celsius in the morning.\n#### -3", "-3"),
]


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(seed=0, n_layers=3, hidden=32)


def _chat(tok, q):
    return render_prompt(tok, q, "", "chat")


# -- answer extraction and scoring

@pytest.mark.parametrize("solution,gold", GSM8K)
def test_extract_answer_on_real_gsm8k_solutions(solution, gold):
    assert G.extract_answer(solution) == gold
    # without the #### line the last number of the body is taken; for these five it is the answer
    # (the subtraction "200,000-130,000" must not yield -130000, "2 - 8 = -6" keeps its sign)
    body = solution[:solution.rindex("####")]
    assert G.extract_answer(body) == gold


def test_normalisation_and_edge_cases():
    assert [G.normalise_number(x) for x in ("1,000", "18.0", "18.50", ".5", "-3", "abc")] == \
        ["1000", "18", "18.5", "0.5", "-3", None]
    assert G.extract_answer("So 10-3") == "3" and G.extract_answer("It costs $18.00.") == "18"
    assert G.extract_answer("#### 7 and then 9") == "7" and G.extract_answer("nothing") is None


def test_score_exact_match_and_contains():
    refs = [s for s, _ in GSM8K]
    gens = ["The answer is 18.", "#### 70,000", "I think 2124", "so -10.0 degrees", "#### 3"]
    np.testing.assert_array_equal(G.score("gsm8k_exact_match", gens, refs), [1, 1, 0, 1, 0])
    got = G.score("reference_contains", ["The capital is Paris!", "berlin", "x"], ["paris", "Munich", "?!"])
    assert got[:2].tolist() == [1.0, 0.0] and np.isnan(got[2])  # "?!" normalises to "": undefined
    with pytest.raises(ValueError, match="metric"):
        G.score("bleu", gens, refs)


def test_generate_and_score_with_planted_generations(tiny, monkeypatch):
    """The scoring path, with the generator replaced by known strings (a tiny LM cannot solve GSM8K)."""
    lm, tok = tiny
    planted = ["Step.\n#### 18", "70,000", "#### 2124", "It is -10 degrees", "#### +3"]
    seen = {}

    def fake(lm_, tok_, prompts, *, max_new_tokens, batch_size=8, eos_token_id=None):
        seen.update(n=len(prompts), max_new_tokens=max_new_tokens)
        return list(planted), np.array([4, 2, 3, 5, 2])

    monkeypatch.setattr(G, "greedy_generate", fake)
    refs = [s for s, _ in GSM8K]
    scores, records, meta = G.generate_and_score(lm, tok, ["q"] * 5, refs, [f"g{i}" for i in range(5)],
                                                 metric="gsm8k_exact_match", max_new_tokens=4)
    np.testing.assert_array_equal(scores["gsm8k_exact_match"], [1, 1, 0, 1, 0])
    assert [r["extracted"] for r in records] == ["18", "70000", "2124", "-10", "3"]
    assert seen == {"n": 5, "max_new_tokens": 4} and meta["hit_max_new_tokens"] == 2


def test_greedy_generation_on_tiny_lm_is_deterministic_and_bounded(tiny):
    lm, tok = tiny
    prompts = [_chat(tok, q) for q in ("Add 2 and 2.", "Name a colour please, any colour at all.", "Hi")]
    a, na = G.greedy_generate(lm, tok, prompts, max_new_tokens=6, batch_size=2)
    b, nb = G.greedy_generate(lm, tok, prompts, max_new_tokens=6, batch_size=2)
    assert a == b and na.tolist() == nb.tolist()
    assert na.max() == 6 and (na >= 1).all() and (na <= 6).all()  # random weights rarely stop early
    short, ns = G.greedy_generate(lm, tok, prompts, max_new_tokens=2, batch_size=2)
    assert (ns <= 2).all() and ns.max() == 2
    # left padding: a prompt generated alone or next to a longer one gives the same tokens
    alone, _ = G.greedy_generate(lm, tok, prompts[2:], max_new_tokens=6, batch_size=1)
    assert alone[0] == a[2]
    # token-id prompts (what the runner passes) give the same as the same prompts as text
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    assert G.greedy_generate(lm, tok, ids, max_new_tokens=6, batch_size=2)[0] == a


# -- answer-line NLL

def test_answer_line_nll_equals_hand_computation(tiny):
    lm, tok = tiny
    refs = ["She has 3 apples.\nThen 9 more.\n#### 72", "No answer line here.", "Short.\n####   5  \n"]
    prompts = [_chat(tok, f"Question {i}?") for i in range(3)]
    spans = [answer_span(r) for r in refs]
    assert spans[0] == (len(refs[0]) - 7, len(refs[0])) and spans[1] is None and refs[2][slice(*spans[2])] == "####   5"
    enc = encode_texts(tok, prompts, refs, template="chat", max_length=256, spans=spans)
    got = reference_losses(lm, tok, enc, batch_size=2)
    assert np.isnan(got["answer"][1]) and np.isfinite(got["answer"][[0, 2]]).all()
    for i in (0, 2):
        p_ids = tok(prompts[i], add_special_tokens=False)["input_ids"]
        r_ids = tok(refs[i] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        assert len(r_ids) == len(refs[i]) + 1  # the tiny tokenizer is byte-level: one ASCII char per token
        ids = torch.tensor([p_ids + r_ids])
        a, b = spans[i]
        pos = np.arange(len(p_ids) + a, len(p_ids) + b)  # exactly the "#### N" characters' tokens
        assert tok.decode(ids[0, pos]) == refs[i][a:b]
        with torch.no_grad():
            logp = torch.log_softmax(lm(ids).logits[0].double(), -1)
        hand = float(np.mean([-logp[j - 1, ids[0, j]].item() for j in pos]))
        assert got["answer"][i] == pytest.approx(hand, abs=1e-5)
        assert got["answer"][i] != pytest.approx(got["full"][i], abs=1e-4)  # a different quantity
    # truncation that cuts the answer line leaves it undefined
    cut = reference_losses(lm, tok, encode_texts(tok, prompts, refs, max_length=256, max_response_tokens=10, spans=spans))
    assert np.isnan(cut["answer"]).all() and np.isfinite(cut["full"]).all()


# -- the whole loop

def _files(tmp_path):
    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu".split()
    pool = [{"instruction": f"Task {i}: " + " ".join(rng.choice(words, size=int(rng.integers(2, 8)))), "input": "",
             "output": " ".join(rng.choice(words, size=int(rng.integers(2, 30))))} for i in range(40)]
    gsm = [{"question": f"Q{i}: " + " ".join(rng.choice(words, 4)), "answer": " ".join(rng.choice(words, 5)) + f"\n#### {i}"}
           for i in range(8)]
    out = {}
    for name, rows in (("pool", pool), ("gsm", gsm)):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
        out[name] = str(p)
    return out


def _config(tmp_path, tiny, out, **over):
    f = _files(tmp_path)
    cfg = {"name": "g", "output": str(out), "pool": {"paths": [f["pool"]]},
           "decontaminate": {"exact": True, "minhash_threshold": None, "embed_threshold": None},
           "eval_sets": [{"name": "gsm", "path": f["gsm"], "style": "gsm8k",
                          "generate": {"max_new_tokens": 5, "metric": "gsm8k_exact_match", "batch_size": 4}}],
           "budget": 8, "seeds": [0, 1],
           "arms": [{"name": "random", "method": "random"}, {"name": "longest", "method": "top_k", "params": {"score": "h_chars"}}],
           "train": {"model": tiny, "layers": 2, "batch_size": 4, "epochs": 1, "max_length": 128},
           "eval": {"batch_size": 4, "content_skip": 2}, "n_boot": 200}
    cfg.update(over)
    return cfg


def test_run_eval_with_a_generation_set_then_rerun_generates_nothing(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    res = run_eval(_config(tmp_path, tiny, out), show_progress=False)
    data = json.loads((out / "results.json").read_text())
    comp = data["comparisons"][0]["arms"]["longest"]
    assert set(comp["sets"]["gsm"]) == {"full", "content", "end", "answer", "gsm8k_exact_match"}
    r = comp["sets"]["gsm"]["gsm8k_exact_match"]
    assert r["n_examples"] == 8 and r["n_seeds"] == [2, 2] and "gsm8k_exact_match" in comp["verdict"]
    assert all(0 <= u["means"]["gsm"]["gsm8k_exact_match"] <= 1 for u in data["units"])
    assert data["base"]["means"]["gsm"]["gsm8k_exact_match"] is not None and data["base"]["generate"]["gsm"]["mean_new_tokens"] <= 5
    md = (out / "report.md").read_text()
    assert "**gsm8k_exact_match** (accuracy; positive = arm more accurate)" in md and "**answer** (loss" in md
    for u in ("base/base", "random/seed0", "longest/seed1"):
        gens = [json.loads(x) for x in (out / "units" / u / "generations.jsonl").read_text().splitlines()]
        assert len(gens) == 8 and all(g["n_new_tokens"] <= 5 for g in gens)
        assert (out / "units" / u / "generations_sample.md").read_text().count("**generation**") == 5
    # a rerun of the finished units neither trains nor generates, and reports the same scores
    calls = {"n": 0}
    real = G.greedy_generate

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(G, "greedy_generate", counting)
    again = run_eval(_config(tmp_path, tiny, out), show_progress=False)
    assert calls["n"] == 0 and all(u["cached"] for u in again["units"])
    for u, v in zip(res["units"], again["units"]):
        np.testing.assert_array_equal(u["losses"]["gsm"]["gsm8k_exact_match"], v["losses"]["gsm"]["gsm8k_exact_match"])
    # changing the generation option invalidates the units (and only adds generation calls)
    cfg = _config(tmp_path, tiny, out)
    cfg["eval_sets"][0]["generate"]["max_new_tokens"] = 3
    run_eval({**cfg, "seeds": [0]}, show_progress=False, arms=["random"])
    assert calls["n"] == 2  # base + random seed0


def test_accuracy_direction_in_the_verdict(tiny, tmp_path, monkeypatch):
    """Planted: the `longest` arm answers every question, `random` none. Higher accuracy must read as
    "beats random", and only when the set is a verdict set."""
    calls = {"n": 0}

    def fake(lm, tok, prompts, *, max_new_tokens, batch_size=8, eos_token_id=None):
        calls["n"] += 1  # order of calls: base, random seed 0, 1, longest seed 0, 1
        right = calls["n"] >= 4
        return [f"#### {i if right else i + 100}" for i in range(len(prompts))], np.full(len(prompts), 2)

    monkeypatch.setattr(G, "greedy_generate", fake)
    data = run_eval(_config(tmp_path, tiny, tmp_path / "v", verdict_sets=["gsm"]), show_progress=False)
    comp = data["comparisons"][0]["arms"]["longest"]
    r = comp["sets"]["gsm"]["gsm8k_exact_match"]
    assert r["delta"] == 1.0 and r["ci"][0] > 0 and r["win_rate"] == 1.0
    assert comp["verdict"]["gsm8k_exact_match"] == "beats random"
    # the same numbers under the loss convention would be "worse": the direction matters
    assert verdict({"gsm": r}, ["gsm"]) == "worse than random"
    # a generation set that is not a verdict set gives no verdict on its metric
    calls["n"] = 0
    cfg = _config(tmp_path, tiny, tmp_path / "v2")
    cfg["eval_sets"].append({"name": "gsm_b", "path": cfg["eval_sets"][0]["path"], "style": "gsm8k", "n": 6})
    cfg["verdict_sets"] = ["gsm_b"]
    comp = run_eval(cfg, show_progress=False)["comparisons"][0]["arms"]["longest"]
    assert comp["verdict"]["gsm8k_exact_match"] == "not evaluated" and comp["sets"]["gsm"]["gsm8k_exact_match"]["delta"] == 1.0


def test_paired_delta_win_rate_direction():
    acc_a = np.array([[1, 1, 0, 1.0]] * 2)
    acc_r = np.array([[0, 1, 0, 0.0]] * 2)
    assert paired_delta(acc_a, acc_r, n_boot=100, higher_is_better=True)["win_rate"] == 0.5
    assert paired_delta(acc_a, acc_r, n_boot=100)["win_rate"] == 0.0
    assert verdict({}, []) == "not evaluated"


def test_generate_config_is_validated(tiny, tmp_path):
    from curate.core.errors import ConfigError

    cfg = _config(tmp_path, tiny, tmp_path / "x")
    cfg["eval_sets"][0]["generate"] = {"metric": "bleu"}
    with pytest.raises(ConfigError, match="generate.metric"):
        run_eval(cfg, show_progress=False)
    cfg["eval_sets"][0]["generate"] = {"max_new_tokens": 0}
    with pytest.raises(ConfigError, match="max_new_tokens"):
        run_eval(cfg, show_progress=False)
