"""The local jobs backend: a supervisor of real local processes.

Each job lives in a directory of its own (``<jobs_dir>/<user>/<name>/``): the code
snapshot in ``files/`` (the working directory), the output in ``output.log``, and the
supervisor's state in ``state.json`` (see :mod:`jhub_ext.local.state`). Every run of the
command goes through :mod:`jhub_ext.local.runner` in a new process group, which writes the
exit code to a file (see :mod:`jhub_ext.local.process`), so after a restart of the
service the supervisor re-adopts runs that are still going (checking the pid's start time, so a
reused pid is not mistaken for the job) and settles those that ended meanwhile. Nothing is run
twice and nothing is lost.

Semantics, as on Kubernetes:

- ``batch``: runs to completion; a failed run is retried with exponential backoff up to
  ``retries`` times; past ``deadline_seconds`` it is stopped and fails.
- ``scraper``: runs forever; whenever it exits it is restarted with exponential backoff
  (reset once a run has lasted ``stable_seconds``).
- ``scheduled``: a run starts at each time of the cron schedule in its time zone, and is
  stopped past ``deadline_seconds``; ``forbid`` skips a run while the previous one is going,
  ``replace`` stops it, ``allow`` runs both (up to ``max_live_runs``).

What follows the end of a run, a deadline or a time of the schedule is decided by
:mod:`jhub_ext.core.jobs.lifecycle`; this module does what it says, with processes and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from traitlets import Bool, Dict, Float, Integer, Unicode, default

from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.backend import Held, JobBackend, Observed, Placement
from jhub_ext.core.jobs.model import JobKind, JobSpec, JobStatus, Runs, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.names import USER_DIRS, user_dir, user_of_dir
from jhub_ext.core.settings import env_default, string_mapping
from jhub_ext.local import confine
from jhub_ext.local.accounts import Account, Accounts
from jhub_ext.local.process import Run, group_prefix
from jhub_ext.local.state import LocalJob, State, create, read_log, read_saved
from jhub_ext.local.supervision import Clock, Supervision
from jhub_ext.local.sweep import end_groups, end_processes, job_processes

#: a line that jhub_ext, not the job, wrote into a job's ``output.log`` (:func:`jhub_ext.local.logfile.note`:
#: the supervisor's between runs, the runner's when a run cannot start); it may follow a partial line
_NOTE = re.compile(rb"\[jhub-ext \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\] ")
#: how much of the end of a log is read to find its last line: more than any note, and a longer
#: last line is the job's own
_LAST_LINE_BYTES = 8192


class LocalJobBackend(Supervision, JobBackend):
    """Supervise jobs as local processes (local mode)."""

    jobs_dir = Unicode(
        config=True,
        help="""
        Where job directories (code snapshot, output, state) live. Default: $JHUB_EXT_JOBS_DIR, or ``jobs``.

        Example::

            c.LocalJobBackend.jobs_dir = "/srv/jhub/jobs"
        """,
    )

    _default_jobs_dir = env_default("jobs_dir", "JHUB_EXT_JOBS_DIR", "jobs")

    backoff_base = Float(
        2.0,
        config=True,
        help="""
        Seconds before the first restart of a failed run; doubled on each further failure.

        Example::

            c.LocalJobBackend.backoff_base = 2.0
        """,
    )
    output_dir = Unicode(
        config=True,
        help="""
        Where jobs write outputs that outlive them: each user gets a sub-directory, given to the job
        as ``$JHUB_EXT_OUTPUT_DIR``. Empty: none. Default: $JHUB_EXT_JOBS_OUTPUT_DIR.

        Example::

            c.LocalJobBackend.output_dir = "/srv/jhub/outputs"
        """,
    )

    _default_output_dir = env_default("output_dir", "JHUB_EXT_JOBS_OUTPUT_DIR")

    system_users = Bool(
        config=True,
        help="""
        Run each user's jobs as their system account (``jupyter-<user>``, as the hub's
        ``LocalProfileSpawner.system_users`` does for servers). Needs root.
        Default: $JHUB_EXT_SYSTEM_USERS is 1.

        Example::

            c.LocalJobBackend.system_users = True
        """,
    )

    _default_system_users = env_default("system_users", "JHUB_EXT_SYSTEM_USERS", "0", parse="1".__eq__)

    homes_dir = Unicode(
        config=True,
        help="""
        Where the system accounts' homes are (the same as the hub's). Default: $JHUB_EXT_HOMES_DIR.

        Example::

            c.LocalJobBackend.homes_dir = "/srv/jhub/home"
        """,
    )

    _default_homes_dir = env_default("homes_dir", "JHUB_EXT_HOMES_DIR", "home")

    account_env = Dict(
        config=True,
        help="""
        ``PATH`` and ``PYTHONPATH`` for jobs that run as system accounts (the users' Python
        environment). Default: $JHUB_EXT_ACCOUNT_ENV (a JSON object).

        Example::

            c.LocalJobBackend.account_env = {"PATH": "/opt/jhub/user/bin:/usr/bin:/bin"}
        """,
    )

    _default_account_env = env_default("account_env", "JHUB_EXT_ACCOUNT_ENV", "{}", parse=string_mapping)

    backoff_max = Float(
        300.0,
        config=True,
        help="""
        Longest wait between restarts, in seconds.

        Example::

            c.LocalJobBackend.backoff_max = 300
        """,
    )
    stable_seconds = Float(
        60.0,
        config=True,
        help="""
        A scraper run that lasted this many seconds resets the restart backoff.

        Example::

            c.LocalJobBackend.stable_seconds = 60
        """,
    )
    stop_grace_seconds = Float(
        5.0,
        config=True,
        help="""
        Seconds between SIGTERM and SIGKILL when a job is stopped.

        Example::

            c.LocalJobBackend.stop_grace_seconds = 10
        """,
    )
    poll_interval = Float(
        0.2,
        config=True,
        help="""
        How often runs adopted after a restart of the service are checked, in seconds.

        Example::

            c.LocalJobBackend.poll_interval = 0.5
        """,
    )
    confine_runs = Bool(
        config=True,
        help="""
        Run each run of a job confined (needs root): a control group with its profile's memory
        and CPUs and at most ``max_processes`` processes, a PID namespace and a network namespace
        of its own (see docs/explanation/security.md). Default: $JHUB_EXT_CONFINE is 1, else
        whether the service runs as root. What this machine cannot give is logged at start.

        Example::

            c.LocalJobBackend.confine_runs = True
        """,
    )

    @default("confine_runs")
    def _default_confine_runs(self) -> bool:
        return os.environ.get("JHUB_EXT_CONFINE", "1" if os.geteuid() == 0 else "0") == "1"

    max_processes = Integer(
        confine.DEFAULT_MAX_PROCESSES,
        config=True,
        help="""
        The most processes (and threads) a confined run may have at once, where its profile sets no
        ``max_processes``. Default: $JHUB_EXT_MAX_PROCESSES, else 1024.

        Example::

            c.LocalJobBackend.max_processes = 4096
        """,
    )

    _default_max_processes = env_default(
        "max_processes", "JHUB_EXT_MAX_PROCESSES", str(confine.DEFAULT_MAX_PROCESSES), parse=int
    )

    max_log_bytes = Integer(
        10 * 2**20,
        config=True,
        help="""
        A job's ``output.log`` is cut to its last half (saying so) whenever it grows past this.

        Example::

            c.LocalJobBackend.max_log_bytes = 50 * 2**20
        """,
    )

    def __init__(self, clock: Clock | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.clock = clock or Clock()
        self._jobs: dict[tuple[str, str], LocalJob] = {}
        self._accounts = Accounts(self.homes_dir)

    # --- paths and persistence ---------------------------------------------------------------------

    def _dir(self, user: str, name: str) -> Path:
        return Path(self.jobs_dir) / user_dir(user) / name

    async def _account(self, user: str) -> Account | None:
        """The system account ``user``'s jobs run as (created on first use), or None."""
        if not self.system_users:
            return None
        return await asyncio.to_thread(self._accounts.ensure, user)

    async def _set(
        self, job: LocalJob, status: JobStatus, reason: Reason | None = None, **changes: Any
    ) -> None:
        for key, value in changes.items():
            setattr(job.state, key, value)
        job.state.status = status.value
        job.state.reason = reason.value if reason is not None else None
        job.save()
        await self.notify(job.user, job.spec.name, job.observed())

    # --- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt every job saved under ``jobs_dir``, supervising again those that should still run."""
        root = Path(self.jobs_dir)
        root.mkdir(parents=True, exist_ok=True)
        if self.confine_runs:
            support = await asyncio.to_thread(confine.support)
            if support.note():
                self.log.warning("%s", support.note())
            self.support = support if support.active else None
            await asyncio.to_thread(end_groups, "job-", empty_only=True)  # left by killed runners
        for spec_file in sorted(root.glob(f"{USER_DIRS}/*/spec.json")):
            saved: Any = None
            try:
                saved, state = read_saved(spec_file)
                spec = parse_submission(saved["spec"], self.limits)
            except (OSError, ValueError, TypeError, KeyError) as e:
                await self._cannot_adopt(spec_file.parent, saved, e)
                continue
            job = LocalJob(spec_file.parent, spec, saved["placement"], state)
            self._jobs[(job.user, spec.name)] = job
            if state.desired == "run" and not (
                JobKind(spec.kind).rules.runs is Runs.ONCE and JobStatus(state.status).finished
            ):
                adopted = [r for r in job.runs() if r.alive()]
                self.log.info(
                    "Re-adopting job %s/%s (%d run(s) still going)", job.user, spec.name, len(adopted)
                )
                job.task = asyncio.create_task(self._supervise(job, resumed=True))

    async def _cannot_adopt(self, directory: Path, saved: Any, error: Exception) -> None:
        """A job saved by an earlier start that cannot run now (e.g. refused by today's validation):
        it ends ``failed``, whatever it was, and is never started again. ``saved`` is its
        ``spec.json`` as read (None where it could not be)."""
        self.log.error("Cannot re-adopt the job in %s: %s", directory, error)
        try:
            user, name = str(saved["placement"]["user"]), str(saved["spec"]["name"])
        except (TypeError, KeyError):
            return
        reason = f"failed: it cannot run any more ({str(error)[:200]}); delete it and submit it again"
        await self.notify(user, name, Observed(JobStatus.FAILED, message=reason, reason=Reason.CANNOT_START))

    async def shutdown(self) -> None:
        """Stop supervising; the processes keep running and are re-adopted by the next start()."""
        for job in self._jobs.values():
            await self._cancel(job)

    async def _cancel(self, job: LocalJob) -> None:
        """Stop supervising ``job``: whatever its task raised is logged, never passed on."""
        task, job.task = job.task, None
        if task is None:
            return
        task.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        except Exception:
            self.log.exception("Supervising job %s/%s failed", job.user, job.spec.name)

    # --- the interface -----------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        """Write the job's directory (code snapshot, spec, state) and start supervising it.

        A job that already runs is left alone; a known one that has ended is run again as a restart.
        """
        key = (placement.user, spec.name)
        job = self._jobs.get(key)
        if job is not None and job.task is not None and not job.task.done():
            return  # already running: submitting again changes nothing
        directory = self._dir(*key)
        account = await self._account(placement.user)
        if job is None:
            job = create(Path(self.jobs_dir), directory, spec, placement, account)
            self._jobs[key] = job
        else:  # a restart of a finished or stopped job
            job.state = State(restarts=job.state.restarts + 1, history=job.state.history)
        job.save()
        await self.notify(job.user, spec.name, job.observed())
        job.task = asyncio.create_task(self._supervise(job, resumed=False))

    async def stop(self, user: str, name: str) -> None:
        """Mark the job to stay stopped, terminate all its runs and record it as ``stopped``."""
        job = self._jobs.get((user, name))
        if job is None:
            await self._sweep(user, name)
            return
        job.state.desired = "stop"
        job.save()
        await self._cancel(job)
        await asyncio.gather(*(self._terminate(job, run) for run in job.runs()))
        await self._sweep(user, name)  # whatever no run knew of (one started as it was stopped)
        await self._set(job, JobStatus.STOPPED, message=lifecycle.STOPPED, runs=[])

    async def _sweep(self, user: str, name: str) -> None:
        """End every process still working in the job's directory, and its process group; and
        every confined run of the job, with its control group and namespace."""
        pids = (await asyncio.to_thread(job_processes, self.jobs_dir)).get((user, name))
        if pids:
            self.log.info("Ending %d leftover process(es) of job %s/%s", len(pids), user, name)
            await asyncio.to_thread(end_processes, pids)
        if self.support is not None:
            await asyncio.to_thread(end_groups, group_prefix(user, name))

    async def delete(self, user: str, name: str) -> None:
        """Stop the job and remove its directory, code, output and state."""
        job = self._jobs.get((user, name))
        if job is not None:
            await self.stop(user, name)
            self._jobs.pop((user, name), None)
        else:  # what could not be adopted, or what no record owns: its processes go too
            await self._sweep(user, name)
        shutil.rmtree(self._dir(user, name), ignore_errors=True)

    async def inventory(self) -> dict[tuple[str, str], Held]:
        """Every job with a directory or a process here, by when its directory was made: those
        supervised (each runs, or has run), and those not (a directory that could not be adopted,
        or left by a submit or delete cut short; processes working in a job's directory, even a
        deleted one), which hold their work only where such processes live."""
        held = {
            key: Held(datetime.fromtimestamp(job.dir.stat().st_mtime, UTC)) for key, job in self._jobs.items()
        }
        processes = await asyncio.to_thread(job_processes, self.jobs_dir)
        for directory in Path(self.jobs_dir).glob(f"{USER_DIRS}/*"):
            if (user := user_of_dir(directory.parent.name)) is None:
                continue
            key = (user, directory.name)
            with contextlib.suppress(OSError):
                since = datetime.fromtimestamp(directory.stat().st_mtime, UTC)
                held.setdefault(key, Held(since, runs=key in processes))
        for key in processes:  # working in a directory that is gone
            held.setdefault(key, Held(datetime.fromtimestamp(0, UTC)))
        return held

    def observed(self, user: str, name: str) -> Observed | None:
        """The job's status as last saved, or ``None`` for a job this backend does not know."""
        job = self._jobs.get((user, name))
        return job.observed() if job else None

    def runs(self, user: str, name: str) -> list[Run]:
        """The runs of a job this backend supervises now (started, not yet seen to end), each with
        its runner's process id and the directory of its job; empty for a job it does not know."""
        job = self._jobs.get((user, name))
        return job.runs() if job else []

    def directory(self, user: str, name: str) -> Path | None:
        """Where a job this backend supervises keeps its code, state and output."""
        job = self._jobs.get((user, name))
        return job.dir if job else None

    async def logs(
        self, user: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The job's ``output.log`` (its last ``tail`` lines); with ``follow``, then what is appended.

        Following ends once the job has finished and none of its runs is left.
        """
        job = self._jobs.get((user, name))
        if job is None:
            return

        def ended() -> bool:
            return JobStatus(job.state.status).finished and not job.runs()

        chunks = read_log(job.dir / "output.log", tail, follow, ended, self.poll_interval)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def last_output(self, user: str, name: str) -> datetime | None:
        """When the job's latest run (the last one started) last wrote to ``output.log``: the log's
        modification time, unless its last line is jhub_ext's own (a restart, a deadline, a run that
        could not start), or it was written before that run started. None then, and for an unknown
        job or an empty log. Runs of a scheduled job that overlap share the log and are told apart
        only by when each started."""
        job = self._jobs.get((user, name))
        if job is None:
            return None
        written = await asyncio.to_thread(_last_printed, job.dir / "output.log")
        started = _latest_start(job)
        if written is None or (started is not None and written < started):
            return None
        return written


def _last_printed(log: Path) -> datetime | None:
    """When the log at ``log`` was last written to, if its last line is the job's (not a note)."""
    try:
        with log.open("rb") as f:
            stat = os.fstat(f.fileno())  # the file read below, even if the log is cut meanwhile
            f.seek(max(0, stat.st_size - _LAST_LINE_BYTES))
            end = f.read(_LAST_LINE_BYTES)
    except FileNotFoundError:
        return None
    if not end:
        return None
    last = end[end.rfind(b"\n", 0, len(end) - 1) + 1 :]
    if _NOTE.search(last):
        return None
    return datetime.fromtimestamp(stat.st_mtime_ns / 1e9, UTC)


def _latest_start(job: LocalJob) -> datetime | None:
    """When the job's latest run started (going or ended), as its clock said; None before any."""
    starts = [str(run["started"]) for run in (*job.state.runs, *job.state.history) if run.get("started")]
    return max((datetime.fromisoformat(start) for start in starts), default=None)
