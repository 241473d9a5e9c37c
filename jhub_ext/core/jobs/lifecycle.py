"""A job's life cycle, decided once for both backends: pure functions over plain values, no I/O.

What happens when a run ends (succeeded, retried after a backoff, failed for good, a scraper
restarted), when a batch job's deadline passes, and when a scheduled job's time comes (run,
skip, stop the previous run; the time after that), and the words each event is reported in.

The local backend (:mod:`jhub_ext.local.backend`) supervises processes itself and asks this
module at each of those moments. On Kubernetes the controllers take the same decisions from the
manifests (:mod:`jhub_ext.kubernetes.workloads`: a Job's ``backoffLimit`` is ``retries`` and its
``activeDeadlineSeconds`` the deadline, a Deployment restarts a scraper, a CronJob applies
``concurrencyPolicy`` and the history limits), and :mod:`jhub_ext.kubernetes.status` reports what
they did with the messages here.

Both backends word every event alike, with the same reason (:mod:`jhub_ext.core.jobs.reasons`): a
batch job out of retries "exited with code 3 (2 attempts)" (:func:`failed_message`, ``exit-code``),
one stopped at its deadline "stopped after its deadline of 30 s" (:func:`deadline_message`,
``deadline-exceeded``).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from jhub_ext.core.jobs.model import (
    ConcurrencyPolicy,
    JobKind,
    JobSpec,
    JobSpecError,
    JobStatus,
    Runs,
    Schedule,
)
from jhub_ext.core.jobs.reasons import Reason, Why

#: the exit code of a run killed with SIGKILL (shell convention: 128 + the signal)
EXIT_KILLED = 128 + signal.SIGKILL.value
#: the runs of a job whose exit codes are remembered (a scheduled job keeps fewer: its history limit)
HISTORY_KEPT = 100

# --- messages ---------------------------------------------------------------------------------------

#: a batch job whose run exited 0
COMPLETED = "completed"
#: a job stopped by its user
STOPPED = "stopped"
#: a run the kernel killed for going over its memory limit (in both modes)
OUT_OF_MEMORY = Why(Reason.OUT_OF_MEMORY, "ran out of memory (killed at its memory limit)")
#: the exit code of a command that could not be started (not found, or not executable), as a shell
#: and jhub_ext's runner end with
EXIT_CANNOT_START = 127
#: a run whose program could not be started at all
CANNOT_START = Why(Reason.CANNOT_START, "its program could not be started (its log says why)")
#: failed runs in a row after which a job that is started again is said to be crashing
CRASH_LOOP_AFTER = 3


def exited(code: int | None) -> str:
    """How a run ended, in plain words: "exited with code C" ("failed" where no code is known)."""
    return f"exited with code {code}" if code is not None else "failed"


def attempts_text(attempts: int) -> str:
    """A count of attempts in words: "1 attempt", "2 attempts"."""
    return f"{attempts} {'attempt' if attempts == 1 else 'attempts'}"


def cause(code: int | None, why: Why | None = None) -> Why | None:
    """What ended a run: ``why`` where it is known, else what its exit code says by convention
    (:data:`EXIT_CANNOT_START`: it could not be started), else None."""
    return why or (CANNOT_START if code == EXIT_CANNOT_START else None)


def failed_message(code: int | None, attempts: int, why: Why | None = None) -> str:
    """A batch job that failed for good: "exited with code 3 (2 attempts)";
    ``why`` replaces "exited with code C" where the cause is known (ran out of memory...)."""
    known = cause(code, why)
    return f"{known.text if known else exited(code)} ({attempts_text(attempts)})"


def failed_reason(code: int | None, why: Why | None = None) -> Reason:
    """The reason of a run that failed: its known cause, else its exit code (where there is one)."""
    if (known := cause(code, why)) is not None:
        return known.reason
    return Reason.EXIT_CODE if code is not None else Reason.FAILED


def restarting_message(code: int, delay: float, why: Why | None = None) -> str:
    """A run that ended and is run again after ``delay`` seconds (said in the status and the log)."""
    return f"{why.text if why else exited(code)}; restarting in {delay:g}s"


def restarting_reason(failures: int, why: Why | None = None) -> Reason:
    """Why a job waits to run again after ``failures`` failed runs in a row: its known cause, else
    a crash loop from :data:`CRASH_LOOP_AFTER` failures on, else a plain restart."""
    if why is not None:
        return why.reason
    return Reason.CRASH_LOOP if failures >= CRASH_LOOP_AFTER else Reason.RESTARTING


def deadline_message(deadline_seconds: int | None) -> str:
    """A batch job stopped at its deadline: "stopped after its deadline of 30 s"."""
    return f"stopped after its deadline of {deadline_seconds} s"


def deadline_note(deadline_seconds: int | None) -> str:
    """The line in a local job's log when its deadline stops it."""
    return f"deadline of {deadline_seconds}s exceeded; stopping"


def next_run_message(when: datetime) -> str:
    """A scheduled job waiting for its next run at ``when``."""
    return f"next run {when:%c %Z}"


def last_run_message(code: int, when: datetime, why: Why | None = None) -> str:
    """A scheduled job whose last run exited with ``code`` (or ended as ``why`` says), waiting for
    its next run at ``when``."""
    return f"last run {why.text if why else exited(code)}; {next_run_message(when)}"


def last_run_stopped_message(deadline_seconds: int | None, when: datetime) -> str:
    """A scheduled job whose last run was stopped at its deadline, waiting for its next run."""
    return f"last run {deadline_message(deadline_seconds)}; {next_run_message(when)}"


# --- retries and restarts (batch jobs, scrapers) ----------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """How long to wait before running a job again: doubling from ``base`` seconds up to ``maximum``.

    A scraper's run that lasted ``reset_after`` seconds or more counts as its first failure again.
    """

    base: float
    maximum: float
    reset_after: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: base, 2 base, 4 base..."""
        return float(min(self.base * 2 ** max(0, failures - 1), self.maximum))


@dataclass(frozen=True)
class AfterRun:
    """What follows the end of a run of a batch job or a scraper, and how to report it.

    ``status`` is ``succeeded`` or ``failed`` (the job is over) or ``pending``: the job runs again
    after ``delay`` seconds. ``failures`` is the count of failures in a row so far (the job's
    ``attempt``), ``exit_code`` the one to report.
    """

    status: JobStatus
    exit_code: int
    message: str
    failures: int
    delay: float | None = None
    reason: Reason = Reason.COMPLETED


def after_run(
    kind: JobKind,
    code: int,
    failures: int,
    retries: int,
    lasted: float,
    *,
    backoff: Backoff,
    why: Why | None = None,
) -> AfterRun:
    """A run of a batch job or a scraper exited with ``code`` after ``lasted`` seconds, ``failures``
    failed runs in a row before it; ``why`` is the cause where it is known (:data:`OUT_OF_MEMORY`).

    A batch job succeeds on 0; it fails for good once ``retries`` retries have failed too;
    otherwise it runs again after a backoff. A scraper runs again after a backoff whatever its
    code, the backoff reset by a run that lasted ``backoff.reset_after``.
    """
    if kind.rules.runs is Runs.ON_SCHEDULE:
        raise ValueError("a scheduled job runs again on its schedule (see at_fire_time)")
    forever = kind.rules.runs is Runs.UNTIL_STOPPED
    if code == 0 and not forever:
        return AfterRun(JobStatus.SUCCEEDED, 0, COMPLETED, failures)
    failures = 1 if forever and lasted >= backoff.reset_after else failures + 1
    if not forever and failures > retries:
        message = failed_message(code, failures, why)
        return AfterRun(JobStatus.FAILED, code, message, failures, reason=failed_reason(code, why))
    delay = backoff.delay(failures)
    message = restarting_message(code, delay, why)
    return AfterRun(JobStatus.PENDING, code, message, failures, delay, restarting_reason(failures, why))


def deadline_left(first_start: float | None, deadline_seconds: int | None, now: float) -> float | None:
    """Seconds left (0 when none) before a batch job's deadline, counted from its first run's start
    (``first_start`` and ``now`` on one monotonic clock); None where no deadline applies."""
    if deadline_seconds is None or first_start is None:
        return None
    return max(first_start + deadline_seconds - now, 0)


def at_deadline(failures: int, deadline_seconds: int | None) -> AfterRun:
    """A local batch job's run was stopped at the job's deadline: the job fails, killed."""
    message = deadline_message(deadline_seconds)
    return AfterRun(JobStatus.FAILED, EXIT_KILLED, message, failures, reason=Reason.DEADLINE_EXCEEDED)


def bounded_deadline(spec: JobSpec, max_run_seconds: int, profile: str) -> JobSpec:
    """``spec`` with the deadline it runs under: the one it asked for, else its profile's longest
    run; a scraper has none. A job that asks for more than its profile allows is refused."""
    if not spec.kind.rules.has_deadline:
        return spec
    asked = spec.deadline_seconds
    if asked is not None and asked > max_run_seconds:
        raise JobSpecError(
            "deadline_seconds",
            f"profile '{profile}' lets a job run for at most {max_run_seconds} s; ask for less, or "
            "choose a profile that allows more",
        )
    return replace(spec, deadline_seconds=asked or max_run_seconds)


def remember(history: list[dict[str, Any]], started: str, exit_code: int) -> list[dict[str, Any]]:
    """``history`` (the job's ended runs, oldest first) with a run that started at ``started``
    (ISO 8601) and ended with ``exit_code``: at most :data:`HISTORY_KEPT` runs, the newest."""
    return (history + [{"started": started, "exit_code": exit_code}])[-HISTORY_KEPT:]


# --- schedules --------------------------------------------------------------------------------------


class Fire(StrEnum):
    """What a scheduled job does when its time comes."""

    RUN = "run"  # start a run
    SKIP = "skip"  # start none this time
    REPLACE = "replace"  # stop the runs still going, then start one


@dataclass(frozen=True)
class AtFireTime:
    """What a scheduled job does at one of its times, and the line saying so in its log (if any)."""

    action: Fire
    note: str | None = None


def at_fire_time(schedule: Schedule, running: int) -> AtFireTime:
    """What to do at a time of ``schedule`` while ``running`` of its runs are still going, as a
    CronJob's ``concurrencyPolicy`` says: ``forbid`` skips, ``replace`` stops them, ``allow`` runs
    another unless ``max_live_runs`` are alive already."""
    policy = schedule.concurrency_policy
    if running and policy is ConcurrencyPolicy.FORBID:
        return AtFireTime(
            Fire.SKIP, "skipped a run: the previous run is still going (concurrency policy forbid)"
        )
    if running >= schedule.max_live_runs and policy is ConcurrencyPolicy.ALLOW:
        return AtFireTime(
            Fire.SKIP,
            f"skipped a run: {running} run(s) still going, the most this schedule may have "
            "at once (max_live_runs)",
        )
    if running and policy is ConcurrencyPolicy.REPLACE:
        return AtFireTime(Fire.REPLACE, "stopping the previous run (concurrency policy replace)")
    return AtFireTime(Fire.RUN)


def next_after_skip(schedule: Schedule, fired: datetime, now: datetime) -> datetime:
    """The next time of ``schedule`` after one (``fired``) at which no run was started."""
    return schedule.next_after(max(fired, now))


def next_after_run(schedule: Schedule, fired: datetime, now: datetime) -> datetime:
    """The next time of ``schedule`` after one (``fired``) at which a run was started.

    After a long sleep (or a big clock step), the times missed meanwhile are run once, not in a
    burst, as a Kubernetes CronJob does: the latest of them that is not after ``now``.
    """
    when = schedule.next_after(fired)
    while schedule.next_after(when) <= now:
        when = schedule.next_after(when)
    return when


def scheduled_history(history: list[dict[str, Any]], schedule: Schedule) -> list[dict[str, Any]]:
    """The ended runs a scheduled job keeps: its ``history_limit`` newest (at least the last one)."""
    if schedule.history_limit >= 0:
        return history[-max(schedule.history_limit, 1) :]
    return history


def scheduled_status(live_runs: int) -> JobStatus:
    """A scheduled job's status between its runs: running while any run is alive, else pending."""
    return JobStatus.RUNNING if live_runs else JobStatus.PENDING
