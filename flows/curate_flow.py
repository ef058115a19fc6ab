"""Prefect flows over curate.engine.execute (thin glue: the library never imports Prefect).

Both flows are named ``curate``, so every deployment reads ``curate/<name>``
(``prefect deployment run curate/quickstart``; see prefect.yaml and docs/operations.md):

* :func:`curate_flow`: one task for ingest, one per recipe stage (named by its label, e.g.
  ``2:minhash_dedup``), one to write the output. Tasks pass only the config path, cache keys and
  the output dir, never tables: a stage task replays the recipe up to its step, where every
  earlier step is a cache hit in curate's StageStore, so it computes only its own step. With
  ``dask=True`` the stages run in a subflow on prefect-dask's ``DaskTaskRunner`` and every
  sharded annotator (embed, LM scores, quality model) submits one task per shard.
* :func:`refresh_flow`: a versioned refresh (:mod:`curate.ops.refresh`): ``plan`` says which
  version it will write or that the source is unchanged (no-op), then one task writes it.

Both publish Prefect artifacts under the recipe's stable key ``curate-<recipe>`` (the funnel as
markdown, the steps as a table; a refresh adds its version and changelog): :mod:`flows.artifacts`.
"""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from curate.engine.config import load_config
from curate.engine.execute import execute

try:
    from flows.artifacts import publish_refresh, publish_run
except ModuleNotFoundError:  # run as a script (python flows/curate_flow.py): flows/ itself is on sys.path
    from artifacts import publish_refresh, publish_run


def _run_name(prefix: str = "") -> str:
    params = flow_run.parameters or {}
    cfg = Path(str(params.get("config") or "recipe")).stem
    return f"{prefix}{cfg}-{time.strftime('%m%d-%H%M%S')}"


@task(name="ingest", cache_policy=NO_CACHE, task_run_name="ingest {recipe}")
def ingest_task(config: str, output_dir: str | None, recipe: str) -> str:
    """Read (or load from cache) the recipe's input; returns the ingest cache key."""
    ing = execute(config, output_dir=output_dir, show_progress=False, n_stages=0, write=False).ingest
    get_run_logger().info("ingest: %d rows, %d quarantined -> key %s%s", len(ing.table), len(ing.quarantine),
                          ing.key, " (cached)" if ing.cached else "")
    return ing.key


@task(name="stage", cache_policy=NO_CACHE)
def stage_task(config: str, output_dir: str | None, upto: int, parent_key: str, per_shard: bool = False) -> str:
    """Run stages[0..upto] (all but the last are cache hits); return the last step's key.

    Args:
        per_shard: route the stage's shards through the flow's task runner (one task each).
    """
    from flows.shard_executor import PrefectShardExecutor

    ex = execute(config, output_dir=output_dir, show_progress=False, n_stages=upto + 1, write=False,
                 ingest_key=parent_key if upto == 0 else None,  # the first stage's parent is the ingest
                 executor=PrefectShardExecutor() if per_shard else None)
    records = ex.records
    log = get_run_logger()
    for r in records[-(1 + sum(rec.auto for rec in records[-2:])):]:
        log.info("%s: %d -> %d rows, key %s (%s)", r.label, r.rows_in, r.rows_out, r.key,
                 "cached" if r.cached else f"{r.seconds:.1f}s")
    return ex.final_key


@task(name="write-output", cache_policy=NO_CACHE, task_run_name="write-output {recipe}")
def write_task(config: str, output_dir: str | None, final_key: str, recipe: str) -> dict:
    """Write the output dir (every step is a cache hit by now); returns dir, hash and counts."""
    res = execute(config, output_dir=output_dir, show_progress=False).result
    return {"output_dir": str(Path(res.output_dir).resolve()), "output_hash": res.output_hash, "counts": res.counts}


def _steps(config: str, output_dir: str | None, per_shard: bool) -> dict:
    cfg = load_config(config, output_dir)  # fail before any task on a bad recipe
    recipe = cfg.name or Path(config).stem
    key = ingest_task(config, output_dir, recipe)
    for i, spec in enumerate(cfg.stages):
        label = f"{i}:{spec['type']}"
        key = stage_task.with_options(name=f"stage {spec['type']}", task_run_name=f"{label} [{recipe}]")(
            config, output_dir, i, key, per_shard)
    result = write_task(config, output_dir, key, recipe)
    get_run_logger().info("curated %s: %s selected, output %s, hash %s", recipe, result["counts"]["n_selected"],
                          result["output_dir"], result["output_hash"])
    result["artifacts"] = publish_run(recipe, result["output_dir"])
    return result


@flow(name="curate-dask-stages", flow_run_name=lambda: _run_name("dask-"))
def _dask_stages(config: str, output_dir: str | None = None) -> dict:
    return _steps(config, output_dir, per_shard=True)


def dask_runner(address: str | None = None, n_workers: int = 2):
    """prefect-dask ``DaskTaskRunner``: a LocalCluster of ``n_workers`` single-thread processes,
    or the scheduler at ``address`` (dask-jobqueue / dask-kubernetes clusters expose one)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None})


@flow(name="curate", flow_run_name=lambda: _run_name())
def curate_flow(config: str = "configs/quickstart.yaml", output_dir: str | None = None, dask: bool = False,
                dask_address: str | None = None, dask_workers: int = 2) -> dict:
    """Run a recipe as one Prefect task per step; returns output dir, hash and counts.

    Args:
        config: recipe YAML (relative paths resolve against the working directory).
        output_dir: overrides the recipe's ``output.dir``.
        dask: run the stages on Dask, one task per shard of the sharded annotators (default False).
        dask_address: scheduler address (default None = a local cluster).
        dask_workers: workers of the local cluster (default 2).
    """
    if dask:
        return _dask_stages.with_options(task_runner=dask_runner(dask_address, dask_workers))(config, output_dir)
    return _steps(config, output_dir, per_shard=False)


@task(name="plan-refresh", cache_policy=NO_CACHE, task_run_name="plan refresh {recipe}")
def plan_refresh_task(config: str, source: str | None, versions_dir: str | None, recipe: str) -> dict:
    from curate.ops.refresh import plan_refresh

    return plan_refresh(config, source, versions_dir)


@task(name="refresh-version", cache_policy=NO_CACHE)
def refresh_task(config: str, source: str | None, versions_dir: str | None) -> dict:
    from curate.ops.refresh import run_refresh

    r = run_refresh(config, source, versions_dir, show_progress=False)
    return {"version": r.version, "path": str(Path(r.path).resolve()), "noop": r.noop, "message": r.message,
            "output_hash": r.output_hash, "counts": r.counts, "seconds": round(r.seconds, 2),
            "added": r.changelog.get("n_added", 0), "removed": r.changelog.get("n_removed", 0),
            "changelog": {k: r.changelog.get(k) for k in ("previous", "why_counts", "pool")}}


@flow(name="curate", flow_run_name=lambda: _run_name("refresh-"))
def refresh_flow(config: str = "configs/refresh.yaml", source: str | None = None,
                 versions_dir: str | None = None) -> dict:
    """Versioned refresh: the next ``vNNNN`` with a changelog, or a no-op on an unchanged source.

    Args:
        config: refresh recipe (its ``refresh:`` block names the source and versions dir).
        source: overrides ``refresh.source``.
        versions_dir: overrides ``refresh.versions_dir``.
    """
    log = get_run_logger()
    recipe = Path(config).stem
    plan = plan_refresh_task(config, source, versions_dir, recipe)
    log.info("%s", plan["message"])
    if plan["noop"]:
        out = {"version": plan["version"], "noop": True, "message": plan["message"]}
    else:
        out = refresh_task.with_options(task_run_name=f"refresh {recipe} {plan['version']}")(config, source, versions_dir)
        log.info("%s", out["message"])
    out["artifacts"] = publish_refresh(recipe, out)
    return out


if __name__ == "__main__":  # python flows/curate_flow.py [CONFIG]
    import sys

    print(curate_flow(*(sys.argv[1:2] or [])))
