"""The stage contract, checked on every registered stage (as scikit-learn's ``check_estimator``).

Every built-in stage in the registry (so a new stage is checked without editing a list) must:

(a) round-trip its parameters: ``type(s)(**s.get_params())`` has the same ``get_params()`` and
    cache key parameters, and ``cache_params()`` leaves out the execution-only ones;
(b) as a Selector, drop rows only with reasons it declares, every dropped row with one;
(c) as a budgeted selector, keep exactly its count or fraction budget;
(d) give the same output twice for the same parameters (seed) and rows;
(e) lose no row: a Selection covers every input row; an Annotator returns one row per input row,
    new columns only, exactly its declared ``output_columns()``.

Stages run on real rows (sample_data/dolly_2k.jsonl, plus planted duplicates and a plain-text
row) holding only the canonical columns and the columns the stage declares in
``required_columns()``, so a stage that reads an undeclared column fails too. Model-backed
stages run with the tiny in-code Llama (tests/tiny_lm.py); embedding, cluster, score and SAE
columns are precomputed from the rows. A stage whose constructor needs arguments gets cheap
ones from ``EXAMPLES``; a new stage that needs some and has none there fails with a message
saying so.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa
import pytest
from select_toys import REPO, dolly_rows

from curate.core.budget import resolve_budget
from curate.core.registry import get_stage, known_stages
from curate.core.schema import CANONICAL_COLUMNS, CANONICAL_SCHEMA, embedding_column
from curate.core.stage import Annotator, Selection, Selector, Stage, StageContext
from curate.score.producers import score_producers

TINY_LM, TINY_REWARD, HEURISTIC_SCORER = "<tiny_lm>", "<tiny_reward>", "<heuristic_scorer>"
TARGETS = str(REPO / "sample_targets" / "gsm8k_test_8.jsonl")
LM = {"model": TINY_LM, "device": "cpu", "dtype": "float32", "runtime": "torch", "max_length": 320,
      "show_progress": False}
DIM = 32  # the tiny LM's hidden size, so rds compares its pooled targets with the pool's vectors

# Cheap parameters per stage (placeholders are replaced by the models built below).
EXAMPLES: dict[str, dict] = {
    "car": {"budget": 10, "k": 4, "pca": None, "niter": 10},
    "cherry_ifd": {"budget": 10},
    "url_dedup": {"url_column": "source"},  # the contract pool has no url column
    "substring_dedup": {"unit": "byte", "min_length": 40, "min_words": 0},  # no tokenizer to load
    "d4": {"budget": 0.5, "k": 3, "niter": 10},
    "embed": {"backend": "lm_pooling", "model": TINY_LM, "device": "cpu", "runtime": "torch", "max_length": 320,
              "show_progress": False},
    "ifd": LM,
    "kcenter": {"budget": 10, "start": "random", "seed": 3},
    "kmeans": {"k": 4, "niter": 10},
    "kmq": {"budget": 10, "k": 4, "niter": 10, "seed": 2},
    "kmq_iterative": {"budget": 10, "k": 4, "niter": 10, "rounds": 2, "seed": 2,
                      "feedback": "select_toys:make_feedback", "show_progress": False},
    "length_filter": {"min_words": 8, "max_chars": 600},
    "longest": {"budget": 10},
    "minhash_dedup": {"threshold": 0.7, "num_perm": 64},
    "perplexity": LM,
    "perplexity_bucket": {"cutoffs": [15.0, 40.0]},
    "quality_model": {"model_path": HEURISTIC_SCORER, "show_progress": False},
    "random": {"budget": 10, "seed": 5},
    "rds": {"budget": 10, "targets": TARGETS, "backend": "lm_pooling", "model": TINY_LM, "embedding_column": "embedding",
            "max_length": 64},
    "reward_model": {"model": TINY_REWARD, "template": "plain", "device": "cpu", "dtype": "float32", "max_length": 64,
                     "show_progress": False},
    "sae_features": {"k": 4, "expansion": 2, "epochs": 3, "batch_size": 16, "show_progress": False},
    "sae_greedy": {"budget": 10, "k": 4, "expansion": 2, "epochs": 3},
    "sae_simscale": {"budget": 10, "k": 4, "expansion": 2, "epochs": 3},
    "score_filter": {"column": "quality", "quantile_range": [0.1, 0.9], "min": -1.5},
    "semdedup": {"target_ratio": 0.8},
    "token_count": {"model": TINY_LM},
    "top_k": {"budget": 10, "score": "quality"},
    "zipfit": {"budget": 10, "targets": TARGETS, "num_proc": 1, "show_progress": False},
    "deita": {"budget": 10},
    "llm_rater": {"model": TINY_LM, "scoring": "expected", "device": "cpu", "dtype": "float32", "show_progress": False},
    "llm_rating": {"budget": 10, "column": "quality"},  # any rating column: no rater to run
    "learning_percentage": {"budget": 10, "k": 4, "niter": 10, "score": "quality"},  # no LoRA fit
    "clust_rand": {"budget": 10, "k": 4, "niter": 10},
    "lp_scores": {"model": TINY_LM, "epochs": 2, "layers": 2, "batch_size": 4, "device": "cpu", "show_progress": False},
    "less_gradients": {"model": TINY_LM, "epochs": 2, "layers": 2, "batch_size": 4, "warmup_fraction": 0.25,
                       "proj_dim": 64, "device": "cpu", "show_progress": False},
    "less_influence": {"targets": TARGETS, "model": TINY_LM, "epochs": 2, "layers": 2, "batch_size": 4,
                       "warmup_fraction": 0.25, "proj_dim": 64, "device": "cpu", "show_progress": False},
    "less": {"budget": 10, "targets": TARGETS, "features": {"model": TINY_LM, "epochs": 2, "layers": 2, "batch_size": 4,
                                                            "warmup_fraction": 0.25, "proj_dim": 64, "device": "cpu",
                                                            "show_progress": False}},
}
# Checks (b)-(e) of these stages cannot run cheaply: only the parameter checks run by default.
SLOW: set[str] = {"lp_scores", "less_gradients"}  # LoRA training (tests/test_select_{lp,less}.py)


def builtin_stages() -> list[str]:
    """Registered stages shipped with curate (test modules register their own helpers too)."""
    return [n for n in known_stages() if get_stage(n).__module__.startswith("curate.")]


# Stages whose inputs are another stage's features the contract pool cannot hold cheaply (LESS's
# gradients): parameter checks only; tests/test_select_less.py runs them end to end.
PARAMS_ONLY: set[str] = {"less", "less_influence"}


def run_params(names: list[str]) -> list:
    return [pytest.param(n, marks=pytest.mark.skip(reason="parameter checks only (PARAMS_ONLY)")) if n in PARAMS_ONLY
            else pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


# -- fixtures: rows with precomputed columns, tiny models ----------------------------------------
def _bag_of_words(texts: list[str]) -> np.ndarray:
    """(n, DIM) float32 L2-normalised hashed word counts: equal texts get equal vectors."""
    out = np.zeros((len(texts), DIM), np.float32)
    for i, t in enumerate(texts):
        for w in (t or "").lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def canonical_table(rows: list[dict]) -> pa.Table:
    """Canonical rows (as ingest makes them) from alpaca dicts; a dict with only ``text`` is plain text."""
    def field(key: str) -> list:
        return [r.get(key) for r in rows]

    text = [r.get("text") or "\n\n".join(p for p in (r["instruction"], r["input"], r["output"]) if p) for r in rows]
    return pa.table({"id": [f"row{i}" for i in range(len(rows))], "text": text, "instruction": field("instruction"),
                     "input": field("input"), "output": field("output"), "messages": [None] * len(rows),
                     "source": ["dolly"] * len(rows)}, schema=CANONICAL_SCHEMA)


@pytest.fixture(scope="module")
def pool() -> pa.Table:
    """40 dolly rows, 2 copies of them (one in upper case), 1 near-duplicate and 1 plain-text row,
    with the columns annotators would add (embedding, clusters, scores, n_tokens, SAE features)."""
    from curate.cluster.kmeans import KMeans

    # outputs cut to about 160 characters: the tiny LM reads them one byte per token
    rows = [{**r, "output": r["output"][:160].rsplit(" ", 1)[0] if len(r["output"]) > 160 else r["output"]}
            for r in dolly_rows(40)]
    rows += [dict(rows[3]), {**rows[7], "output": rows[7]["output"].upper()},
             {**rows[12], "output": rows[12]["output"] + " Indeed."}, {"text": "A plain text row without an instruction."}]
    table = canonical_table(rows)
    n = table.num_rows
    rng = np.random.default_rng(0)
    x = _bag_of_words(table.column("text").to_pylist())
    cid, dist = KMeans(k=4, niter=20).fit_predict(x)
    top = np.argsort(-x, axis=1, kind="stable")[:, :4]
    ifd = rng.uniform(0.3, 1.3, n)
    ifd[-1] = np.nan  # the plain-text row has no IFD
    ppl = rng.lognormal(3.0, 1.0, n)
    extra = {"embedding": embedding_column(x), "cluster_id": pa.array(cid), "centroid_distance": pa.array(dist),
             "quality": pa.array(rng.normal(size=n)),
             "n_tokens": pa.array([len((t or "").split()) for t in table.column("text").to_pylist()], pa.int64()),
             "ifd": pa.array(ifd), "ifd_truncated": pa.array(rng.random(n) < 0.1), "ppl_text": pa.array(ppl),
             "ppl_bucket": pa.array(np.array(["head", "middle", "tail"])[np.searchsorted([15.0, 40.0], ppl)]),
             "sae_latents": embedding_column(top.astype(np.int32)),
             "sae_acts": embedding_column(np.take_along_axis(x, top, axis=1))}
    for k, v in extra.items():
        table = table.append_column(k, v)
    return table


@pytest.fixture(scope="module")
def models(tmp_path_factory, pool) -> dict[str, str]:
    """{placeholder: path}: the tiny Llama, a one-logit reward head on it, a heuristics-only scorer."""
    pytest.importorskip("transformers")
    import torch
    from tiny_lm import tiny_lm
    from transformers import LlamaForSequenceClassification

    from curate.score.quality_model import QualityModel, compute_features
    from curate.score.rows import row_fields

    root = tmp_path_factory.mktemp("contract_models")
    lm, tok = tiny_lm()
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    cfg = lm.config
    cfg.num_labels = 1
    torch.manual_seed(1)
    LlamaForSequenceClassification(cfg).eval().save_pretrained(root / "reward")
    tok.save_pretrained(root / "reward")
    f = row_fields(pool)
    y = (np.arange(len(f)) % 2).astype(np.int64)
    qm = QualityModel(features=("heuristics",)).fit(compute_features(f, ("heuristics",)), y)
    return {TINY_LM: str(root / "lm"), TINY_REWARD: str(root / "reward"),
            HEURISTIC_SCORER: str(qm.save(root / "scorer.npz"))}


def build(name: str, models: dict[str, str], **overrides) -> Stage:
    """The stage with its example parameters (placeholders resolved) and ``overrides``."""
    def resolve(v):  # placeholders also inside a nested mapping (less's `features`)
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        return models.get(v, v) if isinstance(v, str) else v

    params = {k: resolve(v) for k, v in {**EXAMPLES.get(name, {}), **overrides}.items()}
    try:
        return get_stage(name)(**params)
    except (TypeError, ValueError) as e:
        pytest.fail(f"{name}: cannot build it from EXAMPLES[{name!r}] = {params!r} ({e}); give it cheap "
                    f"parameters in EXAMPLES in {__file__}")


def stage_input(stage: Stage, pool: pa.Table) -> pa.Table:
    """The canonical columns plus the ones the stage declares it reads."""
    required = stage.required_columns()
    missing = [c for c in required if c not in pool.column_names]
    assert not missing, f"{stage.name}: required_columns() {missing} are not columns the contract pool has"
    return pool.select([c for c in pool.column_names if c in CANONICAL_COLUMNS or c in required])


def run(stage: Stage, table: pa.Table, tmp_path, tag: str) -> Selection | pa.Table:
    """One run in fresh scratch folders (shards saved by an earlier run must not be reused)."""
    ctx = StageContext(work_dir=tmp_path / tag / "work", artifact_dir=tmp_path / tag / "art", show_progress=False)
    return stage.select(table, ctx) if isinstance(stage, Selector) else stage.annotate(table, ctx)


def comparable(out: Selection | pa.Table) -> dict:
    """Column -> values with NaN made equal to itself (for the determinism check)."""
    table = out.to_table() if isinstance(out, Selection) else out

    def fix(v):
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        return [fix(x) for x in v] if isinstance(v, list) else v

    return {c: fix(table.column(c).to_pylist()) for c in table.column_names}


# -- the checks (plain functions, so the broken-stage test can show they fail) -------------------
def check_params(stage: Stage) -> None:
    """(a) parameters round-trip; cache_params() has no execution-only parameter."""
    params = stage.get_params()
    assert set(params) == set(type(stage).param_names())
    again = type(stage)(**params)
    assert again.get_params() == params, f"{stage.name}: get_params() changed through the constructor"
    assert again.cache_params() == stage.cache_params(), f"{stage.name}: the cache key changed through get_params()"
    leaked = set(stage.cache_params()) & set(stage.execution_params)
    assert not leaked, f"{stage.name}: execution-only parameters {sorted(leaked)} are in cache_params()"


def check_output(stage: Stage, table: pa.Table, out) -> None:
    """(b) declared reasons, a reason for every dropped row; (e) no row lost, declared columns."""
    n = table.num_rows
    if isinstance(stage, Selector):
        assert isinstance(out, Selection) and len(out.keep) == n, f"{stage.name}: the selection does not cover {n} rows"
        used = {r for r in out.reason if r is not None}
        assert used <= set(stage.reasons), f"{stage.name}: undeclared reasons {sorted(used - set(stage.reasons))}"
        assert all(r is not None for r in out.reason[~out.keep]), f"{stage.name}: a dropped row has no reason"
        assert all(r is None for r in out.reason[out.keep]), f"{stage.name}: a kept row has a reason"
        return
    assert isinstance(out, pa.Table) and out.num_rows == n, f"{stage.name}: {out.num_rows} output rows for {n}"
    assert out.column_names == stage.output_columns(), \
        f"{stage.name}: annotate returned {out.column_names}, output_columns() declares {stage.output_columns()}"
    assert not set(out.column_names) & set(table.column_names), f"{stage.name}: returned input columns"


def check_budget(stage: Stage, table: pa.Table, tmp_path) -> None:
    """(c) a budgeted selector keeps exactly a count and a fraction budget."""
    n = table.num_rows
    for budget in (7, 0.25):
        st = type(stage)(**{**stage.get_params(), "budget": budget})
        sel = run(st, table, tmp_path, f"budget{budget}")
        assert sel.n_kept == resolve_budget(budget, n), f"{stage.name}: kept {sel.n_kept} for budget {budget} of {n}"


def check_stage(stage: Stage, pool: pa.Table, tmp_path) -> None:
    """(b), (d), (e) and, for a budgeted selector, (c)."""
    table = stage_input(stage, pool)
    first = run(stage, table, tmp_path, "first")
    check_output(stage, table, first)
    again = run(type(stage)(**stage.get_params()), table, tmp_path, "again")
    assert comparable(again) == comparable(first), f"{stage.name}: two runs with the same parameters differ"
    if stage.budgeted:
        check_budget(stage, table, tmp_path)


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", builtin_stages())
def test_declarations(name):
    cls = get_stage(name)
    assert cls.name == name and issubclass(cls, (Annotator, Selector))
    if issubclass(cls, Selector):  # {} only for a selector that never drops (it rewrites, e.g. pii)
        assert all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in cls.reasons.items())
    assert not cls.row_local or issubclass(cls, Annotator), "row_local is a tag of annotators"
    assert not cls.budgeted or (issubclass(cls, Selector) and "budget" in cls.param_names())
    if issubclass(cls, Annotator) and cls.produces:  # added with its defaults, so those must make the columns
        assert set(cls.produces) <= set(cls().output_columns()), \
            f"{name}: produces {cls.produces}, not all in the default instance's output_columns()"


@pytest.mark.parametrize("name", builtin_stages())
def test_parameters_round_trip(name, models):
    stage = build(name, models)
    check_params(stage)
    declared = stage.required_columns() + (stage.output_columns() if isinstance(stage, Annotator) else [])
    assert all(isinstance(c, str) and c for c in declared)
    if isinstance(stage, Annotator):
        assert stage.output_columns(), f"{name}: an annotator declares the columns it adds"


@pytest.mark.parametrize("name", run_params(builtin_stages()))
def test_stage_keeps_the_contract(name, models, pool, tmp_path):
    check_stage(build(name, models), pool, tmp_path)


# The model-backed stages once more with the models they ship with (slow: real MiniLM / SmolLM2).
DEFAULT_MODELS = {"embed": {"show_progress": False}, "ifd": {"device": "cpu", "show_progress": False},
                  "perplexity": {"device": "cpu", "show_progress": False}, "quality_model": {"show_progress": False},
                  "token_count": {}}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(DEFAULT_MODELS))
def test_stage_with_its_default_model_keeps_the_contract(name, pool, tmp_path):
    stage = get_stage(name)(**DEFAULT_MODELS[name])
    check_params(stage)
    check_stage(stage, pool.slice(0, 12), tmp_path)


def test_every_module_defining_a_stage_is_loaded_by_the_registry():
    """A stage in a module the registry does not import is no YAML type (score_filter was lost so)."""
    import re
    import subprocess
    import sys

    mods = sorted(".".join(f.relative_to(REPO).with_suffix("").parts) for f in (REPO / "curate").rglob("*.py")
                  if re.search(r"^@register\s*$", f.read_text(encoding="utf-8"), re.MULTILINE))
    code = ("import sys; from curate.core.registry import load_builtin_stages; load_builtin_stages(); "
            f"print([m for m in {mods!r} if m not in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", f"modules with stages that load_builtin_stages() never imports: {out.stdout}"
    assert not set(EXAMPLES) - set(builtin_stages()), "EXAMPLES names stages that are not registered"


def test_every_score_column_has_one_producer():
    producers = score_producers()  # raises on a column two annotators claim
    assert producers["quality"] == "quality_model" and producers["ifd"] == "ifd" and producers["h_words"] == "heuristics"


# -- the checks catch a stage that breaks the contract ---------------------------------------------
class GoodToy(Selector):
    """Keeps rows whose text has at least ``min_words`` words (a control that passes every check)."""

    name = "contract_good_toy"
    reasons = {"too_short": "fewer than min_words words"}

    def __init__(self, *, min_words: int = 20, show_progress: bool = False):
        self.min_words, self.show_progress = min_words, show_progress

    def required_columns(self) -> list[str]:
        return ["text"]

    def select(self, table, ctx):
        words = np.array([len(t.split()) for t in table.column("text").to_pylist()])
        return Selection.keep_mask(words >= self.min_words, self.reason_code(table))

    def reason_code(self, table) -> str:
        return "too_short"


class UndeclaredReason(GoodToy):
    def reason_code(self, table):
        return "too_long"


class ReadsUndeclaredColumn(GoodToy):
    def reason_code(self, table):
        table.column("quality")  # read, but not in required_columns()
        return "too_short"


class Unseeded(GoodToy):
    def select(self, table, ctx):
        return Selection.keep_mask(np.random.default_rng().random(len(table)) < 0.5, "too_short")


class ChangesItsParameter(GoodToy):
    def __init__(self, *, min_words: int = 20, show_progress: bool = False):
        super().__init__(min_words=min_words + 1, show_progress=show_progress)


class KeysOnExecutionParams(GoodToy):
    def cache_params(self):
        return self.get_params()


class InexactBudget(GoodToy):
    budgeted = True

    def __init__(self, *, budget=5, show_progress: bool = False):
        super().__init__(show_progress=show_progress)
        self.budget = budget

    def select(self, table, ctx):
        keep = np.zeros(len(table), bool)
        keep[:resolve_budget(self.budget, len(table)) - 1] = True  # one row short
        return Selection.keep_mask(keep, "too_short")


class MisdeclaredColumns(Annotator):
    name = "contract_toy_annotator"

    def output_columns(self):
        return ["n_words"]

    def annotate(self, table, ctx):
        return pa.table({"words": [len(t.split()) for t in table.column("text").to_pylist()]})


class LosesARow(MisdeclaredColumns):
    def annotate(self, table, ctx):
        return pa.table({"n_words": [len(t.split()) for t in table.column("text").to_pylist()][1:]})


def test_the_control_toy_passes(pool, tmp_path):
    check_params(GoodToy())
    check_stage(GoodToy(), pool, tmp_path)


@pytest.mark.parametrize("toy, message", [
    (UndeclaredReason, r"undeclared reasons \['too_long'\]"),
    (ReadsUndeclaredColumn, "quality"),
    (Unseeded, "two runs with the same parameters differ"),
    (ChangesItsParameter, r"get_params\(\) changed through the constructor"),
    (KeysOnExecutionParams, r"execution-only parameters \['show_progress'\]"),
    (InexactBudget, "kept 6 for budget 7 of 44"),
    (MisdeclaredColumns, r"annotate returned \['words'\], output_columns\(\) declares \['n_words'\]"),
    (LosesARow, "43 output rows for 44"),
])
def test_the_checks_catch_a_stage_that_breaks_the_contract(toy, message, pool, tmp_path):
    with pytest.raises((AssertionError, KeyError), match=message):
        check_params(toy())
        check_stage(toy(), pool, tmp_path)
