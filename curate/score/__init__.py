"""curate.score."""
