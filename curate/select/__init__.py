"""Selection methods: random, top_k, CaR, kMQ, SAE diversity, RDS+, ZIP-FIT, Cherry IFD, ...

Each module holds one method as a :class:`curate.select.base.BudgetSelector`. The package is
also callable as ``curate.select(data, method=..., budget=...)`` (set up in ``curate/__init__.py``,
which forwards to :func:`curate.api.select`).
"""
