"""curate: data curation and selection for LLM instruction tuning and pretraining.

Public API::

    curate.run("configs/quickstart.yaml")            # whole recipe -> RunResult (output dir)
    curate.plan("configs/quickstart.yaml")           # what is cached, what would run
    curate.select(data, method="random", budget=100) # one-off selection -> the input's rows, fewer

The package is layered (docs/architecture.md): ``core`` < ``cache`` < ``ingest`` < ``models`` <
the stage packages < ``report`` < ``engine`` < ``api`` < ``ops`` / ``eval`` < ``cli``. This file
is the facade above all of them.
"""
from __future__ import annotations

import types

__version__ = "0.1.0"

__all__ = ["run", "plan", "select", "__version__"]


class _CallableSelectPackage(types.ModuleType):
    """``curate.select`` is both the package of selection methods and ``curate.api.select``.

    The agreed interface asks for ``curate.select(data, method=..., budget=...)`` and for a
    ``curate/select/`` package; once the package is imported, ``curate.select`` *is* that
    package, so the package is made callable here, in the facade, where importing the API
    (the top layer) is allowed.
    """

    def __call__(self, *args, **kwargs):
        from curate.api import select

        return select(*args, **kwargs)


from curate import select as _select_package  # noqa: E402  (cheap: the package's __init__ imports nothing)

_select_package.__class__ = _CallableSelectPackage


def __getattr__(name):
    # Lazy: `import curate` stays fast (no torch/datasets import until something runs).
    if name in ("run", "plan"):
        from curate import api

        return getattr(api, name)
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
