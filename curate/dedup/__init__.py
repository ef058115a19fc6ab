"""curate.dedup."""
