"""Hook for any Hugging Face sequence-classification reward model (by id or local path).

Reward models such as OpenAssistant's deberta reward models, Skywork-Reward or ArmoRM score a
(prompt, response) pair with a classification head. No such model ships with curate (they need
the hub or local weights); this stage lets a user who has one put its score in a column.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Annotator, StageContext
from curate.score.rows import row_fields

log = logging.getLogger(__name__)
_TEMPLATES = ("chat", "pair", "plain")


@register
class RewardModel(Annotator):
    """Score rows with a ``AutoModelForSequenceClassification`` reward model.

    Input rendering (``template``): "chat" = the tokenizer's chat template over a user turn
    (instruction, plus input after a blank line) and an assistant turn (output); "pair" = the
    tokenizer's text-pair encoding (instruction [+ input], output), as OpenAssistant's deberta
    reward models expect; "plain" = "Instruction: … Input: … Response: …". Plain-text rows are
    scored on ``text`` alone.

    The score is the logit when the head has one label, else the log-probability of
    ``label_index`` (default: the last label).

    Args:
        model: HF id or local path of the reward model (required; no default ships).
        template: "chat" (default), "pair" or "plain".
        max_length: tokens per row, truncated (default 1024).
        label_index: which label's log-probability to report for multi-label heads (default None
            = last label; ignored for single-logit heads).
        column: output column (default "reward").
        dtype: None (bf16 on CUDA, fp32 on CPU), "float32", "bfloat16", "float16".
        batch_size: rows per forward pass (default 8; execution-only).
        device: torch device (execution-only).
        show_progress: progress bars (execution-only).
    """

    name = "reward_model"
    row_local = True  # one row's output depends on that row alone (a refresh reuses it per row)
    version = "2"  # 2: "pair" batches no longer mix pairs and single texts (cached v1 scores were wrong)

    def __init__(self, *, model: str, template: str = "chat", max_length: int = 1024,
                 label_index: int | None = None, column: str = "reward", dtype: str | None = None,
                 batch_size: int = 8, device: str | None = None, show_progress: bool = True):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a HF id or local path, got {model!r}")
        if template not in _TEMPLATES:
            raise ValueError(f"template must be one of {_TEMPLATES}, got {template!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        if label_index is not None and (isinstance(label_index, bool) or not isinstance(label_index, int)):
            raise ValueError(f"label_index must be None or an int, got {label_index!r}")
        if dtype not in (None, "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be None, 'float32', 'bfloat16' or 'float16', got {dtype!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty string, got {column!r}")
        self.model, self.template, self.max_length, self.label_index = model, template, max_length, label_index
        self.column, self.dtype = column, dtype
        self.batch_size, self.device, self.show_progress = batch_size, device, show_progress

    def output_columns(self) -> list[str]:
        return [self.column]

    def cache_params(self) -> dict:
        """Parameters plus, for a model given by local path, its weights' content hash: other
        weights put at the same path score again (a hub id is keyed by name, as before)."""
        params = super().cache_params()
        if Path(self.model).exists():
            from curate.models.loading import weights_fingerprint

            params["resolved"] = {"weights": weights_fingerprint(self.model)}
        return params

    def _load(self):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from curate.models.loading import pick_device

        device = pick_device(self.device)
        dtype = self.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
        log.info("loading reward model %s on %s (%s)", self.model, device, dtype)
        tok = AutoTokenizer.from_pretrained(self.model)
        m = AutoModelForSequenceClassification.from_pretrained(self.model, dtype=getattr(torch, dtype))
        m = m.to(device).eval()
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if m.config.pad_token_id is None:
            m.config.pad_token_id = tok.pad_token_id
        return m, tok

    def _render(self, tok, a: str, x: str, o: str, t: str, structured: bool):
        if not structured:
            return (t,)
        user = a if not x.strip() else f"{a}\n\n{x}"
        if self.template == "chat":
            msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": o}]
            return (tok.apply_chat_template(msgs, tokenize=False),)
        if self.template == "pair":
            return (user, o)
        return (f"Instruction: {a} Input: {x} Response: {o}",)

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        import torch

        f = row_fields(table)
        model, tok = self._load()
        device = next(model.parameters()).device
        items = [self._render(tok, *r) for r in zip(f.instruction, f.input, f.output, f.text, f.structured)]

        def fn(start: int, stop: int) -> dict[str, np.ndarray]:
            part = items[start:stop]
            lens = np.array([sum(len(s) for s in it) for it in part])
            arity = np.array([len(it) for it in part])
            out = np.full(len(part), np.nan)
            # A batch holds rows of one arity only: with the "pair" template structured rows are
            # (prompt, response) pairs and plain rows single texts, and one tokenizer call cannot mix them.
            batches = []
            for a in np.unique(arity):
                rows = np.flatnonzero(arity == a)
                rows = rows[np.argsort(-lens[rows], kind="stable")]  # batch by length
                batches += [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
            for idx in batches:
                batch = [part[j] for j in idx]
                args = ([b[0] for b in batch],) if len(batch[0]) == 1 else ([b[0] for b in batch], [b[1] for b in batch])
                enc = tok(*args, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length)
                with torch.inference_mode():
                    logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float()
                if logits.shape[-1] == 1:
                    s = logits[:, 0]
                else:
                    li = -1 if self.label_index is None else self.label_index
                    s = torch.log_softmax(logits, dim=-1)[:, li]
                out[idx] = s.cpu().numpy()
            return {"reward": out}

        res = ctx.map_shards(len(table), fn, shard_size=2048, desc="reward_model")
        return pa.table({self.column: pa.array(res["reward"], pa.float64())})
