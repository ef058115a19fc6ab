"""Tests for curate.score: LM loss masking (perplexity, IFD) on a tiny in-code Llama, Gopher
heuristics on hand-computed toys, the learned scorer and its CLI on planted data, the reward-model
hook, caching/resume, and one real SmolLM2 check (fluent text beats shuffled words)."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pyarrow as pa
import pytest

from curate.core.stage import StageContext
from curate.score import lm as lmlib
from curate.score.heuristics import HEURISTIC_COLUMNS, text_heuristics
from curate.score.rows import car_string, parse_car_string, row_fields

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROWS = [
    # (instruction, input, output) - different lengths so a batch needs padding
    ("name a big city", "", "paris is a big city ."),
    ("say hello", "", "hello"),
    ("repeat the input", "the cat sat on the mat", "the cat sat on the mat and the dog sat too ."),
]
PLAIN = "the dog sat on the mat ."


def _words(texts):
    out = set()
    for t in texts:
        out.update(re.findall(r"\w+|[^\w\s]+", t))
    return out


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A random 2-layer Llama with a word-level tokenizer, saved to disk like a real model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [lmlib.ALPACA_PROMPT_INPUT, lmlib.ALPACA_PROMPT_NO_INPUT, "Instruction: Input: Response:", PLAIN,
             "### user : ### assistant :"]
    texts += [" ".join(r) for r in ROWS]
    vocab = {"[PAD]": 0, "[UNK]": 1}
    for w in sorted(_words(texts)):
        vocab[w] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", unk_token="[UNK]")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      pad_token_id=0, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model, tok


def _nll(model, ids):
    """Per-position NLL of token t given tokens < t, t = 1..len-1, from the model's logits."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    return np.array([-lp[t - 1, ids[t]].item() for t in range(1, len(ids))])


def _enc(tok, s):
    return tok(s, add_special_tokens=True)["input_ids"]


def _table(rows=ROWS, plain=(PLAIN,)):
    n = len(rows) + len(plain)
    return pa.table({
        "id": [str(i) for i in range(n)],
        "text": [None] * len(rows) + list(plain),
        "instruction": [r[0] for r in rows] + [None] * len(plain),
        "input": [r[1] for r in rows] + [None] * len(plain),
        "output": [r[2] for r in rows] + [None] * len(plain),
    })


def _hand_ifd(model, tok, ins, inp, out, max_length=10_000):
    """s(A|Q), s(A), whole-text loss computed by hand from token id lists (no offsets used)."""
    q = lmlib.build_prompt(ins, inp, "alpaca")
    q_ids, a_ids = _enc(tok, q), _enc(tok, out)
    full = (q_ids + a_ids)[:max_length]
    nll = _nll(model, full)
    k = len(full) - len(q_ids)  # answer tokens that survive truncation
    cond = nll[len(q_ids) - 1:].mean() if k > 0 else np.nan
    tag = _enc(tok, "### Response:")
    unc = _nll(model, tag + a_ids)[len(tag) - 1:][:k].mean() if k > 0 else np.nan
    return cond, unc, nll.mean()


def test_ifd_and_perplexity_match_hand_computed_losses(tiny_lm, tmp_path):
    from curate.score.stages import IFD, Perplexity

    path, model, tok = tiny_lm
    t = _table()
    ifd = IFD(model=path, batch_size=2, device="cpu", dtype="float32", show_progress=False).annotate(
        t, StageContext(work_dir=tmp_path / "ifd", show_progress=False))
    ppl = Perplexity(model=path, batch_size=2, device="cpu", dtype="float32", show_progress=False).annotate(
        t, StageContext(work_dir=tmp_path / "ppl", show_progress=False))
    for i, r in enumerate(ROWS):
        cond, unc, whole = _hand_ifd(model, tok, *r)
        assert ifd.column("ifd_loss_cond")[i].as_py() == pytest.approx(cond, rel=1e-4)
        assert ifd.column("ifd_loss_uncond")[i].as_py() == pytest.approx(unc, rel=1e-4)
        assert ifd.column("ifd")[i].as_py() == pytest.approx(cond / unc, rel=1e-4)
        assert ifd.column("ifd_gt1")[i].as_py() == (cond / unc > 1)
        assert ppl.column("ppl_response")[i].as_py() == pytest.approx(math.exp(cond), rel=1e-4)
        assert ppl.column("ppl_text")[i].as_py() == pytest.approx(math.exp(whole), rel=1e-4)
    # Plain-text row: conditioned scores are NaN/null, whole-text perplexity is over `text`.
    j = len(ROWS)
    assert math.isnan(ifd.column("ifd")[j].as_py()) and ifd.column("ifd_gt1")[j].as_py() is None
    assert math.isnan(ppl.column("ppl_response")[j].as_py())
    assert ppl.column("ppl_text")[j].as_py() == pytest.approx(math.exp(_nll(model, _enc(tok, PLAIN)).mean()), rel=1e-4)


def test_ifd_truncation_uses_the_same_answer_tokens(tiny_lm, tmp_path):
    from curate.score.stages import IFD

    path, model, tok = tiny_lm
    r = ROWS[2]
    q_len = len(_enc(tok, lmlib.build_prompt(r[0], r[1], "alpaca")))
    max_length = q_len + 3  # keep exactly 3 answer tokens
    out = IFD(model=path, max_length=max_length, device="cpu", show_progress=False).annotate(
        _table([r], ()), StageContext(work_dir=tmp_path, show_progress=False))
    cond, unc, _ = _hand_ifd(model, tok, *r, max_length=max_length)
    assert out.column("ifd_loss_cond")[0].as_py() == pytest.approx(cond, rel=1e-4)
    assert out.column("ifd_loss_uncond")[0].as_py() == pytest.approx(unc, rel=1e-4)
    assert out.column("ifd_truncated")[0].as_py() is True
    full = IFD(model=path, device="cpu", show_progress=False).annotate(
        _table([r], ()), StageContext(work_dir=tmp_path / "full", show_progress=False))
    assert full.column("ifd_truncated")[0].as_py() is False
    # Prompt alone already fills max_length: no answer token left, so NaN rather than a guess.
    out = IFD(model=path, max_length=q_len, device="cpu", show_progress=False).annotate(
        _table([r], ()), StageContext(work_dir=tmp_path / "b", show_progress=False))
    assert math.isnan(out.column("ifd")[0].as_py())
    assert out.column("ifd_truncated")[0].as_py() is True  # cherry_ifd drops it as truncated


def test_lm_scoring_resumes_from_finished_shards(tiny_lm, tmp_path, monkeypatch):
    from curate.score.stages import Perplexity

    path, _, _ = tiny_lm
    stage = Perplexity(model=path, device="cpu", show_progress=False)
    ctx = StageContext(work_dir=tmp_path, show_progress=False)
    first = stage.annotate(_table(), ctx)
    assert list((tmp_path / "shards").glob("*.npz"))

    def boom(*a, **k):
        raise AssertionError("a finished shard was recomputed")

    monkeypatch.setattr(lmlib, "span_losses", boom)
    again = stage.annotate(_table(), ctx)
    for c in first.column_names:
        np.testing.assert_array_equal(again.column(c).to_numpy(), first.column(c).to_numpy())


def test_templates_and_chat_prompt(tiny_lm):
    assert lmlib.build_prompt("do x", "", "alpaca").endswith("### Instruction:\ndo x\n\n### Response:")
    assert "### Input:\nctx\n\n### Response:" in lmlib.build_prompt("do x", "ctx", "alpaca")
    assert lmlib.build_prompt("do x", "ctx", "plain") == "Instruction: do x Input: ctx Response: "
    with pytest.raises(ValueError, match="chat template"):
        lmlib.build_prompt("do x", "", "chat", tiny_lm[2])


def test_constructor_validation_names_the_parameter():
    from curate.core.registry import get_stage

    for name in ("perplexity", "ifd", "heuristics", "quality_model", "reward_model"):
        assert get_stage(name).name == name
    P = get_stage("perplexity")
    with pytest.raises(ValueError, match="template"):
        P(template="mistral")
    with pytest.raises(ValueError, match="max_length"):
        get_stage("ifd")(max_length=1)
    with pytest.raises(ValueError, match="batch_size"):
        P(batch_size=0)
    with pytest.raises(ValueError, match="columns"):
        get_stage("heuristics")(columns=["h_nope"])
    with pytest.raises(ValueError, match="model"):
        get_stage("reward_model")(model="")
    # Execution-only parameters stay out of the cache key; the model does not.
    p = P(batch_size=4, device="cpu")
    assert "batch_size" not in p.cache_params() and "device" not in p.cache_params()
    assert p.cache_params()["model"] == "SmolLM2-135M-Instruct"


def test_heuristics_on_hand_computed_toys():
    h = text_heuristics("a a a a\na a a a\nb")
    assert h["h_words"] == 9 and h["h_lines"] == 3 and h["h_chars"] == 17
    assert h["h_dup_line_frac"] == pytest.approx(1 / 3)
    assert text_heuristics("hello 123 !! world")["h_non_alpha_frac"] == pytest.approx(0.5)
    # bigrams of "a b a b a b c": (a,b) x3 is the top one: 3 * 2 chars / 7 chars
    assert text_heuristics("a b a b a b c")["h_top_2gram_frac"] == pytest.approx(6 / 7)
    assert text_heuristics("x y z w v x y z w v")["h_dup_5gram_frac"] == pytest.approx(1.0)
    assert text_heuristics("x y z w v q y z w v")["h_dup_5gram_frac"] == 0.0
    h = text_heuristics("- one\n- two...\nthe end")
    assert h["h_bullet_lines_frac"] == pytest.approx(2 / 3) and h["h_ellipsis_lines_frac"] == pytest.approx(1 / 3)
    assert text_heuristics("")["h_words"] == 0 and set(text_heuristics("")) == set(HEURISTIC_COLUMNS)


def test_heuristics_stage_uses_response_or_text():
    from curate.score.stages import Heuristics

    t = _table([("write ten words", "", "one two three")], ("a b c d e",))
    out = Heuristics().annotate(t, None)
    assert out.column("h_words").to_pylist() == [3.0, 5.0]
    out = Heuristics(field="instruction", columns=["h_words"]).annotate(t, None)
    assert out.column_names == ["h_words"] and out.column("h_words").to_pylist() == [3.0, 0.0]


def test_car_string_roundtrip_and_messages():
    s = car_string("Do it", "", "Done.")
    assert s == "Instruction: Do it Response: Done." and parse_car_string(s) == ("Do it", "", "Done.")
    assert parse_car_string(car_string("Do", "ctx", "ok")) == ("Do", "ctx", "ok")
    msgs = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]]
    t = pa.table({"id": ["0"], "text": [None], "messages": msgs})
    f = row_fields(t)
    assert f.structured[0] and (f.instruction[0], f.output[0]) == ("hi", "hello")


def _planted(n=60, seed=0):
    """Structured rows where good responses are long and repeat nothing, bad ones short and loopy."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(200)]
    pos, neg = [], []
    for i in range(n):
        good = " ".join(rng.choice(words, size=rng.integers(30, 60), replace=False))
        bad = " ".join(["again"] * rng.integers(3, 8))
        pos.append((f"task {i}", "", good))
        neg.append((f"task {i}", "", bad))
    return pos, neg


def _fields(triples):
    from curate.score.rows import RowFields

    I, X, O = (list(x) for x in zip(*triples))
    return RowFields(I, X, O, [""] * len(I), np.ones(len(I), bool))


def test_quality_model_learns_planted_signal_and_roundtrips(tmp_path):
    from curate.score.quality_model import QualityModel

    pos, neg = _planted()
    m = QualityModel(features=("heuristics",), C=1.0)
    X = m.featurize(_fields(pos + neg))
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    m.fit(X, y)
    assert m.kind_ == "logistic"
    tp, tn = _planted(20, seed=1)
    sp, sn = m.score(_fields(tp)), m.score(_fields(tn))
    assert (sp > sn).all()
    m2 = QualityModel.load(m.save(tmp_path / "q.npz"))
    np.testing.assert_allclose(m2.score(_fields(tp)), sp, rtol=1e-5)
    pm = QualityModel(features=("heuristics",)).fit(m.featurize(_fields(pos)), X_neg=m.featurize(_fields(neg)))
    assert pm.kind_ == "pairwise" and (pm.score(_fields(tp)) > pm.score(_fields(tn))).all()
    with pytest.raises(ValueError, match="features"):
        QualityModel(features=("bert",))


def test_train_scorer_cli_on_each_label_layout(tmp_path):
    from curate.score.quality_model import QualityModel
    from curate.score.stages import QualityModelStage
    from curate.score.train_scorer import read_labels, train_scorer

    pos, neg = _planted(40)
    pairs = tmp_path / "pairs.csv"
    import csv

    with open(pairs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["src", "pos", "neg"])
        for p, n in zip(pos, neg):
            w.writerow([f"Instruction: {p[0]} ", f"Response: {p[2]}", f"Response: {n[2]}"])
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"instruction": a, "input": x, "output": o, "label": lab}) + "\n"
                            for (a, x, o), lab in [(p, 1) for p in pos] + [(n, 0) for n in neg]))
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": o, "label": lab}) + "\n" for (_, _, o), lab in [(pos[0], 1), (neg[0], 0)]))
    assert read_labels(pairs)[0] == "pairs" and read_labels(rows)[0] == "rows"
    kind, f, y = read_labels(text)
    assert kind == "rows" and not f.structured.any() and list(y) == [1.0, 0.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="score"):
        read_labels(bad)

    out = tmp_path / "scorer.npz"
    m = train_scorer(pairs, out, features="heuristics", valid=rows)
    assert m.kind_ == "pairwise" and QualityModel.load(out).info_["valid_accuracy"] >= 0.95
    m = train_scorer(rows, tmp_path / "s2.npz", features="heuristics", valid=pairs)
    assert m.kind_ == "logistic" and m.info_["valid_pairwise_accuracy"] == 1.0
    # The stage uses a trained file given by path.
    t = _table([pos[0], neg[0]], ())
    q = QualityModelStage(model_path=str(out), show_progress=False).annotate(
        t, StageContext(work_dir=tmp_path / "w", show_progress=False)).column("quality").to_pylist()
    assert q[0] > q[1]


def test_shipped_scorer_loads_and_is_small():
    from curate.score.quality_model import QualityModel, default_model_path

    p = default_model_path()
    assert p.is_file() and p.stat().st_size < 2_000_000
    m = QualityModel.load(p)
    assert m.features == ("embedding", "heuristics") and m.coef_.shape == (384 + len(HEURISTIC_COLUMNS),)
    assert m.info_["labels"] == "car_ape_score_train.csv"


def test_reward_model_hook_matches_direct_forward(tiny_lm, tmp_path):
    from transformers import LlamaForSequenceClassification

    from curate.score.reward import RewardModel

    _, lm, tok = tiny_lm
    torch.manual_seed(1)
    cfg = lm.config
    cfg.num_labels = 1
    rm = LlamaForSequenceClassification(cfg).eval()
    path = tmp_path / "rm"
    rm.save_pretrained(path)
    tok.save_pretrained(path)
    t = _table()
    out = RewardModel(model=str(path), template="plain", device="cpu", batch_size=2, show_progress=False).annotate(
        t, StageContext(work_dir=tmp_path / "w", show_progress=False))
    for i, r in enumerate(ROWS):
        enc = tok(f"Instruction: {r[0]} Input: {r[1]} Response: {r[2]}", return_tensors="pt")
        with torch.no_grad():
            ref = rm(**enc).logits[0, 0].item()
        assert out.column("reward")[i].as_py() == pytest.approx(ref, rel=1e-4, abs=1e-5)


def test_annotator_output_is_cached_by_the_pipeline(tmp_path):
    pipeline = pytest.importorskip("curate.engine.pipeline")
    from curate.cache.store import StageStore
    from curate.score.stages import Heuristics

    runner = pipeline.Runner(StageStore(tmp_path), show_progress=False)
    t = _table([("a", "", "one two")], ())
    t1, rec1, _ = runner.apply(Heuristics(columns=["h_words"]), t, "parent", "0:heuristics")
    t2, rec2, _ = runner.apply(Heuristics(columns=["h_words"]), t, "parent", "0:heuristics")
    assert not rec1.cached and rec2.cached and t2.column("h_words").to_pylist() == [2.0]
    _, rec3, _ = runner.apply(Heuristics(columns=["h_chars"]), t, "parent", "0:heuristics")
    assert rec3.key != rec1.key and not rec3.cached


def test_real_smollm2_prefers_fluent_text_over_shuffled_words(tmp_path):
    """The default proxy LM (the shipped SmolLM2-135M GGUF, `make setup` installs it) loads and
    scores: in the default suite so the default model path runs in CI. No skip: a missing
    package is a failed install, not a reason to pass."""
    from curate.score.stages import Perplexity

    fluent = "The cat sat on the mat and looked out of the window at the birds in the garden."
    words = fluent.rstrip(".").split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words))) + "."
    t = _table([], (fluent, shuffled))
    out = Perplexity(device="cpu", show_progress=False).annotate(t, StageContext(work_dir=tmp_path, show_progress=False))
    ppl = out.column("ppl_text").to_pylist()
    assert ppl[0] < ppl[1] / 3


def test_chat_template_prompt_and_response_prefix(tiny_lm, tmp_path):
    from curate.score.stages import Perplexity

    path, model, tok = tiny_lm
    tok.chat_template = ("{% for m in messages %}### {{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                         "{% if add_generation_prompt %}### assistant :{% endif %}")
    try:
        q = lmlib.build_prompt("say hello", "", "chat", tok)
        assert q == "### user : say hello ### assistant :"
        assert lmlib.response_only_prefix("chat", tok) == "### assistant :"
        # The stage reads the chat template from the saved tokenizer: save a copy that has it.
        chat_dir = tmp_path / "chat_model"
        model.save_pretrained(chat_dir)
        tok.save_pretrained(chat_dir)
    finally:
        tok.chat_template = None
    t = _table([ROWS[1]], ())
    out = Perplexity(model=str(chat_dir), template="chat", device="cpu", dtype="float32", show_progress=False).annotate(
        t, StageContext(work_dir=tmp_path / "w", show_progress=False))
    q_ids, a_ids = _enc(tok, q), _enc(tok, ROWS[1][2])
    cond = _nll(model, q_ids + a_ids)[len(q_ids) - 1:].mean()
    assert out.column("ppl_response")[0].as_py() == pytest.approx(math.exp(cond), rel=1e-4)
