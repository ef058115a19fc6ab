"""Stage registry: YAML ``type`` name -> Stage class.

Stages register themselves with ``@register``; ``load_builtin_stages`` imports every built-in
module so the registry is full before a config is validated.
"""
from __future__ import annotations

import importlib

from curate.core.stage import Stage

_REGISTRY: dict[str, type[Stage]] = {}

# Modules holding built-in stages; a module that fails to import (an optional dependency
# missing) is reported when one of its stages is asked for, never silently skipped.
BUILTIN_MODULES = (
    "curate.filters.length",
    "curate.filters.score",
    "curate.filters.language",
    "curate.filters.url",
    "curate.filters.gopher",
    "curate.filters.c4",
    "curate.filters.fineweb",
    "curate.filters.pii",
    "curate.dedup.exact",
    "curate.dedup.minhash",
    "curate.dedup.semantic",
    "curate.dedup.d4",
    "curate.dedup.url",
    "curate.dedup.substring",
    "curate.embed.stage",
    "curate.cluster.kmeans",
    "curate.score.stages",
    "curate.score.perplexity_bucket",
    "curate.score.doc_quality",
    "curate.select.basic",
    "curate.select.cherry",
    "curate.score.tokens",
    "curate.select.baselines",
    "curate.select.car",
    "curate.select.kmq",
    "curate.select.kmq_iterative",
    "curate.select.rds",
    "curate.select.zipfit",
    "curate.select.sae",
    "curate.select.deita",
    "curate.select.llm_rating",
    "curate.score.llm_rating",
    "curate.select.learning_percentage",
    "curate.select.less",
    "curate.train.learning_percentage",
    "curate.train.less",
)
_IMPORT_ERRORS: dict[str, str] = {}


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make ``cls`` available as ``type: cls.name`` in recipes."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"stage name {cls.name!r} registered twice ({_REGISTRY[cls.name].__name__}, {cls.__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def load_builtin_stages() -> None:
    for mod in BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            # Only modules not written yet or optional deps; anything else is a real bug.
            if e.name and (e.name == mod or mod.startswith(e.name + ".") or not e.name.startswith("curate")):
                _IMPORT_ERRORS[mod] = str(e)
            else:
                raise


def get_stage(name: str) -> type[Stage]:
    """Return the Stage class for YAML type ``name``; the error lists the known names."""
    load_builtin_stages()
    if name not in _REGISTRY:
        hint = f" (import errors: {_IMPORT_ERRORS})" if _IMPORT_ERRORS else ""
        raise KeyError(f"unknown stage type {name!r}; known: {sorted(_REGISTRY)}{hint}")
    return _REGISTRY[name]


def known_stages() -> list[str]:
    load_builtin_stages()
    return sorted(_REGISTRY)
