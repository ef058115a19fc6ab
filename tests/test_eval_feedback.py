"""curate.eval.feedback:lora_feedback, the training feedback of iterative kMQ, on a tiny causal LM."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("peft")

from tiny_lm import tiny_lm, toy_rows  # noqa: E402


def test_import_is_cheap_no_torch():
    code = ("import sys, importlib; m = importlib.import_module('curate.eval.feedback'); "
            "f = getattr(m, 'lora_feedback'); print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_lora_feedback_scores_every_cluster():
    from curate.eval.feedback import lora_feedback

    lm, tok = tiny_lm(seed=0, n_layers=3)
    rows = toy_rows(18)
    clusters = np.array([0, 1, 5] * 6)
    fb = lora_feedback(model=(lm, tok), layers=2, batch_size=4, max_new_tokens=4, per_cluster=3, seed=0)
    s = fb(rows, clusters)
    assert set(s) == {0, 1, 5} and all(isinstance(k, int) and np.isfinite(v) for k, v in s.items())
    assert fb.history_[-1]["scored"] == 9 and fb.history_[-1]["steps"] == 5
    # deterministic with its seed
    assert lora_feedback(model=(lm, tok), layers=2, batch_size=4, max_new_tokens=4, per_cluster=3, seed=0)(rows, clusters) == \
        pytest.approx(s, abs=1e-6)
    with pytest.raises(ValueError, match="cluster_ids"):
        fb(rows, clusters[:-1])


def test_feedback_score_is_gold_minus_generated_nll():
    """S = NLL(gold) - NLL(generated): a row whose gold answer is the model's own greedy output scores 0."""
    import pyarrow as pa

    from curate.eval.feedback import lora_feedback

    lm, tok = tiny_lm(seed=1, n_layers=2)
    fb = lora_feedback(model=(lm, tok), layers=1, batch_size=2, max_new_tokens=6, per_cluster=None, lr=1e-12)
    rows = toy_rows(4)
    # with a ~zero learning rate the adapted model is the base: its greedy answers are reproducible
    base_gen = fb._generate(lm, tok, [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                              add_generation_prompt=True)
                                     for q in rows.column("instruction").to_pylist()])
    own = rows.set_column(rows.column_names.index("output"), "output", pa.array(base_gen))
    own = own.set_column(own.column_names.index("input"), "input", pa.array([""] * 4))
    s = fb(own, np.arange(4))
    assert all(abs(v) < 1e-4 for v in s.values()), s


def test_feedback_scores_match_hand_computed_nlls_where_gold_and_generation_differ():
    """Per cluster, S = mean over its rows of NLL(gold) - NLL(greedy generation), the NLLs computed
    here by hand (mean token cross-entropy over the response tokens, end token included)."""
    import torch

    from curate.eval.feedback import lora_feedback
    from curate.train.encode import encode_texts, render_prompt

    lm, tok = tiny_lm(seed=2, n_layers=2)
    rows = toy_rows(6, seed=3)
    clusters = np.array([4, 4, 7, 7, 7, 9])
    fb = lora_feedback(model=(lm, tok), layers=1, batch_size=2, max_new_tokens=5, per_cluster=None, lr=1e-12)
    got = fb(rows, clusters)
    tr = fb.trainer_
    prompts = [render_prompt(tok, a, x, tr.template, tr.system_prompt)
               for a, x in zip(rows.column("instruction").to_pylist(), rows.column("input").to_pylist())]
    gen = fb._generate(lm, tok, prompts)  # lr ~0: the adapted model is the base model
    gold = rows.column("output").to_pylist()
    assert all(g != h for g, h in zip(gold, gen))

    def nll(responses):
        enc = encode_texts(tok, prompts, responses, template=tr.template, max_length=tr.max_length)
        out = []
        for ids, tgt in zip(enc.ids, enc.target):
            ids_t = torch.as_tensor(np.asarray(ids), dtype=torch.long)[None]
            with torch.no_grad():
                logp = torch.log_softmax(lm(ids_t).logits[0].double(), dim=-1)
            pos = np.flatnonzero(np.asarray(tgt))  # token t is predicted from position t - 1
            out.append(float(-logp[pos - 1, ids_t[0, pos]].mean()))
        return np.array(out)

    per_row = nll(gold) - nll(gen)
    want = {c: float(per_row[clusters == c].mean()) for c in (4, 7, 9)}
    assert got == pytest.approx(want, abs=1e-4)
    assert max(abs(v) for v in want.values()) > 5e-3  # not the all-zero score a broken feedback gives (tol 1e-4)
