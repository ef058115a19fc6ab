"""Versioned refresh of a curated dataset: ``v0001/``, ``v0002/``, ..., a changelog, ``latest``.

A refresh recipe is an ordinary recipe plus a ``refresh:`` block::

    refresh:
      source: data/incoming          # folder, glob or file the pool is read from (input.path)
      versions_dir: runs/refresh     # where versions live (default: output.dir)
    stages:
      - {type: minhash_dedup, against: "{previous}"}   # the previous version, filled in per run
      ...

Each :func:`run_refresh` call fingerprints the source (every file's name, size and bytes) and
the recipe. When both equal those of the version ``latest`` points at, it is a no-op that says
so. Otherwise it runs the recipe over the whole current pool into the next ``vNNNN/`` (the full
output layout of ``curate run``), with

* ``"{previous}"`` in any stage parameter replaced by the previous version's folder (the stage
  is dropped from the ``against`` check on the first version), so new rows are exact- and
  near-duplicate-checked against what is already curated (``minhash_dedup`` persists its
  index inside that version; its cache key holds the version's content hash);
* row-local annotators (embeddings, LM and quality scores) wrapped in :mod:`curate.cache.rowcache`,
  so only rows never seen before are embedded and scored;
* a ``kmeans`` step with unchanged parameters assigns rows to the previous version's centroids
  (saved in ``<version>/state/``) instead of refitting, so cluster ids stay stable;
* the selection recomputed under the recipe's budget over the whole pool.

It then writes ``changelog.json`` / ``changelog.md`` (rows added to and removed from the
selection and why: ``new_row``, ``newly_selected``, ``displaced_by_budget``,
``duplicate_of_curated``, ``source_removed``, ...) and ``refresh.json`` (written last: a
version folder without it is incomplete and is redone by the next run), and finally moves the
``latest`` symlink to it with one atomic ``rename``. :func:`rollback` moves it back.

A version runs through the same engine as ``curate run`` (:func:`curate.engine.execute.execute`):
the version folder is written and finished under its output lock, and the run's cache keys are
recorded under the versions folder, so ``curate cache gc`` keeps what the latest version used.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from curate.cluster.kmeans import KMeans
from curate.core.registry import get_stage
from curate.core.stage import Annotator
from curate.engine.execute import execute
from curate.engine.pipeline import Runner
from curate.ops.versions import MARKER, RefreshError, latest, point_latest
from curate.report.changelog import build_changelog, write_changelog

log = logging.getLogger(__name__)

PREVIOUS = "{previous}"




@dataclass
class RefreshResult:
    """What :func:`run_refresh` did.

    Attributes:
        version: the version ``latest`` points at afterwards (e.g. ``"v0002"``).
        path: that version's folder.
        noop: True when the source and recipe were unchanged (nothing written).
        message: one line saying what happened.
        seconds: wall time of the call.
        changelog: the changelog dict (empty for a no-op).
        output_hash: the version's output hash.
        counts: the version's n_input / n_selected / n_dropped / n_quarantined.
    """

    version: str
    path: Path
    noop: bool
    message: str
    seconds: float
    changelog: dict = field(default_factory=dict)
    output_hash: str = ""
    counts: dict = field(default_factory=dict)


def load_refresh_recipe(config, source: str | None = None, versions_dir: str | None = None) -> tuple[dict, str, Path]:
    """Read a refresh recipe; returns (recipe dict without ``refresh``, source, versions_dir).

    Args:
        config: YAML path or dict.
        source: overrides ``refresh.source`` (default: the recipe's, else ``input.path``).
        versions_dir: overrides ``refresh.versions_dir`` (default: the recipe's, else ``output.dir``).
    """
    from curate.engine.config import read_yaml

    data = dict(config) if isinstance(config, dict) else read_yaml(Path(config))
    spec = dict(data.pop("refresh", None) or {})
    unknown = set(spec) - {"source", "versions_dir"}
    if unknown:
        raise RefreshError(f"refresh.{sorted(unknown)[0]}: unknown key; allowed: source, versions_dir")
    src = source or spec.get("source") or (data.get("input") or {}).get("path")
    if not src:
        raise RefreshError("refresh.source: missing (and the recipe has no input.path)")
    vdir = versions_dir or spec.get("versions_dir") or (data.get("output") or {}).get("dir")
    if not vdir:
        raise RefreshError("refresh.versions_dir: missing (and the recipe has no output.dir)")
    data["input"] = {**(data.get("input") or {}), "path": src}
    return data, str(src), Path(vdir)


# ------------------------------------------------------------------------- versions folder


# ------------------------------------------------------------------------- running

STATE = "state"  # <version>/state/<step>/: kmeans centroids a later version assigns new rows to


def _step_dir(label: str) -> str:
    return label.replace(":", "_")


class KMeansAssign(Annotator):
    """A refresh's ``kmeans``: place rows in the previous version's clusters (no refit).

    Keeps cluster ids stable across versions: a row seen before gets the same cluster, a new row
    the nearest previous centroid (:func:`curate.cluster.kmeans.assign_from_artifacts`). The
    centroid files' content hash is part of the cache key.

    Args:
        stage: the recipe's ``kmeans`` stage (its ``embedding_column`` and ``use_gpu`` are used).
        state_dir: the previous version's saved artifacts of that step (``centroids.npy``,
            ``kmeans.json``, PCA files).
    """

    name = "kmeans"

    def __init__(self, stage, state_dir: str | Path):
        self.stage = stage
        self.state_dir = str(state_dir)

    def get_params(self) -> dict:
        return self.stage.get_params()

    def cache_params(self) -> dict:
        import xxhash

        h = xxhash.xxh3_128()
        for f in sorted(Path(self.state_dir).iterdir()):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        return {**self.stage.cache_params(), "assign_to_centroids": h.hexdigest()}

    def output_columns(self) -> list[str]:
        return self.stage.output_columns()

    def annotate(self, table, ctx):
        import shutil

        import numpy as np
        import pyarrow as pa

        from curate.cluster.kmeans import assign_from_artifacts
        from curate.core.schema import CENTROID_DISTANCE, CLUSTER_ID, embedding_matrix

        if len(table):
            cid, dist = assign_from_artifacts(embedding_matrix(table, self.stage.embedding_column), self.state_dir,
                                              use_gpu=self.stage.use_gpu)
        else:
            cid, dist = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if ctx.artifact_dir is not None:  # carried forward, so the next version assigns to the same centroids
            shutil.copytree(self.state_dir, ctx.artifact_dir, dirs_exist_ok=True)
        return pa.table({CLUSTER_ID: pa.array(cid, pa.int64()), CENTROID_DISTANCE: pa.array(dist, pa.float32())})


class RefreshRunner(Runner):
    """A Runner that serves row-local annotators from the per-row cache (:mod:`curate.cache.rowcache`)
    and assigns rows to the previous version's kmeans centroids instead of refitting.

    Args:
        previous: the previous version's folder, or None (default).
        *args, **kw: as for :class:`curate.engine.pipeline.Runner`.
    """

    def __init__(self, *args, previous: Path | None = None, **kw):
        super().__init__(*args, **kw)
        self.previous = previous
        self.row_cache_stats: dict[str, dict] = {}

    def _previous_centroids(self, stage, label: str) -> Path | None:
        if self.previous is None:
            return None
        d = self.previous / STATE / _step_dir(label)
        meta = d.parent / f"{_step_dir(label)}.json"
        if not (d / "centroids.npy").is_file() or not meta.is_file():
            return None
        saved = json.loads(meta.read_text())
        same = saved.get("type") == stage.name and saved.get("params") == json.loads(
            json.dumps(stage.cache_params(), default=str))
        return d if same else None  # another kmeans (params changed): refit

    def apply(self, stage, table, parent_key, label):
        from curate.cache.rowcache import RowCached

        if isinstance(stage, Annotator) and stage.row_local and not isinstance(stage, RowCached):
            stage = RowCached(stage, self.store.root)
        elif isinstance(stage, KMeans):
            prev = self._previous_centroids(stage, label)
            if prev is not None:
                stage = KMeansAssign(stage, prev)
        out = super().apply(stage, table, parent_key, label)
        if isinstance(stage, RowCached) and hasattr(stage, "n_hits_"):
            self.row_cache_stats[label] = {"cached": stage.n_hits_, "computed": stage.n_computed_}
        return out


def _is_kmeans(type_name: str) -> bool:
    """Whether a step of type ``type_name`` is a kmeans step (KMeansAssign records the same type)."""
    try:
        return issubclass(get_stage(type_name), KMeans)
    except KeyError:  # a stage built in code and never registered
        return False


def _save_state(store, records, out: Path) -> None:
    """Copy each kmeans step's artifacts (centroids) into ``<version>/state/<step>/``."""
    import shutil

    for r in records:
        art = store.artifacts(r.key)
        if not (art / "centroids.npy").is_file() or not _is_kmeans(r.type):
            continue
        dest = out / STATE / _step_dir(r.label)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(art, dest)
        params = {k: v for k, v in r.params.items() if k != "assign_to_centroids"}
        (out / STATE / f"{_step_dir(r.label)}.json").write_text(
            json.dumps({"type": r.type, "params": params}, default=str))


def _fill_previous(stages: list[dict], previous: Path | None) -> list[dict]:
    out = []
    for spec in stages:
        spec = dict(spec)
        for k, v in list(spec.items()):
            if v == PREVIOUS:
                if previous is None:
                    spec[k] = None  # first version: nothing curated yet
                else:
                    spec[k] = str(previous)
        out.append(spec)
    return out


def plan_refresh(config, source: str | None = None, versions_dir: str | None = None) -> dict:
    """What :func:`run_refresh` would do, without doing it.

    Returns:
        {"noop": bool, "version": next or current version, "previous": latest or None,
        "source_fingerprint", "recipe_hash", "versions_dir", "message"}.
    """
    from curate.core.hashing import stable_hash
    from curate.ingest import read as cio

    data, src, vdir = load_refresh_recipe(config, source, versions_dir)
    fp = cio.input_fingerprint(src)
    recipe_hash = stable_hash({k: v for k, v in data.items() if k not in ("output", "input")} |
                              {"input": {k: v for k, v in data["input"].items() if k != "path"}})
    prev = latest(vdir)
    if prev is not None:
        info = json.loads((vdir / prev / MARKER).read_text())
        if info.get("source_fingerprint") == fp and info.get("recipe_hash") == recipe_hash:
            return {"noop": True, "version": prev, "previous": prev, "source_fingerprint": fp,
                    "recipe_hash": recipe_hash, "versions_dir": str(vdir),
                    "message": f"no-op: source {src} and recipe unchanged since {prev}"}
    nums = sorted(int(d.name[1:]) for d in vdir.glob("v[0-9][0-9][0-9][0-9]")) if vdir.is_dir() else []
    if nums and not (vdir / f"v{nums[-1]:04d}" / MARKER).is_file():
        nxt = f"v{nums[-1]:04d}"  # left incomplete by a crashed run: redone in place
    else:
        nxt = f"v{(nums[-1] if nums else 0) + 1:04d}"
    return {"noop": False, "version": nxt, "previous": prev, "source_fingerprint": fp, "recipe_hash": recipe_hash,
            "versions_dir": str(vdir), "message": f"{nxt}: source or recipe changed since {prev}" if prev
            else f"{nxt}: first version"}


def run_refresh(config, source: str | None = None, versions_dir: str | None = None,
                show_progress: bool = True, cache_dir: str | None = None) -> RefreshResult:
    """Write the next version of a refresh recipe, or do nothing when its source is unchanged.

    Args:
        config: refresh recipe (YAML path or dict; see the module docstring).
        source: overrides ``refresh.source``.
        versions_dir: overrides ``refresh.versions_dir``.
        show_progress: progress bars (default True).
        cache_dir: overrides ``cache_dir``.

    Returns:
        :class:`RefreshResult`.
    """
    t0 = time.perf_counter()
    plan = plan_refresh(config, source, versions_dir)
    vdir = Path(plan["versions_dir"])
    if plan["noop"]:
        log.info("%s", plan["message"])
        info = json.loads((vdir / plan["version"] / MARKER).read_text())
        return RefreshResult(plan["version"], vdir / plan["version"], True, plan["message"],
                             time.perf_counter() - t0, {}, info.get("output_hash", ""), info.get("counts", {}))
    data, src, _ = load_refresh_recipe(config, source, versions_dir)
    version, prev = plan["version"], plan["previous"]
    out = vdir / version
    previous = vdir / prev if prev else None
    data["stages"] = _fill_previous(data.get("stages", []), previous)
    data["output"] = {**(data.get("output") or {}), "dir": str(out)}
    vdir.mkdir(parents=True, exist_ok=True)
    log.info("refresh %s: %s", version, plan["message"])
    finished: dict = {}

    def finish_version(ex) -> None:
        # under the version folder's output lock, right after its output is written: the state,
        # changelog, refresh.json and `latest` belong to the same turn as the data
        _save_state(ex.runner.store, ex.records, out)
        changes = build_changelog(previous, out, version, prev, ex.records)
        changes["row_cache"] = ex.runner.row_cache_stats
        write_changelog(changes, out)
        seconds = time.perf_counter() - t0
        res = ex.result
        info = {"version": version, "previous": prev, "source": src,
                "source_fingerprint": plan["source_fingerprint"], "recipe_hash": plan["recipe_hash"],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(seconds, 3),
                "counts": res.counts, "output_hash": res.output_hash, "added": changes["n_added"],
                "removed": changes["n_removed"], "row_cache": ex.runner.row_cache_stats}
        tmp = out / f".{MARKER}.tmp"
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, out / MARKER)
        point_latest(vdir, version)
        finished.update(changes=changes, seconds=seconds)

    # recorded for gc under the versions folder: each refresh replaces the previous version's
    # record, so `curate cache gc` keeps what the latest version used (older versions' outputs
    # are written already; their cache entries may go)
    ex = execute(data, cache_dir=cache_dir, show_progress=show_progress,
                 runner_factory=functools.partial(RefreshRunner, previous=previous),
                 on_written=finish_version, record_as=vdir)
    res, changes, seconds = ex.result, finished["changes"], finished["seconds"]
    msg = (f"{version}: {res.counts['n_selected']} selected (+{changes['n_added']} / -{changes['n_removed']} "
           f"vs {prev or 'nothing'}) in {seconds:.1f}s")
    log.info("%s", msg)
    return RefreshResult(version, out, False, msg, seconds, changes, res.output_hash, res.counts)
