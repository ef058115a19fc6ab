"""curate.embed: the ``embed`` stage (curate.embed.stage) and its backends
(curate.embed.sentence: sentence-transformers; curate.embed.lm_pooling: RDS+ pooled causal LM)."""
