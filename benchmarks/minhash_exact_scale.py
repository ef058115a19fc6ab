"""``exact_dedup`` (the hash shuffle) on a scale corpus: wall time, peak memory and disk, the estimate.

Reads a corpus of ``benchmarks/minhash_corpus.py`` memory-mapped (as the cache hands a table to
a stage), runs ``ExactDedup().select`` and the engine's check in this process under
``proc_sampler.TreeSampler`` (every 0.5 s from /proc), and prints one JSON line with the
``curate plan`` estimate next to the measured peaks.

Usage::

    python benchmarks/minhash_exact_scale.py /tmp/mhscale/corpus/short_1000000.arrow [--work /tmp/exact_scale]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proc_sampler import TreeSampler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpus")
    ap.add_argument("--work", default="/tmp/exact_scale")
    args = ap.parse_args()
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.core.stage import StageContext
    from curate.dedup.exact import ExactDedup

    table = pa.ipc.open_file(pa.memory_map(args.corpus)).read_all().select(["id", "text"])
    stage = ExactDedup()
    est = stage.estimate_resources(table.num_rows, int(pc.sum(pc.binary_length(table.column("text"))).as_py()))
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sampler = TreeSampler(work)
    t0 = time.perf_counter()
    sel = stage.check(stage.select(table, StageContext(work_dir=work / "w", show_progress=False)), table.num_rows)
    sel.to_table()
    out = {"n": table.num_rows, "seconds": round(time.perf_counter() - t0, 1), **sampler.stop(), "estimate": est,
           "dropped": int((~sel.keep).sum())}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
