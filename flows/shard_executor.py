"""flows.shard_executor"""
from __future__ import annotations

import logging

from curate.core.shards import compute_shard, load_shards, shard_path

log = logging.getLogger(__name__)

from typing import Callable

import numpy as np


class PrefectShardExecutor:
    """Submit one Prefect task per unfinished shard to the running flow's task runner.

    Args:
        retries: attempts after a failure, per shard (default 2).
        retry_delay_seconds: wait between attempts (default 1).
    """

    def __init__(self, retries: int = 2, retry_delay_seconds: float = 1.0):
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds

    def map_shards(self, ctx, n_rows: int, fn: Callable[[int, int], dict], shard_size: int = 4096,
                   desc: str = "shards") -> dict[str, np.ndarray]:
        """Same contract as ``StageContext.map_shards``; runs inside a flow (or task) run."""
        from prefect import task
        from prefect.cache_policies import NO_CACHE

        starts = list(range(0, n_rows, shard_size)) or [0]
        paths = [shard_path(ctx.work_dir, a, min(a + shard_size, n_rows)) for a in starts]
        from curate.core.shards import load_shard

        # a finished shard is reused only when it passes its checksum (a damaged one is moved
        # aside); the ones that pass are kept for the concatenation, not read a second time
        finished = {p: got for p in paths if p.exists() and (got := load_shard(p)) is not None}
        todo = [(a, p) for a, p in zip(starts, paths) if p not in finished]
        if len(todo) < len(starts):
            log.info("%s: resuming, %d of %d shards already finished", desc, len(starts) - len(todo), len(starts))
        t = task(compute_shard, name=f"shard {desc}", retries=self.retries,
                 retry_delay_seconds=self.retry_delay_seconds, cache_policy=NO_CACHE)
        futures = [t.with_options(task_run_name=f"{desc} rows {a}-{min(a + shard_size, n_rows)}").submit(
            fn, str(p), a, min(a + shard_size, n_rows)) for a, p in todo]
        for f in futures:
            f.result()  # raises the shard's error once its retries are spent
        return load_shards(paths, finished)
