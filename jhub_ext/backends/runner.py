"""``python -I -m jhub_ext.backends.runner EXIT_FILE --log LOG [options] -- COMMAND...``: run one job run.

The local supervisor starts every run of a job through this small wrapper, in a process group
of its own. The wrapper

- runs the command with the environment read from ``--env`` (a JSON file it deletes), so a
  job's environment reaches the job only, never this process (which runs with ``-I`` and a
  minimal environment of its own);
- as ``--user``/``--group`` when given (the wrapper itself stays as it was started: it must
  keep writing the log and the exit file, which the job cannot touch);
- copies the command's output into LOG, keeping it under ``--max-log-bytes`` while it runs;
- forwards SIGTERM and SIGINT to the command and, when the command ends, writes its exit code
  (or 128+signal) to EXIT_FILE atomically.

So the outcome of a run is known even if the supervisor was not running when it ended: after
a restart of the service, the supervisor reads the file instead of having to be the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import IO

from ..runtime.logfile import CappedLog, note

#: How long output still arriving after the command ended (from processes it left behind) is copied.
DRAIN_SECONDS = 2.0


def exit_status(returncode: int) -> int:
    """Shell convention: a command killed by signal N ends with 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees all of it or none (synced, then renamed)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -I -m jhub_ext.backends.runner")
    parser.add_argument("exit_file")
    parser.add_argument("--log", required=True, help="where the command's output goes")
    parser.add_argument("--max-log-bytes", type=int, default=10 * 2**20)
    parser.add_argument("--env", help="a JSON object: the command's whole environment (the file is removed)")
    parser.add_argument("--cwd")
    parser.add_argument("--user", type=int, help="run the command as this uid")
    parser.add_argument("--group", type=int, help="... and this gid, with no other groups")
    parser.add_argument("command", nargs="+")
    return parser.parse_args(argv)


def _copy(source: IO[bytes], log: CappedLog) -> None:
    while chunk := source.read1(64 * 1024):  # type: ignore[attr-defined]
        log.write(chunk)


def main(argv: list[str]) -> int:
    """Run the command as the arguments say, copying its output into the log; returns its exit status.

    A command that cannot be started is noted in the log and ends with 127.
    """
    args = _arguments(argv)
    env: dict[str, str] | None = None
    if args.env:
        env = json.loads(Path(args.env).read_text())
        Path(args.env).unlink(missing_ok=True)
    log = CappedLog(Path(args.log), args.max_log_bytes)
    identity: dict[str, object] = {}
    if args.user is not None:
        identity = {"user": args.user, "group": args.group, "extra_groups": [], "umask": 0o077}
    try:
        child = subprocess.Popen(
            args.command,
            env=env,
            cwd=args.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **identity,  # type: ignore[call-overload]
        )
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log.write(note(f"cannot start {args.command[0]!r}: {reason}"))
        log.close()
        write_atomically(args.exit_file, "127")
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    assert child.stdout is not None
    copier = threading.Thread(target=_copy, args=(child.stdout, log), daemon=True)
    copier.start()
    status = exit_status(child.wait())
    copier.join(DRAIN_SECONDS)  # a process the command left behind may hold the pipe open
    write_atomically(args.exit_file, str(status))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
