"""A local job's directory and what the supervisor keeps in it.

``<jobs_dir>/u-<user>/<name>/`` holds the code snapshot in ``files/`` (the job's working
directory, its account's own), the job as submitted in ``spec.json``, the supervisor's state in
``state.json`` (replaced atomically on every change) and the output in ``output.log``, which the
supervisor writes its own lines into too and which is read from its end.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import shutil
from collections.abc import AsyncGenerator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jhub_ext.core.jobs.backend import Observed, Placement
from jhub_ext.core.jobs.model import JobSpec, JobStatus
from jhub_ext.core.jobs.reasons import parse_reason
from jhub_ext.local.accounts import Account
from jhub_ext.local.logfile import note, read_tail
from jhub_ext.local.process import Children, Run


@dataclass
class State:
    """What is kept in state.json."""

    desired: str = "run"  # or "stop"
    status: str = JobStatus.PENDING.value
    exit_code: int | None = None
    message: str | None = None
    reason: str | None = None  # a jhub_ext.core.jobs.reasons.Reason
    restarts: int = 0
    attempt: int = 0
    first_start: float | None = None
    run_seq: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


class LocalJob:
    """A job the local backend knows: its directory, spec, placement (as saved) and state, and the
    supervision going on in this service (its task, its child processes)."""

    def __init__(self, directory: Path, spec: JobSpec, placement: dict[str, Any], state: State):
        self.dir = directory
        self.spec = spec
        self.placement = placement
        self.state = state
        self.task: asyncio.Task[None] | None = None
        self.procs: Children = {}
        self.wake = asyncio.Event()

    @property
    def user(self) -> str:
        """The user whose job this is."""
        return str(self.placement["user"])

    def runs(self) -> list[Run]:
        """The job's runs that were started and not yet seen to end."""
        return [Run(**r) for r in self.state.runs]

    def observed(self) -> Observed:
        """The job's status as last recorded."""
        s = self.state
        return Observed(JobStatus(s.status), s.exit_code, s.message, s.restarts, parse_reason(s.reason))

    def save(self) -> None:
        """Write the state to ``state.json`` (atomically: a crash leaves the old state or the new)."""
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self.state)))
        os.replace(tmp, self.dir / "state.json")

    def note(self, text: str) -> None:
        """A line from the supervisor in the job's output, so researchers see restarts in the logs."""
        with (self.dir / "output.log").open("ab") as log:
            log.write(note(text))


def give(path: Path, account: Account | None) -> None:
    """Make ``path`` (a tree) the account's own, private to it."""
    if account is None:
        return
    for item in (path, *path.rglob("*")):
        os.chown(item, account.uid, account.gid, follow_symlinks=False)
        if not item.is_symlink():
            item.chmod(0o700 if item.is_dir() else 0o600)


def create(
    jobs_dir: Path, directory: Path, spec: JobSpec, placement: Placement, account: Account | None
) -> LocalJob:
    """Write a new job's directory under ``jobs_dir`` (whatever was there before goes): its code
    snapshot (``account``'s own, where there is one) and ``spec.json``. The job is returned
    unsaved, with a fresh state."""
    files = directory / "files"
    if directory.exists():
        shutil.rmtree(directory)
    files.mkdir(parents=True)
    # only the service reads a job's state and log; its account may pass to its own files
    for parent in (jobs_dir, directory.parent, directory):
        parent.chmod(0o711)
    for path, text in spec.files.items():
        target = files / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    give(files, account)
    resources = placement.profile.resources if placement.profile else None
    saved_placement = {
        "user": placement.user,
        "groups": sorted(placement.groups),
        "profile": placement.profile.slug if placement.profile else None,
        "cpu_limit": resources.cpu_limit if resources else None,
        "mem_limit": resources.mem_limit if resources else None,
        "max_processes": placement.profile.max_processes if placement.profile else None,
        "image": placement.image,
        "env": dict(placement.env),
    }
    (directory / "spec.json").write_text(json.dumps({"spec": spec.to_json(), "placement": saved_placement}))
    return LocalJob(directory, spec, saved_placement, State())


async def read_log(
    path: Path, tail: int | None, follow: bool, ended: Callable[[], bool], poll_interval: float
) -> AsyncGenerator[str, None]:
    """The log at ``path`` (its last ``tail`` lines); with ``follow``, then what is appended, looking
    every ``poll_interval`` seconds, until nothing more comes and ``ended()`` says the job has.

    A log cut meanwhile (replaced by its last half) is read again from its start.
    """
    data, position, inode = read_tail(path, tail)
    text = codecs.getincrementaldecoder("utf-8")(errors="replace")
    if data:
        yield text.decode(data)
    while follow:
        try:
            with path.open("rb") as f:
                if os.fstat(f.fileno()).st_ino != inode:  # the log was cut: it starts again
                    inode, position = os.fstat(f.fileno()).st_ino, 0
                f.seek(position)
                chunk = f.read(256 * 1024)
        except FileNotFoundError:
            chunk = b""
        position += len(chunk)
        if chunk:
            yield text.decode(chunk)
            continue
        if ended():
            return
        await asyncio.sleep(poll_interval)


def read_saved(spec_file: Path) -> tuple[Any, State]:
    """A job's ``spec.json`` as saved, and its state; OSError, ValueError, TypeError or KeyError
    where either cannot be read."""
    saved = json.loads(spec_file.read_text())
    return saved, State(**json.loads((spec_file.parent / "state.json").read_text()))
