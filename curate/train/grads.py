"""Per-example LoRA gradients, Adam preconditioning and Rademacher projection (LESS's features).

LESS (Xia et al., "LESS: Selecting Influential Data for Targeted Instruction Tuning", ICML 2024,
arXiv 2402.04333) describes a training example by the gradient of its loss with respect to the
LoRA parameters at a warm-up checkpoint, turned into Adam's update direction, randomly projected
to d dimensions and L2-normalised. The pieces:

* :func:`example_gradients`: the gradient of each row's *own* mean response-token NLL (the
  authors' code runs batch size 1), for a whole batch at once: a LoRA matrix is an ``nn.Linear``
  without bias, and the gradient of a sum of per-row losses with respect to its weight is
  sum_rows sum_tokens (d loss / d output) x input^T, so keeping each row's term apart gives the
  per-row gradients exactly (rows never interact: causal attention, padding after the row and
  out of the loss). Hooks record each LoRA linear's input and output gradient.
* :func:`adam_direction`: Gamma = m' / (sqrt(v') + eps) with m' = b1 m + (1 - b1) g and
  v' = b2 v + (1 - b2) g^2 from the checkpoint's Adam moments (the paper's formula; the
  authors' code puts eps inside the square root, ``eps_inside_sqrt=True``). No bias correction,
  as in both.
* :func:`rademacher_project`: x @ R with R a (P, d) matrix of independent +-1/sqrt(d) signs
  drawn block by block from a seeded generator, so R never sits in memory whole and the same
  seed gives the same R in every process (the authors use TRAK's projector, seed 0).
"""
from __future__ import annotations

import numpy as np

PROJ_BLOCK = 8192  # rows of R drawn at a time (8192 x d float32: 256 MiB at d = 8192)


def lora_modules(model) -> list[tuple[str, object]]:
    """``(parameter name, nn.Linear)`` of every trainable LoRA matrix, in ``named_parameters`` order."""
    import torch

    out = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not name.endswith(".weight"):
            raise ValueError(f"per-example gradients expect LoRA weight matrices only; {name!r} also trains")
        mod = model.get_submodule(name[: -len(".weight")])
        if not isinstance(mod, torch.nn.Linear) or mod.bias is not None:
            raise ValueError(f"per-example gradients expect bias-free nn.Linear LoRA matrices; {name!r} is {mod}")
        out.append((name, mod))
    return out


def example_gradients(trainer, model, enc, idx, states=None):
    """Gradients of each row's mean response-token NLL w.r.t. the LoRA parameters.

    Args:
        trainer: the :class:`~curate.train.lora.LoRATrainer` whose ``token_nll`` path is used.
        model: its peft model (``trainer.new_model(...)``), with the checkpoint's adapter loaded.
        enc: :class:`~curate.train.encode.Encoded` rows.
        idx: (B,) row indices of ``enc`` forming one batch.
        states: prefix-cache block inputs of ``enc``'s rows, or None.

    Returns:
        (B, P) float32 CPU tensor, P = trainable parameters (in :func:`lora_modules` order); a row
        without response tokens gets zeros.
    """
    import torch

    mods = lora_modules(model)
    acts: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor] = {}
    handles = []

    def fwd(j):
        def hook(mod, inputs, output):
            acts[j] = inputs[0].detach()

            def keep(g):
                grads[j] = g.detach()

            output.register_hook(keep)
        return hook

    for j, (_, mod) in enumerate(mods):
        handles.append(mod.register_forward_hook(fwd(j)))
    try:
        lm = model.get_base_model()
        nll = trainer.token_nll(lm, enc, idx, states)
        n_tgt = np.array([int(enc.target[i][1:].sum()) for i in idx])
        # flat NLL is row-major over response positions: weight each token by 1 / its row's count
        w = np.repeat(1.0 / np.maximum(n_tgt, 1), n_tgt)
        loss = (nll * torch.as_tensor(w, dtype=nll.dtype, device=nll.device)).sum()
        for p in model.parameters():
            p.grad = None
        if loss.requires_grad:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
    B = len(idx)
    out = []
    for j, (_, mod) in enumerate(mods):
        if j not in grads:  # no response token in the batch: nothing reached this module
            out.append(torch.zeros(B, mod.weight.numel()))
            continue
        a = acts[j].float().reshape(B, -1, acts[j].shape[-1])
        g = grads[j].float().reshape(B, -1, grads[j].shape[-1])
        out.append(torch.einsum("bto,bti->boi", g, a).reshape(B, -1).cpu())
    for p in model.parameters():
        p.grad = None
    return torch.cat(out, dim=1)


def adam_direction(g, m, v, betas=(0.9, 0.999), eps: float = 1e-8, eps_inside_sqrt: bool = False):
    """Adam's update direction for gradients ``g`` given the checkpoint's moments.

    Args:
        g: (B, P) per-example gradients.
        m, v: (P,) Adam first and second moments (``exp_avg``, ``exp_avg_sq``).
        betas: Adam's (beta1, beta2) (default (0.9, 0.999), the trainer's and LESS's).
        eps: Adam's epsilon (default 1e-8).
        eps_inside_sqrt: False (default, the paper: m' / (sqrt(v') + eps)); True: the authors'
            code, m' / sqrt(v' + eps).

    Returns:
        (B, P) float32 tensor.
    """
    import torch

    b1, b2 = betas
    m2 = b1 * m + (1 - b1) * g
    v2 = b2 * v + (1 - b2) * g * g
    return m2 / (torch.sqrt(v2 + eps) if eps_inside_sqrt else torch.sqrt(v2) + eps)


def rademacher_project(x, dim: int, seed: int = 0, block: int = PROJ_BLOCK):
    """``x @ R`` for a seeded (P, dim) Rademacher matrix with entries +-1/sqrt(dim).

    Args:
        x: (B, P) float32 tensor.
        dim: projected dimension d.
        seed: seed of R (default 0); rows ``[j * block, (j + 1) * block)`` of R come from
            ``torch.Generator().manual_seed(seed * 1_000_003 + j)``, so R depends on (seed, P,
            dim, block) only, never on B or on which rows are projected.
        block: rows of R drawn at a time (default 8192).

    Returns:
        (B, dim) float32 tensor.
    """
    import torch

    B, P = x.shape
    out = torch.zeros(B, dim, dtype=torch.float32)
    x = x.float()
    for j, lo in enumerate(range(0, P, block)):
        hi = min(P, lo + block)
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + j)
        r = torch.randint(0, 2, (hi - lo, dim), generator=g, dtype=torch.int8).float().mul_(2).sub_(1)
        out += x[:, lo:hi] @ r
    return out / float(np.sqrt(dim))


def unit_rows(x):
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    import torch

    n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(n > 0, x / torch.clamp(n, min=1e-30), x)
