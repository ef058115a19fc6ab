"""Prefect flows: ``curate`` (run a recipe) and ``curate-refresh`` (scheduled re-curation).

Each step is a Prefect task that passes only small references (config path, cache keys, output
dir) — never tables: a task replays the recipe up to its step, and every earlier step is a
cache hit in curate's StageStore, so each task does only its own step's work.

Deployments are declared in prefect.yaml (``prefect deployment run curate/quickstart``).
``task_runner="dask"`` runs the tasks on a Dask cluster through prefect-dask
(a LocalCluster by default; pass ``dask_address`` for an existing scheduler).
"""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from curate.config import load_config
from curate.pipeline import Runner, ingest, run as run_recipe
from curate.provenance import Ledger
from curate.store import StageStore


@task(name="ingest", cache_policy=NO_CACHE)
def ingest_task(config: str, output_dir: str | None) -> str:
    cfg = load_config(config, output_dir)
    return ingest(cfg, StageStore(cfg.cache_dir)).key


@task(name="stage", cache_policy=NO_CACHE)
def stage_task(config: str, output_dir: str | None, upto: int, parent_key: str) -> str:
    """Run stages[0..upto] (all but the last are cache hits); return the last step's key."""
    cfg = load_config(config, output_dir)
    store = StageStore(cfg.cache_dir)
    ing = ingest(cfg, store)
    if ing.key != parent_key and upto == 0:
        raise RuntimeError(f"input changed while the flow ran (ingest key {ing.key} != {parent_key})")
    ledger = Ledger(ing.table.column("id").to_pylist(), ing.quarantine, ing.table.column("source").to_pylist())
    stages = cfg.build_stages()[: upto + 1]
    _, key, records = Runner(store, seed=cfg.seed, show_progress=False).run_stages(stages, ing.table, ing.key, ledger)
    get_run_logger().info("%s -> key %s (%s)", records[-1].label, key, "cached" if records[-1].cached else f"{records[-1].seconds:.1f}s")
    return key


@task(name="write-output", cache_policy=NO_CACHE)
def write_task(config: str, output_dir: str | None, final_key: str) -> dict:
    res = run_recipe(config, output_dir=output_dir, show_progress=False)
    return {"output_dir": str(res.output_dir), "output_hash": res.output_hash, "counts": res.counts}


@flow(name="curate")
def curate_flow(config: str = "configs/quickstart.yaml", output_dir: str | None = None) -> dict:
    """Run a recipe as one Prefect task per step; returns output dir, hash and counts."""
    cfg = load_config(config, output_dir)  # fail before any task on a bad recipe
    key = ingest_task(config, output_dir)
    for i in range(len(cfg.stages)):
        key = stage_task(config, output_dir, i, key)
    result = write_task(config, output_dir, key)
    get_run_logger().info("curated %s", result)
    return result


@flow(name="curate-refresh")
def refresh_flow(config: str = "configs/refresh.yaml", output_dir: str | None = None) -> dict:
    """Scheduled refresh: re-read the input (new files change its fingerprint), dedup against
    the curated set named in the recipe (e.g. ``minhash_dedup`` with ``against:``) and
    re-select. An unchanged input is a no-op thanks to the cache."""
    return curate_flow(config, output_dir)


def dask_flow(address: str | None = None, n_workers: int = 2):
    """``curate_flow`` with a prefect-dask DaskTaskRunner (LocalCluster unless ``address``)."""
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(address=address) if address else DaskTaskRunner(
        cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True})
    return curate_flow.with_options(task_runner=runner)


if __name__ == "__main__":  # python flows/curate_flow.py CONFIG
    import sys

    print(curate_flow(*(sys.argv[1:2] or [])))
