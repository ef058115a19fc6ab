"""The bottom layer: the stage contract and what every other layer shares.

``stage`` (Annotator, Selector, Selection, StageContext, tags), ``shards`` (the one resumable
shard loop and its executors' protocol), ``registry`` (YAML type -> class), ``schema`` (column
names), ``budget``, ``params`` (parameter checks), ``hashing`` (cache keys, fingerprints),
``errors`` (InputError, ConfigError, LedgerError), ``parallel`` (process pools that also work
from scripts on stdin), ``text_units`` (what a word is in any script). Imports numpy, pyarrow
and the standard library only.
"""
