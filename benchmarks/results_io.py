"""Where and how benchmarks write their results.

A run writes to ``runs/bench/<script>/`` (git-ignored), so checking a machine leaves the
repository clean; only ``--record`` writes the committed ``benchmarks/results/<name>.{json,md}``.
Scripts that read committed results (a baseline, ``--render``) keep reading ``RESULTS``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent.parent / "runs" / "bench"
_FALLBACK_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def data_dir() -> Path:
    """The folder with the public datasets the benchmarks read (``instruct/``, ``eval/``, ``quality/``, ``dedup/``).

    Returns:
        ``$CURATE_DATA`` when set; see docs/data.md for what goes in it and where each file comes from.
    """
    env = os.environ.get("CURATE_DATA")
    return Path(env).expanduser() if env else _FALLBACK_DATA


def add_record_flag(ap: argparse.ArgumentParser) -> None:
    """Add ``--record`` to a benchmark's parser (what ``output_dir`` reads).

    Args:
        ap: the script's parser.
    """
    ap.add_argument("--record", action="store_true",
                    help="write into benchmarks/results/ (the committed results) instead of runs/bench/<script>/")


def output_dir(args: argparse.Namespace | None = None, script: str | None = None) -> Path:
    """The folder a benchmark writes its results to, created: ``RESULTS`` under ``--record``, else a run folder.

    Args:
        args: parsed arguments with a ``record`` attribute (``add_record_flag``); default None reads
            ``--record`` from ``sys.argv``.
        script: run folder name, default None: the running script's stem, e.g. ``"minhash_speed"``.

    Returns:
        ``benchmarks/results/`` or ``runs/bench/<script>/``.
    """
    record = "--record" in sys.argv[1:] if args is None else bool(getattr(args, "record", False))
    out = RESULTS if record else RUNS / (script or Path(sys.argv[0]).stem or "benchmark")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(name: str, data, markdown: str, *, out: Path | None = None, indent: int = 2,
                  default=None) -> Path:
    """Write ``<name>.json`` (``data``) and ``<name>.md`` (``markdown``) under ``out`` and print the markdown.

    Args:
        name: file stem, e.g. ``"embed_openvino"``.
        data: JSON-serialisable result (``default`` converts the rest, e.g. ``str``).
        markdown: the human-readable table(s); one trailing newline is ensured.
        out: folder, default None: ``output_dir()`` (``--record`` in ``sys.argv`` picks ``RESULTS``).
        indent: JSON indent, default 2.
        default: JSON ``default`` hook, default None.

    Returns:
        The folder written to.
    """
    out = output_dir() if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=indent, default=default))
    (out / f"{name}.md").write_text(markdown.rstrip("\n") + "\n")
    print(markdown)
    print(f"wrote {out / name}.{{json,md}}", file=sys.stderr)
    return out
