"""``python -m jhub_ext.backends.runner EXIT_FILE -- COMMAND...``: run a job's command, record how it ended.

The local supervisor starts every job through this small wrapper, in a process group of
its own. The wrapper forwards SIGTERM and SIGINT to the command and, when the command
ends, writes its exit code (or 128+signal) to EXIT_FILE atomically. So the outcome of a
job is known even if the supervisor was not running when the job ended: after a restart
of the service, the supervisor reads the file instead of having to be the parent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType


def exit_status(returncode: int) -> int:
    """Shell convention: a command killed by signal N ends with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m jhub_ext.backends.runner EXIT_FILE -- COMMAND...", file=sys.stderr)
        return 2
    exit_file, command = argv[0], argv[2:]
    try:
        child = subprocess.Popen(command)
    except OSError as e:
        print(f"jhub-ext: cannot start {command[0]!r}: {e.strerror}", file=sys.stderr, flush=True)
        write_atomically(exit_file, "127")
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = exit_status(child.wait())
    write_atomically(exit_file, str(status))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
