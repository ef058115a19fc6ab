"""The run's dataset card: ``README.md`` next to ``dataset/`` and ``data/``, in the Hugging Face
dataset-card format (a YAML header, then markdown).

The header holds what the Hub and ``datasets`` read: ``license`` (from the inputs where known,
else ``unknown``, with a warning), ``size_categories``, ``task_categories``, ``pretty_name``,
``tags`` and ``configs``, which points the default config's ``train`` split at
``data/*.parquet``, so ``datasets.load_dataset(RUN_DIR)`` loads the Parquet shards and nothing
else in the folder. The body says what a reader of a dataset needs: the recipe, the funnel, each
method with its paper, the seed, the output hash and how to read the provenance.

Where an input's licence is known (looked up per input file, the first that answers):

1. a ``datasets.save_to_disk`` folder's ``dataset_info.json`` ``license``;
2. the YAML header of a ``README.md`` (a dataset card) in the file's folder or a folder above it,
   up to the input root: its ``license``;
3. a markdown table in such a ``README.md`` with a ``licence``/``license`` column and a row that
   names the file (as ``sample_data/README.md`` has).

Licence names are mapped to the Hub's identifiers (``CC BY-SA 3.0`` -> ``cc-by-sa-3.0``, ``MIT``
-> ``mit``); a name that is not one of them becomes ``other`` with the name kept in the body.
"""
from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml

log = logging.getLogger(__name__)

# Papers of the stages whose class docstring does not cite one in its first paragraph (the card
# says what a stage is from that paragraph, so the description cannot drift from the class; this
# only fills in the citation, and an entry goes once the class docstring cites its paper).
PAPERS = {
    "exact_dedup": "Lee et al. 2022, arXiv 2107.06499",
    "minhash_dedup": "Broder 1997; Lee et al. 2022, arXiv 2107.06499",
    "substring_dedup": "Lee et al. 2022, arXiv 2107.06499",
    "semdedup": "Abbas et al. 2023, arXiv 2303.09540",
    "d4": "Tirumala et al. 2023, arXiv 2308.12284",
    "embed": "Sentence-BERT, Reimers & Gurevych 2019, arXiv 1908.10084",
    "kmeans": "faiss, Johnson et al. 2017, arXiv 1702.08734",
    "language_id": "fastText, Joulin et al. 2016, arXiv 1607.01759",
    "doc_quality": "DCLM, Li et al. 2024, arXiv 2406.11794",
    "perplexity_bucket": "CCNet, Wenzek et al. 2019, arXiv 1911.00359",
    "gopher_quality": "Gopher, Rae et al. 2021, arXiv 2112.11446",
    "gopher_repetition": "Gopher, Rae et al. 2021, arXiv 2112.11446",
    "c4_quality": "C4, Raffel et al. 2020, arXiv 1910.10683",
    "fineweb_quality": "FineWeb, Penedo et al. 2024, arXiv 2406.17557",
}

# The Hub's size buckets (upper bounds, exclusive) and their names.
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
                   (10_000_000_000, "1B<n<10B"), (100_000_000_000, "10B<n<100B"),
                   (1_000_000_000_000, "100B<n<1T")]

_SIMPLE = {"mit": "mit", "apache 2.0": "apache-2.0", "apache license 2.0": "apache-2.0", "apache-2.0": "apache-2.0",
           "cc0": "cc0-1.0", "cc0 1.0": "cc0-1.0", "cc0-1.0": "cc0-1.0", "public domain": "cc0-1.0",
           "odc-by": "odc-by", "odc by": "odc-by", "bsd-3-clause": "bsd-3-clause", "bsd 3-clause": "bsd-3-clause",
           "gpl-3.0": "gpl-3.0", "gpl 3.0": "gpl-3.0", "llama2": "llama2", "llama 2": "llama2",
           "unknown": "unknown", "other": "other", "openrail": "openrail"}
_CC = re.compile(r"^cc[\s-]*by((?:[\s-]*(?:sa|nc|nd))*)[\s-]*(\d\.\d)$")


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket of ``n`` rows (``"1K<n<10K"``)."""
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1T"


def license_id(name: str | None) -> str | None:
    """The Hub identifier of a licence name (``"CC BY-SA 3.0 (holds Dolly text)"`` -> ``cc-by-sa-3.0``).

    Returns:
        the identifier; ``"other"`` for a name that is not one; None for an empty name.
    """
    if not name or not str(name).strip():
        return None
    s = re.sub(r"\(.*?\)", "", str(name)).strip().lower().replace("licence", "").replace("license", "").strip()
    if s in _SIMPLE:
        return _SIMPLE[s]
    m = _CC.match(s)
    if m:
        parts = [p for p in re.split(r"[\s-]+", m.group(1)) if p]
        return "-".join(["cc", "by", *parts, m.group(2)])
    return "other"


def _front_matter(text: str) -> dict:
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _table_license(text: str, file_name: str) -> str | None:
    """The licence cell of the markdown-table row naming ``file_name`` (None when there is none)."""
    header: list[str] | None = None
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            header = None
            continue
        if header is None:
            header = [c.lower() for c in cells]
            continue
        col = next((i for i, h in enumerate(header) if h in ("licence", "license")), None)
        if col is None or set("".join(cells)) <= set("-: "):
            continue
        names = {re.sub(r"[`*]", "", c) for c in cells}
        if file_name in names and col < len(cells):
            return cells[col] or None
    return None


def _shown(p: Path) -> str:
    """``p`` relative to the working directory when it is under it (cards travel; absolute paths do not)."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def file_license(path: str | Path, root: str | Path | None = None) -> dict:
    """Where the licence of one input file is said, if anywhere (see the module docstring).

    Args:
        path: an input file (or a ``save_to_disk`` folder).
        root: the input root; README.md files above it are not read (default: the file's folder).

    Returns:
        ``{"license": hub id or None, "name": the name as written or None, "from": where or None}``.
    """
    p = Path(path)
    info = p / "dataset_info.json" if p.is_dir() else p.parent / "dataset_info.json"
    if info.is_file():
        try:
            got = json.loads(info.read_text()).get("license")
        except (OSError, ValueError):
            got = None
        if got:
            return {"license": license_id(got), "name": got, "from": _shown(info)}
    top = Path(root).resolve() if root else (p if p.is_dir() else p.parent).resolve()
    folder = (p if p.is_dir() else p.parent).resolve()
    while True:
        readme = folder / "README.md"
        if readme.is_file():
            text = readme.read_text(errors="replace")
            got = _front_matter(text).get("license")
            if got:
                names = [str(x) for x in got] if isinstance(got, list) else [str(got)]
                return {"license": ",".join(sorted({license_id(n) or "unknown" for n in names})),
                        "name": ", ".join(names), "from": f"{_shown(readme)} (YAML header)"}
            cell = _table_license(text, p.name)
            if cell:
                return {"license": license_id(cell), "name": cell, "from": f"{_shown(readme)} (table row {p.name})"}
        if folder == top or top not in folder.parents:
            break
        folder = folder.parent
    return {"license": None, "name": None, "from": None}


def _source_of(files: list[str]) -> dict[str, str]:
    """Provenance ``source`` values (file names as the readers record them) -> input file path."""
    out = {}
    for f in files:
        out.setdefault(Path(f).name, f)
        out.setdefault(f, f)
    return out


def source_licenses(files: list[str], provenance: pa.Table, root: str | Path | None) -> tuple[list[dict], list[str]]:
    """Per input source: rows selected and its licence; and the card's ``license`` list.

    Returns:
        (rows ``{"source", "selected", "license", "name", "from"}`` sorted by source, licence ids
        of the sources that gave selected rows, with ``unknown`` where one is not known).
    """
    status = np.array(provenance.column("status").to_pylist(), dtype=object)
    sources = provenance.column("source").to_pylist() if "source" in provenance.column_names else [None] * len(status)
    selected = Counter(s for s, st in zip(sources, status) if st == "selected")
    seen = sorted({s for s in sources if s is not None} | {Path(f).name for f in files})
    where = _source_of(files)
    rows, ids = [], set()
    for s in seen:
        lic = file_license(where.get(s, s), root) if s in where else {"license": None, "name": None, "from": None}
        rows.append({"source": s, "selected": selected.get(s, 0), **lic})
        if selected.get(s, 0):
            ids.update((lic["license"] or "unknown").split(","))
    if selected.get(None):
        ids.add("unknown")
    return rows, sorted(ids) or ["unknown"]


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render_card(cfg, rep: dict, provenance: pa.Table, files: list[str]) -> tuple[str, list[str]]:
    """The card's text and its warnings (e.g. unknown licences).

    Args:
        cfg: the run's ``RunConfig``.
        rep: the run's report dict (counts, stages, output_hash, ...).
        provenance: the run's provenance table.
        files: the input files read.
    """
    root = cfg.input.path if isinstance(cfg.input.path, str) and Path(cfg.input.path).exists() else None
    per_source, licenses = source_licenses(files, provenance, root)
    warnings = []
    unknown = [r["source"] for r in per_source if r["selected"] and not r["license"]]
    if unknown:
        warnings.append(f"dataset card: licence unknown for {', '.join(unknown)} (license: unknown); add a "
                        f"README.md with a `license:` YAML header beside the input to record it")
    c = rep["counts"]
    out_dir = str(cfg.output.dir)
    header = {
        "pretty_name": rep.get("name") or Path(out_dir).name,
        "license": licenses if len(licenses) > 1 else licenses[0],
        "size_categories": [size_category(int(c["n_selected"]))],
        "task_categories": ["text-generation"],
        "tags": ["curate", "data-curation"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}],
    }
    if any(r["license"] == "other" for r in per_source if r["selected"]):
        header["license_name"] = "see the Sources and licences table"
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {header['pretty_name']}", "",
             (f"Curated with curate from recipe `{rep.get('name') or '-'}`: **{c['n_input']:,}** input rows → "
             f"**{c['n_selected']:,}** selected ({c['n_dropped']:,} dropped, {c['n_quarantined']:,} quarantined). "
             "Every input row's fate is in `provenance.parquet`."), "",
             "## Load it", "", "```python", "import datasets",
             f'ds = datasets.load_dataset("{out_dir}", split="train")   # data/*.parquet, through this card\'s configs',
             f'ds = datasets.load_from_disk("{out_dir}/dataset")        # the same rows, as an Arrow dataset',
             "```", "", "## Sources and licences", ""]
    lines += _md_table(["source", "rows selected", "licence", "as written", "found in"],
                       [[r["source"], r["selected"], r["license"] or "unknown", r["name"] or "-", r["from"] or "not found"]
                        for r in per_source])
    if any("-sa-" in (r["license"] or "") for r in per_source if r["selected"]):
        lines += ["", ("Share-alike sources (`cc-by-sa-*`): redistributing this dataset or a changed version "
                      "keeps that licence and credits their authors.")]
    if unknown:
        lines += ["", f"**Licence unknown** for {', '.join(unknown)}: check it before redistributing."]
    lines += ["", "## Recipe", "", (f"Seed: `{cfg.seed if cfg.seed is not None else 'per stage (below)'}`. "
              "The resolved recipe, cache keys and package versions are in `manifest.json`."), "", "```yaml",
              yaml.safe_dump({"input": cfg.input.model_dump(mode="json", exclude_defaults=True),
                              "stages": cfg.stages}, sort_keys=False, default_flow_style=None).rstrip(), "```",
              "", "## Funnel", ""]
    rows = [["ingest", c["n_input"], rep["input"]["rows_read"],
             ", ".join(f"{k}: {v}" for k, v in rep.get("quarantine_by_reason", {}).items()) or "-"]]
    rows += [[s["label"] + (" (auto)" if s.get("auto") else ""), s["rows_in"], s["rows_out"],
              ", ".join(f"{k}: {v}" for k, v in (s.get("dropped") or {}).items()) or "-"] for s in rep["stages"]]
    lines += _md_table(["step", "rows in", "rows out", "dropped (reason: rows)"], rows)
    lines += ["", "## Methods", ""]
    lines += [f"- `{t}`: {method_line(t)}" for t in dict.fromkeys(s["type"] for s in rep["stages"])]
    lines += ["", "## Reproduce and verify", "",
              (f"- output hash `{rep.get('output_hash', '')}`: sha256 over `data/*.parquet` and "
              "`provenance.parquet`; rerunning the recipe on the same input gives the same hash."),
              f"- seeds: {_seeds(cfg)}.",
              ("- `report.md` (funnel, reasons, examples of dropped rows, plots) and `datamap.html` (the pool's "
              "embedding map: picked, dropped by reason; opens offline in a browser)."), "",
              "## Provenance: how to read it", "",
              ("`provenance.parquet` has one row per input row: `id`, `status` (`selected`, `dropped`, "
              "`quarantined`), `stage` (`<step>:<type>` that dropped it, or `ingest`), `reason` (a declared "
              "code, listed by `curate stages`), `source` (input file), `dup_of` (the kept row a duplicate "
              "points at) and the scores computed for the row (null where it never reached that step). "
              "`quarantine.jsonl` holds the raw rows that could not be read."), "", "```python",
              "import pandas as pd",
              f'p = pd.read_parquet("{out_dir}/provenance.parquet")',
              'p.status.value_counts()                                            # the invariant: input = sum',
              'p[p.status == "dropped"].groupby(["stage", "reason"]).size()       # why rows went',
              'p[p.id == p.id.iloc[0]]                                            # one row\'s fate', "```", ""]
    return "\n".join(lines), warnings


def method_line(stage_type: str) -> str:
    """What a stage is, with its paper: its class docstring's first paragraph, plus the citation
    from :data:`PAPERS` when that paragraph names no paper."""
    import inspect

    from curate.core.registry import get_stage

    try:
        doc = inspect.getdoc(get_stage(stage_type)) or ""
    except Exception:  # noqa: BLE001 - an unknown type still gets a line
        doc = ""
    first = " ".join(doc.split("\n\n")[0].split()) or "see `curate stages`"
    if stage_type in PAPERS and "arXiv" not in first:
        first = f"{first} ({PAPERS[stage_type]})"
    return first


def _seeds(cfg) -> str:
    got = [f"`{s['type']}` {s['seed']}" for s in cfg.stages if isinstance(s, dict) and "seed" in s]
    run = f"recipe seed {cfg.seed}" if cfg.seed is not None else "no recipe-level seed"
    return run + ("; " + ", ".join(got) if got else "")


def write_card(path: Path, cfg, rep: dict, provenance: pa.Table, files: list[str]) -> list[str]:
    """Write ``README.md`` at ``path``; returns the warnings (also logged)."""
    text, warnings = render_card(cfg, rep, provenance, files)
    path.write_text(text)
    for w in warnings:
        log.warning("%s", w)
    return warnings
