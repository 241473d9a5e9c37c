"""How the local backend runs a job: its runs, restarts, deadlines and schedule.

What follows the end of a run, a deadline or a time of the schedule is decided by
:mod:`jhub_ext.core.jobs.lifecycle`; :class:`Supervision` does what it says, with processes (started
through :mod:`jhub_ext.local.process`) and the job's saved state. It is the supervising
half of :class:`jhub_ext.local.backend.LocalJobBackend`, which provides the settings and the
saving and reporting below.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.lifecycle import Fire
from jhub_ext.core.jobs.model import JobKind, JobStatus, Runs
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.local import confine
from jhub_ext.local.accounts import Account
from jhub_ext.local.process import (
    Run,
    clear_exit_files,
    job_env,
    run_confinement,
    start_run,
    terminate,
    wait_for_exit,
)
from jhub_ext.local.state import LocalJob


class Clock:
    """Wall-clock time; tests inject one they can move forward."""

    def now(self) -> datetime:
        """The current time, as an aware UTC datetime."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until ``when``, checking the clock at least once a minute (it may jump)."""
        while (remaining := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, 60))


class Supervision:
    """Runs jobs as local processes: the backend's supervising half."""

    # provided by LocalJobBackend
    clock: Clock
    account_env: dict[str, str]
    output_dir: str
    max_log_bytes: int
    poll_interval: float
    stop_grace_seconds: float
    backoff_base: float
    backoff_max: float
    stable_seconds: float
    max_processes: int
    log: Any
    #: how runs are confined here (set by the backend's start; None: not at all)
    support: confine.Support | None = None

    async def _account(self, user: str) -> Account | None:
        raise NotImplementedError

    async def _set(
        self, job: LocalJob, status: JobStatus, reason: Reason | None = None, **changes: Any
    ) -> None:
        raise NotImplementedError

    async def _launch(self, job: LocalJob) -> Run:
        job.state.run_seq += 1
        clear_exit_files(job.dir, keep={r["exit_file"] for r in job.state.runs})
        account = await self._account(job.user)
        env = job_env(
            job.dir,
            job.spec,
            job.placement,
            account,
            account_env=self.account_env,
            output_dir=self.output_dir,
        )
        started = self.clock.now().isoformat()
        confinement = None
        if self.support is not None:
            confinement = run_confinement(
                job.user, job.spec.name, job.state.run_seq, job.placement, self.max_processes
            )
            if not self.support.network:
                confinement = replace(confinement, network=False)
        run, proc = await start_run(
            job.dir,
            job.state.run_seq,
            job.spec.command,
            env,
            account,
            placement=job.placement,
            max_log_bytes=self.max_log_bytes,
            started=started,
            confinement=confinement,
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
            if kind.rules.runs is Runs.ON_SCHEDULE:
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
                await self._set(job, JobStatus.FAILED, Reason.FAILED, message=reason, runs=[])
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
            ended, run = run, None
            if code is None:  # deadline passed
                job.state.runs = []
                after = lifecycle.at_deadline(failures, job.spec.deadline_seconds)
            else:
                lasted = time.monotonic() - started
                backoff = self._backoff()
                after = lifecycle.after_run(
                    job.spec.kind, code, failures, job.spec.retries, lasted, backoff=backoff, why=ended.why()
                )
            failures = after.failures
            again = after.delay is not None  # else over: succeeded, or failed for good
            if again:
                job.note(after.message)
            await self._set(
                job,
                after.status,
                after.reason,
                exit_code=after.exit_code,
                message=after.message,
                attempt=failures,
                restarts=job.state.restarts + int(again),
            )
            if after.delay is None:
                return
            await asyncio.sleep(after.delay)

    async def _watch_deadline(self, job: LocalJob, run: Run, remaining: float | None) -> int | None:
        """Wait for ``run`` to end; None if its deadline (``remaining`` seconds away) passed first,
        and the run was stopped."""
        if remaining is None:
            return await self._wait(job, run)
        waiting = asyncio.ensure_future(self._wait(job, run))
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), remaining)
        except TimeoutError:
            job.note(lifecycle.deadline_note(job.spec.deadline_seconds))
            await self._terminate(job, run)
            await waiting  # the stopped run leaves the job's runs before its end is reported
            return None
        finally:
            waiting.cancel()  # only when this supervisor itself was cancelled

    async def _run_schedule(self, job: LocalJob, resumed: bool) -> None:
        """Start a run of a scheduled job at each of its times, as its concurrency policy allows."""
        schedule = job.spec.schedule
        assert schedule is not None
        active: set[asyncio.Task[None]] = set()
        for run in job.runs() if resumed else []:
            active.add(asyncio.create_task(self._finish_scheduled(job, run, active)))
        if not resumed or not active:
            next_run = lifecycle.next_run_message(schedule.next_after(self.clock.now()))
            await self._set(job, JobStatus.PENDING, Reason.NEXT_RUN, message=next_run)
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
            message = lifecycle.last_run_message(code, when, run.why())
        await self._set(
            job,
            status,
            Reason.NEXT_RUN if status is JobStatus.PENDING else None,
            exit_code=code,
            message=message,
        )
