"""Serve the deployments without a work pool: ``python flows/serve.py``.

Equivalent to the prefect.yaml deployments for a single machine: after this starts,
``prefect deployment run curate/quickstart`` runs the recipe here, and the
``curate-refresh/nightly`` deployment fires on its cron schedule.
"""
from __future__ import annotations

from prefect import serve

from flows.curate_flow import curate_flow, refresh_flow

if __name__ == "__main__":
    serve(
        curate_flow.to_deployment(name="quickstart", parameters={"config": "configs/quickstart.yaml"}),
        refresh_flow.to_deployment(name="nightly", parameters={"config": "configs/refresh.yaml"}, cron="0 3 * * *"),
    )
