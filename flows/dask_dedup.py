"""Run curate's sharded phases on a Dask cluster without Prefect: the shard executor and an entry point.

Every sharded step of curate goes through the installed shard executor
(:mod:`curate.core.shards`): the signatures, band partitions, components, exact check and keep
decision of ``minhash_dedup``; the hash partitions of ``exact_dedup``; the shards of embed and
the LM scores. :class:`DaskShardExecutor` submits each unfinished task to a
``distributed.Client`` (a ``LocalCluster``, or a scheduler started by dask-jobqueue on Slurm or
by dask-kubernetes), keeping at most ``max_in_flight`` tasks submitted so the process that
drives the run never holds every task's input at once. Results are saved by the workers
themselves, with checksums, into the stage's work folder: **every worker must see the cache
folder** (``cache_dir`` / ``$CURATE_CACHE``) at the same path, i.e. a shared filesystem on a
cluster (NFS, Lustre, a mounted bucket). The output equals the local run's (tested on a 2-worker
``LocalCluster``: tests/test_dedup_scale.py).

With Prefect the same happens through ``flows.curate_flow.curate_flow(dask=True,
dask_address=...)`` (one Prefect task per shard, ``flows.shard_executor``); this module is the
route without a Prefect server::

    python flows/dask_dedup.py configs/pretrain/dclm.yaml --address tcp://scheduler:8786
    python flows/dask_dedup.py recipe.yaml --workers 2          # a LocalCluster here

From Python::

    from flows.dask_dedup import dask_executor
    with dask_executor("tcp://scheduler:8786"):
        curate.run("recipe.yaml")
"""
from __future__ import annotations

import argparse
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from curate.core.shards import Shard, ShardFn, compute_shard, fn_for_rows, use_executor


class DaskShardExecutor:
    """Shard executor on a ``distributed.Client``: one Dask task per unfinished shard/task.

    Args:
        client: a connected ``distributed.Client``.
        max_in_flight: tasks submitted and not yet finished at most (default None: twice the
            cluster's threads, at least 4).
        retries: attempts after a failure, per task (default 2).
    """

    def __init__(self, client, max_in_flight: int | None = None, retries: int = 2):
        self.client = client
        self.max_in_flight = max_in_flight
        self.retries = retries
        self.submitted: list[tuple[str, int, int]] = []  # (desc, start, stop) of every task sent

    def _limit(self) -> int:
        if self.max_in_flight is not None:
            return max(1, int(self.max_in_flight))
        threads = sum(self.client.nthreads().values()) or 1
        return max(4, 2 * threads)

    def run(self, fn: ShardFn, todo: list[Shard], desc: str = "shards") -> Iterator[tuple[Shard, None]]:
        """Compute every shard of ``todo`` on the cluster (see :mod:`curate.core.shards`); yield
        each as its task has saved it (arrays read back by the caller)."""
        from distributed import as_completed

        queue = deque(todo)
        running = as_completed()
        shard_of = {}
        tag = uuid.uuid4().hex[:8]

        def submit_next() -> None:
            s = queue.popleft()
            fut = self.client.submit(compute_shard, fn_for_rows(fn, s.start, s.stop), str(s.path), s.start, s.stop,
                                     key=f"{desc.replace(' ', '_')}-{s.start}-{s.stop}-{tag}", retries=self.retries,
                                     pure=False)
            shard_of[fut.key] = s
            self.submitted.append((desc, s.start, s.stop))
            running.add(fut)

        for _ in range(min(self._limit(), len(queue))):
            submit_next()
        for fut in running:
            fut.result()  # raises the task's error once its retries are spent
            s = shard_of.pop(fut.key)
            fut.release()
            if queue:
                submit_next()
            yield s, None


@contextmanager
def dask_executor(address: str | None = None, n_workers: int = 2, **executor_kw):
    """Install a :class:`DaskShardExecutor` for the ``with`` block (``use_executor``).

    Args:
        address: a running scheduler (``tcp://host:8786``; dask-jobqueue's ``SLURMCluster`` and
            dask-kubernetes' ``KubeCluster`` expose one as ``cluster.scheduler_address``); None
            (default) starts a ``LocalCluster`` of ``n_workers`` single-thread processes.
        n_workers: workers of the local cluster (default 2).
        **executor_kw: passed to :class:`DaskShardExecutor`.

    Yields:
        the executor (its ``submitted`` list names every task sent).
    """
    from distributed import Client, LocalCluster

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        ex = DaskShardExecutor(client, **executor_kw)
        with use_executor(ex):
            yield ex
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def main(argv: list[str] | None = None) -> None:
    """``python flows/dask_dedup.py RECIPE [--address A | --workers N] [-o OUT]``: ``curate run`` on Dask."""
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("config")
    ap.add_argument("--address", default=None, help="Dask scheduler address (default: a LocalCluster)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default 2)")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)
    import curate

    with dask_executor(args.address, args.workers):
        res = curate.run(args.config, output_dir=args.output, show_progress=False)
    print(f"{res.output_dir}  hash {res.output_hash}  {res.counts}")


if __name__ == "__main__":
    main()
