"""Prefect flows wrapping curate.pipeline (thin glue; the library never imports Prefect)."""
