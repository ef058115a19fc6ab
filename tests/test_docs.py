"""The docs' marked code blocks run as written (from the repository root, offline, on sample_data).

Convention: an HTML comment on the line before a fenced ``python`` or ``bash`` block in README.md
or docs/**/*.md marks it: ``<!-- doc-test -->`` runs it (python blocks with this interpreter, bash
blocks with ``bash -e`` and the venv's scripts first on PATH), each in a fresh process with a
time limit of :data:`TIME_LIMIT` seconds and its own cache folder; ``<!-- doc-test: slow -->``
runs it only under ``pytest -m slow`` (a block that embeds the 2,000-row sample, ~30-60 s each);
``<!-- doc-test: skip REASON -->`` lists it as skipped with the reason (big data, a server, a
step that needs another block's output). Unmarked blocks are not run: marking is how a block
promises to work as written.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TIME_LIMIT = 240
MARK = re.compile(r"^<!--\s*doc-test(?::\s*(?:(?P<slow>slow)|skip\s+(?P<why>.*?)))?\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w+)?\s*$")


def marked_blocks() -> list:
    """A ``pytest.param(file, line of the block, language, code, skip reason or None)`` per marked block."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        lines = path.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            m = MARK.match(line.strip())
            if not m:
                continue
            fence = FENCE.match(lines[i + 1].strip()) if i + 1 < len(lines) else None
            rel = path.relative_to(REPO).as_posix()
            if not fence or fence.group("lang") not in ("python", "bash"):
                raise AssertionError(f"{rel}:{i + 1}: a doc-test mark must sit right before a ```python or ```bash block")
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            code = "\n".join(lines[i + 2:end]) + "\n"
            out.append(pytest.param(rel, i + 2, fence.group("lang"), code, m.group("why"), id=f"{rel}:{i + 2}",
                                    marks=[pytest.mark.slow] if m.group("slow") else []))
    return out


BLOCKS = marked_blocks()


def test_there_are_marked_blocks():
    assert len([b for b in BLOCKS if b.values[4] is None and not b.marks]) >= 2


@pytest.mark.parametrize("where, line, lang, code, skip", BLOCKS)
def test_doc_block_runs_as_written(where, line, lang, code, skip, tmp_path):
    if skip:
        pytest.skip(f"{where}:{line}: {skip}")
    env = {**os.environ, "CURATE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-c", code]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIME_LIMIT)
    assert p.returncode == 0, f"{where}:{line} failed as written:\n{p.stderr[-3000:]}"
