"""curate.cluster."""
