"""The documentation stays navigable and self-contained.

- Every relative link in README.md and docs/**/*.md (markdown ``[text](target)``) names a file or folder of the
  repository, and a ``#anchor`` on a markdown target names one of that file's headings (GitHub's slug rules).
- No documentation or source file cites background notes that are not part of the repository.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
SOURCE_DIRS = ("docs", "core", "training", "exporter", "service", "benchmarks")
SOURCE_SUFFIXES = {".md", ".py", ".toml", ".txt", ".rst", ".yaml", ".yml", ".json", ".cfg"}
# background notes kept outside the repository; a citation of one is a dead end for every reader
FOREIGN_NOTES = tuple(f"{stem}.md" for stem in ("ALGORITHMS", "DESIGN", "ANCHORS"))

# [text](target) or [text](target "title"); images too. Inline code is removed before matching.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks, with inline code spans blanked."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text stays
    text = re.sub(r"[*_~]", "", text).strip().lower()
    kept = "".join(
        ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in ("L", "N") or ch == "_"
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    found: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match is None:
            continue
        slug = github_slug(match.group(2))
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    """Targets of the file's links that point into the repository (no scheme, not mailto, not absolute)."""
    targets = []
    for line in _prose_lines(path):
        for target in LINK.findall(line):
            if SCHEME.match(target) or target.startswith("/"):
                continue
            targets.append(target)
    return targets


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        resolved = path if not file_part else (path.parent / file_part).resolve()
        if not file_part and not anchor:
            continue
        if not resolved.exists():
            problems.append(f"{target}: no such file")
            continue
        if REPO not in resolved.parents and resolved != REPO:
            problems.append(f"{target}: outside the repository")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(REPO)) for p in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    assert broken_links(doc) == []


def test_docs_exist() -> None:
    """The pages README.md links to are there (the parametrized test above would pass on an empty docs/)."""
    names = {p.relative_to(REPO).as_posix() for p in DOCS}
    assert {"README.md", "docs/architecture.md", "docs/algorithms.md"} <= names
    assert any(name.startswith("docs/results/") for name in names)


def test_algorithm_sections_that_code_links_to() -> None:
    headings = anchors(REPO / "docs" / "algorithms.md")
    for section in (
        "Item tables (AlphaFuse)",
        "Losses",
        "SASRec",
        "DreamRec",
        "LLM-ESR",
        "Protocols",
    ):
        assert github_slug(section) in headings, section


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Real heading\n")
    page.write_text(
        "[ok](other.md#real-heading) [missing](nope.md) [bad anchor](other.md#fake)\n"
        "`[in code](nope2.md)` [web](https://example.com)\n```\n[fenced](nope3.md)\n```\n"
    )
    # tmp_path lies outside REPO, so resolvable targets report as outside the repository; the point here is
    # which targets are checked at all and which are found missing
    problems = broken_links(page)
    assert any(p.startswith("nope.md: no such file") for p in problems)
    assert not any("nope2" in p or "nope3" in p or "example.com" in p for p in problems)
    assert anchors(tmp_path / "other.md") == {"real-heading"}


def test_github_slug() -> None:
    assert github_slug("Item tables (AlphaFuse)") == "item-tables-alphafuse"
    assert github_slug("LLM-ESR") == "llm-esr"
    assert github_slug("The `pq` index: why") == "the-pq-index-why"
    assert github_slug("d = 256 against d = 128") == "d--256-against-d--128"


def _source_files() -> list[Path]:
    files = [REPO / "README.md"]
    for name in SOURCE_DIRS:
        root = REPO / name
        if root.is_dir():
            files += [p for p in root.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    return sorted(f for f in files if "__pycache__" not in f.parts)


def test_no_citations_of_notes_outside_the_repository() -> None:
    """A reader of the repository cannot open those notes: the fact belongs in the docstring or in docs/."""
    offenders = []
    for path in _source_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in FOREIGN_NOTES:
            if name in text:
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []
