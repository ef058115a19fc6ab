"""Held-out evaluation of selections: ``curate eval`` (runner), statistics, report, kMQ feedback.

Importing this package is cheap: torch and transformers are imported inside the functions that need them.
"""
