"""curate.train."""
