"""Runs recipes: config (YAML -> validated RunConfig), preflight checks, the Runner and the one
``execute`` every entry point uses, the provenance ledger, the output folder."""
