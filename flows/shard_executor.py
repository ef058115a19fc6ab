"""One Prefect task per shard: the shard executor of ``curate.core.shards.map_shards`` in flows.

The Prefect flow installs a :class:`PrefectShardExecutor` (``use_executor``) around a stage when
it runs on prefect-dask's ``DaskTaskRunner`` (``curate_flow(dask=True)``): every unfinished shard
of embed / LM scoring / the quality model / MinHash signatures becomes one Prefect task, run by
whichever Dask worker is free. ``map_shards`` keeps the shard list, the file names, the resume
check and the row-order concatenation, so the output equals the local loop's; a task computes
its shard with ``compute_shard`` (saved atomically with its checksum), and a shard whose task
fails is retried (``retries``) before the stage fails.

Workers must see the stage's work dir (one machine, or a shared filesystem). Each task carries
``fn_for_rows(fn, start, stop)``, pickled by cloudpickle: only its shard's data when ``fn``
defines ``for_rows`` (MinHash), the whole closure otherwise.
"""
from __future__ import annotations

from collections.abc import Iterator

from curate.core.shards import Shard, ShardFn, compute_shard, fn_for_rows


class PrefectShardExecutor:
    """Submit one Prefect task per unfinished shard to the running flow's task runner.

    Args:
        retries: attempts after a failure, per shard (default 2).
        retry_delay_seconds: wait between attempts (default 1).
    """

    def __init__(self, retries: int = 2, retry_delay_seconds: float = 1.0):
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds

    def run(self, fn: ShardFn, todo: list[Shard], desc: str = "shards") -> Iterator[tuple[Shard, None]]:
        """Submit every shard of ``todo`` (see ``curate.core.shards``), then yield each once its
        task has saved it; runs inside a flow (or task) run. Tasks are named after ``desc``."""
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        t = task(compute_shard, name=f"shard {desc}", retries=self.retries,
                 retry_delay_seconds=self.retry_delay_seconds, cache_policy=NO_CACHE)
        futures = [t.with_options(task_run_name=f"{desc} rows {s.start}-{s.stop}").submit(
            fn_for_rows(fn, s.start, s.stop), str(s.path), s.start, s.stop) for s in todo]
        for s, f in zip(todo, futures):
            f.result()  # raises the shard's error once its retries are spent
            yield s, None
