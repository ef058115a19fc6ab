"""curate.score.producers"""
from __future__ import annotations

# Score columns built-in annotators make: a top_k / score_filter on one of them adds that
# annotator (with its defaults) when the column is missing, so
# curate.select(rows, method="top_k", score="quality", budget=100) works on raw rows.
SCORE_PRODUCERS = {"quality": "quality_model", "ppl_response": "perplexity", "ppl_text": "perplexity",
                   "ifd": "ifd", "ifd_loss_cond": "ifd", "ifd_loss_uncond": "ifd", "ifd_truncated": "ifd"}


def score_producer(column: str, columns: list[str]) -> list:
    """The annotator that makes ``column`` (as a one-item list), or [] if present or unknown."""
    if column in columns:
        return []
    name = SCORE_PRODUCERS.get(column) or ("heuristics" if column.startswith("h_") else None)
    if name is None:
        return []
    from curate.core.registry import get_stage

    return [get_stage(name)()]
