"""plan() and run(): the whole recipe in plain Python, no orchestrator needed; ingest and the
Runner they are made of. ``run`` goes through :func:`curate.engine.execute.execute`, the one
engine every entry point (run, refresh, the Prefect flow, ``curate.select``) shares.

Rows flow through the stages in order: an Annotator's new columns are appended to the table
(replacing same-named ones), a Selector's kept rows go on, its dropped rows are recorded in the
ledger with the stage and reason. Every step is cached in the StageStore by a key chained from
the input fingerprint, so an unchanged recipe recomputes nothing, changing one stage's
parameters reruns that stage and what follows it, and a killed run resumes at the first stage
without a committed output (long annotators also resume shard by shard inside it).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.cache.store import StageStore, release_mapped_pages
from curate.core.hashing import stable_hash, stage_key
from curate.core.schema import CANONICAL_COLUMNS
from curate.core.stage import Annotator, Selection, Selector, Stage, StageContext
from curate.engine import funnel
from curate.engine.config import DEFAULT_EXTRACT_TIMEOUT, RunConfig, load_config
from curate.engine.provenance import Ledger
from curate.ingest import read as cio
from curate.score.tokens import TokenCount

log = logging.getLogger(__name__)

INGEST_VERSION = "2"  # 2: record counts in the manifest; zstd, NUL-line, deep-JSON and column-name rules


@dataclass
class StepRecord:
    """What one step did (a row of report.json's ``stages``)."""

    label: str
    type: str
    kind: str
    key: str
    params: dict
    cached: bool = False
    auto: bool = False
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict = field(default_factory=dict)
    columns_added: list = field(default_factory=list)
    columns_rewritten: list = field(default_factory=list)
    tokens_in: int | None = None  # n_tokens over the rows in / kept (curate.engine.funnel)
    tokens_out: int | None = None
    examples: list = field(default_factory=list)  # dropped / rewritten rows to read in the report
    seconds: float = 0.0


@dataclass
class Ingest:
    key: str
    table: pa.Table
    quarantine: list[dict]
    warnings: list[str]
    files: list[str]
    cached: bool
    seconds: float
    n_records: int = -1  # records counted where they were read (the ledger's n_input)


def ingest_key(cfg: RunConfig) -> str:
    """Key of the ingest step: the input files' fingerprint and every reading option.

    ``extract_timeout`` at its default is left out, so recipes written before the option existed
    keep their ingest cache (it only matters for HTML/WARC inputs).
    """
    inp = cfg.input
    skip = {"path"} | ({"extract_timeout"} if inp.extract_timeout == DEFAULT_EXTRACT_TIMEOUT else set())
    return stable_hash({"ingest": INGEST_VERSION, "fingerprint": cio.input_fingerprint(inp.path),
                        "params": inp.model_dump(exclude=skip)})


def ingest(cfg: RunConfig, store: StageStore, show_progress: bool = True) -> Ingest:
    """Read the input (or load it from the cache when the input bytes and options are unchanged)."""
    t0 = time.perf_counter()
    key = ingest_key(cfg)
    got_box: list = []

    def compute() -> pa.Table:
        inp = cfg.input
        got = cio.read_input(inp.path, format=inp.format, id_field=inp.id_field, text_field=inp.text_field,
                             fields=inp.fields, max_row_bytes=inp.max_row_bytes, source=inp.source,
                             split=inp.split, extract_timeout=inp.extract_timeout, show_progress=show_progress)
        art = store.work_dir(key) / "artifacts"
        art.mkdir(parents=True, exist_ok=True)
        (art / "quarantine.jsonl").unlink(missing_ok=True)
        if got.quarantine:
            with open(art / "quarantine.jsonl", "w") as f:
                for r in got.quarantine:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        got_box.append(got)
        return got.table

    def meta() -> dict:
        got = got_box[0]
        return {"stage": "ingest", "warnings": got.warnings, "files": [str(p) for p in got.files],
                "record_counts": got.record_counts}

    table, cached = store.get_or_compute(key, compute, meta_fn=meta)
    if got_box:
        got = got_box[0]
        return Ingest(key, table, got.quarantine, got.warnings, [str(p) for p in got.files], False,
                      time.perf_counter() - t0, got.n_records)
    m = store.manifest(key)
    qpath = store.artifacts(key) / "quarantine.jsonl"
    quarantine = [json.loads(l) for l in qpath.read_text().splitlines()] if qpath.exists() else []
    n_records = sum(m["record_counts"].values()) if m.get("record_counts") else len(table) + len(quarantine)
    for w in m.get("warnings", []):
        log.warning("%s", w)
    return Ingest(key, table, quarantine, m.get("warnings", []), m.get("files", []), True,
                  time.perf_counter() - t0, n_records)


def apply_rewrite(table: pa.Table, rewrite: dict, label: str) -> pa.Table:
    """``table`` with the columns a Selector rewrote replaced by their new values (same type).

    Args:
        table: the Selector's input table (n rows).
        rewrite: {column: (n,) new values} from ``Selection.rewrite``.
        label: the step's label, for errors.
    """
    for name, values in rewrite.items():
        i = table.schema.get_field_index(name)
        if i < 0:
            raise ValueError(f"{label}: rewrites column {name!r}, which the table does not have")
        vals = values.tolist() if isinstance(values, np.ndarray) else list(values)
        table = table.set_column(i, table.schema.field(i), pa.array(vals, type=table.schema.field(i).type))
    return table


class Runner:
    """Executes stages against a StageStore, recording every decision in a Ledger.

    Args:
        store: the cache.
        seed: run-level seed given to stages through their context (default 0).
        show_progress: draw progress bars (default True).
    """

    #: a Selector's kept rows are written to the cache batch by batch and read back
    #: memory-mapped from a table this large on (bytes); below it they are filtered in memory.
    #: ``$CURATE_SPILL_BYTES`` overrides it (0: always).
    spill_bytes: int = 1 << 30

    def __init__(self, store: StageStore, seed: int | None = 0, show_progress: bool = True):
        self.store = store
        self.seed = 0 if seed is None else seed
        self.show_progress = show_progress
        self.token_counter: TokenCount | None = None  # the recipe's token_count step, once it ran
        env = os.environ.get("CURATE_SPILL_BYTES")
        if env is not None:
            self.spill_bytes = int(env)

    def kept_rows(self, key: str, table: pa.Table, keep: np.ndarray, label: str) -> pa.Table:
        """The rows of ``table`` a Selector kept, as the next stage's input.

        A table of :attr:`spill_bytes` or more (its buffers, memory-mapped or not) is filtered
        one record batch at a time into the cache entry ``<key>-kept`` and read back
        memory-mapped, so resident memory holds one batch, not the kept text (which, at 10M web
        documents, is more than the machine has); smaller ones are filtered in memory. The
        rows, their order and their values are the same either way; the entry is rebuilt from
        the Selector's cached decision if ``curate cache gc`` removed it.
        """
        if table.nbytes < self.spill_bytes:
            return table.filter(pa.array(keep))

        def batches():
            start = 0
            for b in table.to_batches(max_chunksize=65536):
                m = keep[start:start + b.num_rows]
                start += b.num_rows
                if m.any():
                    yield b.filter(pa.array(m))
                release_mapped_pages(b.columns)  # the parent's mapped pages: written, not needed again

        kept, _ = self.store.get_or_compute_batches(f"{key}-kept", table.schema, batches,
                                                    {"stage": label, "kept_rows_of": key})
        return kept

    def context(self, key: str) -> StageContext:
        work = self.store.work_dir(key)
        (work / "artifacts").mkdir(parents=True, exist_ok=True)
        return StageContext(work_dir=work, artifact_dir=work / "artifacts", seed=self.seed,
                            show_progress=self.show_progress, store=self.store)

    def apply(self, stage: Stage, table: pa.Table, parent_key: str, label: str) -> tuple[pa.Table, StepRecord, pa.Table | Selection]:
        """Run (or load) one stage on ``table``; return the next table, its record and its output."""
        key = stage_key(parent_key, stage)
        kind = "selector" if isinstance(stage, Selector) else "annotator"
        rec = StepRecord(label=label, type=stage.name, kind=kind, key=key, params=stage.cache_params(), rows_in=len(table))
        t0 = time.perf_counter()
        if isinstance(stage, Annotator):
            def compute() -> pa.Table:
                log.info("running %s on %d rows", label, len(table))
                out = stage.annotate(table, self.context(key))
                if len(out) != len(table):
                    raise RuntimeError(f"{label}: annotator returned {len(out)} rows for {len(table)}")
                return out

            out, rec.cached = self.store.get_or_compute(key, compute, {"stage": label, "params": rec.params})
            for name in out.column_names:
                col = out.column(name)
                i = table.schema.get_field_index(name)
                table = table.set_column(i, name, col) if i >= 0 else table.append_column(name, col)
            rec.columns_added = out.column_names
            if isinstance(stage, TokenCount):
                self.token_counter = stage
            result: pa.Table | Selection = out
        elif isinstance(stage, Selector):
            def compute() -> pa.Table:
                log.info("running %s on %d rows", label, len(table))
                return stage.check(stage.select(table, self.context(key)), len(table)).to_table()

            sel_table, rec.cached = self.store.get_or_compute(key, compute, {"stage": label, "params": rec.params})
            sel = stage.check(Selection.from_table(sel_table), len(table))
            reasons, counts = np.unique(sel.reason[~sel.keep].astype(str), return_counts=True)
            rec.dropped = {str(r): int(c) for r, c in zip(reasons, counts)}
            rec.tokens_in = funnel.total_tokens(table)
            rewritten = funnel.recount_rewritten(table, apply_rewrite(table, sel.rewrite, label), self.token_counter)
            rec.examples = funnel.drop_examples(table, sel.keep, sel.reason, key)
            if sel.rewrite:
                rec.examples += funnel.rewrite_examples(table, rewritten, sel.keep, key)
            table = self.kept_rows(key, rewritten, sel.keep, label)
            rec.tokens_out = funnel.total_tokens(table)
            rec.columns_rewritten = sorted(sel.rewrite)
            result = sel
        else:
            raise TypeError(f"{label}: {type(stage).__name__} is neither an Annotator nor a Selector")
        rec.rows_out = len(table)
        rec.seconds = time.perf_counter() - t0
        return table, rec, result

    def run_stages(self, stages: list[Stage], table: pa.Table, key: str, ledger: Ledger) -> tuple[pa.Table, str, list[StepRecord]]:
        """Run ``stages`` in order (each preceded by the prerequisites its input lacks).

        Returns:
            (final table, final key, one StepRecord per step).
        """
        records: list[StepRecord] = []
        for stage in stages:
            # prerequisites are decided on the real columns at this point, so a recipe that
            # already embeds does not embed twice
            for step, auto in [(p, True) for p in stage.prerequisites(table.column_names)] + [(stage, False)]:
                ids = table.column("id").to_pylist()
                table, rec, result = self.apply(step, table, key, f"{len(records)}:{step.name}")
                rec.auto = auto
                if isinstance(result, Selection):
                    ledger.record_selection(rec.label, ids, result)
                else:
                    ledger.record_scores(ids, result)
                records.append(rec)
                key = rec.key
                log.info("%s: %d -> %d rows%s", rec.label, rec.rows_in, rec.rows_out, " (cached)" if rec.cached else "")
        ledger.check()
        return table, key, records


def input_size(cfg: RunConfig, store: StageStore, key: str) -> dict:
    """Rows and text bytes of the recipe's input, for the resource estimates of :func:`plan`.

    From the cached ingest when there is one (its row count, and the text column's bytes read
    from the memory-mapped offsets), else from the files: Parquet metadata (rows, uncompressed
    bytes), JSON Lines by counting lines (the text taken as 90% of the bytes); other formats
    give bytes only (rows unknown).

    Returns:
        {"rows": int | None, "text_bytes": int, "basis": "cached input" | "input files"}.
    """
    if store.has(key):
        table = store.load_table(key)
        col = table.column("text") if "text" in table.column_names else None
        nbytes = 0
        if col is not None:
            import pyarrow.compute as pc

            nbytes = int(pc.sum(pc.binary_length(col)).as_py() or 0)
        return {"rows": table.num_rows, "text_bytes": nbytes, "basis": "cached input"}
    import pyarrow.parquet as pq

    rows, nbytes, known = 0, 0, True
    for f in cio.expand_paths(cfg.input.path):
        f = Path(f)
        if f.suffix == ".parquet":
            md = pq.ParquetFile(f).metadata
            rows += md.num_rows
            nbytes += sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        elif f.name.endswith(".jsonl"):
            with open(f, "rb") as fh:
                rows += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
            nbytes += int(f.stat().st_size * 0.9)
        elif f.is_file():
            known = False
            nbytes += f.stat().st_size
    return {"rows": rows if known else None, "text_bytes": nbytes, "basis": "input files"}


def plan(config, output_dir: str | None = None, overrides: list[str] | None = None) -> list[dict]:
    """What a run would do: one row per step with its key and whether it is cached.

    Keys chain from the input fingerprint, so this reads no data except cached column lists and
    the input's size. A step whose stage can estimate its needs (``estimate_resources(n_rows,
    text_bytes)``: the dedup stages) gets ``estimate``: its peak memory and disk in GiB for
    the input's rows (an upper bound after a selector), and ``estimate_basis``.
    ``overrides``: ``key.path=value`` strings, as for :func:`run`.
    """
    cfg = load_config(config, output_dir, overrides)
    store = StageStore(cfg.cache_dir)
    def status(key: str) -> tuple[bool, str | None]:
        # sizes only (cheap): a truncated or missing file shows as damaged, not as cached; the
        # run itself also checksums small entries and recomputes whatever is damaged
        if not store.has(key):
            return False, None
        problem = store.check(key, deep=False)
        return problem is None, problem

    key = ingest_key(cfg)
    cached, problem = status(key)
    rows = [{"step": "ingest", "key": key, "cached": cached, "damaged": problem}]
    columns = store.manifest(key)["columns"] if cached else list(CANONICAL_COLUMNS)
    size = None  # the input's rows and bytes, read once when a step can use them
    for stage in cfg.build_stages():
        for step, auto in [(p, True) for p in stage.prerequisites(columns)] + [(stage, False)]:
            key = stage_key(key, step)
            cached, problem = status(key)
            rows.append({"step": f"{len(rows) - 1}:{step.name}" + (" (auto)" if auto else ""), "key": key,
                         "cached": cached, "damaged": problem})
            estimate = getattr(step, "estimate_resources", None)
            if estimate is not None and not cached:
                if size is None:
                    size = input_size(cfg, store, rows[0]["key"])
                if size["rows"] is not None:
                    rows[-1]["estimate"] = estimate(size["rows"], size["text_bytes"])
                    rows[-1]["estimate_basis"] = f"{size['rows']:,} rows ({size['basis']})"
            if isinstance(step, Annotator):
                # an uncached annotator's columns are known only if it declares them
                columns += store.manifest(key)["columns"] if cached else list(step.output_columns())
    return rows

