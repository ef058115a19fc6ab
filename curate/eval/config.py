"""The ``curate eval`` config (YAML), validated before any compute."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from curate.core.errors import ConfigError
from curate.core.paths import expand_path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolConfig(_Strict):
    paths: list[str]                       # files read with curate's readers; ``source`` = file name
    sample: dict[str, int] = {}            # per-source seeded subsample sizes, e.g. {alpaca_44k.json: 10000}
    sample_seed: int = 0
    holdout: dict[str, int] = {}           # rows of a source kept OUT of the pool, written to
                                           # <output>/pool/holdout_<source>.jsonl (e.g. selection queries)
    strip_calculator: bool = False         # remove GSM8K <<...>> annotations in the pool

    @field_validator("paths")
    @classmethod
    def _expand(cls, v: list[str]) -> list[str]:  # "$CURATE_DATA/..." and "~" (docs/data.md)
        return [expand_path(s) for s in v]


class DecontamConfig(_Strict):
    exact: bool = True
    minhash_threshold: Optional[float] = 0.5
    embed_threshold: Optional[float] = 0.9
    # MiniLM through the project's default embedding backend (onnx: the torch model's vectors to
    # float rounding, ~1.7x faster on CPU; docs/embeddings.md); sentence_transformers = torch
    embed_backend: Literal["onnx", "sentence_transformers"] = "onnx"


class GenerateConfig(_Strict):
    """Optional generation-based scoring of an eval set (see :mod:`curate.eval.generate`)."""

    metric: Literal["gsm8k_exact_match", "reference_contains"] = "gsm8k_exact_match"
    max_new_tokens: int = Field(256, ge=1)  # greedy tokens per prompt; GSM8K gold solutions ~127 tokens
    batch_size: int = Field(8, ge=1)        # prompts per generate call (left padded); changes no result
                                            # in exact arithmetic, but is part of the cache key


class QueriesConfig(_Strict):
    """Selection queries of an eval set, never scored (see :mod:`curate.eval.queries`)."""

    n: int = Field(ge=1)                   # query rows (RDS+'s multi-task setting: the same n per task)
    seed: int = 0
    path: Optional[str] = None             # default: the set's own file (its unscored rows)
    stratify: Optional[str] = None         # e.g. AlpacaEval's `dataset`
    # scored_first: the scored sample as without queries, queries from the rows no set scores;
    # queries_first: queries first (rows no scored_first set scores), scored sample from the rest
    draw: Literal["scored_first", "queries_first"] = "scored_first"

    @field_validator("path")
    @classmethod
    def _expand(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else expand_path(v)


class EvalSetConfig(_Strict):
    name: str
    path: str
    style: str = ""                        # "gsm8k" also reports the `#### N` answer-line NLL
    n: Optional[int] = None
    seed: int = 0
    strip_calculator: bool = False
    max_response_tokens: Optional[int] = None
    stratify: Optional[str] = None
    generate: Optional[GenerateConfig] = None  # greedy generation + per-example 0/1 score (slow)
    queries: Optional[QueriesConfig] = None    # selection queries held out of the scored sample

    @field_validator("path")
    @classmethod
    def _expand(cls, v: str) -> str:
        return expand_path(v)


class EvalConfig(_Strict):
    name: str = "eval"
    output: str = "runs/eval"
    pool: PoolConfig
    decontaminate: DecontamConfig = DecontamConfig()
    eval_sets: list[EvalSetConfig]
    verdict_sets: list[str] = []           # default: every eval set not out of target
    out_of_target: list[str] = []          # sets no arm uses as queries and nothing tunes on: own verdict column
    budget: int
    seeds: list[int] = [0, 1, 2]
    arms: list[dict[str, Any]]
    reference_arm: str = "random"
    compare_also: list[str] = []           # further references, e.g. the length-matched arm
    train: dict[str, Any] = {}
    eval: dict[str, Any] = Field(default_factory=lambda: {"batch_size": 16, "content_skip": 8})
    n_boot: int = 10_000
    _declared_arms: list[dict[str, Any]] = PrivateAttr(default_factory=list)  # before an --arms filter

    def arm_spec(self, name: str) -> dict[str, Any]:
        """The declared spec of arm ``name``, also when ``--arms`` left it out of ``arms`` (a match arm)."""
        return next(a for a in (self._declared_arms or self.arms) if a["name"] == name)

    @field_validator("arms")
    @classmethod
    def _arms(cls, arms):
        names = set()
        for i, a in enumerate(arms):
            if "name" not in a:
                raise ValueError(f"arms[{i}] needs a `name`")
            if a["name"] in names:
                raise ValueError(f"arms[{i}]: duplicate name {a['name']!r}")
            names.add(a["name"])
            if not (a.get("method") or a.get("selection")):
                raise ValueError(f"arms[{i}] ({a['name']}): needs `method` or `selection`")
            extra = set(a) - {"name", "method", "params", "selection", "seeds", "pool_filter", "match", "fractions",
                              "query_targets", "selection_only"}
            if extra:
                raise ValueError(f"arms[{i}] ({a['name']}): unknown keys {sorted(extra)}")
        return arms


def load_eval_config(path_or_dict, arms: list[str] | None = None) -> EvalConfig:
    """Read and validate; errors name the key path. Relative paths stay relative to the CWD;
    ``~`` and environment variables in data paths are expanded (``$CURATE_DATA/eval/...``).

    Args:
        path_or_dict: YAML path or dict.
        arms: run only these arms (names; the reference arm is always kept). Methods of the kept
            arms must be registered stages or controls, checked here before any compute.
    """
    data = path_or_dict
    if not isinstance(path_or_dict, dict):
        p = Path(path_or_dict)
        if not p.exists():
            raise ConfigError(f"{p}: no such config file")
        data = yaml.safe_load(p.read_text()) or {}
    try:
        cfg = EvalConfig(**data)
    except ValidationError as e:
        msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"eval config: {msgs}") from None
    names = [a["name"] for a in cfg.arms]
    for i, a in enumerate(cfg.arms):  # on the declared list: a match arm may be filtered out below
        if a.get("method") == "length_matched_random" and a.get("match") not in names[:i]:
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): match={a.get('match')!r} must name an earlier arm")
    cfg._declared_arms = list(cfg.arms)
    if arms:
        unknown = [a for a in arms if a not in names]
        if unknown:
            raise ConfigError(f"--arms: {unknown} not in the config's arms {names}")
        keep = set(arms) | {cfg.reference_arm}
        cfg.arms = [a for a in cfg.arms if a["name"] in keep]
        cfg.compare_also = [c for c in cfg.compare_also if c in keep]
        names = [a["name"] for a in cfg.arms]
    from curate.core.registry import known_stages
    from curate.eval.arms import CONTROL_METHODS

    # the kept arms, and the match arms whose selections a kept length-matched arm needs
    needed = set(names) | {a.get("match") for a in cfg.arms if a.get("method") == "length_matched_random"}
    for i, a in enumerate(cfg._declared_arms):
        m = a.get("method")
        if a["name"] in needed and m and m not in CONTROL_METHODS and m not in known_stages():
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): method {m!r} is not a known stage "
                              f"({', '.join(known_stages())}) or control ({', '.join(CONTROL_METHODS)})")
    for r in [cfg.reference_arm, *cfg.compare_also]:
        if r not in names:
            raise ConfigError(f"eval config: reference arm {r!r} is not in arms {names}")
        if cfg.arm_spec(r).get("selection_only"):
            raise ConfigError(f"eval config: reference arm {r!r} is selection_only (never trained)")
    sets = [s.name for s in cfg.eval_sets]
    if len(set(sets)) != len(sets):
        raise ConfigError(f"eval config: eval_sets: duplicate names in {sets}")
    for s in cfg.verdict_sets:
        if s not in sets:
            raise ConfigError(f"eval config: verdict_sets entry {s!r} is not an eval set {sets}")
    _check_queries(cfg, sets)
    from curate.train.lora import LoRATrainer

    try:
        LoRATrainer(**cfg.train)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"eval config: train: {e}") from None
    return cfg


def _check_queries(cfg: EvalConfig, sets: list[str]) -> None:
    """``query_targets``, ``selection_only`` and ``out_of_target``, checked before any compute."""
    from curate.core.registry import get_stage

    by_name = {s.name: s for s in cfg.eval_sets}
    for s in cfg.eval_sets:
        q = s.queries
        if q is not None and q.draw == "queries_first" and q.path is not None:
            raise ConfigError(f"eval config: eval_sets[{s.name!r}].queries: draw=queries_first takes the queries "
                              f"from the set's own file; drop path={q.path!r} or use draw=scored_first")
    for o in cfg.out_of_target:
        if o not in sets:
            raise ConfigError(f"eval config: out_of_target entry {o!r} is not an eval set {sets}")
        if o in cfg.verdict_sets:
            raise ConfigError(f"eval config: out_of_target set {o!r} is also in verdict_sets; it gets its own verdict")
        if by_name[o].queries is not None:
            raise ConfigError(f"eval config: out_of_target set {o!r} has queries; no arm may select toward it")
    for i, a in enumerate(cfg._declared_arms):
        if not isinstance(a.get("selection_only", False), bool):
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): selection_only must be true or false, "
                              f"got {a['selection_only']!r}")
        qt = a.get("query_targets")
        if qt is None:
            continue
        if not isinstance(qt, list) or not qt:
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): query_targets must be a non-empty list of "
                              f"eval set names, got {qt!r}")
        for t in qt:
            if t not in sets or by_name[t].queries is None:
                with_q = [s.name for s in cfg.eval_sets if s.queries is not None]
                raise ConfigError(f"eval config: arms[{i}] ({a['name']}): query_targets entry {t!r} is not an eval "
                                  f"set with queries {with_q}")
        if "targets" in (a.get("params") or {}):
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): give either query_targets or params.targets")
        m = a.get("method")
        try:
            ok = "targets" in get_stage(m).param_names()
        except (KeyError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"eval config: arms[{i}] ({a['name']}): query_targets needs a targeted method "
                              f"(one with a `targets` parameter: rds, zipfit), got method={m!r}")
    # nothing may tune on an out-of-target set: no arm parameter may name its file
    oot_paths = {str(Path(by_name[o].path).resolve()): o for o in cfg.out_of_target}
    for i, a in enumerate(cfg._declared_arms):
        for v in _strings(a.get("params")):
            hit = oot_paths.get(str(Path(v).resolve())) if v else None
            if hit:
                raise ConfigError(f"eval config: arms[{i}] ({a['name']}): params name {v!r}, the file of out-of-target "
                                  f"set {hit!r}")


def _strings(x):
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _strings(v)
