"""curate.cli.train_scorer"""
from __future__ import annotations

from pathlib import Path

from curate.score.train_scorer import train_scorer


def train_scorer_command(
    labels: Path,
    out: Path = Path("quality_scorer.npz"),
    features: str = "embedding,heuristics",
    c: float = 1.0,
    valid: Path | None = None,
    embedder: str = "all-MiniLM-L6-v2",
    proxy_lm: str = "SmolLM2-135M-Instruct",
    device: str | None = None,
) -> None:
    """Fit a learned quality scorer from LABELS (CSV/JSONL) and save it as an .npz file.

    LABELS holds (src, score) rows, (src, pos, neg) pairs, instruction/input/output + label, or
    text + label. Use the result with a recipe stage `quality_model: {model_path: OUT}`.
    """
    model = train_scorer(labels, out, features=features, C=c, valid=valid, embedder=embedder,
                         proxy_lm=proxy_lm, device=device)
    msg = f"saved {out} ({model.kind_}, features={','.join(model.features)}, n={model.info_['n']})"
    for k in ("valid_pairwise_accuracy", "valid_accuracy"):
        if k in model.info_:
            msg += f"; {k} = {model.info_[k]:.4f}"
    import typer  # typer is the CLI's dependency; echo is how a command reports

    typer.echo(msg)


def train_doc_quality_command(
    labels: Path,
    out: Path = Path("doc_quality.ftz"),
    seed: int = 0,
    epoch: int | None = None,
    probe: Path | None = None,
) -> None:
    """Train a web document quality classifier (fastText bigrams) from LABELS (text, label).

    LABELS is a JSONL/CSV file of `text` and `label` (1 good, 0 bad) rows. Use the result with a
    recipe stage `doc_quality: {model_path: OUT}`; the shipped model's data card is
    curate/assets/doc_quality_fasttext.md.
    """
    from curate.score.doc_quality import train_doc_quality_file

    model = train_doc_quality_file(labels, out, seed=seed, epoch=epoch, probe=probe)
    import typer

    typer.echo(f"saved {out} ({type(model).__name__})")
