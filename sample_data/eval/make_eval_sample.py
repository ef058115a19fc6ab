"""Rebuild the small held-out eval slices from the shared data copy (seed 0, byte-identical reruns).

    python sample_data/eval/make_eval_sample.py [DATA_DIR]   (default ../shared/data)
"""
import json
import sys
from pathlib import Path

import numpy as np

data = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "eval"
here = Path(__file__).resolve().parent


def sample(src: Path, dst: Path, n: int) -> None:
    rows = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    idx = np.sort(np.random.default_rng(0).choice(len(rows), size=n, replace=False))
    dst.write_text("".join(json.dumps(json.loads(rows[i]), ensure_ascii=False) + "\n" for i in idx), encoding="utf-8")


sample(data / "self_instruct_user_oriented_252.jsonl", here / "self_instruct_60.jsonl.heldout", 60)
sample(data / "gsm8k_test.jsonl", here / "gsm8k_test_100.jsonl.heldout", 100)
