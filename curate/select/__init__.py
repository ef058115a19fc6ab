"""Selection methods (random, top_k, CaR, kMQ, ...), and ``curate.select(...)`` itself.

DESIGN.md asks for both a ``curate/select/`` package and a ``curate.select(data, ...)``
function. Once the package is imported, ``curate.select`` *is* this module, so the module is
made callable: ``curate.select(data, method=..., budget=...)`` forwards to
``curate.api.select`` while ``curate.select.basic`` stays importable.
"""
from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from curate.api import select

        return select(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
