"""Regenerate sample_data/ deterministically from the shared real data (seeded).

Usage:
    python sample_data/make_sample.py [DATA_DIR]

DATA_DIR defaults to ../shared/data relative to the repository root. Writes dolly_2k.jsonl,
gsm8k_500.jsonl, gpteacher_roleplay_500.json and planted.jsonl next to this script; what is
planted in planted.jsonl is listed in README.md (keep the two in sync).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 0
HERE = Path(__file__).resolve().parent
N_DOLLY, N_GSM8K, N_GPTEACHER = 2000, 500, 500


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def _vary(s: str, rng: random.Random) -> str:
    """Change case and whitespace only: exact_dedup (case/whitespace normalised) must catch it."""
    words = s.split(" ")
    s = "  ".join(words) if rng.random() < 0.5 else s.replace(" ", " \n", 1)
    return (s.upper() if rng.random() < 0.5 else s.lower()) + "  \n"


def main(data_dir: Path) -> None:
    rng = random.Random(SEED)
    inst = data_dir / "instruct"
    dolly = json.loads((inst / "dolly_15k.json").read_text(encoding="utf-8"))
    gsm8k = [json.loads(line) for line in (inst / "gsm8k_train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    gpt = json.loads((inst / "gpteacher_roleplay_deduped.json").read_text(encoding="utf-8"))

    # Short Dolly rows keep the folder small (< 3 MB); the length cap is part of the recipe.
    dolly_pool = [i for i, r in enumerate(dolly) if len(json.dumps(r)) < 2000]
    dolly_idx = sorted(rng.sample(dolly_pool, N_DOLLY))
    dolly_rows = [dolly[i] for i in dolly_idx]
    gsm_rows = [gsm8k[i] for i in sorted(rng.sample(range(len(gsm8k)), N_GSM8K))]
    gpt_rows = [gpt[i] for i in sorted(rng.sample(range(len(gpt)), N_GPTEACHER))]
    _write_jsonl(HERE / "dolly_2k.jsonl", dolly_rows)
    _write_jsonl(HERE / "gsm8k_500.jsonl", gsm_rows)
    (HERE / "gpteacher_roleplay_500.json").write_text(json.dumps(gpt_rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    # Sources of planted duplicates: 6 Dolly, 2 GSM8K, 2 GPTeacher rows (alpaca keys everywhere;
    # GSM8K question/answer become instruction/output, which renders the same canonical text).
    def as_alpaca(r: dict) -> dict:
        if "question" in r:
            return {"instruction": r["question"], "input": "", "output": r["answer"]}
        return {"instruction": r["instruction"], "input": r["input"], "output": r["output"]}

    exact_src = [as_alpaca(r) for r in rng.sample(dolly_rows, 6) + rng.sample(gsm_rows, 2) + rng.sample(gpt_rows, 2)]
    vary_src = [as_alpaca(r) for r in rng.sample(dolly_rows, 6) + rng.sample(gsm_rows, 2) + rng.sample(gpt_rows, 2)]
    unused = [dolly[i] for i in dolly_pool if i not in set(dolly_idx)]
    fresh = rng.sample(unused, 2)

    lines: list[bytes] = []

    def add(obj: dict) -> None:
        lines.append(json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    for i, r in enumerate(exact_src, 1):  # lines 1-10: identical copies
        add({"id": f"planted-{i:03d}", **r})
    for i, r in enumerate(vary_src, 11):  # lines 11-20: case/whitespace variants
        add({"id": f"planted-{i:03d}", "instruction": _vary(r["instruction"], rng), "input": r["input"],
             "output": _vary(r["output"], rng)})
    # line 21: malformed JSON (closing brace missing)
    lines.append(b'{"id": "planted-021", "instruction": "Name three primary colours.", "input": "", "output": "Red, yellow and blue."')
    # line 22: invalid UTF-8 (a Latin-1 byte 0xE9 for the e-acute in "Cafe")
    lines.append(b'{"id": "planted-022", "instruction": "Translate \'Caf\xe9\' into English.", "input": "", "output": "Coffee shop."}')
    # line 23: missing field (no output)
    add({"id": "planted-023", "instruction": "Write a haiku about autumn.", "input": ""})
    # line 24: empty text (every part blank after stripping)
    add({"id": "planted-024", "instruction": "   ", "input": "\n", "output": " \t "})
    # line 25: wrong type (instruction is a number)
    add({"id": "planted-025", "instruction": 42, "input": "", "output": "The answer to everything."})
    # line 26: a ~50 KB row (row_too_large with max_row_bytes=20000; a valid row at the default 1 MB)
    long_input = "\n\n".join(r["input"] for r in unused if r["input"])[:50_000]
    add({"id": "planted-026", "instruction": "Summarise the following passages in one paragraph.", "input": long_input,
         "output": "The passages cover many unrelated topics."})
    # line 27: duplicate id (repeats planted-001, with content that appears nowhere else)
    add({"id": "planted-001", **as_alpaca(fresh[0])})
    # line 28: a clean unique row after the bad ones (reading goes on)
    add({"id": "planted-028", **as_alpaca(fresh[1])})
    (HERE / "planted.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    print(f"wrote {N_DOLLY} + {N_GSM8K} + {N_GPTEACHER} real rows and {len(lines)} planted lines to {HERE}")


if __name__ == "__main__":
    default = HERE.parent.parent / "shared" / "data"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
