"""Annotate an instruction pool once for the selection benchmark (benchmarks/select_methods.py).

Per row: the all-MiniLM-L6-v2 embedding of CaR's string (``curate.embed.stage.CAR_TEMPLATE``,
"Instruction: … Input: … Response: …", Ge et al. 2024), the ``h_*`` heuristics of the response,
and the shipped learned quality score (``quality``), computed from that same embedding plus the
heuristics through ``QualityModel.decision`` so the pool is embedded once.

Caveat: this default mode predates the shipped scorer's switch to the rows' canonical text (its
``embedding_text`` is ``text`` since issue 12), so its quality comes from an embedding of another
layout; ``--via-curate`` (below) annotates as curate does. ``--check-template`` embeds a seeded
sample as CAR_TEMPLATE and as ``car_string`` (the scorer's layout before issue 12) and reports how
much the quality scores differ (Spearman, top-10% overlap).

Work is split into resumable units of ``--shard-size`` rows; each unit is one process, meant to run
under ``flock /work/heavy.lock``, and writes ``shard_<i>.npz`` atomically, so a kill loses at most
one shard. ``--merge`` joins the shards into ``annotations.npz`` (+ ``meta.json``)::

    python benchmarks/select_annotate.py POOL OUT_DIR --shard 0        # one unit (+ more, see --more-s)
    python benchmarks/select_annotate.py POOL OUT_DIR --n-shards        # prints how many units
    python benchmarks/select_annotate.py POOL OUT_DIR --merge
    python benchmarks/select_annotate.py POOL OUT_DIR --check-template [--n 512]

benchmarks/run_select_annotate.sh drives all units in the background under the lock.

``--via-curate`` instead annotates exactly as ``curate.select(pool, method=...)`` would by default:
curate's own ``embed`` (default backend, the canonical ``text``), ``heuristics`` and
``quality_model`` (the shipped scorer, reusing that embedding) through the pipeline's Runner, with
a stage cache in ``OUT_DIR/cache`` (embed's 4096-row shards resume after a kill), then writes the
same ``annotations.npz`` + ``meta.json``::

    python benchmarks/select_annotate.py POOL OUT_DIR --via-curate [--reuse-embeddings RECIPE_WORK_DIR]

``--reuse-embeddings DIR`` takes the ``embed`` column of the 44k recipe's run
(``benchmarks/alpaca_full.py --work DIR``), matched by row id, and embeds only the rows it lacks.
Valid because the default onnx backend embeds one text at a time (batch 1): a row's vector does
not depend on the other rows (bit-identical, tests/test_embed_backends.py); the cached entry must
come from the same embed parameters (checked against its manifest).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# this checkout's curate, not whichever one the venv has installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_pool(path: str):
    """The pool as curate's canonical table (same ids a ``curate run`` would give)."""
    from curate.ingest.read import read_input

    got = read_input(path)
    if got.quarantine:
        print(f"note: {len(got.quarantine)} rows quarantined on ingest", file=sys.stderr)
    return got.table


def car_template_texts(table) -> list[str]:
    from curate.embed.stage import CAR_TEMPLATE, build_texts

    return build_texts(table, template=CAR_TEMPLATE)


def heuristic_block(table) -> tuple[np.ndarray, np.ndarray]:
    """(raw (n, 16) h_* matrix, the quality model's transformed copy with log1p counts)."""
    from curate.score.heuristics import HEURISTIC_COLUMNS, heuristics_matrix
    from curate.score.quality_model import _LOG_COLUMNS
    from curate.score.rows import row_fields
    from curate.score.stages import heuristic_texts

    raw = heuristics_matrix(heuristic_texts(row_fields(table)))
    feat = raw.copy()
    for j, c in enumerate(HEURISTIC_COLUMNS):
        if c in _LOG_COLUMNS:
            feat[:, j] = np.log1p(feat[:, j])
    return raw, feat


def quality_from(emb: np.ndarray, hfeat: np.ndarray) -> np.ndarray:
    """Shipped scorer's log-odds from a precomputed embedding + heuristic features (no re-embedding)."""
    from curate.score.quality_model import QualityModel, default_model_path

    qm = QualityModel.load(default_model_path())
    if tuple(qm.features) != ("embedding", "heuristics"):
        raise RuntimeError(f"shipped scorer uses features {qm.features}; this script assumes embedding+heuristics")
    return qm.decision(np.concatenate([emb.astype(np.float64), hfeat], axis=1))


def run_shards(pool: str, out: Path, i: int, shard_size: int, more_s: float) -> None:
    """Shard ``i``, then the next unfinished shards while under ``more_s`` seconds in all.

    Going on while the lock is held saves waiting for it again on a busy machine; each shard is
    still saved on its own, so a kill loses at most one.
    """
    t0 = time.perf_counter()
    table = load_pool(pool)
    n_shards = -(-table.num_rows // shard_size)
    if i >= n_shards:
        raise SystemExit(f"--shard {i} is past the end ({table.num_rows} rows)")
    for j in range(i, n_shards):
        if j > i and time.perf_counter() - t0 > more_s:
            break
        run_shard(table, out, j, shard_size)


def run_shard(table, out: Path, i: int, shard_size: int) -> None:
    from curate.embed.sentence import encode_sentences

    path = out / f"shard_{i:03d}.npz"
    if path.exists():
        print(f"shard {i} already done")
        return
    a, b = i * shard_size, min((i + 1) * shard_size, table.num_rows)
    t = table.slice(a, b - a)
    texts = car_template_texts(t)
    encode_sentences(texts[:8])  # model load outside the timing
    t0 = time.perf_counter()
    emb = encode_sentences(texts, batch_size=64)
    t_emb = time.perf_counter() - t0
    t0 = time.perf_counter()
    hraw, hfeat = heuristic_block(t)
    t_h = time.perf_counter() - t0
    q = quality_from(emb, hfeat)
    tmp = out / f".shard_{i:03d}.tmp.npz"
    np.savez(tmp, ids=np.array(t.column("id").to_pylist()), embedding=emb.astype(np.float32),
             heuristics=hraw.astype(np.float32), quality=q.astype(np.float64),
             timing=np.array([b - a, t_emb, t_h]))
    os.replace(tmp, path)
    with open(out / "progress.log", "a") as fh:
        fh.write(f"{time.strftime('%H:%M:%S')} shard {i} rows {a}-{b}: embed {t_emb:.1f}s "
                 f"({(b - a) / t_emb:.1f} rows/s), heuristics {t_h:.1f}s, threads {_threads()}\n")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def merge(pool: str, out: Path, shard_size: int) -> None:
    from curate.score.heuristics import HEURISTIC_COLUMNS

    table = load_pool(pool)
    n_shards = -(-table.num_rows // shard_size)
    parts = []
    for i in range(n_shards):
        p = out / f"shard_{i:03d}.npz"
        if not p.exists():
            raise SystemExit(f"shard {i} missing: run --shard {i} first")
        with np.load(p) as z:
            parts.append({k: z[k] for k in z.files})
    ids = np.concatenate([p["ids"] for p in parts])
    if ids.tolist() != table.column("id").to_pylist():
        raise SystemExit("shard ids do not match the pool's ids (pool changed?)")
    timing = np.stack([p["timing"] for p in parts])
    np.savez(out / "annotations.npz", ids=ids, embedding=np.concatenate([p["embedding"] for p in parts]),
             heuristics=np.concatenate([p["heuristics"] for p in parts]),
             quality=np.concatenate([p["quality"] for p in parts]))
    meta = {"pool": str(pool), "n": int(table.num_rows), "shard_size": shard_size, "embedder": "all-MiniLM-L6-v2",
            "embed_string": "CAR_TEMPLATE", "heuristic_columns": list(HEURISTIC_COLUMNS),
            "quality": "shipped CaR-APE scorer (curate/assets/quality_car_ape.npz) from the CAR_TEMPLATE embedding",
            "embed_seconds": float(timing[:, 1].sum()), "heuristics_seconds": float(timing[:, 2].sum()),
            "embed_rows_per_s": float(timing[:, 0].sum() / timing[:, 1].sum()),
            "heuristics_rows_per_s": float(timing[:, 0].sum() / timing[:, 2].sum())}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))


def reused_embeddings(table, pool: str, recipe_dir: Path, embed) -> tuple:
    """(n, d) embeddings for ``table``'s rows: from the 44k recipe's cached ``embed`` step, matched
    by row id; rows it lacks (dropped before its embed step) are embedded here.

    ``recipe_dir`` is ``benchmarks/alpaca_full.py``'s ``--work`` folder: the recipe is replayed up
    to its ``embed`` step on that folder's stage cache (every step a cache hit, nothing computed)
    to get the ids beside the cached column.

    Returns (matrix, n_reused, seconds spent embedding the missing rows).
    """
    import pyarrow as pa

    from curate.cache.store import StageStore
    from curate.core.schema import embedding_matrix
    from curate.engine.config import load_config
    from curate.engine.pipeline import Runner, ingest
    from curate.engine.provenance import Ledger

    repo = Path(__file__).resolve().parent.parent
    cfg = load_config(repo / "configs" / "instruction" / "alpaca_full.yaml",
                      overrides=[f"input.path={pool}",
                                 f"cache_dir={recipe_dir / 'cache'}"])
    stages = cfg.build_stages()
    n_embed = next(i for i, st in enumerate(stages) if st.name == "embed") + 1
    if stages[n_embed - 1].cache_params() != embed.cache_params():
        raise SystemExit("the recipe's embed step has other parameters than the default embed")
    from curate.engine.pipeline import plan

    steps = plan(cfg)[:n_embed + 1]  # ingest + the steps up to embed: all must be cache hits
    if not all(r["cached"] for r in steps):
        raise SystemExit(f"{recipe_dir}: not cached for this pool path: {[r['step'] for r in steps if not r['cached']]} "
                         "(pass the pool path exactly as benchmarks/alpaca_full.py got it)")
    store = StageStore(cfg.cache_dir)
    runner = Runner(store, show_progress=False)
    ing = ingest(cfg, store, False)
    led = Ledger(ing.table.column("id").to_pylist(), ing.quarantine, ing.table.column("source").to_pylist())
    cached, _, records = runner.run_stages(stages[:n_embed], ing.table, ing.key, led)
    if not all(r.cached for r in records):
        raise SystemExit(f"{recipe_dir}: the recipe's steps up to embed were not all cached (run alpaca_full.py first)")
    pos = {i: j for j, i in enumerate(cached.column("id").to_pylist())}
    mat = embedding_matrix(cached, "embedding")
    ids = table.column("id").to_pylist()
    out = np.zeros((len(ids), mat.shape[1]), np.float32)
    miss = [i for i, x in enumerate(ids) if x not in pos]
    for i, x in enumerate(ids):
        if x in pos:
            out[i] = mat[pos[x]]
    t0 = time.perf_counter()
    if miss:
        texts = table.column("text").take(pa.array(miss)).to_pylist()
        out[miss] = embed.encode(texts)
    return out, len(ids) - len(miss), time.perf_counter() - t0


def via_curate(pool: str, out: Path, reuse: Path | None = None) -> None:
    """Annotate with curate's default stages (embed, heuristics, quality_model); see the module doc."""
    from curate.cache.store import StageStore
    from curate.core.hashing import table_fingerprint
    from curate.core.schema import embedding_matrix
    from curate.embed.stage import Embed
    from curate.engine.pipeline import Runner
    from curate.engine.provenance import Ledger
    from curate.score.heuristics import HEURISTIC_COLUMNS
    from curate.score.stages import Heuristics, QualityModelStage

    table = load_pool(pool)
    runner = Runner(StageStore(out / "cache"), show_progress=True)
    ledger = Ledger(table.column("id").to_pylist(), [], table.column("source").to_pylist())
    embed = Embed()
    t0 = time.perf_counter()
    reuse_note = None
    if reuse is None:
        stages = [embed, Heuristics(), QualityModelStage()]
    else:
        from curate.core.schema import embedding_column

        emb, n_reused, t_missing = reused_embeddings(table, pool, reuse, embed)
        table = table.append_column("embedding", embedding_column(emb))
        reuse_note = {"from": str(reuse), "rows_reused": n_reused, "rows_embedded_here": table.num_rows - n_reused,
                      "seconds_embedding_missing": t_missing}
        stages = [Heuristics(), QualityModelStage()]
    got, _, records = runner.run_stages(stages, table, table_fingerprint(table), ledger)
    wall = time.perf_counter() - t0
    secs = {r.type: r.seconds for r in records}
    np.savez(out / "annotations.npz", ids=np.array(got.column("id").to_pylist()),
             embedding=embedding_matrix(got, "embedding").astype(np.float32),
             heuristics=np.stack([got.column(c).to_numpy().astype(np.float32) for c in HEURISTIC_COLUMNS], axis=1),
             quality=got.column("quality").to_numpy().astype(np.float64))
    n = int(table.num_rows)
    meta = {"pool": str(pool), "n": n, "embedder": f"all-MiniLM-L6-v2 (curate embed, backend {embed.backend})",
            "embed_string": "canonical text (curate's default)", "heuristic_columns": list(HEURISTIC_COLUMNS),
            "quality": "curate quality_model: shipped scorer (curate/assets), reusing the embedding column",
            "stage_seconds": secs, "wall_seconds": wall, "cached": [r.label for r in records if r.cached],
            "embeddings_reused": reuse_note,
            "embed_seconds": secs.get("embed", float("nan")), "heuristics_seconds": secs.get("heuristics", float("nan")),
            "embed_rows_per_s": n / secs["embed"] if secs.get("embed") else float("nan"),
            "heuristics_rows_per_s": n / secs["heuristics"] if secs.get("heuristics") else float("nan")}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps(meta, indent=2))


def check_template(pool: str, out: Path, n: int, seed: int) -> None:
    """Quality from CAR_TEMPLATE vs car_string embeddings on a seeded sample of n rows."""
    from scipy.stats import spearmanr

    from curate.embed.sentence import encode_sentences
    from curate.score.rows import car_string, row_fields

    table = load_pool(pool)
    idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows), replace=False))
    t = table.take(idx)
    f = row_fields(t)
    _, hfeat = heuristic_block(t)
    q_tmpl = quality_from(encode_sentences(car_template_texts(t)), hfeat)
    q_car = quality_from(encode_sentences([car_string(a, x, o) for a, x, o in zip(f.instruction, f.input, f.output)]),
                         hfeat)
    m = max(1, len(idx) // 10)
    top_a, top_b = set(np.argsort(-q_tmpl)[:m]), set(np.argsort(-q_car)[:m])
    empty_input = float(np.mean([not x.strip() for x in f.input]))
    res = {"n": int(len(idx)), "seed": seed, "spearman": float(spearmanr(q_tmpl, q_car).statistic),
           "top10pct_overlap": len(top_a & top_b) / m, "mean_abs_diff": float(np.mean(np.abs(q_tmpl - q_car))),
           "sd_quality": float(np.std(q_car)), "frac_empty_input": empty_input}
    (out / "template_check.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pool")
    ap.add_argument("out")
    ap.add_argument("--shard-size", type=int, default=4096)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--shard", type=int)
    g.add_argument("--n-shards", action="store_true")
    g.add_argument("--merge", action="store_true")
    g.add_argument("--check-template", action="store_true")
    g.add_argument("--via-curate", action="store_true")
    ap.add_argument("--reuse-embeddings", type=Path, default=None,
                    help="with --via-curate: benchmarks/alpaca_full.py's --work folder; its cached embed step is reused by row id")
    ap.add_argument("--more-s", type=float, default=420.0,
                    help="after --shard i, go on with the next unfinished shards while under this many seconds")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.n_shards:
        print(-(-load_pool(a.pool).num_rows // a.shard_size))
    elif a.merge:
        merge(a.pool, out, a.shard_size)
    elif a.via_curate:
        via_curate(a.pool, out, a.reuse_embeddings)
    elif a.check_template:
        check_template(a.pool, out, a.n, a.seed)
    else:
        run_shards(a.pool, out, a.shard, a.shard_size, a.more_s)


if __name__ == "__main__":
    main()
