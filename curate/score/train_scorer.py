"""``curate train-scorer``: fit a :class:`~curate.score.quality_model.QualityModel` from labels.

Mount on the typer app with ``app.command("train-scorer")(train_scorer_command)``.

Label files (CSV or JSONL), one of:
    * ``src, score``       - CaR's format: src = "Instruction: … [Input: …] Response: …", score a
                              0/1 label (logistic regression) or a real number (ridge regression);
    * ``src, pos, neg``    - pairs: src the instruction part, pos/neg "Response: …" strings
                              (Bradley-Terry logistic regression on feature differences);
    * ``instruction, input, output, label`` - structured rows (input optional);
    * ``text, label``      - plain text rows (e.g. DCLM's human quality labels).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from curate.score.rows import RowFields, parse_car_string

log = logging.getLogger(__name__)


def read_labels(path: str | Path) -> tuple[str, RowFields, np.ndarray | RowFields]:
    """Read a label file.

    Returns:
        ("rows", fields, labels (n,)) or ("pairs", pos fields, neg fields).

    Raises:
        ValueError: the columns match none of the accepted layouts (the message lists them).
    """
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = [json.loads(line) for line in open(path) if line.strip()]
    else:
        rows = list(csv.DictReader(open(path, newline="")))
    if not rows:
        raise ValueError(f"{path}: no rows")
    cols = set(rows[0])

    def fields(triples, texts=None) -> RowFields:
        n = len(triples)
        I, X, O = (list(x) for x in zip(*triples)) if n else ([], [], [])
        structured = np.ones(n, bool) if texts is None else np.zeros(n, bool)
        return RowFields(I, X, O, texts or [""] * n, structured)

    if {"src", "pos", "neg"} <= cols:
        heads = [parse_car_string(r["src"].strip()) for r in rows]
        pos = fields([(h[0], h[1], parse_car_string(r["pos"])[2]) for h, r in zip(heads, rows)])
        neg = fields([(h[0], h[1], parse_car_string(r["neg"])[2]) for h, r in zip(heads, rows)])
        return "pairs", pos, neg
    label_key = next((k for k in ("score", "label") if k in cols), None)
    if label_key is None:
        raise ValueError(f"{path}: need a `score` or `label` column (or src/pos/neg pairs); found {sorted(cols)}")
    y = np.array([float(r[label_key]) for r in rows])
    if "src" in cols:
        return "rows", fields([parse_car_string(r["src"]) for r in rows]), y
    if {"instruction", "output"} <= cols:
        return "rows", fields([(r["instruction"] or "", r.get("input") or "", r["output"] or "") for r in rows]), y
    if "text" in cols:
        n = len(rows)
        return "rows", fields([("", "", "")] * n, [r["text"] or "" for r in rows]), y
    raise ValueError(f"{path}: columns {sorted(cols)} match none of: src+score, src+pos+neg, "
                     "instruction+output+label, text+label")


def _pair_accuracy(model, pos: RowFields, neg: RowFields, **kw) -> float:
    s_pos, s_neg = model.decision(model.featurize(pos, **kw)), model.decision(model.featurize(neg, **kw))
    return float(np.mean(np.where(s_pos > s_neg, 1.0, np.where(s_pos < s_neg, 0.0, 0.5))))


def train_scorer(labels: str | Path, out: str | Path, *, features: str = "embedding,heuristics",
                 C: float = 1.0, valid: str | Path | None = None,
                 embedder: str = "all-MiniLM-L6-v2", proxy_lm: str = "SmolLM2-135M-Instruct",
                 device: str | None = None):
    """Fit a quality scorer on ``labels`` and save it to ``out`` (.npz); returns the model.

    Args:
        labels: CSV/JSONL label file (layouts in the module docstring).
        out: output .npz path (use it as ``quality_model: {model_path: …}``).
        features: comma-separated groups from embedding, heuristics, lm (default
            "embedding,heuristics"; "lm" runs SmolLM2 on every row: slow on a CPU).
        C: inverse regularisation strength (default 1.0).
        valid: optional pairs or labelled file; its pairwise accuracy (pairs) or accuracy of the
            sign (0/1 rows) is logged and saved in the model's info.
        embedder, proxy_lm: models for the embedding and lm groups.
        device: torch device for feature extraction (None = CUDA when present).
    """
    from curate.score.quality_model import QualityModel

    groups = tuple(g.strip() for g in features.split(",") if g.strip())
    model = QualityModel(features=groups, C=C, embedder=embedder, proxy_lm=proxy_lm)
    kind, a, b = read_labels(labels)
    kw = {"device": device}
    info = {"labels": Path(labels).name, "layout": kind, "n": len(a)}
    if kind == "pairs":
        model.fit(model.featurize(a, **kw), X_neg=model.featurize(b, **kw), info=info)
    else:
        model.fit(model.featurize(a, **kw), b, info=info)
    if valid is not None:
        vkind, va, vb = read_labels(valid)
        if vkind == "pairs":
            acc = _pair_accuracy(model, va, vb, **kw)
            model.info_["valid_pairwise_accuracy"] = acc
        else:
            s = model.decision(model.featurize(va, **kw))
            acc = float(np.mean((s > 0) == (vb > 0.5)))
            model.info_["valid_accuracy"] = acc
        model.info_["valid"] = Path(valid).name
        log.info("validation accuracy on %s: %.4f", valid, acc)
    model.save(out)
    log.info("saved quality scorer (%s, %d features) to %s", model.kind_, len(model.coef_), out)
    return model


