"""Prefect flows wrapping curate.engine.pipeline (thin glue; the library never imports Prefect)."""
