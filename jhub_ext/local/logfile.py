"""Log files that stay bounded while a job writes them, and are read from their end.

Used by the local runner (which writes a job's output) and by every reader of a log (the
local backend's ``tail`` and ``follow``, the development cluster's kubelet endpoint). Nothing
here loads a whole log: a tail is found by reading blocks backwards from the end.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

BLOCK = 64 * 1024


def tail_offset(f: BinaryIO, lines: int) -> int:
    """The byte offset at which the last ``lines`` lines of the open file ``f`` start, read from the
    end (the caller reads on from there, in the same file even if the path was replaced meanwhile)."""
    end = f.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    position, seen = end, 0
    while position > 0:
        step = min(BLOCK, position)
        position -= step
        f.seek(position)
        block = f.read(step)
        # the file's final newline ends its last line; it does not start another
        stop = len(block) - 1 if position + step == end and block.endswith(b"\n") else len(block)
        while (index := block.rfind(b"\n", 0, stop)) >= 0:
            seen += 1
            if seen == lines:
                return position + index + 1
            stop = index
    return 0


def note(text: str) -> bytes:
    """A line from jhub_ext (not from the job) in a job's output."""
    return f"[jhub-ext {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC] {text}\n".encode()


class CappedLog:
    """Appends to ``path`` and keeps it at most ``max_bytes`` long while it is written.

    Past the cap the file is replaced (atomically, so a reader sees the old file or the new one)
    by its last half, starting at a line, under a line that says output was cut. Readers that
    follow a log notice the replacement by the file's identity and start again from the top.
    """

    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max(int(max_bytes), 4096)
        self._file = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        """Append ``data``; if that would pass the cap, cut the file to its last half (``data`` included)."""
        if self._size + len(data) > self.max_bytes:
            self._cut(data)
            return
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _cut(self, data: bytes) -> None:
        self._file.close()
        keep = self.max_bytes // 2
        with self.path.open("rb") as f:
            f.seek(max(0, self._size - keep))
            kept = f.read() + data
        kept = kept[-keep:]
        if (start := kept.find(b"\n")) >= 0 and start < len(kept) - 1:
            kept = kept[start + 1 :]
        tmp = self.path.with_name(f"{self.path.name}.cut")
        tmp.write_bytes(note(f"earlier output was cut: a job's log keeps its last {keep // 1024} KiB") + kept)
        os.replace(tmp, self.path)
        self._file = self.path.open("ab")
        self._size = self._file.tell()

    def close(self) -> None:
        """Close the log file."""
        self._file.close()


def read_tail(path: Path, lines: int | None) -> tuple[bytes, int, int]:
    """The last ``lines`` lines of ``path`` (all when None), the file's size and its inode."""
    try:
        with path.open("rb") as f:
            stat = os.fstat(f.fileno())
            start = 0 if lines is None else tail_offset(f, lines)
            f.seek(start)
            data = f.read(stat.st_size - start)
            return data, start + len(data), stat.st_ino
    except FileNotFoundError:
        return b"", 0, 0
