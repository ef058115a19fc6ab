"""Build a labelled multilingual sample for language ID from Debian's translated manual pages.

Used by ``benchmarks/lid_accuracy.py`` (and its ``--write-test-slice``). Nothing is downloaded
here: pass the folders made by ``dpkg-deb -x`` of the .deb files, one per package::

    mkdir /tmp/lid-debs && cd /tmp/lid-debs
    apt-get download manpages-de manpages-fr manpages-es manpages-it manpages-pl manpages-ru \\
        manpages-pt-br manpages-ja manpages-zh manpages-nl manpages-cs manpages-uk manpages-sv \\
        manpages-tr manpages-vi manpages-ro manpages-da manpages-fi manpages-hu manpages-el manpages-id
    for f in *.deb; do d=x/${f%%_*}; mkdir -p $d; dpkg-deb -x $f $d; done

A folder's label is its package's language (``manpages-pt-br`` -> ``pt``, ``manpages-zh`` ->
``zh`` for both zh_CN and zh_TW, as lid.176 has one ``zh``). Each page is rendered with
``zcat | groff -k -Tutf8 -man -rLL=10000n -dAD=l -rHY=0 | col -bx`` (preconv, one output line per
paragraph, no hyphenation or justification), and a paragraph is kept as a document when it is
prose, not code, names or notices:

* after the page's title and NAME section, indented body text;
* at least 80 characters (40 for Chinese/Japanese, where a character carries a word's worth);
* at least 75% of its non-space characters are letters; no ``@``, ``http``, ``www.``, ``/``
  paths, ``©`` or ``Licen``/``GPL`` (translators' credits and licence notices); under 10% of its
  words start with ``-``, hold ``=`` or are ``|`` (option lists) and under 30% are numbers or
  all-capitals (tables); no ``*`` and no ``);`` at the end (C prototypes);
* not left in English: manpages-l10n ships pages that are >= 80% translated, so some paragraphs
  are still the English original. A paragraph labelled non-English is dropped when English
  words that are not words of the paragraph's language (``EN_MARKERS``: "the", "and", "which",
  "with", ...; "is", "of", "to", ... except where the language has them) make up >= 4% of its
  words (English prose: ~20%), a rule that does not rely on the model being measured;
* not an exact repeat of a paragraph already taken for its language.

Pages are visited in a seeded random order (``numpy.random.default_rng([seed, language
index])`` over the sorted page paths), at most ``per_page`` paragraphs from each, until
``per_lang`` documents are found. The same packages, seed and GNU groff version give the same
sample.

English (not in the manpages): the DCLM human-annotated web documents
(``quality/dclm_human_quality_majority.jsonl``, MIT; the DCLM pool was itself filtered with
fastText LID, so its English score is optimistic) and Dolly contexts (``instruct/dolly_15k.json``
``input``, Wikipedia excerpts, CC BY-SA 3.0), each sampled with the same seed.
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

GROFF = ["groff", "-k", "-Tutf8", "-man", "-rLL=10000n", "-dAD=l", "-rHY=0"]
PACKAGE_LANG = {"pt-br": "pt", "zh": "zh"}  # others: the package suffix is the lid.176 code
CJK = {"zh", "ja"}
# Common English words that are not common words of the languages here ...
EN_MARKERS = frozenset(["the", "and", "which", "this", "that", "with", "should", "these", "there", "from", "when",
                        "will", "can", "been", "have", "has", "only", "other", "each", "not", "if", "it", "its",
                        "into", "than", "then", "may", "must", "would", "see", "use", "used", "using", "print",
                        "specify", "before", "during", "more", "below", "above", "such", "some"])
# ... and those that are, except in the languages where they are (Dutch "is", "of"; Polish and
# Czech "to", "by"; Danish "for"; German, Dutch, Italian... "in"; Romanian "are"; Hungarian "be")
EN_MARKERS_EXCEPT = {"is": {"nl"}, "of": {"nl"}, "to": {"pl", "cs"}, "by": {"pl", "cs"}, "for": {"da", "sv"},
                     "in": {"de", "nl", "it", "pl", "ro", "id", "sv", "cs", "da", "fi", "tr", "hu"},
                     "are": {"ro", "it"}, "be": {"hu"}, "an": {"de"}, "on": {"fi", "uk", "ru", "cs"}}
EN_MARKER_SHARE = 0.04
NOT_PROSE = re.compile(r"@|https?:|www\.|/\w|©|Licen|GPL")
_CJK_CHAR = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def package_language(folder: Path) -> str:
    """lid.176 code for an extracted ``manpages-XX`` folder (``manpages-pt-br`` -> ``pt``)."""
    name = folder.name
    if not name.startswith("manpages-"):
        raise ValueError(f"--manpages: {folder} is not an extracted manpages-XX package (name must start with 'manpages-')")
    suffix = name[len("manpages-"):]
    return PACKAGE_LANG.get(suffix, suffix)


def man_pages(folder: Path) -> list[Path]:
    """Sorted translated pages of an extracted package (``usr/share/man/<locale>/manN/*.gz``)."""
    pages = sorted(p for p in (folder / "usr" / "share" / "man").glob("*/man*/*.gz") if p.is_file())
    if not pages:
        raise ValueError(f"--manpages: no usr/share/man/<locale>/man*/*.gz under {folder}")
    return pages


def render(page: Path) -> str:
    """Plain text of one page (groff's warnings are dropped; a page groff cannot read gives "")."""
    raw = gzip.decompress(page.read_bytes())
    out = subprocess.run(GROFF, input=raw, capture_output=True, check=False).stdout
    return subprocess.run(["col", "-bx"], input=out, capture_output=True, check=False).stdout.decode("utf-8", "replace")


def english_marker_share(text: str, lang: str) -> float:
    """Share of words that are common English words and not words of ``lang`` (untranslated-text detector)."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    hits = sum(w in EN_MARKERS or (w in EN_MARKERS_EXCEPT and lang not in EN_MARKERS_EXCEPT[w]) for w in words)
    return hits / max(len(words), 1)


def prose_paragraphs(rendered: str, lang: str) -> list[str]:
    """The paragraphs of a rendered page that pass the prose rules (module docstring)."""
    out, headings = [], 0
    for line in rendered.splitlines():
        if line and not line[0].isspace():
            headings += 1  # the page title line, then one per section heading
            continue
        if headings < 3:  # title and NAME
            continue
        text = " ".join(line.split())
        non_space = text.replace(" ", "")
        min_chars = 40 if lang in CJK else 80
        if len(text) < min_chars or not non_space or NOT_PROSE.search(text) or text[0] in "-+$#*[":
            continue
        if sum(ch.isalpha() for ch in non_space) / len(non_space) < 0.75:
            continue
        tokens = text.split()
        if sum(t.lstrip("[").startswith("-") or "=" in t or t == "|" for t in tokens) >= 0.1 * len(tokens):
            continue  # option lists (stty settings, usage lines, KEY= settings, a|b choices)
        if text.endswith(");") or "*" in text:
            continue  # C prototypes
        if sum(t.isdigit() or (t.isupper() and len(t) > 1) for t in tokens) >= 0.3 * len(tokens):
            continue  # table rows (character sets: "240 160 A0 ESPACIO ...")
        if lang in CJK and len(_CJK_CHAR.findall(text)) < 0.3 * len(non_space):
            continue  # a Latin-script paragraph (code, untranslated) in a CJK page
        if lang != "en" and english_marker_share(text, lang) >= EN_MARKER_SHARE:
            continue
        out.append(text)
    return out


def manpage_docs(folder: Path, lang_index: int, per_lang: int, per_page: int = 3, seed: int = 0,
                 workers: int = 2) -> list[dict]:
    """Up to ``per_lang`` labelled documents from one extracted package (module docstring).

    Args:
        folder: ``dpkg-deb -x`` root of a ``manpages-XX`` package.
        lang_index: the package's position in the sorted list (seeds its page order).
        per_lang: documents to take.
        per_page: at most this many paragraphs of one page (default 3).
        seed: sample seed (default 0).
        workers: groff processes at once (default 2).

    Returns:
        ``[{"text", "label", "source", "page"}]`` in sample order.
    """
    lang = package_language(folder)
    pages = man_pages(folder)
    order = np.random.default_rng([seed, lang_index]).permutation(len(pages))
    docs: list[dict] = []
    seen: set[str] = set()
    batch = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        for b in range(0, len(order), batch):
            chunk = [pages[i] for i in order[b:b + batch]]
            for page, rendered in zip(chunk, pool.map(render, chunk)):
                taken = 0
                for text in prose_paragraphs(rendered, lang):
                    if taken == per_page or len(docs) == per_lang:
                        break
                    if text not in seen:
                        seen.add(text)
                        taken += 1
                        docs.append({"text": text, "label": lang, "source": folder.name,
                                     "page": page.relative_to(folder).as_posix()})
            if len(docs) == per_lang:
                break
    return docs


def english_docs(data: Path, per_source: int, seed: int = 0) -> list[dict]:
    """English documents: DCLM web text and Dolly contexts (at least 80 characters each)."""
    dclm = [json.loads(x)["text"] for x in (data / "quality" / "dclm_human_quality_majority.jsonl").open()]
    dolly = [r["input"] for r in json.loads((data / "instruct" / "dolly_15k.json").read_text())]
    out = []
    for k, (name, texts) in enumerate((("dclm", dclm), ("dolly", dolly))):
        texts = sorted({t for t in texts if t and len(t.strip()) >= 80})
        pick = np.random.default_rng([seed, 1000 + k]).permutation(len(texts))[:per_source]
        out += [{"text": texts[i], "label": "en", "source": name, "page": ""} for i in sorted(pick)]
    return out


def build_sample(manpages: list[Path], data: Path | None, per_lang: int = 200, seed: int = 0,
                 workers: int = 2) -> list[dict]:
    """The labelled sample: ``per_lang`` documents per manpages package, plus English.

    Args:
        manpages: ``dpkg-deb -x`` roots of ``manpages-XX`` packages.
        data: the public datasets folder for English (DCLM, Dolly; ``$CURATE_DATA``, docs/data.md), or None for none.
        per_lang: documents per language and per English source (default 200).
        seed: sample seed (default 0).
        workers: groff processes at once (default 2).
    """
    docs = english_docs(data, per_lang, seed) if data is not None else []
    for i, folder in enumerate(sorted(manpages, key=lambda p: p.name)):
        docs += manpage_docs(folder, i, per_lang, seed=seed, workers=workers)
    return docs


# -- the small slice kept for tests/test_language_id.py -------------------------------------------
SLICE_LANGS = ("de", "fr", "es", "it", "pl", "ru", "pt", "nl", "uk", "cs", "sv", "el")  # manpages-l10n, GPL-3+
SLICE_LICENCE = {"dclm": "MIT (DCLM, mlfoundations/dclm)", "dolly": "CC BY-SA 3.0 (databricks-dolly-15k)"}


def pick_test_slice(docs: list[dict], per_lang: int = 2, min_chars: int = 150, max_chars: int = 600) -> list[dict]:
    """A small slice of the sample, chosen without looking at predictions.

    The first ``per_lang`` documents (sample order) of ``min_chars``-``max_chars`` characters of
    each language in ``SLICE_LANGS`` (manpages-l10n, GPL-3+) and of each English source (DCLM,
    Dolly), plus the first multi-line DCLM document of up to 1,500 characters (newline tests).
    """
    out: list[dict] = []
    for src in ("dclm", "dolly"):
        pool = [d for d in docs if d["source"] == src and min_chars <= len(d["text"]) <= max_chars]
        out += pool[:per_lang]
    for lang in SLICE_LANGS:
        pool = [d for d in docs if d["label"] == lang and min_chars <= len(d["text"]) <= max_chars]
        out += pool[:per_lang]
    multi = [d for d in docs if d["source"] == "dclm" and d["text"].count("\n") >= 3 and len(d["text"]) <= 1500
             and d not in out]
    out += multi[:1]
    rows = []
    for i, d in enumerate(out):
        licence = SLICE_LICENCE.get(d["source"], f"GPL-3+ ({d['source']} 4.18.1-1, manpages-l10n)")
        rows.append({"id": f"lid-{i:03d}", "text": d["text"], "label": d["label"], "source": d["source"],
                     "page": d["page"], "licence": licence})
    return rows


def write_test_slice(docs: list[dict], out: Path) -> None:
    """Write :func:`pick_test_slice` to ``out/lid_slice.jsonl`` (README.md there is written by hand)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = pick_test_slice(docs)
    (out / "lid_slice.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"wrote {len(rows)} documents to {out / 'lid_slice.jsonl'}")
