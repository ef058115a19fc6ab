"""curate.eval."""
