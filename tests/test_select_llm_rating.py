"""``llm_rater`` + ``llm_rating`` (AlpaGasus, Chen et al., ICLR 2024): LLM ratings 0-5 and top-rated rows."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from tiny_lm import save_tiny_lm, tiny_lm, toy_rows

import curate
from curate.core.stage import StageContext
from curate.score import llm_rating as rating_mod
from curate.score.llm_rating import (
    SYSTEM_PROMPT,
    LLMRater,
    parse_rating,
    rate_batch,
    rating_messages,
    render_rating_prompt,
)
from curate.select.base import NOT_SELECTED
from curate.select.llm_rating import (
    BELOW_MIN,
    BELOW_TOP,
    NO_RATING,
    LLMRating,
    rating_order,
)


@pytest.mark.parametrize("review, want", [
    ("4.5\nThe response is accurate.", 4.5),
    ("5", 5.0),
    (" 3 \nok", 3.0),                             # float() strips spaces, as the script's rule does
    ("The answer is fine.\nscore: 4\nmore", 4.0),  # fallback on score:
    ("Rating given below\nScore: 2.5", 2.5),      # Score: (the script's own fallback fails here)
    ("### Explanation:\nThe score of 5 is high", math.nan),
    ("8\ntoo high", math.nan),                    # off the 0-5 scale
    ("nan\n", math.nan),
    ("", math.nan),
])
def test_parse_rule_by_hand(review, want):
    got = parse_rating(review)
    assert (math.isnan(got) and math.isnan(want)) or got == want


def test_prompt_is_the_papers():
    msgs = rating_messages("Name a colour.", "", "Blue.")
    assert msgs[0] == {"role": "system", "content": SYSTEM_PROMPT}
    user = msgs[1]["content"]
    assert user.startswith("###Instruction:\nName a colour.\n\n### Input:\n\n\n### Response:\nBlue.\n\n")
    assert "rate according to the accuracy of the response" in user and "scale of 0 to 5" in user
    assert "helpfulness" in rating_messages("a", "", "b", "helpfulness")[1]["content"]


class ScriptedRater:
    """A stand-in LM whose greedy answer is scripted by the prompt: the generate path, no weights."""

    def __init__(self, tok, answers: dict[str, str]):
        import torch

        self.tok, self.answers, self._p = tok, answers, torch.nn.Parameter(torch.zeros(1))
        self.calls = 0

    def parameters(self):
        return iter([self._p])

    def generate(self, input_ids, attention_mask, max_new_tokens, **kw):
        import torch

        self.calls += 1
        rows = []
        for x, a in zip(input_ids, attention_mask):
            prompt = self.tok.decode(x[a.bool()])
            ans = next(v for k, v in self.answers.items() if k in prompt)
            rows.append(self.tok.encode(ans, add_special_tokens=False)[:max_new_tokens])
        L = max(map(len, rows))
        pad = self.tok.pad_token_id
        new = torch.tensor([r + [pad] * (L - len(r)) for r in rows], dtype=torch.long)
        return torch.cat([input_ids, new], dim=1)


def test_generate_path_parses_each_rows_answer_in_input_order():
    _, tok = tiny_lm()
    answers = {"apple": "4.5\nAccurate.", "pear": "Poor.\nScore: 1", "plum": "### Explanation:\n?"}
    fruits = ["plum", "apple", "pear", "apple", "pear"]
    prompts = [render_rating_prompt(tok, rating_messages(f"Describe the {f}" + "!" * i, "", "It is a fruit."))
               for i, f in enumerate(fruits)]
    lm = ScriptedRater(tok, answers)
    r = rate_batch(lm, tok, prompts, scoring="generate", batch_size=2)
    np.testing.assert_array_equal(r["rating"], [np.nan, 4.5, 1.0, 4.5, 1.0])
    assert list(r["text"]) == [answers[f] for f in fruits] and lm.calls == 3


def test_expected_score_by_hand_and_padding_invariant():
    import torch

    lm, tok = tiny_lm()
    prompts = [render_rating_prompt(tok, rating_messages("Add 2 and 2" + "?" * i, "", "4")) for i in range(5)]
    got = rate_batch(lm, tok, prompts, scoring="expected", batch_size=3)
    digits = [tok.encode(str(d), add_special_tokens=False)[0] for d in range(6)]
    for i, p in enumerate(prompts):  # one row at a time, no padding: E[k] = sum_k k softmax(logits[digits])_k
        ids = torch.tensor([tok.encode(p, add_special_tokens=False)])
        with torch.inference_mode():
            logits = lm(input_ids=ids).logits[0, -1].double()
        p6 = torch.softmax(logits[digits], -1).numpy()
        assert got["rating"][i] == pytest.approx(float(np.dot(np.arange(6), p6)), abs=1e-5)
        assert got["mass"][i] == pytest.approx(float(torch.softmax(logits, -1)[digits].sum()), abs=1e-6)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("rater") / "lm")


def test_annotator_columns_plain_rows_and_resume(tiny_path, tmp_path, monkeypatch):
    rows = toy_rows(10)
    plain = pa.table({"id": ["p"], "text": ["plain text"], "instruction": [None], "input": [None], "output": [None],
                      "source": ["toy"]}, schema=rows.schema)
    t = pa.concat_tables([rows, plain])
    st = LLMRater(model=tiny_path, scoring="expected", device="cpu", dtype="float32", show_progress=False)
    assert st.output_columns() == ["llm_rating", "llm_rating_mass"]
    ctx = StageContext(work_dir=tmp_path / "w", show_progress=False)
    out = st.annotate(t, ctx)
    assert out.column_names == st.output_columns()
    r = out.column("llm_rating").to_numpy()
    assert np.isnan(r[-1]) and np.all((r[:-1] >= 0) & (r[:-1] <= 5))
    # a second run over the same scratch folder reads the saved shard: no rating call at all
    monkeypatch.setattr(rating_mod, "rate_batch", lambda *a, **k: pytest.fail("recomputed a saved shard"))
    np.testing.assert_array_equal(st.annotate(t, ctx).column("llm_rating").to_numpy(), r)
    gen = LLMRater(model=tiny_path, device="cpu", dtype="float32", max_new_tokens=2)
    assert gen.output_columns() == ["llm_rating", "llm_rating_text"]
    assert "batch_size" not in gen.cache_params() and gen.cache_params()["resolved"]["weights"]


def rated(ratings) -> pa.Table:
    n = len(ratings)
    return pa.table({"id": [f"r{i}" for i in range(n)], "text": ["t"] * n,
                     "llm_rating": pa.array(np.asarray(ratings, float)), "n_tokens": pa.array(np.full(n, 10))})


RATINGS = [4.5, 5.0, np.nan, 3.0, 4.5, 4.0, 5.0]


def test_selection_by_hand():
    t = rated(RATINGS)
    sel = LLMRating(budget=2).select(t, None)
    assert np.flatnonzero(sel.keep).tolist() == [1, 6]
    reasons = LLMRating(budget=3).select(t, None).reason
    assert reasons[2] == NO_RATING and reasons[3] == BELOW_TOP
    # the third row is one of the two 4.5s, decided by the seed; each seed's choice is stable
    picks = {s: tuple(np.flatnonzero(LLMRating(budget=3, seed=s).select(t, None).keep)) for s in range(8)}
    assert {p for p in picks.values()} == {(0, 1, 6), (1, 4, 6)}
    assert all(picks[s] == tuple(np.flatnonzero(LLMRating(budget=3, seed=s).select(t, None).keep)) for s in range(8))
    sel = LLMRating(budget=4, min_rating=4.5).select(t, None)
    assert np.flatnonzero(sel.keep).tolist() == [0, 1, 4, 6]
    assert sel.reason.tolist() == [None, None, NO_RATING, BELOW_MIN, None, BELOW_MIN, None]
    np.testing.assert_array_equal(sel.extras["llm_rating_score"], np.asarray(RATINGS))
    with pytest.raises(ValueError, match="only 4 of 7 rows are rated >= min_rating=4.5"):
        LLMRating(budget=5, min_rating=4.5).select(t, None)
    assert rating_order(np.array([1.0, np.nan, 2.0]), 0).tolist() == [2, 0, 1]


def test_exact_budgets_and_token_budget():
    rng = np.random.default_rng(0)
    r = rng.choice([3.0, 3.5, 4.0, 4.5, 5.0, np.nan], size=50)
    t = rated(r)
    for budget, k in ((1, 1), (0.2, 10), (33, 33), (50, 50)):
        sel = LLMRating(budget=budget).select(t, None)
        assert sel.n_kept == k
        assert set(sel.reason[~sel.keep]) <= {BELOW_TOP, NO_RATING, NOT_SELECTED}
        kept, rest = r[sel.keep], r[~sel.keep]
        if not np.isnan(kept).any() and not np.isnan(rest).all():  # every pick rated at least as high as any other row
            assert kept.min() >= np.nanmax(rest)
    assert LLMRating(budget={"tokens": 55}).select(t, None).n_kept == 5


def test_rater_parameters_are_checked_at_construction():
    with pytest.raises(ValueError, match="scoring"):
        LLMRating(budget=3, rater={"scoring": "vote"})
    with pytest.raises(ValueError, match="rater"):
        LLMRating(budget=3, rater={"temperature": 0.7})
    with pytest.raises(ValueError, match="criterion"):
        LLMRater(criterion="style")
    assert [s.name for s in LLMRating(budget=3).prerequisites(["id", "text"])] == ["llm_rater"]
    assert LLMRating(budget=3).prerequisites(["llm_rating"]) == []


def test_raw_rows_through_curate_select(tiny_path, tmp_path):
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in toy_rows(12).to_pylist()]
    rater = {"model": tiny_path, "scoring": "expected", "device": "cpu", "dtype": "float32"}
    ds, prov = curate.select(rows, schema="canonical", method="llm_rating", budget=4, rater=rater, cache_dir=str(tmp_path),
                             return_provenance=True)
    assert len(ds) == 4
    p = prov.to_pylist()
    top = sorted((r["llm_rating_score"] for r in p), reverse=True)[:4]
    assert sorted(ds["llm_rating"], reverse=True) == top


def test_the_shipped_recipe(tiny_path, tmp_path):
    import json

    import yaml
    from select_toys import REPO, dolly_rows

    cfg = yaml.safe_load((REPO / "configs" / "instruction" / "llm_rating.yaml").read_text())
    assert cfg["extends"] == "base.yaml" and cfg["stages"][-1]["type"] == "llm_rating"
    tiny = {"model": tiny_path, "device": "cpu", "dtype": "float32", "max_new_tokens": 2, "show_progress": False}
    stages = [dict(s, **tiny) if s["type"] == "llm_rater" else s for s in cfg["stages"]]
    stages[-1] = {**stages[-1], "budget": 5}
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in dolly_rows(20)))
    res = curate.run({"name": "r", "input": {"path": str(pool)}, "stages": stages, "output": {"dir": str(tmp_path / "o")}},
                     show_progress=False, cache_dir=str(tmp_path / "c"))
    assert res.counts["n_selected"] == 5  # the tiny LM's answers never parse: 5 of the unrated rows, by seed
