"""Paths written in recipes and eval configs: ``~`` and environment variables expanded.

A shipped config cannot know where a user keeps the public datasets, so it names the folder by a
variable (``$CURATE_DATA/eval/gsm8k_test.jsonl``, as the benchmarks do; docs/data.md) and each
user exports it once. A variable that is not set is an error naming it, never a path with a
literal ``$`` in it that then "does not exist".
"""
from __future__ import annotations

import os
import re

from curate.core.errors import ConfigError

_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand_path(value: str, where: str | None = None) -> str:
    """``value`` with ``~`` and ``$NAME`` / ``${NAME}`` expanded (``os.path.expandvars`` rules).

    Args:
        value (str): a path as written, e.g. ``"${CURATE_DATA}/instruct/alpaca_44k.json"``.
        where (str | None): what the value is, named in the error (default None: the caller's
            error names it, as pydantic's key path does), e.g. ``"input"``.

    Returns:
        str: the expanded path (unchanged when it names no variable and no ``~``, or when a file
        of that very name exists).

    Raises:
        ConfigError: it names a variable that is not set.
    """
    if "$" in value and os.path.exists(value):  # a file whose name holds a "$" is taken as written
        return value
    named = {a or b for a, b in _VARIABLE.findall(value)}
    unset = sorted(v for v in named if v not in os.environ)
    if unset:
        names = ", ".join("$" + v for v in unset)
        raise ConfigError(f"{where + ': ' if where else ''}{value!r} names the environment variable {names}, "
                          f"which is not set; export it first (e.g. `export CURATE_DATA=~/data/curate`, "
                          f"the folder with the public datasets, docs/data.md)")
    return os.path.expanduser(os.path.expandvars(value))
