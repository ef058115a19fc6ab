"""Which annotator makes a score column, so a selector on that column can add it automatically.

``curate.select(rows, method="top_k", score="quality", budget=100)`` works on raw rows because
``quality_model`` declares ``produces = ("quality",)``: a ``top_k`` / ``score_filter`` (or any
selector calling :func:`score_producer`) on a missing column adds the registered annotator that
produces it, with its default parameters. The mapping is read from the annotator classes (a
registry scan), so a new score annotator is picked up by declaring ``produces`` on its class.
"""
from __future__ import annotations

from curate.core.registry import get_stage, known_stages
from curate.core.stage import Annotator


def score_producers() -> dict[str, str]:
    """{score column: name of the registered annotator whose ``produces`` lists it}.

    Raises:
        ValueError: two registered annotators declare the same column (which one to add would
            be a guess).
    """
    out: dict[str, str] = {}
    for name in known_stages():
        cls = get_stage(name)
        if not issubclass(cls, Annotator):
            continue
        for column in cls.produces:
            if out.setdefault(column, name) != name:
                raise ValueError(f"score column {column!r} is declared in `produces` by both {out[column]!r} and "
                                 f"{name!r}; keep it on one annotator class")
    return out


def score_producer(column: str, columns: list[str]) -> list:
    """The annotator that makes ``column``, after the stages it needs itself; [] if present or unknown.

    Args:
        column: the score column a selector reads.
        columns: column names of the table the selector will receive.

    Returns:
        ``[prerequisites of the annotator..., annotator with default parameters]`` (e.g.
        ``perplexity`` before ``perplexity_bucket``) or ``[]``.
    """
    if column in columns:
        return []
    name = score_producers().get(column)
    if name is None:
        return []
    stage = get_stage(name)()
    return stage.prerequisites(list(columns)) + [stage]
