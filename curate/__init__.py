"""curate: data curation and selection for LLM instruction tuning and pretraining.

Public API::

    curate.run("configs/quickstart.yaml")            # whole recipe -> RunResult (output dir)
    curate.plan("configs/quickstart.yaml")           # what is cached, what would run
    curate.select(data, method="random", budget=100) # one-off selection -> datasets.Dataset
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["run", "plan", "select", "__version__"]


def __getattr__(name):
    # Lazy: `import curate` stays fast (no torch/datasets import until something runs).
    if name in ("run", "plan"):
        from curate import pipeline

        return getattr(pipeline, name)
    if name == "select":
        import curate.select as select  # a callable module (see curate/select/__init__.py)

        return select
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
