"""curate.embed."""
