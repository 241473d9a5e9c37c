"""The local jobs backend: a supervisor of real local processes.

Each job lives in a directory of its own (``<jobs_dir>/<user>/<name>/``): the code
snapshot in ``files/`` (the working directory), the output in ``output.log``, and the
supervisor's state in ``state.json``. Every run of the command goes through
:mod:`jhub_ext.backends.runner` in a new process group, which writes the exit code to a
file, so after a restart of the service the supervisor re-adopts runs that are still
going (checking the pid's start time, so a reused pid is not mistaken for the job) and
settles those that ended meanwhile. Nothing is run twice and nothing is lost.

Semantics, as on Kubernetes:

- ``batch``: runs to completion; a failed run is retried with exponential backoff up to
  ``retries`` times; past ``deadline_seconds`` it is stopped and fails.
- ``scraper``: runs forever; whenever it exits it is restarted with exponential backoff
  (reset once a run has lasted ``stable_seconds``).
- ``scheduled``: a run starts at each time of the cron schedule in its time zone;
  ``forbid`` skips a run while the previous one is going, ``replace`` stops it, ``allow``
  runs both.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from traitlets import Bool, Dict, Float, Integer, Unicode, default

from ..jobs.backend import JobBackend, Observed, Placement
from ..jobs.model import ConcurrencyPolicy, JobKind, JobSpec, JobStatus, parse_submission
from ..runtime.accounts import Account, Accounts
from ..runtime.limits import limiter
from ..runtime.logfile import note, read_tail

EXIT_KILLED = 128 + signal.SIGKILL


class Clock:
    """Wall-clock time; tests inject one they can move forward."""

    def now(self) -> datetime:
        """The current time, as an aware UTC datetime."""
        return datetime.now(UTC)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep until ``when``, checking the clock at least once a minute (it may jump)."""
        while (remaining := (when - self.now()).total_seconds()) > 0:
            await asyncio.sleep(min(remaining, 60))


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass
class Run:
    """One execution of a job's command."""

    pid: int
    ticks: int
    exit_file: str
    started: str

    def alive(self) -> bool:
        """Whether the run's process still exists (the same one, not a reused pid) and has not exited."""
        return _start_ticks(self.pid) == self.ticks and not Path(self.exit_file).exists()

    def exit_code(self) -> int:
        """The exit code the runner recorded, or that of a SIGKILL if it recorded none."""
        try:
            return int(Path(self.exit_file).read_text().strip())
        except (OSError, ValueError):
            return EXIT_KILLED  # killed with the runner before it could record anything


@dataclass
class _State:
    """What is kept in state.json."""

    desired: str = "run"  # or "stop"
    status: str = JobStatus.PENDING.value
    exit_code: int | None = None
    message: str | None = None
    restarts: int = 0
    attempt: int = 0
    first_start: float | None = None
    run_seq: int = 0
    runs: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


class _Job:
    def __init__(self, directory: Path, spec: JobSpec, placement: dict[str, Any], state: _State):
        self.dir = directory
        self.spec = spec
        self.placement = placement
        self.state = state
        self.task: asyncio.Task[None] | None = None
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.wake = asyncio.Event()

    @property
    def user(self) -> str:
        return str(self.placement["user"])

    def runs(self) -> list[Run]:
        return [Run(**r) for r in self.state.runs]

    def observed(self) -> Observed:
        s = self.state
        return Observed(JobStatus(s.status), s.exit_code, s.message, s.restarts)


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

    @default("jobs_dir")
    def _default_jobs_dir(self) -> str:
        return os.environ.get("JHUB_EXT_JOBS_DIR", "jobs")

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

    @default("output_dir")
    def _default_output_dir(self) -> str:
        return os.environ.get("JHUB_EXT_JOBS_OUTPUT_DIR", "")

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

    @default("system_users")
    def _default_system_users(self) -> bool:
        return os.environ.get("JHUB_EXT_SYSTEM_USERS") == "1"

    homes_dir = Unicode(
        config=True,
        help="""
        Where the system accounts' homes are (the same as the hub's). Default: $JHUB_EXT_HOMES_DIR.

        Example::

            c.LocalJobBackend.homes_dir = "/srv/jhub/home"
        """,
    )

    @default("homes_dir")
    def _default_homes_dir(self) -> str:
        return os.environ.get("JHUB_EXT_HOMES_DIR", "home")

    account_env = Dict(
        config=True,
        help="""
        ``PATH`` and ``PYTHONPATH`` for jobs that run as system accounts (the users' Python
        environment). Default: $JHUB_EXT_ACCOUNT_ENV (a JSON object).

        Example::

            c.LocalJobBackend.account_env = {"PATH": "/opt/jhub/user/bin:/usr/bin:/bin"}
        """,
    )

    @default("account_env")
    def _default_account_env(self) -> dict[str, str]:
        loaded = json.loads(os.environ.get("JHUB_EXT_ACCOUNT_ENV") or "{}")
        return {str(k): str(v) for k, v in loaded.items()}

    backoff_max = Float(300.0, config=True, help="Longest wait between restarts, in seconds.")
    stable_seconds = Float(
        60.0, config=True, help="A scraper run that lasted this long resets the restart backoff."
    )
    stop_grace_seconds = Float(
        5.0, config=True, help="Seconds between SIGTERM and SIGKILL when a job is stopped."
    )
    poll_interval = Float(0.2, config=True, help="How often adopted runs are checked, in seconds.")
    max_log_bytes = Integer(
        10 * 2**20,
        config=True,
        help="A job's output.log is cut to its last half (saying so) whenever it grows past this.",
    )

    def __init__(self, clock: Clock | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.clock = clock or Clock()
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._accounts = Accounts(self.homes_dir)

    # --- paths and persistence ---------------------------------------------------------------------

    def _dir(self, user: str, name: str) -> Path:
        return Path(self.jobs_dir) / f"u-{quote(user, safe='')}" / name

    async def _account(self, user: str) -> Account | None:
        """The system account ``user``'s jobs run as (created on first use), or None."""
        if not self.system_users:
            return None
        return await asyncio.to_thread(self._accounts.ensure, user)

    @staticmethod
    def _give(path: Path, account: Account | None) -> None:
        """Make ``path`` (a tree) the account's own, private to it."""
        if account is None:
            return
        for item in (path, *path.rglob("*")):
            os.chown(item, account.uid, account.gid, follow_symlinks=False)
            if not item.is_symlink():
                item.chmod(0o700 if item.is_dir() else 0o600)

    @staticmethod
    def _save(job: _Job) -> None:
        tmp = job.dir / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(job.state)))
        os.replace(tmp, job.dir / "state.json")

    async def _set(self, job: _Job, status: JobStatus, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(job.state, key, value)
        job.state.status = status.value
        self._save(job)
        await self.notify(job.user, job.spec.name, job.observed())

    # --- life cycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Re-adopt every job saved under ``jobs_dir``, supervising again those that should still run."""
        root = Path(self.jobs_dir)
        root.mkdir(parents=True, exist_ok=True)
        for spec_file in sorted(root.glob("u-*/*/spec.json")):
            saved: Any = None
            try:
                saved = json.loads(spec_file.read_text())
                state = _State(**json.loads((spec_file.parent / "state.json").read_text()))
                spec = parse_submission(saved["spec"], self.limits)
            except (OSError, ValueError, TypeError, KeyError) as e:
                await self._cannot_adopt(spec_file.parent, saved, e)
                continue
            job = _Job(spec_file.parent, spec, saved["placement"], state)
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

    async def _cancel(self, job: _Job) -> None:
        """Stop supervising ``job``: whatever its task raised is logged, never passed on."""
        task, job.task = job.task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
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
            files = directory / "files"
            if directory.exists():
                shutil.rmtree(directory)
            files.mkdir(parents=True)
            # only the service reads a job's state and log; its account may pass to its own files
            for parent in (Path(self.jobs_dir), directory.parent, directory):
                parent.chmod(0o711)
            for path, text in spec.files.items():
                target = files / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            self._give(files, account)
            resources = placement.profile.resources if placement.profile else None
            saved_placement = {
                "user": placement.user,
                "groups": sorted(placement.groups),
                "profile": placement.profile.slug if placement.profile else None,
                "cpu_limit": resources.cpu_limit if resources else None,
                "mem_limit": resources.mem_limit if resources else None,
                "image": placement.image,
                "env": dict(placement.env),
            }
            (directory / "spec.json").write_text(
                json.dumps({"spec": spec.to_json(), "placement": saved_placement})
            )
            job = _Job(directory, spec, saved_placement, _State())
            self._jobs[key] = job
        else:  # a restart of a finished or stopped job
            job.state = _State(restarts=job.state.restarts + 1, history=job.state.history)
        self._save(job)
        await self.notify(job.user, spec.name, job.observed())
        job.task = asyncio.create_task(self._supervise(job, resumed=False))

    async def stop(self, user: str, name: str) -> None:
        """Mark the job to stay stopped, terminate all its runs and record it as ``stopped``."""
        job = self._jobs.get((user, name))
        if job is None:
            return
        job.state.desired = "stop"
        self._save(job)
        await self._cancel(job)
        await asyncio.gather(*(self._terminate(job, run) for run in job.runs()))
        await self._set(job, JobStatus.STOPPED, message="stopped", runs=[])

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
        path = job.dir / "output.log"
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
            if JobStatus(job.state.status).finished and not job.runs():
                return
            await asyncio.sleep(self.poll_interval)

    # --- supervision -------------------------------------------------------------------------------

    def _env(self, job: _Job, account: Account | None) -> dict[str, str]:
        """The job's environment: what the service sets, then what the job asked for."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")}
        env.update(
            HOME=str(job.dir / "files"),
            USER=job.user,
            JHUB_EXT_JOB=job.spec.name,
            JHUB_EXT_JOB_KIND=job.spec.kind.value,
            PYTHONUNBUFFERED="1",
        )
        if account is not None:  # the user's own account, home and Python environment
            env.pop("VIRTUAL_ENV", None)
            env.update(self.account_env, HOME=str(account.home), USER=account.name)
        if job.placement.get("profile"):
            env["JHUB_EXT_PROFILE"] = job.placement["profile"]
        if job.placement.get("cpu_limit"):
            env["CPU_LIMIT"] = str(float(job.placement["cpu_limit"]))
        if job.placement.get("mem_limit"):
            env["MEM_LIMIT"] = str(int(job.placement["mem_limit"]))
        if self.output_dir:
            output = Path(self.output_dir) / f"u-{quote(job.user, safe='')}"
            output.mkdir(parents=True, exist_ok=True)
            if account is not None:
                output.parent.chmod(0o711)
                os.chown(output, account.uid, account.gid)
                output.chmod(0o700)
            env["JHUB_EXT_OUTPUT_DIR"] = str(output)
        env.update(job.placement.get("env") or {})
        env.update(job.spec.env)
        return env

    async def _launch(self, job: _Job) -> Run:
        job.state.run_seq += 1
        exit_file = str(job.dir / f"exit.{job.state.run_seq}")
        current = {r["exit_file"] for r in job.state.runs}
        for stale in job.dir.glob("exit.*"):
            if str(stale) not in current:
                stale.unlink(missing_ok=True)
        # The job's environment goes to the runner in a file only the service can read, so it
        # reaches the job's command and never the runner (a Python process of the service's own).
        env_file = job.dir / f"env.{job.state.run_seq}.json"
        account = await self._account(job.user)
        with os.fdopen(os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(self._env(job, account), f)
        identity = [f"--user={account.uid}", f"--group={account.gid}"] if account else []
        with (job.dir / "output.log").open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",  # no PYTHON* variables, no user site
                "-m",
                "jhub_ext.backends.runner",
                exit_file,
                f"--log={job.dir / 'output.log'}",
                f"--max-log-bytes={self.max_log_bytes}",
                f"--env={env_file}",
                f"--cwd={job.dir / 'files'}",
                *identity,
                "--",
                *job.spec.command,
                cwd=job.dir,
                env={"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=limiter(job.placement.get("cpu_limit"), job.placement.get("mem_limit"), job.user),
            )
        ticks = _start_ticks(proc.pid) or 0
        run = Run(proc.pid, ticks, exit_file, self.clock.now().isoformat())
        job.procs[proc.pid] = proc
        job.state.runs.append(asdict(run))
        if job.state.first_start is None:
            job.state.first_start = time.monotonic()
        await self._set(job, JobStatus.RUNNING, message=None)
        return run

    async def _wait(self, job: _Job, run: Run) -> int:
        proc = job.procs.pop(run.pid, None)
        if proc is not None:
            await proc.wait()
        else:  # adopted after a restart: not our child, so watch it
            while run.alive():
                await asyncio.sleep(self.poll_interval)
        code = run.exit_code()
        job.state.runs = [r for r in job.state.runs if r["pid"] != run.pid]
        job.state.history = (job.state.history + [{"started": run.started, "exit_code": code}])[-100:]
        return code  # the exit file stays until the next launch, so a crash before saving loses nothing

    async def _terminate(self, job: _Job, run: Run) -> None:
        if not run.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        while run.alive() and time.monotonic() < deadline:
            proc = job.procs.get(run.pid)
            if proc is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), self.poll_interval)
            else:
                await asyncio.sleep(self.poll_interval)
        if run.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
        proc = job.procs.pop(run.pid, None)
        if proc is not None:
            await proc.wait()

    def _backoff(self, failures: int) -> float:
        return float(min(self.backoff_base * 2 ** max(0, failures - 1), self.backoff_max))

    def _note(self, job: _Job, text: str) -> None:
        """A line from the supervisor in the job's output, so researchers see restarts in the logs."""
        with (job.dir / "output.log").open("ab") as log:
            log.write(note(text))

    async def _supervise(self, job: _Job, resumed: bool) -> None:
        """Run ``job`` as its kind says. Whatever goes wrong here ends the job ``failed`` with the
        reason, its processes stopped: a job never stays pending (and counted) for ever."""
        kind = JobKind(job.spec.kind)
        try:
            if kind is JobKind.SCHEDULED:
                await self._run_schedule(job, resumed)
            else:
                await self._run_until_done(job, resumed, forever=kind is JobKind.SCRAPER)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.log.exception("Job %s/%s failed in its supervisor", job.user, job.spec.name)
            reason = f"failed: {type(e).__name__}: {str(e)[:300]}"
            with contextlib.suppress(Exception):
                await asyncio.gather(*(self._terminate(job, run) for run in job.runs()))
                self._note(job, reason)
            job.state.desired = "stop"
            try:
                await self._set(job, JobStatus.FAILED, message=reason, runs=[])
            except Exception:
                self.log.exception("Cannot record the end of job %s/%s", job.user, job.spec.name)

    async def _run_until_done(self, job: _Job, resumed: bool, forever: bool) -> None:
        runs = job.runs() if resumed else []
        run = runs[0] if runs else None
        failures = job.state.attempt
        while True:
            if run is None:
                run = await self._launch(job)
            started = time.monotonic()
            code = await self._watch_deadline(job, run)
            run = None
            if code == 0 and not forever:
                await self._set(job, JobStatus.SUCCEEDED, exit_code=0, message="completed")
                return
            if code is None:  # deadline passed
                await self._set(job, JobStatus.FAILED, exit_code=EXIT_KILLED, message="deadline exceeded")
                return
            failures = 1 if forever and time.monotonic() - started >= self.stable_seconds else failures + 1
            if not forever and failures > job.spec.retries:
                message = f"exited with code {code}" + (f" after {failures} attempts" if failures > 1 else "")
                await self._set(job, JobStatus.FAILED, exit_code=code, message=message, attempt=failures)
                return
            delay = self._backoff(failures)
            self._note(job, f"exited with code {code}; restarting in {delay:g}s")
            await self._set(
                job,
                JobStatus.PENDING,
                exit_code=code,
                message=f"exited with code {code}; restarting in {delay:g}s",
                attempt=failures,
                restarts=job.state.restarts + 1,
            )
            await asyncio.sleep(delay)

    async def _watch_deadline(self, job: _Job, run: Run) -> int | None:
        """Wait for ``run`` to end; None if the batch deadline passed first (the run is then stopped)."""
        deadline = job.spec.deadline_seconds
        if deadline is None or job.state.first_start is None:
            return await self._wait(job, run)
        remaining = job.state.first_start + deadline - time.monotonic()
        try:
            return await asyncio.wait_for(asyncio.shield(self._wait(job, run)), max(remaining, 0))
        except TimeoutError:
            self._note(job, f"deadline of {deadline}s exceeded; stopping")
            await self._terminate(job, run)
            job.state.runs = []
            return None

    async def _run_schedule(self, job: _Job, resumed: bool) -> None:
        schedule = job.spec.schedule
        assert schedule is not None
        active: set[asyncio.Task[None]] = set()
        for run in job.runs() if resumed else []:
            active.add(asyncio.create_task(self._finish_scheduled(job, run, active)))
        if not resumed or not active:
            await self._set(
                job, JobStatus.PENDING, message=f"next run {schedule.next_after(self.clock.now()):%c %Z}"
            )
        when = schedule.next_after(self.clock.now())
        while True:
            await self.clock.sleep_until(when)
            running = [t for t in active if not t.done()]
            if running and schedule.concurrency_policy is ConcurrencyPolicy.FORBID:
                self._note(job, "skipped a run: the previous run is still going (concurrency policy forbid)")
                when = schedule.next_after(max(when, self.clock.now()))
                continue
            if (
                len(running) >= schedule.max_live_runs
                and schedule.concurrency_policy is ConcurrencyPolicy.ALLOW
            ):
                self._note(
                    job,
                    f"skipped a run: {len(running)} run(s) still going, the most this schedule may have "
                    "at once (max_live_runs)",
                )
                when = schedule.next_after(max(when, self.clock.now()))
                continue
            if running and schedule.concurrency_policy is ConcurrencyPolicy.REPLACE:
                self._note(job, "stopping the previous run (concurrency policy replace)")
                await asyncio.gather(*(self._terminate(job, r) for r in job.runs()))
            run = await self._launch(job)
            task = asyncio.create_task(self._finish_scheduled(job, run, active))
            active.add(task)
            # The next time after this one; after a long sleep (or a big clock step), the times
            # missed meanwhile are run once, not in a burst, as a Kubernetes CronJob does.
            when = schedule.next_after(when)
            now = self.clock.now()
            while schedule.next_after(when) <= now:
                when = schedule.next_after(when)

    async def _finish_scheduled(self, job: _Job, run: Run, active: set[asyncio.Task[None]]) -> None:
        code = await self._wait(job, run)
        if (this := asyncio.current_task()) is not None:
            active.discard(this)
        schedule = job.spec.schedule
        assert schedule is not None
        if schedule.history_limit >= 0:
            job.state.history = job.state.history[-max(schedule.history_limit, 1) :]
        status = JobStatus.RUNNING if job.state.runs else JobStatus.PENDING
        message = f"last run exited with code {code}; next run {schedule.next_after(self.clock.now()):%c %Z}"
        await self._set(job, status, exit_code=code, message=message)
