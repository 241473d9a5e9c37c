"""``make docs``: the documentation builds with Sphinx, offline, with every warning an error.

A broken link between pages, a link to a heading that does not exist, a page left out of the table of
contents or a heading level skipped fails the build. Links to other sites are not fetched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import ROOT

pytestmark = pytest.mark.integration


def sphinx_build(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Build the HTML as ``make docs`` does."""
    options = ["-W", "--keep-going", "-b", "html", "-q"]
    command = [sys.executable, "-m", "sphinx", *options, str(source), str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_docs_build_without_a_warning(tmp_path: Path) -> None:
    result = sphinx_build(ROOT / "docs", tmp_path / "html")
    assert result.returncode == 0, f"the docs build failed:\n{result.stderr}"
    assert (tmp_path / "html" / "index.html").exists()
    built = {p.relative_to(tmp_path / "html").with_suffix(".md") for p in (tmp_path / "html").rglob("*.html")}
    written = {p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md")}
    assert written <= built, "every page of docs/ is in the built site"


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    source = tmp_path / "docs"
    source.mkdir()
    (source / "conf.py").write_text((ROOT / "docs" / "conf.py").read_text())
    (source / "index.md").write_text(
        "# Home\n\n[a page](other.md) and [a heading](other.md#no-such-heading)\n\n"
        "```{toctree}\n:hidden:\n\nother\n```\n"
    )
    (source / "other.md").write_text("# Other\n\n## A heading\n")
    result = sphinx_build(source, tmp_path / "html")
    assert result.returncode != 0
    assert "no-such-heading" in result.stderr
