"""``lp_scores``: learning percentage from a LoRA fit of the proxy LM on the pool.

Mekala, Nguyen and Shang, "Smaller Language Models are capable of selecting Instruction-Tuning
Training Data for Larger Language Models" (ACL Findings 2024, arXiv 2402.10430; authors' code
dheeraj7596/Small2Large, ``dump_pplxs.py``, ``process_pickle.py``): fine-tune a small model on the
whole pool for n epochs and record every row's perplexity over its response tokens before
training (P_0) and after each epoch (P_1..P_n). The learning percentage of the first epoch,

    LP(1) = (P_0 - P_1) / (P_0 - P_n)        (0 where P_0 = P_n, as the code sets it)

is the share of the total drop that happened in epoch 1: a low LP(1) is a row the model learns
late ("hard"), and the method keeps the lowest. With one epoch only, LP_app(1) = (P_0 - P_1) / P_0.

Here the small model is curate's proxy LM (SmolLM2-135M-Instruct) trained with LoRA by the
evaluation's trainer (:class:`~curate.train.lora.LoRATrainer`; the paper fine-tunes all weights
of OPT-125M..13B / Llama-2 at lr 2e-5 for 3 epochs): the trainer's recipe (rank 16 on all linear
modules of the top 8 blocks, lr 5e-4, cosine schedule, batch 8) with ``epochs`` = 3 and the
eval's chat template (the code: Alpaca's prompt, ``template: alpaca``). The run resumes after a
kill from the last finished epoch; the prefix cache lives on disk
(:mod:`curate.train.prefix_store`), so the pool's size is bounded by time, not memory.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.params import check_real
from curate.core.registry import register
from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)

PPL_BATCH = 16  # rows per no-grad forward when measuring perplexities


def response_ppl(trainer, model, enc, states=None, batch_size: int = PPL_BATCH) -> np.ndarray:
    """exp(mean NLL over each row's response tokens) under ``model`` (NaN for a row without any).

    Args:
        trainer: the :class:`~curate.train.lora.LoRATrainer` (its ``token_nll`` path).
        model: the peft model at this point of training.
        enc: :class:`~curate.train.encode.Encoded` rows.
        states: their prefix-cache block inputs, or None.
        batch_size: rows per forward (default 16; rows are batched by length).

    Returns:
        (n,) float64 perplexities.
    """
    import torch

    lm = model.get_base_model()
    was_training = model.training
    model.eval()
    n_tgt = enc.n_target
    order = np.argsort(-enc.lengths, kind="stable")
    out = np.full(len(enc), np.nan)
    with torch.no_grad():
        for lo in range(0, len(enc), batch_size):
            b = order[lo:lo + batch_size]
            b = b[n_tgt[b] > 0]
            if not len(b):
                continue
            nll = trainer.token_nll(lm, enc, b, states).double().cpu().numpy()
            sums = np.add.reduceat(nll, np.r_[0, np.cumsum(n_tgt[b])[:-1]])
            out[b] = np.exp(sums / n_tgt[b])
    model.train(was_training)
    return out


def learning_percentage(ppl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LP(1) and LP_app(1) from perplexities before training and after each epoch.

    Args:
        ppl: (n_epochs + 1, n) P_0..P_n per row (NaN where undefined).

    Returns:
        ``(lp, lp_app)``, each (n,) float64: LP(1) = (P_0 - P_1) / (P_0 - P_n), 0 where the
        denominator is 0 (the authors' rule); LP_app(1) = (P_0 - P_1) / P_0.
    """
    p0, p1, pn = ppl[0], ppl[1], ppl[-1]
    den = p0 - pn
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.where(den != 0, (p0 - p1) / np.where(den != 0, den, 1.0), 0.0)
        app = (p0 - p1) / p0
    lp[np.isnan(den)] = np.nan
    return lp, app


@register
class LPScores(Annotator):
    """Response perplexity before and after each epoch of a LoRA fit on the pool, and LP(1).

    Mekala et al., ACL Findings 2024, arXiv 2402.10430 (module docstring). Columns:
    ``lp_ppl_0`` .. ``lp_ppl_<epochs>`` (perplexity over the response tokens), ``lp`` = LP(1) and
    ``lp_app`` = LP_app(1); NaN for plain-text rows (not trained on). The fit covers every
    instruction row reaching the stage, so the scores depend on the whole pool (not row-local).

    Args:
        model: proxy LM alias, HF id, folder or ``.gguf`` path (default "SmolLM2-135M-Instruct").
        epochs: training epochs n (default 3, the paper's); 1 leaves only ``lp_app`` meaningful
            (``lp`` is then (P_0 - P_1) / (P_0 - P_1) = 1 wherever defined).
        template: ``"chat"`` (default, the evaluation's) or ``"alpaca"`` (the authors' code).
        max_length: tokens per row (default 512, the paper's).
        r, alpha, layers, lr, batch_size: LoRA rank (16), alpha (32), adapted blocks (top 8), peak
            learning rate (5e-4) and rows per step (8): the evaluation trainer's.
        prefix_cache: cache the frozen blocks' output on disk (default True; exact, 2-3x faster).
        seed: LoRA init and batch order (default 0).
        device: torch device (execution-only; None = CUDA when present. The CUDA path trains
            under bf16 autocast and is written but not run on a GPU yet).
        show_progress: progress bars (execution-only).
    """

    name = "lp_scores"
    version = "1"
    produces = ("lp", "lp_app")
    execution_params = ("device", "show_progress")  # batch_size changes the training: part of the key

    def __init__(self, *, model: str = "SmolLM2-135M-Instruct", epochs: int = 3, template: str = "chat",
                 max_length: int = 512, r: int = 16, alpha: int = 32, layers: int = 8, lr: float = 5e-4,
                 batch_size: int = 8, prefix_cache: bool = True, seed: int = 0, device: str | None = None,
                 show_progress: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a model alias, HF id or path, got {model!r}")
        check_real(epochs, "epochs", low=1, integer=True)
        if template not in ("chat", "alpaca"):
            raise ValueError(f"template must be 'chat' or 'alpaca', got {template!r}")
        for name, v, low in (("max_length", max_length, 8), ("r", r, 1), ("alpha", alpha, 1), ("layers", layers, 1),
                             ("batch_size", batch_size, 1), ("seed", seed, 0)):
            check_real(v, name, low=low, integer=True)
        check_real(lr, "lr", low=0.0)
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache must be true or false, got {prefix_cache!r}")
        self.model, self.epochs, self.template, self.max_length = model, epochs, template, max_length
        self.r, self.alpha, self.layers, self.lr, self.batch_size = r, alpha, layers, lr, batch_size
        self.prefix_cache, self.seed, self.device, self.show_progress = prefix_cache, seed, device, show_progress

    def output_columns(self) -> list[str]:
        return [f"lp_ppl_{e}" for e in range(self.epochs + 1)] + ["lp", "lp_app"]

    def trainer(self):
        """The :class:`~curate.train.lora.LoRATrainer` this stage fits."""
        from curate.train.lora import LoRATrainer

        return LoRATrainer(model=self.model, template=self.template, max_length=self.max_length, r=self.r,
                           alpha=self.alpha, layers=self.layers, lr=self.lr, batch_size=self.batch_size,
                           epochs=self.epochs, prefix_cache=self.prefix_cache, device=self.device,
                           show_progress=self.show_progress)

    def cache_params(self) -> dict:
        """Parameters plus the trainer's fingerprint (model weights' hash, bf16 autocast on CUDA)."""
        from curate.models.loading import proxy_lm_fingerprint

        return {**super().cache_params(), "resolved": {"trainer": self.trainer().fingerprint(),
                                                       "weights": proxy_lm_fingerprint(self.model)}}

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.score.rows import row_fields
        from curate.train.checkpoints import load_state, save_state, training_state
        from curate.train.lora import resolve_layers
        from curate.train.prefix_store import build_prefix_store

        n = len(table)
        rows = np.flatnonzero(row_fields(table).structured)
        ppl = np.full((self.epochs + 1, n), np.nan)
        if len(rows):
            tr = self.trainer()
            enc = tr.encode(table.take(pa.array(rows)))
            work = ctx.work_dir
            work.mkdir(parents=True, exist_ok=True)
            path = {e: work / f"ppl_{e}.npy" for e in range(self.epochs + 1)}
            if not path[self.epochs].exists():
                base, tok = tr.base()
                start = resolve_layers(self.layers, base.config.num_hidden_layers)[0]
                states = None
                if self.prefix_cache:
                    states = build_prefix_store(work / "prefix", base, enc.ids, start, tok.pad_token_id or 0,
                                                batch_size=self.batch_size, show_progress=self.show_progress)
                done = max([e for e in range(1, self.epochs) if (work / f"state_{e}.pt").exists()], default=0)

                def at_epoch(info) -> None:
                    e = info.epochs_done
                    if not path[e].exists():
                        np.save(path[e], response_ppl(tr, info.model, enc, info.states))
                        log.info("lp_scores: perplexities after epoch %d of %d saved", e, self.epochs)
                    if 1 <= e < self.epochs:  # resumable from here; the previous state is no longer needed
                        save_state(training_state(info), work / f"state_{e}.pt")
                        (work / f"state_{e - 1}.pt").unlink(missing_ok=True)

                resume = load_state(work / f"state_{done}.pt") if done else None
                if done:
                    log.info("lp_scores: resuming after epoch %d of %d", done, self.epochs)
                tr.fit(enc, seed=self.seed, epoch_callback=at_epoch, resume=resume, states=states)
            for e in range(self.epochs + 1):
                ppl[e, rows] = np.load(path[e])
        lp, app = learning_percentage(ppl)
        cols = {f"lp_ppl_{e}": pa.array(ppl[e], pa.float64()) for e in range(self.epochs + 1)}
        return pa.table({**cols, "lp": pa.array(lp, pa.float64()), "lp_app": pa.array(app, pa.float64())})
