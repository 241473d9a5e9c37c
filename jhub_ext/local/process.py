"""One run of a local job as a process: start it through the runner, watch it, stop it.

Every run goes through :mod:`jhub_ext.local.runner` in a new process group, which writes the
command's exit code to a file of its own. A :class:`Run` is what is kept of a run (its pid, the
pid's start time and that file), so that a run is recognised after a restart of the service,
when it is no longer the service's child: a reused pid has another start time. Nothing here
decides what a job does when a run ends (see :mod:`jhub_ext.core.jobs.lifecycle`) or keeps a job's
state (see :mod:`jhub_ext.local.state`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.lifecycle import EXIT_KILLED
from jhub_ext.core.jobs.model import JobSpec
from jhub_ext.core.jobs.reasons import Why
from jhub_ext.core.names import user_dir
from jhub_ext.local import confine
from jhub_ext.local.accounts import Account
from jhub_ext.local.cgroups import Limits
from jhub_ext.local.limits import limiter
from jhub_ext.local.runner import OUT_OF_MEMORY

#: a local job's children, by pid: the runs this service started (adopted runs are not among them)
Children = dict[int, asyncio.subprocess.Process]


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def group_prefix(user: str, name: str) -> str:
    """The start of the names of the job's confined runs (their control groups and namespaces)."""
    key = "\0".join((user, name)).encode("utf-8", "surrogatepass")
    return f"job-{hashlib.sha256(key).hexdigest()[:16]}-"


def run_confinement(
    user: str, name: str, seq: int, placement: Mapping[str, Any], tasks: int
) -> confine.Confinement:
    """How the ``seq``-th run of the job is confined: its profile's memory, CPUs and process limit as
    saved in ``placement`` (``tasks`` processes where the profile sets none), a network of its own
    that reaches none of this machine's loopback ports."""
    memory = int(placement["mem_limit"]) if placement.get("mem_limit") else None
    cpus = float(placement["cpu_limit"]) if placement.get("cpu_limit") else None
    tasks = int(placement.get("max_processes") or tasks)
    return confine.Confinement(f"{group_prefix(user, name)}{seq}", Limits(memory, cpus, tasks))


@dataclass
class Run:
    """One execution of a job's command (``group``: its confinement's name, where it is confined)."""

    pid: int
    ticks: int
    exit_file: str
    started: str
    group: str = ""

    def alive(self) -> bool:
        """Whether the run's process still exists (the same one, not a reused pid) and has not exited."""
        return start_ticks(self.pid) == self.ticks and not Path(self.exit_file).exists()

    def exit_code(self) -> int:
        """The exit code the runner recorded, or that of a SIGKILL if it recorded none."""
        try:
            return int(Path(self.exit_file).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return EXIT_KILLED  # killed with the runner before it could record anything

    def why(self) -> Why | None:
        """How the run ended, where the runner recorded more than its exit code: the kernel killed
        it for going over its memory."""
        try:
            said = Path(self.exit_file).read_text().split()[1:]
        except OSError:
            return None
        return lifecycle.OUT_OF_MEMORY if OUT_OF_MEMORY in said else None


def job_env(
    directory: Path,
    spec: JobSpec,
    placement: Mapping[str, Any],
    account: Account | None,
    *,
    account_env: Mapping[str, str],
    output_dir: str,
) -> dict[str, str]:
    """A job's environment: what the service sets, then what the job asked for.

    ``directory`` is the job's own, ``placement`` as saved with it; a job run as a system
    ``account`` gets that account's home and ``account_env``. Where there is an ``output_dir``,
    the user's sub-directory of it is made (the account's own) and named in the environment.
    """
    user = str(placement["user"])
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")}
    env.update(
        HOME=str(directory / "files"),
        USER=user,
        JHUB_EXT_JOB=spec.name,
        JHUB_EXT_JOB_KIND=spec.kind.value,
        PYTHONUNBUFFERED="1",
    )
    if account is not None:  # the user's own account, home and Python environment
        env.pop("VIRTUAL_ENV", None)
        env.update(account_env, HOME=str(account.home), USER=account.name)
    if placement.get("profile"):
        env["JHUB_EXT_PROFILE"] = placement["profile"]
    if placement.get("cpu_limit"):
        env["CPU_LIMIT"] = str(float(placement["cpu_limit"]))
    if placement.get("mem_limit"):
        env["MEM_LIMIT"] = str(int(placement["mem_limit"]))
    if output_dir:
        output = Path(output_dir) / user_dir(user)
        output.mkdir(parents=True, exist_ok=True)
        if account is not None:
            output.parent.chmod(0o711)
            os.chown(output, account.uid, account.gid)
            output.chmod(0o700)
        env["JHUB_EXT_OUTPUT_DIR"] = str(output)
    env.update(placement.get("env") or {})
    env.update(spec.env)
    return env


async def start_run(
    directory: Path,
    seq: int,
    command: tuple[str, ...],
    env: Mapping[str, str],
    account: Account | None,
    *,
    placement: Mapping[str, Any],
    max_log_bytes: int,
    started: str,
    confinement: confine.Confinement | None = None,
) -> tuple[Run, asyncio.subprocess.Process]:
    """Start the ``seq``-th run of ``command`` of the job in ``directory`` through the runner (which
    writes its exit code to ``exit.<seq>`` there), its output appended to the job's ``output.log``:
    ``env`` reaches the command only, run as ``account`` where there is one, within the CPU and
    memory limits of ``placement`` (the job's, as saved), and ``confinement`` where there is one.
    Returns the run (said to have ``started`` then) and the runner's process, a child of this one."""
    exit_file = str(directory / f"exit.{seq}")
    # The job's environment goes to the runner in a file only the service can read, so it
    # reaches the job's command and never the runner (a Python process of the service's own).
    env_file = directory / f"env.{seq}.json"
    with os.fdopen(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(dict(env), f)
    identity = [f"--user={account.uid}", f"--group={account.gid}"] if account else []
    with (directory / "output.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",  # no PYTHON* variables, no user site
            "-m",
            "jhub_ext.local.runner",
            exit_file,
            f"--log={directory / 'output.log'}",
            f"--max-log-bytes={max_log_bytes}",
            f"--env={env_file}",
            f"--cwd={directory / 'files'}",
            *identity,
            *(confinement.args() if confinement else ()),
            "--",
            *command,
            cwd=directory,
            env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limiter(
                placement.get("cpu_limit"),
                None if confinement else placement.get("mem_limit"),  # its group holds the memory then
                str(placement["user"]),
            ),
        )
    group = confinement.name if confinement else ""
    return Run(proc.pid, start_ticks(proc.pid) or 0, exit_file, started, group), proc


def clear_exit_files(directory: Path, keep: set[str]) -> None:
    """Delete the job's exit files but those in ``keep`` (of its runs still known)."""
    for stale in directory.glob("exit.*"):
        if str(stale) not in keep:
            stale.unlink(missing_ok=True)


async def wait_for_exit(run: Run, children: Children, poll_interval: float) -> int:
    """Wait for ``run`` to end and return its exit code: as its parent where it is one of
    ``children`` (taken from them), else (adopted after a restart) by looking every ``poll_interval``."""
    proc = children.pop(run.pid, None)
    if proc is not None:
        await proc.wait()
    else:  # adopted after a restart: not our child, so watch it
        while run.alive():
            await asyncio.sleep(poll_interval)
    return run.exit_code()


async def terminate(run: Run, children: Children, grace_seconds: float, poll_interval: float) -> None:
    """Stop ``run``'s process group: SIGTERM, then SIGKILL after ``grace_seconds``; reap it where it
    is one of ``children``; end its confinement, with every process in it."""
    if not run.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while run.alive() and time.monotonic() < deadline:
        proc = children.get(run.pid)
        if proc is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), poll_interval)
        else:
            await asyncio.sleep(poll_interval)
    if run.alive():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    proc = children.pop(run.pid, None)
    if proc is not None:
        await proc.wait()
    if run.group:  # whatever a killed runner could not end and remove
        await asyncio.to_thread(confine.end, run.group)
