"""A small TopK sparse autoencoder (torch) for SAE-based diversity selection.

TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders", arXiv 2406.04093), as
used by Yang et al. 2025 (arXiv 2502.14050) on Llama-3.1-8B-Instruct's final-layer residual
stream with 131,072 latents and k = 128. **Our setting is a CPU-sized substitute, not the
paper's**: the SAE is trained on the per-example embeddings curate already has (MiniLM 384-d by
default, or the proxy LM's pooled last layer), with ``width = expansion × d`` latents (default
8 × 384 = 3,072) and ``k = 32``.

Model: ``z = TopK(ReLU(W_enc (x − b_dec) + b_enc))``, ``x̂ = W_dec z + b_dec``; decoder columns kept
at unit norm; ``W_enc`` initialised as ``W_decᵀ`` and ``b_dec`` as the data mean (Gao et al.'s
initialisation, which keeps latents from dying at start). Loss: mean squared reconstruction error.
Inputs are scaled by one scalar so that the mean squared row norm equals ``d`` (activations are
then O(1) whatever the embedder), and the scale is saved with the weights.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _torch():
    import torch

    return torch


class TopKSAE:
    """TopK sparse autoencoder with scikit-learn manners (``fit`` / ``encode``; state ends in ``_``).

    Args:
        width: number of latents (default None = ``expansion × d``).
        expansion: latents per input dimension when ``width`` is None (default 8).
        k: latents kept per example (default 32).
        epochs: passes over the data (default 30).
        batch_size: rows per step (default 256).
        lr: Adam learning rate (default 1e-3).
        seed: torch/numpy seed (default 0); fit is deterministic with it on one CPU thread count.
        show_progress: progress bar over epochs (default False).

    Learned: ``W_enc_`` (d, h), ``b_enc_`` (h,), ``W_dec_`` (h, d), ``b_dec_`` (d,), ``scale_``
    (float), ``loss_`` (final epoch's mean squared error, on the scaled inputs),
    ``fvu_`` (fraction of variance unexplained on the training data).
    """

    def __init__(self, *, width: int | None = None, expansion: int = 8, k: int = 32, epochs: int = 30,
                 batch_size: int = 256, lr: float = 1e-3, seed: int = 0, show_progress: bool = False):
        for name, v in (("expansion", expansion), ("k", k), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < k):
            raise ValueError(f"width must be an int >= k ({k}) or null, got {width!r}")
        if not isinstance(lr, (int, float)) or lr <= 0:
            raise ValueError(f"lr must be a number > 0, got {lr!r}")
        self.width, self.expansion, self.k, self.epochs = width, expansion, k, epochs
        self.batch_size, self.lr, self.seed, self.show_progress = batch_size, lr, seed, show_progress

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in ("width", "expansion", "k", "epochs", "batch_size", "lr", "seed")}

    # -- torch pieces -------------------------------------------------------------------------
    def _encode_t(self, x, W_enc, b_enc, b_dec):
        torch = _torch()
        pre = torch.relu((x - b_dec) @ W_enc + b_enc)
        val, idx = pre.topk(self.k, dim=1)
        return val, idx

    def fit(self, x: np.ndarray) -> "TopKSAE":
        """Train on ``x``: (n, d) float array (one embedding per example)."""
        from tqdm.auto import tqdm

        torch = _torch()
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or len(x) == 0:
            raise ValueError(f"x must be a non-empty (n, d) array, got shape {x.shape}")
        n, d = x.shape
        h = self.width or self.expansion * d
        if h < self.k:
            raise ValueError(f"width ({h}) must be >= k ({self.k})")
        self.scale_ = float(np.sqrt(d / max(float((x.astype(np.float64) ** 2).sum(axis=1).mean()), 1e-12)))
        gen = torch.Generator().manual_seed(self.seed)
        xt = torch.from_numpy(x * self.scale_)
        W_dec = torch.randn(h, d, generator=gen)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        W_dec = torch.nn.Parameter(W_dec)
        W_enc = torch.nn.Parameter(W_dec.detach().T.clone())
        b_enc = torch.nn.Parameter(torch.zeros(h))
        b_dec = torch.nn.Parameter(xt.mean(dim=0).clone())
        opt = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=self.lr)
        bs = min(self.batch_size, n)
        for _ in tqdm(range(self.epochs), desc="sae", unit="epoch", disable=not self.show_progress):
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for a in range(0, n, bs):
                xb = xt[perm[a:a + bs]]
                val, idx = self._encode_t(xb, W_enc, b_enc, b_dec)
                # x̂ = Σ_j z_j W_dec[j] + b_dec, gathering only the k active decoder rows
                recon = torch.einsum("bk,bkd->bd", val, W_dec[idx]) + b_dec
                loss = ((recon - xb) ** 2).sum(dim=1).mean() / d
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():  # unit-norm decoder rows (Gao et al.)
                    W_dec /= W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
                total += float(loss.detach()) * len(xb)
            self.loss_ = total / n
        self.W_enc_, self.b_enc_ = W_enc.detach().numpy(), b_enc.detach().numpy()
        self.W_dec_, self.b_dec_ = W_dec.detach().numpy(), b_dec.detach().numpy()
        self.width_ = h
        lat, act = self.encode(x)
        recon = self.decode(lat, act)
        xs = x * self.scale_
        self.fvu_ = float(((recon - xs) ** 2).sum() / max(((xs - xs.mean(axis=0)) ** 2).sum(), 1e-12))
        log.info("sae: trained %d -> %d latents (k=%d) on %d rows: mse %.4f, FVU %.3f", d, h, self.k, n, self.loss_, self.fvu_)
        return self

    def encode(self, x: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """The k active latents of each row: ``(latents, activations)``, both (n, k), by activation desc.

        Args:
            x: (n, d) float array, the same kind of vectors the SAE was trained on.
            block: rows per torch call (bounds memory to block × width floats).
        """
        torch = _torch()
        x = np.asarray(x, dtype=np.float32)
        W_enc, b_enc, b_dec = (torch.from_numpy(a) for a in (self.W_enc_, self.b_enc_, self.b_dec_))
        lat, act = [], []
        with torch.no_grad():
            for a in range(0, len(x), block):
                val, idx = self._encode_t(torch.from_numpy(x[a:a + block] * self.scale_), W_enc, b_enc, b_dec)
                lat.append(idx.numpy().astype(np.int32))
                act.append(val.numpy().astype(np.float32))
        if not lat:
            return np.zeros((0, self.k), np.int32), np.zeros((0, self.k), np.float32)
        return np.concatenate(lat), np.concatenate(act)

    def decode(self, latents: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """Reconstruction (n, d), in the scaled input space, from ``encode``'s output."""
        return np.einsum("nk,nkd->nd", acts, self.W_dec_[latents]) + self.b_dec_

    # -- persistence (a stage artifact) ----------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write ``sae.npz`` (weights) and ``sae.json`` (params, scale, losses) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "sae.npz", W_enc=self.W_enc_, b_enc=self.b_enc_, W_dec=self.W_dec_, b_dec=self.b_dec_)
        (folder / "sae.json").write_text(json.dumps({**self.get_params(), "width_": self.width_, "scale_": self.scale_,
                                                     "loss_": self.loss_, "fvu_": self.fvu_}, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> "TopKSAE":
        """Read an SAE written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / "sae.json").read_text())
        sae = cls(**{k: meta[k] for k in ("width", "expansion", "k", "epochs", "batch_size", "lr", "seed")})
        with np.load(folder / "sae.npz") as z:
            sae.W_enc_, sae.b_enc_, sae.W_dec_, sae.b_dec_ = z["W_enc"], z["b_enc"], z["W_dec"], z["b_dec"]
        sae.width_, sae.scale_, sae.loss_, sae.fvu_ = meta["width_"], meta["scale_"], meta["loss_"], meta["fvu_"]
        return sae
