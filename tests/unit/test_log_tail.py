"""A log's tail is found by reading backwards from its end, across blocks, without loading the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jhub_ext.local import logfile as logs


@pytest.mark.parametrize("ending", [b"\n", b""])
@pytest.mark.parametrize("lines", [0, 1, 3, 250, 1000, 5000])
def test_tail_offset_finds_where_the_last_lines_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: bytes, lines: int
) -> None:
    monkeypatch.setattr(logs, "BLOCK", 64)  # many blocks, lines across their edges
    text = b"\n".join(b"line %d" % i for i in range(1000)) + ending
    path = tmp_path / "0.log"
    path.write_bytes(text)
    expected = b"".join(text.splitlines(keepends=True)[-lines:]) if lines else b""
    with path.open("rb") as f:
        assert text[logs.tail_offset(f, lines) :] == expected
