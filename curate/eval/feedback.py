"""Training feedback for iterative kMQ: per-cluster scores from a LoRA trained on the selection so far.

Iterative kMQ (Yu et al. 2024, "Diversify and Conquer", arXiv 2409.11378, Alg. 1; docs/methods/kmq_iterative.md)
fine-tunes on the cumulative selection after each round, generates answers to the selected prompts
and scores each example by how much better the gold answer is than the model's own. We use the
paper's perplexity form (Eq. 7), the CPU-feasible one (no reward model):

    S_i = -log( PPL(x ⊕ y_gen) / PPL(x ⊕ y_gold) ) = NLL(y_gold | x) - NLL(y_gen | x)

with NLL the mean next-token loss over the response tokens (end token included) under the adapted
model, and y_gen a short greedy generation (``max_new_tokens``, default 32: the paper generates up
to 512, too slow on a CPU; a short prefix already shows whether the model has learnt the
cluster's answers). Higher S means the gold answers are still much less likely than the model's own,
i.e. the cluster still has more to teach. s_j is the mean of S_i over (at most ``per_cluster``
sampled) rows of cluster j. S can be negative (the gold answers are more likely than the model's own
greedy output, a sign the cluster is learnt or its references are unusual); the selector decides
how to shift or clip it.

Usage from a selector (loaded by string)::

    fb = lora_feedback(epochs=1, max_new_tokens=32)     # "curate.eval.feedback:lora_feedback"
    scores = fb(selected_table, cluster_ids)             # {cluster: s_j}
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


class LoRAFeedback:
    """Callable ``feedback(selected, cluster_ids) -> {cluster: s_j}`` (see the module docstring).

    Args:
        max_new_tokens: greedy generation length (default 32).
        per_cluster: rows scored per cluster, drawn with ``seed`` (default 8; None = all).
        seed: LoRA init / batch order / row sampling seed (default 0).
        gen_batch_size: prompts per generate call (default 8).
        **train_params: :class:`curate.train.lora.LoRATrainer` parameters (``model``, ``layers``,
            ``epochs``, ``lr``, ...); defaults here: epochs=1, max_length=512, and
            ``show_progress=True``: the fit's step bar and the scoring bar show under
            kmq_iterative's round bar (a round's fit and generation take minutes on a CPU).

    Attributes:
        history_: one dict per call (rows, steps, seconds, scores).
    """

    def __init__(self, *, max_new_tokens: int = 32, per_cluster: int | None = 8, seed: int = 0,
                 gen_batch_size: int = 8, **train_params):
        from curate.train.lora import LoRATrainer

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
        if per_cluster is not None and per_cluster < 1:
            raise ValueError(f"per_cluster must be None or >= 1, got {per_cluster!r}")
        self.max_new_tokens = max_new_tokens
        self.per_cluster = per_cluster
        self.seed = seed
        self.gen_batch_size = gen_batch_size
        self.train_params = train_params
        self.trainer_ = LoRATrainer(**{"epochs": 1, "show_progress": True, **train_params})
        self.history_ = []

    def _generate(self, lm, tok, prompts: list[str]) -> list[str]:
        from curate.eval.generate import greedy_generate

        return greedy_generate(lm, tok, prompts, max_new_tokens=self.max_new_tokens, batch_size=self.gen_batch_size)[0]

    def __call__(self, selected, cluster_ids) -> dict[int, float]:
        import time

        from curate.eval.losses import reference_losses
        from curate.score.rows import row_fields
        from curate.train.encode import encode_texts, render_prompt

        cluster_ids = np.asarray(cluster_ids)
        if cluster_ids.shape != (len(selected),):
            raise ValueError(f"cluster_ids must have shape ({len(selected)},), got {cluster_ids.shape}")
        t0 = time.perf_counter()
        tr = self.trainer_
        tr.fit(selected, seed=self.seed)
        lm = tr.model_.get_base_model()
        tok = tr.tokenizer_
        rng = np.random.default_rng(self.seed)
        rows = []
        for c in np.unique(cluster_ids):
            members = np.flatnonzero(cluster_ids == c)
            if self.per_cluster is not None and len(members) > self.per_cluster:
                members = np.sort(rng.choice(members, size=self.per_cluster, replace=False))
            rows.append(members)
        idx = np.concatenate(rows)
        f = row_fields(selected.take(idx))
        prompts = [render_prompt(tok, a, x, tr.template, tr.system_prompt) for a, x in zip(f.instruction, f.input)]
        gen = self._generate(lm, tok, prompts)
        kw = dict(template=tr.template, max_length=tr.max_length)
        show = tr.show_progress
        gold = reference_losses(lm, tok, encode_texts(tok, prompts, f.output, **kw), show_progress=show,
                                desc="feedback: gold NLL")["full"]
        mine = reference_losses(lm, tok, encode_texts(tok, prompts, gen, **kw), show_progress=show,
                                desc="feedback: generated NLL")["full"]
        S = gold - mine
        scores = {}
        for c in np.unique(cluster_ids):
            v = S[cluster_ids[idx] == c]
            v = v[np.isfinite(v)]
            scores[int(c)] = float(v.mean()) if len(v) else 0.0
        tr.model_ = None
        self.history_.append({"rows": len(selected), "scored": len(idx), "steps": tr.steps_,
                              "seconds": time.perf_counter() - t0, "scores": scores})
        log.info("lora feedback: %d rows, %d steps, %d scored, %.1f s", len(selected), tr.steps_, len(idx),
                 self.history_[-1]["seconds"])
        return scores


def lora_feedback(**params) -> LoRAFeedback:
    """Factory for ``"curate.eval.feedback:lora_feedback"``; ``params`` as in :class:`LoRAFeedback`."""
    return LoRAFeedback(**params)
