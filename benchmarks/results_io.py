"""Where and how benchmarks write their results: ``benchmarks/results/<name>.{json,md}``."""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, data, markdown: str, *, indent: int = 2, default=None) -> None:
    """Write ``<name>.json`` (``data``) and ``<name>.md`` (``markdown``) under RESULTS and print the markdown.

    Args:
        name: file stem, e.g. ``"embed_openvino"``.
        data: JSON-serialisable result (``default`` converts the rest, e.g. ``str``).
        markdown: the human-readable table(s); one trailing newline is ensured.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=indent, default=default))
    (RESULTS / f"{name}.md").write_text(markdown.rstrip("\n") + "\n")
    print(markdown)
