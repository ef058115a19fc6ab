"""A tiny Llama causal LM and a byte-level tokenizer with a ChatML template, built in code (fast, offline)."""
from __future__ import annotations

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>",
                                   additional_special_tokens=["<|im_start|>"])
    fast.chat_template = CHATML
    return fast


def tiny_lm(seed: int = 0, n_layers: int = 4, hidden: int = 32):
    """(LlamaForCausalLM with random weights, tokenizer); ~0.1M parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(cfg).eval()
    return lm, tok


def save_tiny_lm(root, **kw) -> str:
    """:func:`tiny_lm` (``kw`` passed on) saved with its tokenizer under ``root``; returns the folder as str."""
    lm, tok = tiny_lm(**kw)
    lm.save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def toy_rows(n: int = 24, seed: int = 0):
    """n canonical instruction rows of varied lengths (a pa.Table)."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    words = "alpha beta gamma delta eps zeta eta theta iota kappa lambda mu".split()
    ins, inp, out = [], [], []
    for i in range(n):
        ins.append(f"Repeat {i % 5}: " + " ".join(rng.choice(words, size=int(rng.integers(1, 6)))))
        inp.append("" if i % 3 else "ctx " + words[i % len(words)])
        out.append(" ".join(rng.choice(words, size=int(rng.integers(2, 20)))))
    return pa.table({"id": [f"t{i}" for i in range(n)], "text": [a + " " + o for a, o in zip(ins, out)],
                     "instruction": ins, "input": inp, "output": out, "source": ["toy"] * n})
