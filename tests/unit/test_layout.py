"""The layout stays readable: no module of ours grows past 500 lines (split it along a real seam)."""

from __future__ import annotations

from pathlib import Path

import jhub_ext

MAX_LINES = 500
PACKAGE = Path(jhub_ext.__file__).parent


def test_no_module_is_over_500_lines() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 40
    too_long = {
        str(path.relative_to(PACKAGE)): n
        for path in modules
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}
