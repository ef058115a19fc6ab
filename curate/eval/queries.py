"""Selection queries per eval set, disjoint from every scored example (RDS+'s multi-task setting).

RDS+ (Ivison et al. 2025, arXiv 2503.01807) selects for several tasks at once from a few query
examples per task, round-robin over tasks. In ``curate eval`` a task is an eval set: its
``queries`` option draws ``n`` query rows that a targeted arm may use (``query_targets`` in the
arm), and that are never scored:

* ``draw: scored_first`` (default): the scored sample is drawn as always (so existing sets keep
  their rows); the queries come from the file's other rows (or from ``queries.path``, e.g. GSM8K's
  train split), leaving out every row whose prompt any set scores.
* ``draw: queries_first``: for a set whose file holds all there is (self-instruct's 252): the
  queries are drawn first from the rows whose prompt no ``scored_first`` set scores (AlpacaEval
  contains all 252 self-instruct prompts), and the scored sample comes from the rest.

Prompts are compared after :func:`curate.eval.sets.normalize_prompt` (case and whitespace), so
the same prompt in two files (AlpacaEval's self-instruct subset) counts as the same.
:func:`check_disjoint` verifies the result and raises on any overlap.
"""
from __future__ import annotations

import json
from pathlib import Path

from curate.eval.sets import (
    EvalSet,
    load_eval_set,
    normalize_prompt,
    read_rows,
    rows_to_set,
    sample_rows,
)


def _load(s, exclude_rows=None) -> EvalSet:
    return load_eval_set(s.path, name=s.name, style=s.style, n=s.n, seed=s.seed, strip_calculator=s.strip_calculator,
                         max_response_tokens=s.max_response_tokens, stratify=s.stratify, exclude_rows=exclude_rows)


def _same_file(a, b) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def query_path(s) -> str:
    """The file set ``s``'s queries come from (its own unless ``queries.path``)."""
    return s.queries.path or s.path


def draw_queries(s, taken: set[str], exclude_rows=()) -> EvalSet:
    """Set ``s``'s query rows: ``s.queries.n`` seeded rows of its query file, none of whose
    normalised prompts is in ``taken`` and none of whose rows is in ``exclude_rows``.

    Args:
        s: an :class:`~curate.eval.config.EvalSetConfig` with ``queries``.
        taken: normalised prompts scored by some set.
        exclude_rows: row indices of the query file never drawn (the set's own scored rows).

    Raises:
        ValueError: fewer candidate rows than ``queries.n`` (naming the set and the counts).
    """
    q = s.queries
    path = Path(query_path(s))
    rows = read_rows(path)
    probe = rows_to_set(rows, range(len(rows)), path, name=s.name)
    skip = {int(i) for i in exclude_rows}
    cand = [i for i, p in enumerate(probe.prompts()) if i not in skip and normalize_prompt(p) not in taken]
    if len(cand) < q.n:
        raise ValueError(f"eval_sets[{s.name!r}].queries.n={q.n}: only {len(cand)} of the {len(rows)} rows of {path} "
                         "are neither scored nor share a prompt with a scored example of any set")
    idx = sample_rows(rows, q.n, q.seed, q.stratify, cand)
    return rows_to_set(rows, idx, path, name=s.name, style=s.style, seed=q.seed, strip_calculator=s.strip_calculator)


def build_sets(set_cfgs) -> tuple[list[EvalSet], dict[str, EvalSet]]:
    """Scored eval sets (config order) and the query sets of those with ``queries``.

    Args:
        set_cfgs: the config's ``eval_sets`` (:class:`~curate.eval.config.EvalSetConfig`).

    Returns:
        ``(sets, queries)``: ``queries`` maps a set name to its query rows (an :class:`EvalSet`).

    Raises:
        ValueError: a query overlaps a scored example (see :func:`check_disjoint`).
    """
    first = [s for s in set_cfgs if s.queries is not None and s.queries.draw == "queries_first"]
    scored = {s.name: _load(s) for s in set_cfgs if s not in first}
    queries: dict[str, EvalSet] = {}
    for s in first:
        queries[s.name] = draw_queries(s, _prompt_keys(scored.values()))
        scored[s.name] = _load(s, exclude_rows=queries[s.name].meta["rows"])
    taken = _prompt_keys(scored.values())
    for s in set_cfgs:
        if s.queries is not None and s.name not in queries:
            own = scored[s.name].meta["rows"] if _same_file(query_path(s), s.path) else ()
            queries[s.name] = draw_queries(s, taken, own)
    sets = [scored[s.name] for s in set_cfgs]
    check_disjoint(sets, queries)
    return sets, queries


def _prompt_keys(sets) -> set[str]:
    return {normalize_prompt(p) for s in sets for p in s.prompts()}


def check_disjoint(sets: list[EvalSet], queries: dict[str, EvalSet]) -> None:
    """Raise ValueError when any query row is a scored example: the same row of the same file, or
    the same normalised prompt as a scored example of any set."""
    scored_rows = {(str(Path(s.meta["path"]).resolve()), i) for s in sets for i in s.ids}
    scored_prompts: dict[str, str] = {}
    for s in sets:
        for i, p in zip(s.ids, s.prompts()):
            scored_prompts.setdefault(normalize_prompt(p), f"{s.name}:{i}")
    bad = []
    for name, q in queries.items():
        path = str(Path(q.meta["path"]).resolve())
        for i, p in zip(q.ids, q.prompts()):
            if (path, i) in scored_rows:
                bad.append(f"{name} query {i} is a scored row of {path}")
            elif normalize_prompt(p) in scored_prompts:
                bad.append(f"{name} query {i} has the prompt of scored example {scored_prompts[normalize_prompt(p)]}")
    if bad:
        raise ValueError(f"selection queries overlap the scored examples ({len(bad)}): " + "; ".join(bad[:5]))


def query_records(q: EvalSet) -> list[dict]:
    """Query rows as records any selection method reads (alpaca fields plus ``id``)."""
    return [{"id": i, "instruction": a, "input": x, "output": o}
            for i, a, x, o in zip(q.ids, q.instruction, q.input, q.reference)]


def write_queries(queries: dict[str, EvalSet], folder: Path) -> None:
    """``<folder>/<set>.jsonl`` per query set, for reading and for reuse by other tools."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, q in queries.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in query_records(q)))


def split_summary(sets: list[EvalSet], queries: dict[str, EvalSet]) -> dict:
    """``{set: {path, style, n_scored, scored_ids, query_path, n_queries, query_ids}}`` for results.json."""
    out = {}
    for s in sets:
        q = queries.get(s.name)
        out[s.name] = {"path": s.meta["path"], "style": s.style, "n_scored": len(s), "scored_ids": list(s.ids),
                       "query_path": q.meta["path"] if q else None, "n_queries": len(q) if q else 0,
                       "query_ids": list(q.ids) if q else []}
    return out
