"""A job's life cycle, decided once for both backends: retries, restarts, deadlines, schedules and
the words for them (literal values; no processes, no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.lifecycle import AfterRun, AtFireTime, Backoff, Fire, after_run, at_fire_time
from jhub_ext.core.jobs.model import ConcurrencyPolicy, JobKind, JobStatus, Schedule
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.kubernetes.status import derive_status

BACKOFF = Backoff(base=2.0, maximum=300.0, reset_after=60.0)


# --- the backoff ------------------------------------------------------------------------------------


def test_the_backoff_doubles_from_its_base_up_to_its_maximum() -> None:
    assert [BACKOFF.delay(n) for n in (0, 1, 2, 3, 4)] == [2.0, 2.0, 4.0, 8.0, 16.0]
    assert BACKOFF.delay(8) == 256.0 and BACKOFF.delay(9) == 300.0 and BACKOFF.delay(50) == 300.0
    assert [Backoff(0.05, 300.0, 60.0).delay(n) for n in (1, 2, 3)] == [0.05, 0.1, 0.2]


# --- a batch job's runs -------------------------------------------------------------------------------


def batch(code: int, failures: int = 0, retries: int = 3) -> AfterRun:
    return after_run(JobKind.BATCH, code, failures, retries, lasted=1.0, backoff=BACKOFF)


def test_a_batch_run_exiting_0_completes_the_job() -> None:
    assert batch(0) == AfterRun(JobStatus.SUCCEEDED, 0, "completed", 0)
    assert batch(0, failures=2) == AfterRun(JobStatus.SUCCEEDED, 0, "completed", 2)  # after retries


def test_a_failed_batch_run_is_retried_after_a_growing_backoff() -> None:
    assert batch(1) == AfterRun(
        JobStatus.PENDING, 1, "exited with code 1; restarting in 2s", 1, 2.0, Reason.RESTARTING
    )
    assert batch(1, failures=1) == AfterRun(
        JobStatus.PENDING, 1, "exited with code 1; restarting in 4s", 2, 4.0, Reason.RESTARTING
    )
    assert batch(1, failures=2).delay == 8.0
    assert batch(1, failures=2).reason is Reason.CRASH_LOOP  # the third failure in a row


def test_a_batch_job_fails_for_good_once_its_retries_have_failed_too() -> None:
    assert batch(3, failures=3, retries=3) == AfterRun(
        JobStatus.FAILED, 3, "exited with code 3 (4 attempts)", 4, reason=Reason.EXIT_CODE
    )
    assert batch(3, retries=0) == AfterRun(
        JobStatus.FAILED, 3, "exited with code 3 (1 attempt)", 1, reason=Reason.EXIT_CODE
    )
    out_of_memory = after_run(JobKind.BATCH, 137, 0, 0, 1.0, backoff=BACKOFF, why=lifecycle.OUT_OF_MEMORY)
    assert out_of_memory.reason is Reason.OUT_OF_MEMORY
    assert out_of_memory.message == "ran out of memory (killed at its memory limit) (1 attempt)"
    assert batch(3, failures=1, retries=1).message == "exited with code 3 (2 attempts)"
    assert batch(3, failures=0, retries=1).status is JobStatus.PENDING  # one retry left


def test_a_scraper_is_restarted_whatever_its_code_and_a_long_run_resets_the_backoff() -> None:
    def scraper(code: int, failures: int, lasted: float) -> AfterRun:
        return after_run(JobKind.SCRAPER, code, failures, 0, lasted, backoff=BACKOFF)

    assert scraper(0, 0, 1.0) == AfterRun(
        JobStatus.PENDING, 0, "exited with code 0; restarting in 2s", 1, 2.0, Reason.RESTARTING
    )
    assert scraper(1, 4, 59.9) == AfterRun(
        JobStatus.PENDING, 1, "exited with code 1; restarting in 32s", 5, 32.0, Reason.CRASH_LOOP
    )
    assert scraper(1, 4, 60.0) == AfterRun(
        JobStatus.PENDING, 1, "exited with code 1; restarting in 2s", 1, 2.0, Reason.RESTARTING
    )
    assert scraper(1, 20, 0.5).delay == 300.0  # never fails for good, never waits longer than the maximum


def test_a_scheduled_job_is_not_run_again_after_a_run() -> None:
    with pytest.raises(ValueError, match="schedule"):
        after_run(JobKind.SCHEDULED, 0, 0, 0, 1.0, backoff=BACKOFF)


# --- a batch job's deadline ---------------------------------------------------------------------------


def test_the_deadline_counts_from_the_first_run_s_start() -> None:
    assert lifecycle.deadline_left(first_start=100.0, deadline_seconds=30, now=122.5) == 7.5
    assert lifecycle.deadline_left(first_start=100.0, deadline_seconds=30, now=131.0) == 0
    assert lifecycle.deadline_left(first_start=100.0, deadline_seconds=None, now=131.0) is None
    assert lifecycle.deadline_left(first_start=None, deadline_seconds=30, now=131.0) is None


def test_a_run_stopped_at_the_deadline_fails_the_job_killed() -> None:
    expected = AfterRun(
        JobStatus.FAILED, 137, "stopped after its deadline of 30 s", 2, reason=Reason.DEADLINE_EXCEEDED
    )
    assert lifecycle.at_deadline(2, 30) == expected
    assert lifecycle.deadline_note(30) == "deadline of 30s exceeded; stopping"


def test_the_ended_runs_kept_are_the_newest_hundred() -> None:
    history: list[dict[str, Any]] = [{"started": str(i), "exit_code": 0} for i in range(100)]
    kept = lifecycle.remember(history, "2026-11-25T09:00:00+00:00", 3)
    assert len(kept) == 100 and kept[0]["started"] == "1"
    assert kept[-1] == {"started": "2026-11-25T09:00:00+00:00", "exit_code": 3}
    assert lifecycle.remember([], "s", 0) == [{"started": "s", "exit_code": 0}]


# --- schedules ----------------------------------------------------------------------------------------


def schedule(policy: ConcurrencyPolicy, max_live_runs: int = 1, history_limit: int = 3) -> Schedule:
    return Schedule("*/5 * * * *", "UTC", policy, history_limit, max_live_runs)


def test_forbid_skips_a_run_while_one_is_going() -> None:
    forbid = schedule(ConcurrencyPolicy.FORBID)
    assert at_fire_time(forbid, 0) == AtFireTime(Fire.RUN)
    assert at_fire_time(forbid, 1) == AtFireTime(
        Fire.SKIP, "skipped a run: the previous run is still going (concurrency policy forbid)"
    )


def test_replace_stops_the_runs_still_going() -> None:
    replace = schedule(ConcurrencyPolicy.REPLACE)
    assert at_fire_time(replace, 0) == AtFireTime(Fire.RUN)
    assert at_fire_time(replace, 1) == AtFireTime(
        Fire.REPLACE, "stopping the previous run (concurrency policy replace)"
    )


def test_allow_runs_another_unless_max_live_runs_are_alive() -> None:
    allow = schedule(ConcurrencyPolicy.ALLOW, max_live_runs=2)
    assert at_fire_time(allow, 0) == AtFireTime(Fire.RUN)
    assert at_fire_time(allow, 1) == AtFireTime(Fire.RUN)
    assert at_fire_time(allow, 2) == AtFireTime(
        Fire.SKIP,
        "skipped a run: 2 run(s) still going, the most this schedule may have at once (max_live_runs)",
    )
    assert at_fire_time(allow, 3).action is Fire.SKIP


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 11, 25, hour, minute, second, tzinfo=UTC)


def test_after_a_run_the_next_time_follows_and_times_missed_meanwhile_run_once() -> None:
    every5 = schedule(ConcurrencyPolicy.FORBID)
    assert lifecycle.next_after_run(every5, fired=at(9, 5), now=at(9, 5, 1)) == at(9, 10)
    # the service slept through 09:10 to 09:30: one run, at once, not five
    assert lifecycle.next_after_run(every5, fired=at(9, 5), now=at(9, 31)) == at(9, 30)


def test_after_a_skip_the_next_time_is_the_first_after_now() -> None:
    every5 = schedule(ConcurrencyPolicy.FORBID)
    assert lifecycle.next_after_skip(every5, fired=at(9, 5), now=at(9, 5, 1)) == at(9, 10)
    assert lifecycle.next_after_skip(every5, fired=at(9, 5), now=at(9, 17)) == at(9, 20)
    assert lifecycle.next_after_skip(every5, fired=at(9, 5), now=at(9, 0)) == at(9, 10)  # the clock went back


def test_a_scheduled_job_keeps_its_history_limit_of_ended_runs_and_at_least_the_last() -> None:
    history: list[dict[str, Any]] = [{"started": str(i), "exit_code": i} for i in range(5)]
    assert lifecycle.scheduled_history(history, schedule(ConcurrencyPolicy.FORBID)) == history[-3:]
    assert lifecycle.scheduled_history(history, schedule(ConcurrencyPolicy.FORBID, history_limit=0)) == [
        history[-1]
    ]


def test_a_scheduled_job_runs_while_a_run_is_alive_and_waits_otherwise() -> None:
    assert lifecycle.scheduled_status(0) is JobStatus.PENDING
    assert lifecycle.scheduled_status(2) is JobStatus.RUNNING


# --- the words ----------------------------------------------------------------------------------------


def test_the_messages() -> None:
    assert lifecycle.exited(3) == "exited with code 3" and lifecycle.exited(None) == "failed"
    assert lifecycle.failed_message(3, 2) == "exited with code 3 (2 attempts)"
    assert lifecycle.failed_message(None, 1) == "failed (1 attempt)"
    assert lifecycle.failed_message(137, 1, lifecycle.OUT_OF_MEMORY) == (
        "ran out of memory (killed at its memory limit) (1 attempt)"
    )
    assert lifecycle.restarting_message(1, 0.05) == "exited with code 1; restarting in 0.05s"
    assert lifecycle.deadline_message(30) == "stopped after its deadline of 30 s"
    when = datetime(2026, 11, 25, 9, 5, tzinfo=UTC)
    assert lifecycle.next_run_message(when) == "next run Wed Nov 25 09:05:00 2026 UTC"
    assert (
        lifecycle.last_run_message(0, when)
        == "last run exited with code 0; next run Wed Nov 25 09:05:00 2026 UTC"
    )
    assert (lifecycle.COMPLETED, lifecycle.STOPPED, lifecycle.EXIT_KILLED) == ("completed", "stopped", 137)


def test_kubernetes_statuses_are_worded_by_the_lifecycle() -> None:
    def job(reason: str, failed: int, deadline: int | None = None) -> dict[str, Any]:
        return {
            "metadata": {},
            "spec": {"activeDeadlineSeconds": deadline},
            "status": {"failed": failed, "conditions": [{"type": reason, "status": "True", "reason": ""}]},
        }

    ended = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "job", "state": {"terminated": {"exitCode": 3}}}],
        }
    }
    assert derive_status("jobs", job("Failed", 2), [ended]).message == lifecycle.failed_message(3, 2)
    assert derive_status("jobs", job("Complete", 0), []).message == lifecycle.COMPLETED
    deadline = job("Failed", 0, deadline=30)
    deadline["status"]["conditions"][0]["reason"] = "DeadlineExceeded"
    assert derive_status("jobs", deadline, []).message == lifecycle.deadline_message(30)
