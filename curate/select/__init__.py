"""curate.select."""
