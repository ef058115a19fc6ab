"""Selectors that keep or drop documents by rules: length, score thresholds, language, and the
web-text rule families (Gopher repetition and quality, C4, FineWeb, URL blocklists, PII)."""
