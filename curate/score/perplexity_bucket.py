"""CCNet perplexity buckets (head / middle / tail) on the proxy LM's perplexity.

Wenzek et al., "CCNet: Extracting High Quality Monolingual Datasets from Web Crawl Data"
(LREC 2020, arXiv 1911.00359) score every web document with a 5-gram KenLM trained on Wikipedia
and split each language into three buckets with two fixed cut-offs, the 30th and 60th
percentiles of a perplexity sample (cc_net ``perplexity.py``, ``PerplexityBucket``: ``head``
when ppl < p30, ``middle`` when p30 <= ppl < p60, ``tail`` when ppl >= p60; English: head < 340,
tail >= 520 under their KenLM). The cut-offs are read from a file, never recomputed per pool.

KenLM models are not available offline, so curate buckets the proxy LM's perplexity: the
``perplexity`` stage's ``ppl_text`` (SmolLM2-135M-Instruct, first 512 tokens of ``text``). The
cut-offs are the 30th and 60th percentiles of that same perplexity over a reference corpus
curate ships (``curate/assets/ppl_reference_dolly_wiki.jsonl.gz``: 1,000 Dolly-15k contexts,
mostly Wikipedia passages, CC BY-SA 3.0), stored in ``curate/assets/ppl_cutoffs_smollm2.json``
with the corpus hash, the per-passage perplexities and the model fingerprint (data card:
``curate/assets/ppl_cutoffs_smollm2.md``). ``benchmarks/ppl_reference.py`` recomputes them.
Head therefore means "as predictable as the most predictable 30% of Wikipedia passages".

Stages: ``perplexity_bucket`` (Annotator: ``ppl_bucket`` head/middle/tail and ``ppl_bucket_id``
0/1/2) and ``ppl_bucket_filter`` (Selector: keep the named buckets, default head + middle as
RedPajama-1T kept of CCNet's output).
"""
from __future__ import annotations

import gzip
import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Annotator, Selection, Selector, StageContext

log = logging.getLogger(__name__)

BUCKETS = ("head", "middle", "tail")
CUTOFFS_FORMAT = "curate.ppl_cutoffs/1"
PPL_COLUMN = "ppl_text"


def assets_dir() -> Path:
    """curate/assets/ (the shipped cut-offs and reference corpus live there)."""
    return Path(__file__).resolve().parent.parent / "assets"


def default_cutoffs_path() -> Path:
    """The shipped cut-offs: SmolLM2 ``ppl_text`` percentiles on the Dolly/Wikipedia reference."""
    return assets_dir() / "ppl_cutoffs_smollm2.json"


def check_cutoffs(cutoffs, where: str = "cutoffs") -> list[float]:
    """Validate two increasing positive perplexity cut-offs [head|middle, middle|tail].

    Raises:
        ValueError: not two finite numbers with 0 < a < b (the message names ``where``).
    """
    ok = (isinstance(cutoffs, (list, tuple)) and len(cutoffs) == 2
          and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cutoffs))
    if not ok or not (np.isfinite(cutoffs).all() and 0 < cutoffs[0] < cutoffs[1]):
        raise ValueError(f"{where} must be [a, b] with 0 < a < b (perplexities), got {cutoffs!r}")
    return [float(c) for c in cutoffs]


def load_cutoffs(path: str | Path | None = None) -> dict:
    """Read a cut-offs file written by :func:`cutoffs_spec` (default: the shipped one).

    Args:
        path: JSON file (default None = :func:`default_cutoffs_path`).

    Returns:
        The spec: ``cutoffs`` [a, b], ``percentiles``, ``perplexity`` (stage settings: model,
        weights fingerprint, max_length, dtype, runtime), ``reference`` (file, n, hash) and
        ``ppl`` (the reference perplexities the cut-offs were taken from).

    Raises:
        FileNotFoundError: no such file. ValueError: not a curate cut-offs file.
    """
    path = Path(path) if path is not None else default_cutoffs_path()
    if not path.is_file():
        raise FileNotFoundError(f"perplexity cut-offs file not found: {path}")
    spec = json.loads(path.read_text())
    if spec.get("format") != CUTOFFS_FORMAT:
        raise ValueError(f"{path} is not a curate perplexity cut-offs file (format {spec.get('format')!r}, "
                         f"expected {CUTOFFS_FORMAT!r})")
    spec["cutoffs"] = check_cutoffs(spec.get("cutoffs"), f"{path}: cutoffs")
    return spec


def assign_buckets(ppl: np.ndarray, cutoffs: Sequence[float]) -> np.ndarray:
    """CCNet bucket ids: 0 head (ppl < a), 1 middle (a <= ppl < b), 2 tail (ppl >= b), -1 NaN.

    Args:
        ppl: (n,) perplexities.
        cutoffs: [a, b] with a < b.

    Returns:
        (n,) int8 bucket ids.
    """
    ppl = np.asarray(ppl, dtype=np.float64)
    # side="right": a value equal to a cut-off goes to the bucket above it, as cc_net's "<" tests
    ids = np.searchsorted(np.asarray(cutoffs, dtype=np.float64), ppl, side="right").astype(np.int8)
    ids[np.isnan(ppl)] = -1
    return ids


def corpus_hash(texts: Sequence[str]) -> str:
    """xxh3-128 hex digest of texts in order (each utf-8, NUL-terminated)."""
    import xxhash

    h = xxhash.xxh3_128()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def file_content_hash(path: str | Path) -> str:
    """xxh3-128 hex digest of a file's bytes alone (not its name: a copy elsewhere keys the same)."""
    import xxhash

    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def read_reference(path: str | Path) -> list[dict]:
    """Rows of a reference corpus file (.jsonl or .jsonl.gz, one ``{"text": ...}`` object a line)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    bad = [i for i, r in enumerate(rows) if not isinstance(r.get("text"), str) or not r["text"]]
    if bad:
        raise ValueError(f"{path}: rows {bad[:5]} have no non-empty `text`")
    return rows


def write_reference(rows: list[dict], path: str | Path) -> Path:
    """Write reference rows as gzip'd JSONL with a fixed gzip header (byte-identical reruns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        for r in rows:
            gz.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))
    return path


def perplexity_stage(*, model: str = "SmolLM2-135M-Instruct", max_length: int = 512, dtype: str | None = "float32",
                     batch_size: int = 8, show_progress: bool = False):
    """The ``perplexity`` stage whose ``ppl_text`` the cut-offs are computed on (and compared with)."""
    from curate.score.stages import Perplexity

    return Perplexity(model=model, max_length=max_length, dtype=dtype, batch_size=batch_size,
                      show_progress=show_progress)


def reference_perplexities(texts: Sequence[str], work_dir: str | Path, *, model: str = "SmolLM2-135M-Instruct",
                           max_length: int = 512, dtype: str | None = "float32", shard_rows: int = 32,
                           show_progress: bool = True) -> tuple[np.ndarray, dict]:
    """``ppl_text`` of plain-text rows through the ``perplexity`` stage itself, resumable.

    The stage's own ``annotate`` runs on each shard of ``shard_rows`` texts, so the numbers are
    exactly what a pipeline's ``perplexity`` prerequisite computes with the same settings; each
    finished shard is saved under ``work_dir`` and reused when the run is restarted.

    Args:
        texts: n documents (the ``text`` column).
        work_dir: folder for finished shards (kept; delete it to recompute).
        model, max_length, dtype: ``perplexity`` stage settings (defaults: SmolLM2-135M-Instruct,
            512 tokens, float32).
        shard_rows: rows per saved shard (default 32).
        show_progress: progress bar over shards (default True).

    Returns:
        ((n,) float64 perplexities, the stage's settings resolved here: model, weights
        fingerprint, max_length, dtype, runtime, column, field).
    """
    from curate.core.shards import map_shards

    stage = perplexity_stage(model=model, max_length=max_length, dtype=dtype)
    texts = list(texts)

    def fn(start: int, stop: int) -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as tmp:
            out = stage.annotate(pa.table({"text": texts[start:stop]}), StageContext(work_dir=Path(tmp),
                                                                                      show_progress=False))
        return {"ppl": out.column(PPL_COLUMN).to_numpy(zero_copy_only=False).astype(np.float64)}

    ppl = map_shards(Path(work_dir), len(texts), fn, shard_size=shard_rows, desc="reference perplexity",
                     show_progress=show_progress)["ppl"]
    resolved = stage.cache_params()["resolved"]
    settings = {"stage": "perplexity", "column": PPL_COLUMN, "field": "text", "model": model,
                "weights": resolved["weights"], "max_length": max_length, "dtype": dtype,
                "resolved_dtype": resolved["dtype"], "runtime": resolved["runtime"]}
    return ppl, settings


def cutoffs_spec(ppl: np.ndarray, settings: dict, reference: dict, percentiles: Sequence[float] = (30, 60)) -> dict:
    """The cut-offs file's content: percentiles of ``ppl`` (numpy's linear interpolation).

    Args:
        ppl: (n,) reference perplexities (no NaN).
        settings: the perplexity settings from :func:`reference_perplexities`.
        reference: facts on the reference corpus (file, n, xxh3_128, source, licence).
        percentiles: the two percentiles (default CCNet's 30 and 60).
    """
    ppl = np.asarray(ppl, dtype=np.float64)
    if np.isnan(ppl).any():
        raise ValueError(f"ppl has {int(np.isnan(ppl).sum())} NaN values; every reference text must score")
    cut = [float(x) for x in np.percentile(ppl, list(percentiles))]
    return {"format": CUTOFFS_FORMAT, "percentiles": [float(p) for p in percentiles], "cutoffs": check_cutoffs(cut),
            "perplexity": settings, "reference": reference, "ppl": [float(x) for x in ppl]}


@register
class PerplexityBucket(Annotator):
    """CCNet's head / middle / tail buckets of the proxy LM's ``ppl_text`` (module docstring).

    Cut-offs come from a file computed once on a reference corpus (default the shipped SmolLM2 /
    Wikipedia one) or are given explicitly; they are never taken from the pool being bucketed,
    so a pool of only high-perplexity documents is all ``tail``. When ``ppl_text`` is missing a
    ``perplexity`` stage with the cut-offs file's own settings (model, max_length, dtype) runs
    first. A ``ppl_text`` made earlier with other settings is used as it is: bf16 weights (the
    ``perplexity`` default on CUDA and bf16 CPUs) gave perplexities within 1.6% of float32 and no
    bucket change on 64 reference texts, so only rows that close to a cut-off may move
    (benchmarks/results/ppl_buckets.md).

    Columns: ``ppl_bucket`` (string head/middle/tail, null where ``ppl_text`` is NaN) and
    ``ppl_bucket_id`` (int8 0/1/2, null where NaN): ``score_filter: {column: ppl_bucket_id,
    max: 1}`` keeps head + middle, as does ``ppl_bucket_filter``.

    Args:
        cutoffs_path: cut-offs JSON file (default None = the shipped
            ``curate/assets/ppl_cutoffs_smollm2.json``). Keyed by its content hash, not its path.
        cutoffs: explicit [a, b] perplexity cut-offs (0 < a < b; default None = from the file);
            give one of ``cutoffs_path`` and ``cutoffs``, or neither.
        column: perplexity column to bucket (default ``ppl_text``; another column needs explicit
            ``cutoffs`` and is never computed automatically).
    """

    name = "perplexity_bucket"
    version = "1"
    row_local = True  # a row's bucket depends on its own perplexity and the fixed cut-offs
    produces = ("ppl_bucket_id",)

    def __init__(self, *, cutoffs_path: str | None = None, cutoffs: list[float] | None = None,
                 column: str = PPL_COLUMN):
        if cutoffs_path is not None and not isinstance(cutoffs_path, str):
            raise ValueError(f"cutoffs_path must be None or a path string, got {cutoffs_path!r}")
        if cutoffs_path is not None and cutoffs is not None:
            raise ValueError(f"give cutoffs_path or cutoffs, not both (got {cutoffs_path!r} and {cutoffs!r})")
        if cutoffs is not None:
            check_cutoffs(cutoffs)
        if not isinstance(column, str) or not column:
            raise ValueError(f"column must be a non-empty column name, got {column!r}")
        if column != PPL_COLUMN and cutoffs is None:
            raise ValueError(f"column={column!r}: the cut-offs files are percentiles of {PPL_COLUMN!r}; "
                             "give explicit `cutoffs` for another perplexity column")
        self.cutoffs_path, self.cutoffs, self.column = cutoffs_path, cutoffs, column

    def spec(self) -> dict | None:
        """The cut-offs file's content (None when ``cutoffs`` are explicit)."""
        return None if self.cutoffs is not None else load_cutoffs(self.cutoffs_path)

    def resolved_cutoffs(self) -> list[float]:
        """[a, b] in use."""
        return check_cutoffs(self.cutoffs) if self.cutoffs is not None else self.spec()["cutoffs"]

    def required_columns(self) -> list[str]:
        return [self.column]

    def output_columns(self) -> list[str]:
        return ["ppl_bucket", "ppl_bucket_id"]

    def cache_params(self) -> dict:
        """Parameters with the cut-offs file replaced by its content hash (a moved file reuses results)."""
        params = {k: v for k, v in super().cache_params().items() if k != "cutoffs_path"}
        if self.cutoffs is None:
            path = Path(self.cutoffs_path) if self.cutoffs_path else default_cutoffs_path()
            params["cutoffs_file"] = file_content_hash(path) if path.is_file() else None
        return params

    def prerequisites(self, columns: list[str]) -> list:
        if self.column in columns or self.column != PPL_COLUMN:
            return []
        s = (self.spec() if self.cutoffs is None else load_cutoffs())["perplexity"]
        return [perplexity_stage(model=s["model"], max_length=s["max_length"], dtype=s["dtype"], show_progress=True)]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        from curate.core.schema import score_column

        ids = assign_buckets(score_column(table, self.column, self.name), self.resolved_cutoffs())
        missing = ids < 0
        names = np.array(BUCKETS, dtype=object)[np.where(missing, 0, ids)]
        return pa.table({"ppl_bucket": pa.array(names.tolist(), pa.string(), mask=missing),
                         "ppl_bucket_id": pa.array(ids, pa.int8(), mask=missing)})


@register
class PerplexityBucketFilter(Selector):
    """Keep the rows whose CCNet perplexity bucket is one of ``keep_buckets``.

    Reads ``ppl_bucket`` (adding ``perplexity_bucket`` with its defaults, and the ``perplexity``
    stage it needs, when missing). RedPajama-1T kept CCNet's head and middle buckets of
    CommonCrawl, the default here; ``[head]`` is the strictest.

    Args:
        keep_buckets: non-empty subset of ["head", "middle", "tail"] (default ["head", "middle"]).
        keep_missing: keep rows without a bucket (NaN perplexity, e.g. empty text; default False).
    """

    name = "ppl_bucket_filter"
    reasons: ClassVar[dict[str, str]] = {"ppl_bucket_dropped": "the row's perplexity bucket is not in keep_buckets",
                                         "missing_ppl_bucket": "the row has no perplexity bucket (NaN perplexity)"}

    def __init__(self, *, keep_buckets: list[str] | None = None, keep_missing: bool = False):
        if keep_buckets is not None and (not isinstance(keep_buckets, (list, tuple)) or not keep_buckets
                                         or any(b not in BUCKETS for b in keep_buckets)):
            raise ValueError(f"keep_buckets must be a non-empty subset of {list(BUCKETS)}, got {keep_buckets!r}")
        if not isinstance(keep_missing, bool):
            raise TypeError(f"keep_missing must be a bool, got {keep_missing!r}")
        self.keep_buckets, self.keep_missing = keep_buckets, keep_missing

    def required_columns(self) -> list[str]:
        return ["ppl_bucket"]

    def prerequisites(self, columns: list[str]) -> list:
        if "ppl_bucket" in columns:
            return []
        stage = PerplexityBucket()
        return stage.prerequisites(columns) + [stage]

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        keep_set = set(self.keep_buckets or ("head", "middle"))
        got = table.column("ppl_bucket").to_pylist()
        reason = np.array([("missing_ppl_bucket" if not self.keep_missing else None) if b is None
                           else (None if b in keep_set else "ppl_bucket_dropped") for b in got], dtype=object)
        keep = np.array([r is None for r in reason], dtype=bool)
        score = None
        if "ppl_bucket_id" in table.column_names:
            score = table.column("ppl_bucket_id").to_numpy(zero_copy_only=False).astype(np.float64)
        return Selection(keep=keep, reason=reason, score=score)
