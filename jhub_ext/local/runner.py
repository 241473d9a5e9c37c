"""``python -I -m jhub_ext.local.runner EXIT_FILE --log LOG [options] -- COMMAND...``: run one job run.

The local supervisor starts every run of a job through this small wrapper, in a process group
of its own. The wrapper

- runs the command with the environment read from ``--env`` (a JSON file it deletes), so a
  job's environment reaches the job only, never this process (which runs with ``-I`` and a
  minimal environment of its own);
- as ``--user``/``--group`` when given (the wrapper itself stays as it was started: it must
  keep writing the log and the exit file, which the job cannot touch);
- copies the command's output into LOG, keeping it under ``--max-log-bytes`` while it runs;
- forwards SIGTERM and SIGINT to the command and, when the command ends, writes its exit code
  (or 128+signal) to EXIT_FILE atomically, with ``out-of-memory`` on a second line when the kernel
  killed the run for going over its memory;
- with ``--confine`` (as root), runs the command confined (:mod:`jhub_ext.local.confine`): a
  control group with the run's limits, a PID and a network namespace of its own, all of it ended
  with the command.

So the outcome of a run is known even if the supervisor was not running when it ended: after
a restart of the service, the supervisor reads the file instead of having to be the parent.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from jhub_ext.local import confine
from jhub_ext.local.confine import exit_status
from jhub_ext.local.logfile import CappedLog, note

#: How long output still arriving after the command ended (from processes it left behind) is copied.
DRAIN_SECONDS = 2.0


#: how often a quiet confined run is checked for an out-of-memory kill, in seconds
OOM_CHECK_SECONDS = 0.5
#: the second line of an exit file whose run the kernel killed for going over its memory
OUT_OF_MEMORY = "out-of-memory"


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees all of it or none (synced, then renamed)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -I -m jhub_ext.local.runner")
    parser.add_argument("exit_file")
    parser.add_argument("--log", required=True, help="where the command's output goes")
    parser.add_argument("--max-log-bytes", type=int, default=10 * 2**20)
    parser.add_argument("--env", help="a JSON object: the command's whole environment (the file is removed)")
    parser.add_argument("--cwd")
    parser.add_argument("--user", type=int, help="run the command as this uid")
    parser.add_argument("--group", type=int, help="... and this gid, with no other groups")
    confine.add_arguments(parser)
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
    confinement = confine.Confinement.from_args(args)
    if confinement is not None:
        return _run_confined(args, confinement, env, log)
    try:
        child = confine.start_as(
            args.command, env=env, cwd=args.cwd, uid=args.user, gid=args.group, stdout=subprocess.PIPE
        )
    except confine.CannotStart as e:
        return _cannot_run(args, log, str(e))
    confine.forward_signals(child.send_signal)
    assert child.stdout is not None
    copier = threading.Thread(target=_copy, args=(child.stdout, log), daemon=True)
    copier.start()
    status = exit_status(child.wait())
    copier.join(DRAIN_SECONDS)  # a process the command left behind may hold the pipe open
    write_atomically(args.exit_file, str(status))
    return status


def _cannot_run(args: argparse.Namespace, log: CappedLog, why: str) -> int:
    """Note ``why`` in the log and end the run with 127, as a shell does for a missing command."""
    log.write(note(why))
    log.close()
    write_atomically(args.exit_file, "127")
    return 127


def _run_confined(
    args: argparse.Namespace, confinement: confine.Confinement, env: dict[str, str] | None, log: CappedLog
) -> int:
    """Run the command confined; the run's end ends all its processes, so the output ends with it."""
    read, write = os.pipe()
    try:
        run = confine.Confined(
            confinement,
            args.command,
            env=env if env is not None else dict(os.environ),
            cwd=args.cwd,
            uid=args.user,
            gid=args.group,
            stdout=write,
        )
    except OSError as e:
        return _cannot_run(args, log, f"cannot confine the run: {e}")
    finally:
        os.close(write)
    confine.forward_signals(run.send_signal)
    # no thread here: a process that has entered a new PID namespace for its children cannot start one
    with os.fdopen(read, "rb") as output:
        check = time.monotonic() + OOM_CHECK_SECONDS
        while True:
            if select.select([output], [], [], OOM_CHECK_SECONDS)[0]:
                if not (chunk := output.read1(64 * 1024)):
                    break  # every process of the run is gone
                log.write(chunk)
            if time.monotonic() >= check:
                check = time.monotonic() + OOM_CHECK_SECONDS
                if run.group.oom_kills():  # as on Kubernetes, the run ends at its first out-of-memory kill
                    run.group.kill()
    status = run.wait()
    failed_for_memory = run.oom_kills and status != 0
    write_atomically(args.exit_file, f"{status}\n{OUT_OF_MEMORY}" if failed_for_memory else str(status))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
