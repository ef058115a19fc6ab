"""The one engine every entry point runs stages through.

``curate.run`` (:func:`run`), a versioned refresh
(:func:`curate.ops.refresh.run_refresh`), the Prefect flow's ingest, stage and write tasks
(``flows/curate_flow.py``) and ``curate.select`` (:func:`curate.api.select`) all call
:func:`execute` (a recipe) or :func:`execute_table` (rows already in memory), so they share one
way to open the cache, build the Runner, start and check the Ledger, write the output and tell
``curate cache gc`` what the run used, instead of copies that drift apart.

:func:`execute`, in order:

1. loads the recipe (``output_dir``, ``cache_dir`` and ``overrides`` applied);
2. opens the StageStore and builds the Runner (``runner_factory``: the refresh passes its
   RefreshRunner, which serves row-local annotators from the row cache and reuses kmeans
   centroids);
3. checks the recipe before ingest, ingests, checks it again on the ingested columns
   (:mod:`curate.engine.preflight`) and starts the Ledger;
4. runs the stages (all of them, or the first ``n_stages`` for the flow's per-stage task), inside
   ``executor`` when one is given (the flow's per-shard Prefect tasks);
5. when ``write``: writes the output folder under the output lock
   (:func:`curate.engine.output.output_lock`), calls ``on_written`` still under that lock (the
   refresh finishes its version folder there), and records the run's keys so ``curate cache gc``
   keeps them;
6. releases the store's shared holds on the run's keys, whatever happened.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from curate.cache.store import StageStore
from curate.core.hashing import table_fingerprint
from curate.core.shards import use_executor
from curate.core.stage import Stage
from curate.engine.config import RunConfig, load_config
from curate.engine.output import RunResult, output_lock, write_run
from curate.engine.pipeline import Ingest, Runner, StepRecord, ingest
from curate.engine.preflight import check_after_ingest, check_before_ingest
from curate.engine.provenance import Ledger
from curate.ingest.result import Ingested


@dataclass
class Execution:
    """What :func:`execute` or :func:`execute_table` did.

    Attributes:
        config: the resolved recipe (None for :func:`execute_table`).
        ingest: the input the stages ran on (:class:`curate.engine.pipeline.Ingest`).
        table: the rows the stages kept, with every column they added.
        ledger: the provenance of every ingested row.
        records: one StepRecord per step that ran (automatic prerequisites included).
        final_key: cache key of the last step (the input's key when no stage ran).
        runner: the Runner that ran them (a RefreshRunner keeps its row-cache counts there).
        result: the written output folder, or None when nothing was written.
    """

    config: RunConfig | None
    ingest: Ingest
    table: pa.Table
    ledger: Ledger
    records: list[StepRecord]
    final_key: str
    runner: Runner
    result: RunResult | None = None

    @property
    def keys(self) -> list[str]:
        """Every cache key the run used: the input's, then one per step."""
        return [self.ingest.key] + [r.key for r in self.records]


def execute(config, *, output_dir: str | None = None, cache_dir: str | Path | None = None,
            overrides: list[str] | None = None, show_progress: bool = True,
            runner_factory: Callable[..., Runner] = Runner, n_stages: int | None = None,
            ingest_key: str | None = None, executor=None, write: bool = True,
            on_written: Callable[[Execution], None] | None = None,
            record_as: str | Path | None = None) -> Execution:
    """Run a recipe: ingest, stages, and (by default) the output folder (module docstring).

    Args:
        config: YAML path, dict or RunConfig.
        output_dir: overrides ``output.dir`` (default None: the recipe's).
        cache_dir: overrides ``cache_dir`` (default None: the recipe's, else the default cache).
        overrides: ``key.path=value`` strings applied after ``extends`` (default None; see
            :func:`curate.engine.config.load_config`).
        show_progress: draw progress bars (default True).
        runner_factory: called as ``runner_factory(store, seed=..., show_progress=...)`` to build
            the Runner (default :class:`curate.engine.pipeline.Runner`; a Runner subclass or a
            ``functools.partial`` of one).
        n_stages: run only the first ``n_stages`` recipe stages, each with its prerequisites
            (default None: all; 0: ingest only). The flow's per-stage task replays the recipe up
            to its own stage this way, every earlier step being a cache hit.
        ingest_key: the input's expected cache key (default None: not checked). The flow's first
            stage task passes the ingest task's key, so an input that changed in between fails
            instead of mixing two inputs.
        executor: a shard executor installed around the stages (``curate.core.shards.use_executor``),
            e.g. the flow's ``PrefectShardExecutor``; default None runs shards in this process.
        write: write the output folder and record the run for gc (default True; needs every stage).
        on_written: called with the Execution right after the output is written, still under the
            output lock (default None), so what it adds to the folder belongs to the same turn.
        record_as: the folder the run is recorded under for ``curate cache gc``, which keeps the
            keys of the latest run recorded per folder (default None: the output folder).

    Returns:
        :class:`Execution` (``result`` is the RunResult when ``write``).

    Raises:
        ValueError: ``n_stages`` out of range, or ``write`` with only some stages.
        RuntimeError: the input's key is not ``ingest_key``.
    """
    t0 = time.perf_counter()
    cfg = load_config(config, output_dir, overrides)
    if cache_dir is not None:
        cfg = cfg.model_copy(update={"cache_dir": str(cache_dir)})
    stages = cfg.build_stages()
    if n_stages is not None and not 0 <= n_stages <= len(stages):
        raise ValueError(f"n_stages: {n_stages} is not between 0 and the recipe's {len(stages)} stages")
    if write and n_stages is not None and n_stages < len(stages):
        raise ValueError(f"n_stages: {n_stages} of {len(stages)} stages with write=True; the output folder "
                         f"holds a whole recipe's result (pass write=False)")
    store = StageStore(cfg.cache_dir)
    try:
        runner = runner_factory(store, seed=cfg.seed, show_progress=show_progress)
        check_before_ingest(stages)
        ing = ingest(cfg, store, show_progress)
        if ingest_key is not None and ing.key != ingest_key:
            raise RuntimeError(f"ingest_key: the input changed while the flow ran (ingest key {ing.key} != "
                               f"{ingest_key})")
        check_after_ingest(stages, ing.table)
        ex = _run(runner, cfg, ing, stages[:n_stages], executor)
        if write:
            with output_lock(store, cfg.output.dir):  # re-entrant: write_run takes it again inside
                ex.result = write_run(cfg, ing, ex.table, ex.ledger, ex.records, ex.final_key,
                                      seconds=time.perf_counter() - t0, show_progress=show_progress, store=store)
                if on_written is not None:
                    on_written(ex)
                store.record_run(record_as if record_as is not None else cfg.output.dir, ex.keys, name=cfg.name)
        return ex
    finally:
        store.release()  # the shared holds on this run's keys (gc may remove them from now on)


def execute_table(data: Ingested, stages: list[Stage], *, cache_dir: str | Path | None = None, seed: int | None = 0,
                  show_progress: bool = False, runner_factory: Callable[..., Runner] = Runner,
                  executor=None) -> Execution:
    """Run ``stages`` over rows already ingested in memory (``curate.select``); writes no output.

    The input's cache key is the table's content hash, so the same rows and stages reuse the
    cache like a recipe does. No preflight checks run (the stages' own checks apply) and the
    run is not recorded for gc.

    Args:
        data: the ingested rows (``curate.ingest.read.from_records``): table and quarantine.
        stages: the stages to run, in order (prerequisites are added automatically).
        cache_dir: the stage cache (default None: the default cache).
        seed: run-level seed given to the stages' context (default 0).
        show_progress: draw progress bars (default False).
        runner_factory: as for :func:`execute` (default Runner).
        executor: as for :func:`execute` (default None).

    Returns:
        :class:`Execution` with ``config`` and ``result`` None.
    """
    store = StageStore(cache_dir)
    try:
        runner = runner_factory(store, seed=seed, show_progress=show_progress)
        ing = Ingest(key=table_fingerprint(data.table), table=data.table, quarantine=data.quarantine,
                     warnings=data.warnings, files=[str(p) for p in data.files], cached=False, seconds=0.0)
        return _run(runner, None, ing, list(stages), executor)
    finally:
        store.release()


def _run(runner: Runner, cfg: RunConfig | None, ing: Ingest, stages: list[Stage], executor) -> Execution:
    """Start the Ledger on ``ing`` and run ``stages`` (inside ``executor`` when given)."""
    table = ing.table
    ledger = Ledger(table.column("id").to_pylist(), ing.quarantine, table.column("source").to_pylist(),
                    n_input=ing.n_records if ing.n_records >= 0 else None)
    ledger.check()  # ingest itself lost nothing
    with use_executor(executor) if executor is not None else nullcontext():
        table, key, records = runner.run_stages(stages, table, ing.key, ledger)
    ledger.check_output(table.column("id"))
    return Execution(cfg, ing, table, ledger, records, key, runner)


def run(config, output_dir: str | None = None, show_progress: bool = True, cache_dir: str | None = None,
        overrides: list[str] | None = None):
    """Run a recipe end to end and write the output directory.

    Args:
        config: YAML path, dict or RunConfig.
        output_dir: overrides ``output.dir``.
        show_progress: draw progress bars (default True).
        cache_dir: overrides ``cache_dir``.
        overrides: ``key.path=value`` strings applied to the recipe after ``extends``
            (``["input.path=pool.jsonl", "stages.8.budget=1000"]``; the CLI's ``--input``/``--set``).

    Returns:
        ``curate.engine.output.RunResult``.
    """
    return execute(config, output_dir=output_dir, cache_dir=cache_dir, overrides=overrides,
                   show_progress=show_progress).result
