"""``curate eval``: train a LoRA per (arm, seed) on the same budget and compare held-out losses with random.

Each (arm, seed) is a unit stored under ``<output>/units/<arm>/seed<s>/`` (adapter, per-example
losses and generation scores, generations, ``unit.json``), written to a temp dir and renamed, so
a killed eval resumes at the next unfinished unit and an unchanged unit (same selection hash,
trainer parameters, seed and eval sets) is never retrained or regenerated. The unit in flight
saves its progress (:mod:`curate.eval.unit_progress`: training state every few steps, each eval
set's losses), so a kill loses minutes, not the unit; the training rows' prefix cache is kept for
the next unit on the same rows (:mod:`curate.eval.train_prefix`). The untrained base model is one
more unit (``base``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.hashing import stable_hash
from curate.eval.arms import make_selection, selection_hash
from curate.eval.config import EvalConfig, load_eval_config
from curate.eval.generate import write_generations
from curate.eval.losses import reference_losses
from curate.eval.queries import build_sets, query_records, split_summary, write_queries
from curate.eval.sets import GSM8K_CALC, answer_span
from curate.eval.train_prefix import train_states, train_states_key
from curate.eval.unit_progress import TRAIN_CHECKPOINT_EVERY, UnitProgress
from curate.score.rows import row_fields

log = logging.getLogger(__name__)
EVAL_VERSION = "1"


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("curate", "torch", "transformers", "peft", "numpy"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def read_unit(udir: Path) -> dict | None:
    """A finished unit's ``unit.json`` with its per-example losses under ``"losses"``
    (``{set: {metric: (n,) array}}``), or None when ``udir`` holds no finished unit. The key is
    not checked here (:meth:`EvalRun._load_unit` does)."""
    f = udir / "unit.json"
    if not f.exists():
        return None
    meta = json.loads(f.read_text())
    losses: dict = {}
    with np.load(udir / "losses.npz") as z:
        for k in z.files:
            s, m = k.split("::")
            losses.setdefault(s, {})[m] = z[k]
    meta["losses"] = losses
    return meta


def _prune_eval_cache(folder: Path, used: set[str]) -> None:
    """Delete ``folder``'s finished ``*.npy`` states that no current eval set reads (``used``: file names).

    A changed set (or base model, or lowest adapted block) leaves its old states behind: up to a few
    hundred MB a set for SmolLM2. Temporary files of a write in flight are left alone.
    """
    from curate.train.prefix_store import finished_flat_states

    stale = [p for p in finished_flat_states(folder) if p.name not in used]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale:
        log.info("eval_cache: removed %d states no current eval set reads (%s)", len(stale),
                 ", ".join(sorted(p.name for p in stale)[:5]))


def _decontam_key(d) -> dict:
    """The decontamination settings in the pool's key. ``embed_backend`` joins only when it is not
    torch (sentence_transformers), the only backend before the option existed: pools built then
    keep their keys."""
    return d.model_dump(exclude={"embed_backend"} if d.embed_backend == "sentence_transformers" else None)


def build_pool(cfg: EvalConfig, eval_prompts: list[str], out: Path, show_progress: bool) -> tuple[pa.Table, dict]:
    """Read, subsample and decontaminate the pool (cached in ``<output>/pool/`` by its inputs)."""
    from curate.eval.decontam import decontaminate
    from curate.ingest import read as cio

    pool_params = cfg.pool.model_dump(exclude={"holdout"} if not cfg.pool.holdout else set())
    key = stable_hash({"v": EVAL_VERSION, "pool": pool_params, "fp": cio.input_fingerprint(cfg.pool.paths),
                       "decontam": _decontam_key(cfg.decontaminate), "eval": stable_hash(sorted(eval_prompts))})
    pdir = out / "pool"
    carried = json.loads((pdir / "pool.json").read_text()) if (pdir / "pool.json").exists() else {}
    if carried.get("key") != key:
        carried = {}
    elif (pdir / "pool.parquet").exists():
        return pq.read_table(pdir / "pool.parquet"), carried["report"]
    got = cio.read_input(cfg.pool.paths)
    table = got.table
    sources = set(table.column("source").to_pylist())
    for name, d in (("pool.sample", cfg.pool.sample), ("pool.holdout", cfg.pool.holdout)):
        unknown = sorted(set(d) - sources)
        if unknown:
            raise ValueError(f"{name}: {unknown} are not sources of the pool; sources are {sorted(sources)}")
    parts, holdouts = [], {}
    for src in sorted(sources):
        sub = table.filter(pa.compute.equal(table.column("source"), src))
        k = cfg.pool.sample.get(src)
        rest = np.arange(len(sub))
        if k is not None and k < len(sub):
            rng = np.random.default_rng([cfg.pool.sample_seed, len(parts)])
            keep = np.sort(rng.choice(len(sub), size=k, replace=False))
            rest = np.setdiff1d(rest, keep)
        else:
            keep = rest
            rest = rest[:0]
        h = cfg.pool.holdout.get(src)
        if h:  # rows of this source NOT in the pool, e.g. selection queries for targeted methods
            if h > len(rest):
                raise ValueError(f"pool.holdout[{src!r}]={h} exceeds the {len(rest)} rows of {src} left out of the pool")
            hrng = np.random.default_rng([cfg.pool.sample_seed, len(parts), 1])
            holdouts[src] = sub.take(np.sort(hrng.choice(rest, size=h, replace=False)))
        parts.append(sub.take(keep))
    table = pa.concat_tables(parts)
    if cfg.pool.strip_calculator:
        i = table.column_names.index("output")
        table = table.set_column(i, "output", pa.array([GSM8K_CALC.sub("", o) if o else o
                                                        for o in table.column("output").to_pylist()], pa.string()))
    d = cfg.decontaminate
    drop = None
    if carried:
        # pool.json alone was carried over (docs/evaluation.md "Carrying finished units"): same inputs
        # and settings, so its dropped ids are this pool's and decontamination is not recomputed
        report = carried["report"]
        drop = np.asarray(pa.compute.is_in(table.column("id"), pa.array(report["dropped_ids"], table.column("id").type)))
        if report.get("n_pool") != len(table) or int(drop.sum()) != report.get("dropped"):
            log.warning("pool: %s does not fit the rows read (%d rows, %d of its dropped ids found); decontaminating again",
                        pdir / "pool.json", len(table), drop.sum())
            drop = None
        else:
            log.info("pool: decontamination carried in %s (%d rows dropped)", pdir / "pool.json", drop.sum())
    if drop is None:
        drop, report = decontaminate(table, eval_prompts, exact=d.exact, minhash_threshold=d.minhash_threshold,
                                     embed_threshold=d.embed_threshold, embed_backend=d.embed_backend,
                                     show_progress=show_progress)
    report["by_source_before"] = {s: int(c) for s, c in zip(*np.unique(table.column("source").to_pylist(), return_counts=True))}
    report["quarantined"] = len(got.quarantine)
    table = table.filter(pa.array(~drop))
    tmp = out / "pool.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(table, tmp / "pool.parquet")
    for src, hold in holdouts.items():  # plain JSONL: usable as `queries` by any method
        f = row_fields(hold)
        with open(tmp / f"holdout_{src}.jsonl", "w") as fh:
            for i, a, x, o in zip(hold.column("id").to_pylist(), f.instruction, f.input, f.output):
                o = GSM8K_CALC.sub("", o) if cfg.pool.strip_calculator else o
                fh.write(json.dumps({"id": i, "instruction": a, "input": x, "output": o}) + "\n")
        report.setdefault("holdout", {})[src] = len(hold)
    (tmp / "pool.json").write_text(json.dumps({"key": key, "report": report}, indent=1))
    shutil.rmtree(pdir, ignore_errors=True)
    os.replace(tmp, pdir)
    # the table read back, not the one built: Parquet renames list items ("item" -> "element"), and
    # stage caches key on the content hash, so a fresh build must hash like a resumed run's read
    return pq.read_table(pdir / "pool.parquet"), report


class EvalRun:
    """One ``curate eval`` run (see :func:`run_eval`)."""

    def __init__(self, cfg: EvalConfig, output: str | None = None, device: str | None = None, show_progress: bool = True):
        from curate.train.lora import LoRATrainer

        self.cfg = cfg
        self.out = Path(output or cfg.output)
        self.show_progress = show_progress
        self.trainer = LoRATrainer(**{**cfg.train, "show_progress": show_progress,
                                      **({"device": device} if device else {})})
        self._eval_enc = None
        self._eval_states = None

    # -- eval sets
    def eval_sets(self):
        """The scored sets (config order); built once, with the selection queries of the sets that
        have ``queries``, checked disjoint from every scored example (raises otherwise)."""
        if not hasattr(self, "_sets"):
            self._sets, self._queries = build_sets(self.cfg.eval_sets)
        return self._sets

    def queries(self) -> dict:
        """{set name: query :class:`~curate.eval.sets.EvalSet`} of the sets with ``queries``."""
        self.eval_sets()
        return self._queries

    def _gen_cfg(self) -> dict:
        """{set name: GenerateConfig} of the sets with a ``generate`` option."""
        return {s.name: s.generate for s in self.cfg.eval_sets if s.generate is not None}

    def eval_key(self) -> str:
        # a set's generate option joins its entry only when present, so configs without one keep
        # their keys (units finished before generation existed are not retrained)
        gen = self._gen_cfg()
        return stable_hash({"sets": [[s.name, s.ids, s.instruction, s.input, s.reference, s.max_response_tokens]
                                     + ([gen[s.name].model_dump()] if s.name in gen else [])
                                     for s in self.eval_sets()], "eval": self.cfg.eval, "v": EVAL_VERSION})

    def _encoded(self):
        from curate.train.encode import encode_texts, render_prompt

        if self._eval_enc is None:
            tok = self.trainer.base()[1]
            t = self.trainer
            self._eval_enc = {}
            for s in self.eval_sets():
                prompts = [render_prompt(tok, a, x, t.template, t.system_prompt) for a, x in zip(s.instruction, s.input)]
                # GSM8K-style sets also get the `#### N` line's tokens (answer-line NLL)
                spans = [answer_span(r) for r in s.reference] if s.style == "gsm8k" else None
                self._eval_enc[s.name] = encode_texts(tok, prompts, s.reference, template=t.template,
                                                      max_length=t.max_length, max_response_tokens=s.max_response_tokens,
                                                      spans=spans)
        return self._eval_enc

    def _autocast_key(self) -> dict:
        """``{"autocast": "bfloat16"}`` on CUDA, else ``{}``: base losses and prefix states computed
        under bf16 are not the CPU's fp32 ones (empty on CPU, so fp32 keys stay as they were)."""
        fp = self.trainer.fingerprint()
        return {"autocast": fp["autocast"]} if "autocast" in fp else {}

    def _start_layer(self) -> int:
        from curate.train.lora import resolve_layers

        base = self.trainer.base()[0]
        return resolve_layers(self.trainer.layers, base.config.num_hidden_layers)[0]

    def _states(self):
        """Inputs of the lowest adapted block for every eval row, computed once from the base model."""
        from curate.train.forward import prefix_states
        from curate.train.prefix_store import load_flat_states, save_flat_states

        if not self.trainer.prefix_cache:
            return None
        if self._eval_states is None:
            lm, tok = self.trainer.base()
            start = self._start_layer()
            self._eval_states, used = {}, set()
            for name, enc in self._encoded().items():
                # cached on disk: the lower blocks' outputs on the eval rows are the same for every arm and
                # every later invocation (a resumed eval does not pay for them again)
                key = stable_hash({"model": self.trainer.fingerprint()["model"], "start": start,
                                   "ids": stable_hash([x.tolist() for x in enc.ids]), **self._autocast_key()})
                f = self.out / "eval_cache" / f"{name}-{key}.npy"
                used.add(f.name)
                st = load_flat_states(f, enc.lengths)
                if st is None:
                    st = prefix_states(lm, enc.ids, start, tok.pad_token_id or 0, self.cfg.eval.get("batch_size", 16),
                                       self.show_progress, desc=f"eval prefix {name}")
                    save_flat_states(f, st)
                self._eval_states[name] = st
            _prune_eval_cache(self.out / "eval_cache", used)
        return self._eval_states

    def evaluate(self, lm, progress: UnitProgress | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Per-example losses of ``lm`` on every eval set: ``{set: {metric: (n,) array}}``.

        With ``progress``, a set whose losses it holds is not evaluated again and each newly
        evaluated set is saved there before the next one starts.
        """
        tok = self.trainer.base()[1]
        states = self._states()
        start = self._start_layer()
        out = {}
        for name, enc in self._encoded().items():
            got = progress.eval_losses(name) if progress is not None else None
            if got is None:
                t0 = time.perf_counter()
                got = reference_losses(lm, tok, enc, states=None if states is None else states[name], start=start,
                                       batch_size=self.cfg.eval.get("batch_size", 16),
                                       content_skip=self.cfg.eval.get("content_skip", 8),
                                       show_progress=self.show_progress, desc=f"eval {name}")
                if progress is not None:
                    progress.save_eval_losses(name, got, time.perf_counter() - t0)
            out[name] = got
        return out

    def generate(self, lm) -> tuple[dict, dict, dict]:
        """Greedy generation and 0/1 scores for every set with a ``generate`` option.

        The prompt tokens are the scored rows' own (``Encoded.ids[i][:n_prompt[i]]``): the same
        template, system prompt and BOS handling as training.

        Returns:
            (scores, records, meta) as in :func:`curate.eval.generate.generate_and_score`, keyed by set.
        """
        from curate.eval.generate import generate_and_score
        from curate.train.encode import end_of_turn

        tok = self.trainer.base()[1]
        end = tok(end_of_turn(tok, self.trainer.template), add_special_tokens=False)["input_ids"]
        stops = sorted({tok.eos_token_id, *(end if len(end) == 1 else [])} - {None})
        sets = {s.name: s for s in self.eval_sets()}
        scores, records, meta = {}, {}, {}
        for name, g in self._gen_cfg().items():
            enc = self._encoded()[name]
            scores[name], records[name], meta[name] = generate_and_score(
                lm, tok, [x[:k] for x, k in zip(enc.ids, enc.n_prompt)], sets[name].reference, sets[name].ids,
                metric=g.metric, max_new_tokens=g.max_new_tokens, batch_size=g.batch_size, eos_token_id=stops)
        return scores, records, meta

    def _evaluate_all(self, lm, progress: UnitProgress | None = None) -> tuple[dict, dict, dict]:
        """Losses, then generation scores merged into the same {set: {metric: array}} dict."""
        losses = self.evaluate(lm, progress)
        scores, records, meta = self.generate(lm)
        for name, d in scores.items():
            losses[name].update(d)
        return losses, records, meta

    # -- units
    def _unit_dir(self, arm: str, seed) -> Path:
        return self.out / "units" / arm / ("base" if seed is None else f"seed{seed}")

    @staticmethod
    def _load_unit(udir: Path, key: str):
        meta = read_unit(udir)
        return meta if meta is not None and meta.get("key") == key else None

    def _commit_unit(self, udir: Path, meta: dict, losses: dict, trainer=None, sel: pa.Table | None = None,
                     generations: dict | None = None):
        tmp = udir.with_name(udir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if generations:
            write_generations(tmp, generations, self.eval_sets())
        np.savez(tmp / "losses.npz", **{f"{s}::{m}": v for s, d in losses.items() for m, v in d.items()})
        if trainer is not None:
            trainer.save(tmp / "adapter", selection_hash=meta.get("selection_hash"), extra={"arm": meta["arm"], "seed": meta["seed"]})
        if sel is not None:
            pq.write_table(pa.table({"id": sel.column("id")}), tmp / "selected_ids.parquet")
        (tmp / "unit.json").write_text(json.dumps(meta, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
        shutil.rmtree(udir, ignore_errors=True)
        os.replace(tmp, udir)

    def run_base(self) -> dict:
        key = stable_hash({"base": self.trainer.fingerprint()["model"], "eval": self.eval_key(),
                           "tmpl": [self.trainer.template, self.trainer.system_prompt, self.trainer.max_length],
                           **self._autocast_key()})
        udir = self._unit_dir("base", None)
        got = self._load_unit(udir, key)
        if got is not None:
            got["cached"] = True
            return got
        t0 = time.perf_counter()
        losses, gens, gen_meta = self._evaluate_all(self.trainer.base()[0])
        meta = {"key": key, "arm": "base", "seed": None, "eval_seconds": time.perf_counter() - t0}
        if gen_meta:
            meta["generate"] = gen_meta
        self._commit_unit(udir, meta, losses, generations=gens)
        meta["losses"], meta["cached"] = losses, False
        return meta

    def _unit_key(self, sel: pa.Table, seed: int) -> str:
        return stable_hash({"sel": selection_hash(sel), "train": self.trainer.fingerprint(), "seed": seed,
                            "eval": self.eval_key()})

    def run_unit(self, arm: dict, seed: int, sel: pa.Table) -> dict:
        h = selection_hash(sel)
        key = self._unit_key(sel, seed)
        udir = self._unit_dir(arm["name"], seed)
        old = read_unit(udir)
        if old is not None and old.get("key") == key:
            old["cached"] = True
            return old
        t = self.trainer
        progress = UnitProgress(self.out / "partial" / arm["name"] / f"seed{seed}", key)
        if self._rescorable(udir, old, h, seed) and self._reload(udir, arm["name"], seed, old):
            prefix_seconds = old.get("prefix_seconds", 0.0)
        else:
            old = None
            prefix_seconds = self._train(arm["name"], seed, sel, progress)
        t0 = time.perf_counter()
        losses, gens, gen_meta = self._evaluate_all(t.model_.get_base_model(), progress)
        meta = {"key": key, "arm": arm["name"], "seed": seed, "selection_hash": h, "rows": t.n_rows_,
                "rows_end_cut": t.rows_end_cut_, "steps": t.steps_,
                "tokens": t.tokens_, "train_seconds": t.seconds_, "prefix_seconds": prefix_seconds,
                "eval_seconds": time.perf_counter() - t0 + progress.resumed_eval_seconds,
                "train_losses": t.losses_.tolist(), "layers": t.layers_}
        if old is not None:
            meta["rescored_from"] = old["key"]  # the unit's key on the eval sets it was trained and first scored on
        if gen_meta:  # eval_seconds includes generation; its own share is here
            meta["generate"] = gen_meta
        self._commit_unit(udir, meta, losses, t, sel, generations=gens)
        progress.clear()
        meta["losses"], meta["cached"] = losses, False
        t.model_ = None  # free the adapted copy before the next unit
        return meta

    def _train(self, arm: str, seed: int, sel: pa.Table, progress: UnitProgress) -> float:
        """Fit the trainer on ``sel`` (resuming ``progress``'s saved state); returns the prefix seconds."""
        t = self.trainer
        log.info("unit %s seed %d: training on %d rows", arm, seed, len(sel))
        resume = progress.train_state()
        enc = t.encode(sel)
        states, prefix_seconds = None, 0.0
        if t.prefix_cache and not t.resume_finished(resume, len(enc)):  # as fit decides: no states to read
            start = self._start_layer()
            states, prefix_seconds, _ = train_states(self.out / "train_cache", t, enc, start,
                                                     train_states_key(t, enc, start, self._autocast_key()),
                                                     self.show_progress)
        t.fit(enc, seed=seed, resume=resume, states=states, checkpoint_every=TRAIN_CHECKPOINT_EVERY,
              checkpoint_callback=progress.save_train_state)
        return prefix_seconds

    def _reload(self, udir: Path, arm: str, seed: int, old: dict) -> bool:
        """Load ``udir``'s kept adapter into the trainer (:meth:`_rescorable` found it fits); False when unreadable."""
        log.info("unit %s seed %d: eval sets changed; scoring its kept adapter again (no training)", arm, seed)
        try:
            self.trainer.load_adapter(udir / "adapter", seed, old.get("train_losses"))
        except Exception as e:  # a damaged adapter file: the unit trains, as without one
            log.warning("%s: cannot load the kept adapter (%s: %s); training the unit again", udir, type(e).__name__, e)
            return False
        return True

    def _rescorable(self, udir: Path, old: dict | None, h: str, seed: int) -> bool:
        """Whether ``old`` (``udir``'s finished unit, or None) differs from this unit only in its eval sets.

        Its kept adapter (``adapter/``, written by every unit; not in committed records) must come
        from the same selection (hash), seed and trainer settings: then scoring it on the current
        sets gives what retraining would (the fit is deterministic), without the training. Another
        unit's adapter is not used; an unreadable one is warned about; either way the unit trains.
        """
        f = udir / "adapter" / "train_config.json"
        kept = f.exists() and f.with_name("adapter_model.safetensors").exists()
        if old is None or "train_losses" not in old or not kept:
            return False
        try:
            saved = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: cannot read the kept adapter's train_config.json (%s); training the unit again", udir, e)
            return False
        same = saved.get("selection_hash") == h and saved.get("seed") == seed
        return same and self.trainer.same_settings(saved.get("trainer"))

    def _selection(self, arm: dict, seed: int) -> pa.Table:
        """Arm ``arm``'s rows for ``seed``, built once per run (``self._pool``, ``self._selections``).

        ``length_matched_random`` matches the pooled response lengths of every configured seed of
        its ``match`` arm, built here if not yet: the same reference whichever seeds or units run now.
        """
        memo = self._selections
        if (arm["name"], seed) not in memo:
            matched = None
            if arm.get("method") == "length_matched_random":
                ref = self.cfg.arm_spec(arm["match"])  # declared even when --arms left it out
                matched = {ref["name"]: [self._selection(ref, s) for s in (ref.get("seeds") or self.cfg.seeds)]}
            queries = {k: query_records(q) for k, q in self.queries().items()} if arm.get("query_targets") else None
            memo[arm["name"], seed] = make_selection(arm, self._pool, self.cfg.budget, seed, matched=matched,
                                                     cache_dir=str(self.out / "stage_cache"), queries=queries)
        return memo[arm["name"], seed]

    def _finished_unit(self, arm: dict, seed: int) -> dict | None:
        """The unit's record when one exists for the current selection and settings, else None.

        A unit without a record on disk is answered without building its selection, so a partial
        invocation (``--max-new-units``, ``--seeds``) does not pay for the selections of units it
        will not train now.
        """
        udir = self._unit_dir(arm["name"], seed)
        if not (udir / "unit.json").exists():
            return None
        u = self._load_unit(udir, self._unit_key(self._selection(arm, seed), seed))
        if u is not None:
            u["cached"] = True
        return u

    def run(self, max_new_units: int | None = None, seeds: list[int] | None = None) -> dict:
        """Run every unit (or stop after training ``max_new_units`` new ones; only ``seeds`` if given) and write the report."""
        from tqdm.auto import tqdm

        from curate.eval.report import write_report

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        prompts = [p for s in self.eval_sets() for p in s.prompts()]
        if self.queries():
            write_queries(self.queries(), self.out / "queries")
        pool, decontam = build_pool(cfg, prompts, self.out, self.show_progress)
        # a selection_only arm is only the `match` of a length-matched arm: built, never trained
        units = [(a, s) for a in cfg.arms if not a.get("selection_only") for s in (a.get("seeds") or cfg.seeds)]
        if seeds is not None:  # a slice of the seeds now; the rest later (a partial report meanwhile)
            skipped = [u for u in units if u[1] not in seeds]
            units = [u for u in units if u[1] in seeds]
        results = {"base": self.run_base(), "units": []}
        self._pool, self._selections = pool, {}
        bar = tqdm(units, desc="eval units", disable=not self.show_progress, unit="unit")
        new = 0
        results["complete"] = True
        for arm, seed in ([] if seeds is None else skipped):  # report finished units of other seeds
            u = self._finished_unit(arm, seed)
            if u is None:
                results["complete"] = False
            else:
                results["units"].append(u)
        for arm, seed in bar:
            bar.set_postfix(arm=arm["name"], seed=seed)
            if max_new_units is not None and new >= max_new_units:
                u = self._finished_unit(arm, seed)
                if u is None:
                    results["complete"] = False
                else:
                    results["units"].append(u)
                continue
            u = self.run_unit(arm, seed, self._selection(arm, seed))
            new += not u["cached"]
            results["units"].append(u)
        results["decontamination"] = decontam
        results["pool_rows"] = len(pool)
        results["eval_sets"] = split_summary(self.eval_sets(), self.queries())
        from curate.eval.lengths import selection_lengths

        results["selection_lengths"] = selection_lengths(pool, self._selections)
        results["wall_seconds"] = time.perf_counter() - t_start
        results["versions"] = _versions()
        return write_report(cfg, self.out, results, self.eval_sets())


def run_eval(config, output: str | None = None, device: str | None = None, show_progress: bool = True,
             max_new_units: int | None = None, arms: list[str] | None = None, seeds: list[int] | None = None) -> dict:
    """Run an eval config end to end; returns the results dict (also written to ``<output>/results.json``).

    Args:
        config: YAML path or dict (see configs/eval/smoke.yaml and docs/evaluation.md).
        output: output dir (default the config's ``output``).
        device: torch device (default cuda when present, else cpu).
        show_progress: progress bars per unit.
        max_new_units: train at most this many new units, then write a partial report (``complete``
            False) and return: lets a long eval run as short resumable invocations.
        arms: run only these arms (plus the reference arm); default all.
        seeds: train only units with these seeds now (finished units of other seeds are reported).
    """
    cfg = load_eval_config(config, arms)
    return EvalRun(cfg, output, device, show_progress).run(max_new_units, seeds)
