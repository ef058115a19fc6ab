"""Selectors that remove duplicates: exact, MinHash-LSH, URL, exact-substring, semantic
(SemDeDup) and D4, with their array kernels."""
