"""The local jobs backend: a supervisor of real local processes.

Each job lives in a directory of its own (``<jobs_dir>/<user>/<name>/``): the code
snapshot in ``files/`` (the working directory), the output in ``output.log``, and the
supervisor's state in ``state.json`` (see :mod:`jhub_ext.backends.localstate`). Every run of the
command goes through :mod:`jhub_ext.backends.runner` in a new process group, which writes the
exit code to a file (see :mod:`jhub_ext.backends.localprocess`), so after a restart of the
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
:mod:`jhub_ext.jobs.lifecycle`; this module does what it says, with processes and files.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from traitlets import Bool, Dict, Float, Integer, Unicode

from ..jobs import lifecycle
from ..jobs.backend import JobBackend, Observed, Placement
from ..jobs.lifecycle import Fire
from ..jobs.model import JobKind, JobSpec, JobStatus, parse_submission
from ..runtime.accounts import Account, Accounts
from ..runtime.config import env_default, string_mapping
from .localprocess import Run, clear_exit_files, job_env, start_run, terminate, wait_for_exit
from .localstate import LocalJob, State, create, read_log, read_saved


class Clock:
    """Wall-clock time; tests inject one they can move forward."""

    def now(self) -> datetime:
        """The current time, as an aware UTC datetime."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until ``when``, checking the clock at least once a minute (it may jump)."""
        while (remaining := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, 60))


class LocalJobBackend(JobBackend):
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
        return Path(self.jobs_dir) / f"u-{quote(user, safe='')}" / name

    async def _account(self, user: str) -> Account | None:
        """The system account ``user``'s jobs run as (created on first use), or None."""
        if not self.system_users:
            return None
        return await asyncio.to_thread(self._accounts.ensure, user)

    async def _set(self, job: LocalJob, status: JobStatus, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(job.state, key, value)
        job.state.status = status.value
        job.save()
        await self.notify(job.user, job.spec.name, job.observed())

    # --- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt every job saved under ``jobs_dir``, supervising again those that should still run."""
        root = Path(self.jobs_dir)
        root.mkdir(parents=True, exist_ok=True)
        for spec_file in sorted(root.glob("u-*/*/spec.json")):
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
                JobKind(spec.kind) is JobKind.BATCH and JobStatus(state.status).finished
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
        await self.notify(user, name, Observed(JobStatus.FAILED, message=reason))

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
            return
        job.state.desired = "stop"
        job.save()
        await self._cancel(job)
        await asyncio.gather(*(self._terminate(job, run) for run in job.runs()))
        await self._set(job, JobStatus.STOPPED, message=lifecycle.STOPPED, runs=[])

    async def delete(self, user: str, name: str) -> None:
        """Stop the job and remove its directory, code, output and state."""
        job = self._jobs.get((user, name))
        if job is not None:
            await self.stop(user, name)
            self._jobs.pop((user, name), None)
        shutil.rmtree(self._dir(user, name), ignore_errors=True)  # also what could not be adopted

    def observed(self, user: str, name: str) -> Observed | None:
        """The job's status as last saved, or ``None`` for a job this backend does not know."""
        job = self._jobs.get((user, name))
        return job.observed() if job else None

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

    # --- supervision -------------------------------------------------------------------------------

    async def _launch(self, job: LocalJob) -> Run:
        job.state.run_seq += 1
        clear_exit_files(job.dir, keep={r["exit_file"] for r in job.state.runs})
        account = await self._account(job.user)
        env = job_env(job.dir, job.spec, job.placement, account, self.account_env, self.output_dir)
        started = self.clock.now().isoformat()
        run, proc = await start_run(
            job.dir,
            job.state.run_seq,
            job.spec.command,
            env,
            account,
            job.placement,
            self.max_log_bytes,
            started,
        )
        job.procs[proc.pid] = proc
        job.state.runs.append(asdict(run))
        if job.state.first_start is None:
            job.state.first_start = time.monotonic()
        await self._set(job, JobStatus.RUNNING, message=None)
        return run

    async def _wait(self, job: LocalJob, run: Run) -> int:
        code = await wait_for_exit(run, job.procs, self.poll_interval)
        job.state.runs = [r for r in job.state.runs if r["pid"] != run.pid]
        job.state.history = lifecycle.remember(job.state.history, run.started, code)
        return code  # the exit file stays until the next launch, so a crash before saving loses nothing

    async def _terminate(self, job: LocalJob, run: Run) -> None:
        await terminate(run, job.procs, self.stop_grace_seconds, self.poll_interval)

    def _backoff(self) -> lifecycle.Backoff:
        """The restart backoff, as configured."""
        return lifecycle.Backoff(self.backoff_base, self.backoff_max, self.stable_seconds)

    async def _supervise(self, job: LocalJob, resumed: bool) -> None:
        """Run ``job`` as its kind says. Whatever goes wrong here ends the job ``failed`` with the
        reason, its processes stopped: a job never stays pending (and counted) for ever."""
        kind = JobKind(job.spec.kind)
        try:
            if kind is JobKind.SCHEDULED:
                await self._run_schedule(job, resumed)
            else:
                await self._run_until_done(job, resumed)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("Job %s/%s failed in its supervisor", job.user, job.spec.name)
            reason = f"failed: {type(e).__name__}: {str(e)[:300]}"
            with contextlib.suppress(Exception):
                await asyncio.gather(*(self._terminate(job, run) for run in job.runs()))
                job.note(reason)
            job.state.desired = "stop"
            try:
                await self._set(job, JobStatus.FAILED, message=reason, runs=[])
            except Exception:
                self.log.exception("Cannot record the end of job %s/%s", job.user, job.spec.name)

    async def _run_until_done(self, job: LocalJob, resumed: bool) -> None:
        """Run a batch job until it succeeds or fails for good, a scraper until it is stopped."""
        runs = job.runs() if resumed else []
        run = runs[0] if runs else None
        failures = job.state.attempt
        while True:
            if run is None:
                run = await self._launch(job)
            started = time.monotonic()
            # a batch job's deadline counts from its first run: retries do not reset it
            remaining = lifecycle.deadline_left(job.state.first_start, job.spec.deadline_seconds, started)
            code = await self._watch_deadline(job, run, remaining)
            run = None
            if code is None:  # deadline passed
                job.state.runs = []
                after = lifecycle.at_deadline(failures, job.spec.deadline_seconds)
            else:
                lasted = time.monotonic() - started
                backoff = self._backoff()
                after = lifecycle.after_run(job.spec.kind, code, failures, job.spec.retries, lasted, backoff)
            failures = after.failures
            if after.delay is None:  # over: succeeded, or failed for good
                await self._set(
                    job, after.status, exit_code=after.exit_code, message=after.message, attempt=failures
                )
                return
            job.note(after.message)
            await self._set(
                job,
                after.status,
                exit_code=after.exit_code,
                message=after.message,
                attempt=failures,
                restarts=job.state.restarts + 1,
            )
            await asyncio.sleep(after.delay)

    async def _watch_deadline(self, job: LocalJob, run: Run, remaining: float | None) -> int | None:
        """Wait for ``run`` to end; None if its deadline (``remaining`` seconds away) passed first,
        and the run was stopped."""
        if remaining is None:
            return await self._wait(job, run)
        try:
            return await asyncio.wait_for(asyncio.shield(self._wait(job, run)), remaining)
        except TimeoutError:
            job.note(lifecycle.deadline_note(job.spec.deadline_seconds))
            await self._terminate(job, run)
            return None

    async def _run_schedule(self, job: LocalJob, resumed: bool) -> None:
        """Start a run of a scheduled job at each of its times, as its concurrency policy allows."""
        schedule = job.spec.schedule
        assert schedule is not None
        active: set[asyncio.Task[None]] = set()
        for run in job.runs() if resumed else []:
            active.add(asyncio.create_task(self._finish_scheduled(job, run, active)))
        if not resumed or not active:
            next_run = lifecycle.next_run_message(schedule.next_after(self.clock.now()))
            await self._set(job, JobStatus.PENDING, message=next_run)
        when = schedule.next_after(self.clock.now())
        while True:
            await self.clock.sleep_until(when)
            running = [t for t in active if not t.done()]
            decision = lifecycle.at_fire_time(schedule, len(running))
            if decision.note is not None:
                job.note(decision.note)
            if decision.action is Fire.SKIP:
                when = lifecycle.next_after_skip(schedule, when, self.clock.now())
                continue
            if decision.action is Fire.REPLACE:
                await asyncio.gather(*(self._terminate(job, r) for r in job.runs()))
            run = await self._launch(job)
            task = asyncio.create_task(self._finish_scheduled(job, run, active))
            active.add(task)
            when = lifecycle.next_after_run(schedule, when, self.clock.now())

    async def _finish_scheduled(self, job: LocalJob, run: Run, active: set[asyncio.Task[None]]) -> None:
        """Record the end of one run of a scheduled job (stopped at the run's deadline, if it has
        one), which then waits for its next time."""
        deadline, started = job.spec.deadline_seconds, datetime.fromisoformat(run.started).timestamp()
        remaining = lifecycle.deadline_left(started, deadline, self.clock.now().timestamp())
        code = await self._watch_deadline(job, run, remaining)  # each run has its own deadline
        if (this := asyncio.current_task()) is not None:
            active.discard(this)
        schedule = job.spec.schedule
        assert schedule is not None
        job.state.history = lifecycle.scheduled_history(job.state.history, schedule)
        status = lifecycle.scheduled_status(len(job.state.runs))
        when = schedule.next_after(self.clock.now())
        if code is None:
            code, message = lifecycle.EXIT_KILLED, lifecycle.last_run_stopped_message(deadline, when)
        else:
            message = lifecycle.last_run_message(code, when)
        await self._set(job, status, exit_code=code, message=message)
