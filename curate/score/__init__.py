"""Annotators that score rows: proxy-LM perplexity and IFD, Gopher-style heuristics, the learned
quality scorer and its training, reward models, token counts, perplexity buckets, document
quality; ``producers`` finds the annotator that makes a score column."""
