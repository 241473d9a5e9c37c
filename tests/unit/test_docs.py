"""The documentation stays true: generated references are current, and every link between pages resolves.

``make docs`` builds the same pages with Sphinx (``tests/integration/test_docs_build.py``); this is the
fast check, with nothing but the Python environment.
"""

from __future__ import annotations

import importlib.util
import re
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def generator() -> ModuleType:
    """``docs/generate.py``, imported from its path (``docs/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "page", ["catalog.md", "rest-api.md", "settings.md"], ids=lambda name: f"reference/{name}"
)
def test_each_generated_reference_is_current(page: str, generated: dict[Path, str]) -> None:
    path = Path("docs", "reference", page)
    committed = (ROOT / path).read_text("utf-8") if (ROOT / path).exists() else ""
    assert committed == generated[path], f"{path} is out of date: run make docs-reference"


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    return generator().references()


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown page outside fenced code blocks."""
    lines, fence = [], ""
    for line in text.splitlines():
        match = FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            continue
        if match:
            fence = match.group(1)
            continue
        lines.append(line)
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading (MyST gives the same, ``myst_heading_anchors``)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading anchor of a page, numbered as GitHub numbers repeated headings (``x``, ``x-1``)."""
    found: list[str] = []
    for line in prose_lines(page.read_text("utf-8")):
        match = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.append(name)
    return frozenset(found)


def links(page: Path) -> list[str]:
    """The targets of a page's Markdown links and images, outside code."""
    paragraphs = "\n".join(prose_lines(page.read_text("utf-8"))).split("\n\n")
    # a code span may wrap lines, never paragraphs; what is in one is not a link
    text = "\n\n".join(re.sub(r"(`+)(.+?)\1", "code", p, flags=re.S) for p in paragraphs)
    return [m.group(1) for m in LINK.finditer(text)]


def broken(page: Path, target: str) -> str | None:
    """Why a link of ``page`` does not resolve, or None."""
    path, _, anchor = target.partition("#")
    goal = (page.parent / path).resolve() if path else page
    if not goal.exists():
        return f"{target}: no such file"
    if anchor and goal.suffix == ".md" and anchor not in anchors(goal):
        return f"{target}: {goal.name} has no heading with anchor #{anchor}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_between_pages_resolves(page: Path) -> None:
    problems = [
        problem
        for target in links(page)
        if not target.startswith(EXTERNAL) and (problem := broken(page, target))
    ]
    assert problems == [], f"{page.relative_to(ROOT)} has broken links"


def test_the_readme_is_the_front_door() -> None:
    text = README.read_text("utf-8")
    assert len(text.splitlines()) < 200, "keep the README under 200 lines: move detail into docs/"
    first_block = text.split("```", 2)[1]
    assert "make demo" in first_block and "make test" in first_block, "start with the set-up commands"


def test_the_link_checker_finds_what_is_broken(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n## A title\n\n`[not a link](nowhere.md)`\n")
    assert anchors(page) == {"a-title", "a-title-1"}
    assert broken(page, "#a-title-1") is None
    assert broken(page, "#nope") is not None
    assert broken(page, "other.md") is not None
    assert links(page) == []
