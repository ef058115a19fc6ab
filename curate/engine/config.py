"""Recipe configuration: pydantic models, ``load_config`` with ``extends:``, fail-before-compute.

A recipe is YAML::

    extends: base.yaml                 # optional; path relative to this file; dicts merge deeply,
                                       # lists (e.g. stages) are replaced whole
    input: {path: data/pool.jsonl, format: alpaca}
    stages:
      - {type: exact_dedup}
      - {type: random, budget: 1000, seed: 0}
    output: {dir: runs/quickstart}
    seed: 0                            # optional: default `seed` of every stage that takes one

Relative ``input.path``/``output.dir`` resolve against the working directory (as datatrove
and the HF CLIs do); ``extends:`` resolves against the file that names it.

Every stage is instantiated while the config is validated, so an unknown stage type, an
unknown parameter or an out-of-range value fails here with its key path
(``stages[1].budget: ...``) before any data is read.
"""
from __future__ import annotations

import difflib
import logging
from numbers import Integral
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curate.core.errors import ConfigError
from curate.core.registry import get_stage, known_stages
from curate.core.stage import Stage

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "text")

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


DEFAULT_EXTRACT_TIMEOUT = 1.0  # FineWeb's per-document trafilatura timeout


class InputConfig(_Strict):
    """Where rows come from. ``path`` may be a file, a directory, a glob, or a list of them."""

    path: str | list[str]
    format: Literal["auto", "alpaca", "sharegpt", "messages", "text"] | None = None
    id_field: str | None = None
    text_field: str | None = None
    fields: dict[str, str] | None = None
    max_row_bytes: int = Field(default=1_000_000, gt=0)
    source: str | None = None
    split: str = "train"  # for a DatasetDict folder or a hub dataset
    # seconds of text extraction per HTML page / WARC record (None: no limit)
    extract_timeout: float | None = Field(default=DEFAULT_EXTRACT_TIMEOUT, gt=0)


class OutputConfig(_Strict):
    """Where results go. ``shard_rows`` bounds rows per ``data/*.parquet`` file.

    ``schema``: ``canonical`` (default: curate's columns ``id``, ``text``, ``instruction``,
    ``input``, ``output``, ``messages``, ``source``, then the input's other columns and the
    stages' scores, one schema for a pool that mixes formats) or ``original`` (each kept input
    record as it was read, in input order, the union of the files' columns; scores stay in
    ``provenance.parquet`` unless ``scores: true``). See docs/ingest.md "Output schema".

    ``drop_columns``: columns left out of ``dataset/`` and ``data/`` (None, the default: every
    vector column such as ``embedding``, which stays in the stage cache; ``[]`` keeps all).
    Canonical output only: ``original`` never adds curate's columns unless ``scores``.
    """

    # ``schema`` is spelled ``schema_`` in Python: the plain name shadows a BaseModel attribute
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    dir: str = "runs/curate"
    shard_rows: int = Field(default=100_000, gt=0)
    save_dataset: bool = True
    plots: bool = True
    drop_columns: list[str] | None = None
    schema_: Literal["canonical", "original"] = Field(default="canonical", alias="schema")
    scores: bool = False  # original schema: add the stages' non-vector columns (scores, cluster ids)


class RunConfig(_Strict):
    """A whole recipe (see module docstring)."""

    name: str | None = None
    input: InputConfig
    stages: list[dict[str, Any]] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    seed: int | None = None  # when set: the seed of every stage that takes one and does not set its own
    cache_dir: str | None = None

    @field_validator("stages")
    @classmethod
    def _stage_shapes(cls, stages):
        for i, s in enumerate(stages):
            if not isinstance(s, dict) or "type" not in s:
                raise ValueError(f"stages[{i}] must be a mapping with a `type`, got {s!r}")
        return stages

    def build_stages(self) -> list[Stage]:
        """Instantiate every stage; raise ConfigError naming ``stages[i].param`` on any problem.

        The run-level ``seed`` (when the recipe sets one) is the default ``seed`` of every stage
        that takes one and whose spec does not set it (so it enters that stage's cache key like
        any parameter); without it each stage keeps its own default.
        """
        return [build_stage(spec, f"stages[{i}]", default_seed=self.seed) for i, spec in enumerate(self.stages)]


def build_stage(spec: dict[str, Any], where: str = "stage", default_seed: int | None = None) -> Stage:
    """Instantiate one stage from ``{type: name, **params}``, with errors naming the key path.

    Args:
        spec: ``{"type": name, **params}``.
        where: key path used in error messages (default ``"stage"``).
        default_seed: given as ``seed`` to a stage class that has a ``seed`` parameter when the
            spec does not set it (default None: the class's own default).

    A ``seed`` given to a selection method with nothing random (``longest``, ``top_k``, ``rds``,
    ``zipfit``, ...) is checked (an int) and then ignored, as a recipe-level ``seed`` is: a loop
    over methods with the same arguments compares them (scikit-learn's ``set_random_state``
    sets ``random_state`` only where an estimator has one). It is logged as unused and is not
    part of the stage's parameters or cache key.
    """
    spec = dict(spec)
    if "type" not in spec:
        raise ConfigError(f"{where}: missing `type`")
    type_name = spec.pop("type")
    try:
        cls = get_stage(type_name)
    except KeyError:
        close = difflib.get_close_matches(str(type_name), known_stages(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"{where}.type: unknown stage type {type_name!r}{hint}; known: {', '.join(known_stages())}") from None
    allowed = cls.param_names()
    if default_seed is not None and "seed" in allowed and "seed" not in spec:
        spec["seed"] = default_seed
    if "seed" in spec and "seed" not in allowed and getattr(cls, "budgeted", False):
        seed = spec.pop("seed")
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ConfigError(f"{where}.seed: seed must be an int, got {seed!r}")
        log.info("%s: seed=%r unused: %s is deterministic (nothing random to seed; not in its cache key)",
                 where, seed, type_name)
    for key in spec:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown parameter for {type_name}{hint}; allowed: {', '.join(allowed)}")
    try:
        return cls(**spec)
    except TypeError as e:  # a required parameter is missing
        raise ConfigError(f"{where} ({type_name}): {e}") from None
    except ValueError as e:
        msg = str(e)
        param = next((p for p in allowed if msg.startswith(p) or f" {p} " in f" {msg} "), None)
        raise ConfigError(f"{where}.{param}: {msg}" if param else f"{where} ({type_name}): {msg}") from None


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"extends: cycle through {path}")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    parent = data.pop("extends", None)
    if parent:
        base = read_yaml(path.parent / parent, seen + (path,))
        data = _deep_merge(base, data)
    return data


def _format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        lines.append(f"{loc or 'config'}: {err['msg']}" + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""))
    return "; ".join(lines)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (the CLI's ``--set``) to a recipe dict; returns a copy.

    Keys are dotted; a number selects a list item (``stages.8.budget=1000``); the value is parsed
    as YAML (``true``, ``1000``, ``[a, b]``, ``{tokens: 500000}``), so strings need no quotes.
    A missing mapping key is created; a list index out of range is an error.

    Raises:
        ConfigError: for a malformed override or a path that does not fit the recipe.
    """
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".") if sep else []
        if not parts or not all(parts):
            raise ConfigError(f"--set {item!r}: expected key.path=value, e.g. input.path=pool.jsonl")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item!r}: {where}: index out of range (the list has {len(node)} items)")
                part = int(part)
            elif not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i])} is a {type(node).__name__}, not a mapping")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
    return out


def load_config(source: str | Path | dict | RunConfig, output_dir: str | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Load and fully validate a recipe.

    Args:
        source: YAML path, a dict of the same shape, or a RunConfig.
        output_dir: overrides ``output.dir`` (the CLI's ``--output``).
        overrides: ``key.path=value`` strings applied after ``extends`` (the CLI's ``--set`` and
            ``--input``); see :func:`apply_overrides`. Not allowed with a RunConfig.

    Returns:
        RunConfig whose stages all instantiate.

    Raises:
        ConfigError: with the key path and allowed values.
    """
    if isinstance(source, RunConfig):
        if overrides:
            raise ConfigError("overrides need a YAML path or a dict, not a RunConfig")
        cfg = source
    else:
        if isinstance(source, dict):
            data = dict(source)
            if "extends" in data:
                data = _deep_merge(read_yaml(Path(data.pop("extends"))), data)
        else:
            data = read_yaml(Path(source))
        if overrides:
            data = apply_overrides(data, overrides)
        if "refresh" in data:
            raise ConfigError("refresh: this is a versioned-refresh recipe; run it with `curate refresh CONFIG` "
                              "(or the curate/refresh deployment), which resolves {previous} and writes vNNNN/")
        try:
            cfg = RunConfig.model_validate(data)
        except ValidationError as e:
            raise ConfigError(_format_validation_error(e)) from None
    if output_dir is not None:
        cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(output_dir)})})
    cfg.build_stages()
    return cfg
