"""Every ``curate ...`` command (typer). The top layer: nothing in curate imports it.

``app`` is the console script's entry point (``curate = "curate.cli:app"`` in pyproject.toml).
"""
from curate.cli.main import app

__all__ = ["app"]
