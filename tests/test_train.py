"""LoRA trainer: response-only mask, length-grouped batches, CRN seeds, and exactness of each speed trick."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from tiny_lm import tiny_lm, toy_rows  # noqa: E402

from curate.train.encode import encode_table, length_grouped_batches  # noqa: E402
from curate.train.forward import (nll_from_prefix, nll_plain, nll_response_only, pad_batch,  # noqa: E402
                                  prefix_states)
from curate.train.lora import LoRATrainer, resolve_layers  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm(seed=0, n_layers=4)


def _perturbed_model(tiny, layers=2, seed=0):
    """A LoRA model whose B matrices are non-zero (fresh LoRA is an exact no-op, which would hide bugs)."""
    tr = LoRATrainer(model=tiny, layers=layers, show_progress=False)
    m = tr.new_model(seed)
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return tr, m


def _lora_grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_response_mask_covers_exactly_the_response_and_end_token(tiny):
    lm, tok = tiny
    rows = toy_rows(6)
    enc = encode_table(tok, rows, max_length=512)
    for i in range(len(enc)):
        resp = rows.column("output")[i].as_py() + "<|im_end|>"
        n_resp = len(tok(resp, add_special_tokens=False)["input_ids"])
        assert enc.target[i].sum() == n_resp
        assert enc.target[i][-n_resp:].all() and not enc.target[i][:-n_resp].any()
        assert tok.decode(enc.ids[i][enc.target[i]]) == resp
        assert enc.has_end[i]
    short = encode_table(tok, rows, max_length=40)
    assert all(len(x) <= 40 for x in short.ids)
    assert not short.has_end.all()


def test_loss_is_mean_nll_over_response_tokens_only(tiny):
    lm, tok = tiny
    enc = encode_table(tok, toy_rows(4), max_length=512)
    x, att, need = pad_batch(enc.ids, enc.target, tok.pad_token_id)
    with torch.no_grad():
        logits = lm(input_ids=x, attention_mask=att).logits
        nll = nll_plain(lm, x, att, need)
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    manual = []
    for b in range(len(enc)):
        for t in range(len(enc.ids[b]) - 1):
            if enc.target[b][t + 1]:
                manual.append(-lp[b, t, enc.ids[b][t + 1]].item())
    assert len(manual) == int(enc.n_target.sum()) == len(nll)
    np.testing.assert_allclose(nll.numpy(), manual, rtol=1e-5, atol=1e-6)
    # changing a prompt token changes nothing but the conditioning: the count of scored tokens stays
    assert int(need.sum()) == int(enc.n_target.sum())


def test_length_grouped_batches_cover_each_row_once_with_less_padding():
    rng_l = np.random.default_rng(0)
    lengths = rng_l.integers(10, 500, size=203)
    for grouped in (True, False):
        b = length_grouped_batches(lengths, 8, np.random.default_rng(1), 64, grouped)
        assert len(b) == int(np.ceil(203 / 8))
        assert sorted(np.concatenate(b).tolist()) == list(range(203))
    pad = lambda bs: sum(int(lengths[x].max()) * len(x) for x in bs)  # noqa: E731
    assert pad(length_grouped_batches(lengths, 8, np.random.default_rng(1), 64, True)) < \
        0.8 * pad(length_grouped_batches(lengths, 8, np.random.default_rng(1), 64, False))


def test_trick4_padding_does_not_change_a_rows_loss(tiny):
    lm, tok = tiny
    enc = encode_table(tok, toy_rows(8), max_length=512)
    order = np.argsort(enc.lengths)
    short = [int(i) for i in order[:3]]
    with torch.no_grad():
        alone = torch.cat([nll_response_only(lm, *pad_batch([enc.ids[i]], [enc.target[i]], tok.pad_token_id)) for i in short])
        with_long = nll_response_only(lm, *pad_batch([enc.ids[i] for i in short + [int(order[-1])]],
                                                      [enc.target[i] for i in short + [int(order[-1])]], tok.pad_token_id))
    np.testing.assert_allclose(with_long[:len(alone)].numpy(), alone.numpy(), rtol=1e-5, atol=1e-5)


def test_trick1_response_only_logits_equal_plain_loss_and_grads(tiny):
    lm, tok = tiny
    tr, m = _perturbed_model(tiny)
    enc = encode_table(tok, toy_rows(6), max_length=512)
    x, att, need = pad_batch(enc.ids, enc.target, tok.pad_token_id)
    base = m.get_base_model()
    l1 = nll_plain(base, x, att, need)
    l1.mean().backward()
    g1 = _lora_grads(m)
    m.zero_grad()
    l2 = nll_response_only(base, x, att, need)
    l2.mean().backward()
    g2 = _lora_grads(m)
    np.testing.assert_allclose(l2.detach().numpy(), l1.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert g1.keys() == g2.keys() and g1
    for k in g1:
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-6)


def test_trick2_backward_stops_below_lowest_adapted_block(tiny):
    lm, tok = tiny
    tr, m = _perturbed_model(tiny, layers=2)
    assert tr.layers_ == [2, 3] and resolve_layers(2, 4) == [2, 3]
    adapted = {n.split(".layers.")[1].split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert adapted == {"2", "3"}
    seen = {}
    dec = m.get_base_model().get_decoder()
    hooks = [dec.layers[i].register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__(i, out.requires_grad))
             for i in range(4)]
    enc = encode_table(tok, toy_rows(4), max_length=512)
    x, att, need = pad_batch(enc.ids, enc.target, tok.pad_token_id)
    loss = nll_response_only(m.get_base_model(), x, att, need).mean()
    for h in hooks:
        h.remove()
    assert seen == {0: False, 1: False, 2: True, 3: True}  # block 1's output needs no grad: backward stops
    loss.backward()
    g_fast = _lora_grads(m)
    # forcing backward through every block (what enable_input_require_grads does) changes nothing
    m.zero_grad()
    h = dec.embed_tokens.register_forward_hook(lambda mod, a, out: out.requires_grad_(True))
    nll_response_only(m.get_base_model(), x, att, need).mean().backward()
    h.remove()
    for k, v in _lora_grads(m).items():
        torch.testing.assert_close(g_fast[k], v, rtol=1e-5, atol=1e-7)


def test_trick3_prefix_cache_equals_plain_loss_and_grads(tiny):
    lm, tok = tiny
    tr, m = _perturbed_model(tiny, layers=2)
    base = m.get_base_model()
    enc = encode_table(tok, toy_rows(6), max_length=512)
    states = prefix_states(base, enc.ids, 2, tok.pad_token_id, batch_size=4)
    assert states[0].shape == (len(enc.ids[0]), lm.config.hidden_size)
    x, att, need = pad_batch(enc.ids, enc.target, tok.pad_token_id)
    l1 = nll_plain(base, x, att, need)
    l1.mean().backward()
    g1 = _lora_grads(m)
    m.zero_grad()
    l3 = nll_from_prefix(base, states, enc.ids, enc.target, 2, tok.pad_token_id)
    l3.mean().backward()
    np.testing.assert_allclose(l3.detach().numpy(), l1.detach().numpy(), rtol=1e-5, atol=1e-5)
    for k, v in _lora_grads(m).items():
        torch.testing.assert_close(v, g1[k], rtol=1e-4, atol=1e-6)


def test_fit_with_all_tricks_matches_plain_fit(tiny):
    rows = toy_rows(20)
    kw = dict(model=tiny, layers=2, batch_size=4, epochs=2, show_progress=False, lr=1e-2)
    fast = LoRATrainer(**kw).fit(rows, seed=3)
    plain = LoRATrainer(**kw, response_logits_only=False, prefix_cache=False).fit(rows, seed=3)
    assert fast.steps_ == plain.steps_ == 10
    np.testing.assert_allclose(fast.losses_, plain.losses_, rtol=1e-4, atol=1e-5)
    assert fast.losses_[-1] < fast.losses_[0]  # it learns (lr 1e-2 on a random tiny model)


def test_determinism_and_common_random_numbers(tiny):
    rows = toy_rows(16)
    kw = dict(model=tiny, layers=2, batch_size=4, epochs=1, show_progress=False)
    a = LoRATrainer(**kw).fit(rows, seed=1)
    b = LoRATrainer(**kw).fit(rows, seed=1)
    np.testing.assert_array_equal(a.losses_, b.losses_)
    c = LoRATrainer(**kw).fit(rows, seed=2)
    assert not np.allclose(a.losses_, c.losses_)
    # same seed, different arm (rows): the LoRA init is identical, so init noise cancels in paired differences
    t1, t2 = LoRATrainer(**kw), LoRATrainer(**kw)
    m1, m2 = t1.new_model(5), t2.new_model(5)
    A1 = {n: p for n, p in m1.named_parameters() if "lora_A" in n}
    A2 = {n: p for n, p in m2.named_parameters() if "lora_A" in n}
    assert A1 and all(torch.equal(A1[k], A2[k]) for k in A1)
    other = toy_rows(16, seed=9)
    assert LoRATrainer(**kw).fit(other, seed=1).steps_ == a.steps_ == 4


def test_fit_counts_rows_whose_end_token_max_length_cut(tiny):
    lm, tok = tiny
    rows = toy_rows(12)
    kw = dict(model=tiny, layers=2, batch_size=4, epochs=1, show_progress=False)
    assert LoRATrainer(**kw).fit(rows, seed=0).rows_end_cut_ == 0
    full = sorted(len(x) for x in encode_table(tok, rows, max_length=512).ids)
    limit = full[len(full) // 2]  # the median row length: about half the rows lose their end token
    cut = sum(n > limit for n in full)
    assert 0 < cut < len(rows) and LoRATrainer(**kw, max_length=limit).fit(rows, seed=0).rows_end_cut_ == cut


def test_adapter_saved_with_config_and_selection_hash(tiny, tmp_path):
    import json

    tr = LoRATrainer(model=tiny, layers=2, batch_size=4, epochs=1, show_progress=False).fit(toy_rows(8), seed=0)
    out = tr.save(tmp_path / "ad", selection_hash="abc123")
    meta = json.loads((out / "train_config.json").read_text())
    assert meta["selection_hash"] == "abc123" and meta["steps"] == 2 and meta["layers"] == [2, 3]
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()


def test_fingerprint_separates_cuda_bf16_from_cpu_fp32(tiny):
    """A unit trained under CUDA's bf16 autocast is never reused as the CPU's fp32 one (or back)."""
    cpu = LoRATrainer(model=tiny, device="cpu").fingerprint()
    cuda = LoRATrainer(model=tiny, device="cuda").fingerprint()  # no GPU needed: nothing is loaded
    assert "autocast" not in cpu and cuda.pop("autocast") == "bfloat16" and cuda == cpu


def test_bad_params_name_the_parameter(tiny):
    with pytest.raises(ValueError, match="layers=9"):
        resolve_layers(9, 4)
    with pytest.raises(ValueError, match="batch_size"):
        LoRATrainer(model=tiny, batch_size=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRATrainer(model=tiny, dropout=0.1)


@pytest.mark.gpu
def test_cuda_bf16_fit_close_to_cpu(tiny):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    rows = toy_rows(16)
    kw = dict(model=tiny, layers=2, batch_size=4, epochs=1, show_progress=False, deterministic=False)
    cpu = LoRATrainer(**kw, device="cpu").fit(rows, seed=0)
    gpu = LoRATrainer(**kw, device="cuda").fit(rows, seed=0)
    np.testing.assert_allclose(gpu.losses_, cpu.losses_, rtol=0.05)
