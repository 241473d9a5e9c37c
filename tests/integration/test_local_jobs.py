"""The local jobs backend with real processes: lifecycle, retries, restarts, schedules, re-adoption."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jhub_ext.core.jobs.backend import Placement
from jhub_ext.core.jobs.model import JobStatus, Limits, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.local.backend import Clock, LocalJobBackend

from ..observations import Recorder

ALICE = Placement(user="alice", groups=frozenset({"researchers"}))
PY = sys.executable


class FakeClock(Clock):
    """A clock that moves only when the test says so."""

    def __init__(self, start: datetime):
        self.moment = start
        self.changed = asyncio.Condition()

    def now(self) -> datetime:
        return self.moment

    async def sleep_until(self, when: datetime) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.moment >= when)

    async def advance_to(self, when: datetime) -> None:
        async with self.changed:
            self.moment = when
            self.changed.notify_all()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalJobBackend]:
    b = make_backend(tmp_path)
    await b.start()
    yield b
    for user, name in list(await b.inventory()):
        await b.delete(user, name)
    await b.shutdown()


def make_backend(tmp_path: Path, clock: Clock | None = None) -> LocalJobBackend:
    b = LocalJobBackend(clock=clock, jobs_dir=str(tmp_path / "jobs"), backoff_base=0.05, poll_interval=0.05)
    b.on_change = Recorder()
    b.stop_grace_seconds = 2
    return b


def recorder(b: LocalJobBackend) -> Recorder:
    assert isinstance(b.on_change, Recorder)
    return b.on_change


def spec(name: str, kind: str, code: str, limits: Limits = Limits(), **extra: object):  # type: ignore[no-untyped-def]  # noqa: B008
    return parse_submission(
        {"name": name, "kind": kind, "command": [PY, "job.py"], "files": {"job.py": code}, **extra}, limits
    )


async def logs(b: LocalJobBackend, name: str) -> str:
    return "".join([chunk async for chunk in b.logs("alice", name)])


async def logged(b: LocalJobBackend, name: str, *texts: str) -> str:
    """The job's log once it holds every one of ``texts`` (or after 5 s, for the caller to check)."""
    for _ in range(100):
        output = await logs(b, name)
        if all(text in output for text in texts):
            return output
        await asyncio.sleep(0.05)
    return await logs(b, name)


async def test_a_batch_job_exiting_3_fails_with_its_code_and_keeps_its_logs(backend: LocalJobBackend) -> None:
    await backend.submit(spec("b3", "batch", "print('working');import sys;sys.exit(3)", retries=0), ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    assert (final.status, final.exit_code, final.reason) == (JobStatus.FAILED, 3, Reason.EXIT_CODE)
    assert "working" in await logs(backend, "b3")


async def test_a_batch_job_is_retried_with_backoff_until_it_succeeds(backend: LocalJobBackend) -> None:
    code = (
        "import pathlib,sys\np=pathlib.Path('n')\nn=int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n+1))\nprint('attempt', n)\nsys.exit(0 if n >= 2 else 1)\n"
    )
    await backend.submit(spec("retry", "batch", code, retries=3), ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    assert (final.status, final.exit_code, final.restarts) == (JobStatus.SUCCEEDED, 0, 2)
    output = await logs(backend, "retry")
    assert "attempt 2" in output and output.count("exited with code 1; restarting in") == 2


async def test_a_batch_deadline_stops_and_fails_the_job(backend: LocalJobBackend) -> None:
    await backend.submit(spec("slow", "batch", "import time;time.sleep(30)", deadline_seconds=1), ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    # worded as on Kubernetes: both backends say the same thing for the same event
    assert (final.status, final.message) == (JobStatus.FAILED, "stopped after its deadline of 1 s")
    assert final.reason is Reason.DEADLINE_EXCEEDED


async def test_a_scraper_runs_until_stopped(backend: LocalJobBackend) -> None:
    await backend.submit(
        spec("scrape", "scraper", "import time\nprint('up', flush=True)\ntime.sleep(60)"), ALICE
    )
    await recorder(backend).until(lambda o: o.status is JobStatus.RUNNING)
    pid = backend.runs("alice", "scrape")[0].pid
    await backend.stop("alice", "scrape")
    assert backend.observed("alice", "scrape").status is JobStatus.STOPPED
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


async def test_a_failing_scraper_is_restarted_with_growing_backoff(backend: LocalJobBackend) -> None:
    await backend.submit(spec("flaky", "scraper", "print('try');import sys;sys.exit(1)"), ALICE)
    third = await recorder(backend).until(lambda o: o.restarts >= 3)
    assert third.status in (JobStatus.PENDING, JobStatus.RUNNING)
    # from the third failure in a row, a job waiting to run again is said to be crashing
    crashing = await recorder(backend).until(lambda o: o.status is JobStatus.PENDING and o.restarts >= 3)
    assert crashing.reason is Reason.CRASH_LOOP
    output = await logs(backend, "flaky")
    assert (
        "restarting in 0.05s" in output and "restarting in 0.1s" in output and "restarting in 0.2s" in output
    )


async def test_follow_streams_output_until_the_job_ends(backend: LocalJobBackend) -> None:
    code = "import time\nfor i in range(3):\n    print('line', i, flush=True)\n    time.sleep(0.3)\n"
    await backend.submit(spec("talk", "batch", code), ALICE)
    await recorder(backend).until(lambda o: o.status is JobStatus.RUNNING)
    chunks = [c async for c in backend.logs("alice", "talk", follow=True)]
    assert "line 2" in "".join(chunks) and len(chunks) >= 2
    assert backend.observed("alice", "talk").status is JobStatus.SUCCEEDED


async def test_a_scheduled_job_fires_on_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 9, 2, tzinfo=UTC))
    b = make_backend(tmp_path, clock)
    await b.start()
    try:
        job = spec("tick", "scheduled", "print('tick')", schedule="*/5 * * * *", timezone="Europe/Berlin")
        await b.submit(job, ALICE)
        await recorder(b).until(lambda o: o.status is JobStatus.PENDING)
        assert "tick" not in await logs(b, "tick")
        await clock.advance_to(datetime(2026, 11, 25, 9, 5, tzinfo=UTC))
        done = await recorder(b).until(lambda o: o.exit_code == 0)
        assert done.message is not None and done.message.startswith("last run exited with code 0")
        assert (await logs(b, "tick")).count("tick") == 1
    finally:
        await b.delete("alice", "tick")
        await b.shutdown()


async def test_each_scheduled_run_is_stopped_at_its_deadline(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 9, 2, tzinfo=UTC))
    b = make_backend(tmp_path, clock)
    await b.start()
    try:
        code = "import time\nprint('run', flush=True)\ntime.sleep(60)\n"
        await b.submit(spec("slow", "scheduled", code, schedule="*/5 * * * *", deadline_seconds=1), ALICE)
        await recorder(b).until(lambda o: o.status is JobStatus.PENDING)
        await clock.advance_to(datetime(2026, 11, 25, 9, 5, tzinfo=UTC))
        stopped = await recorder(b).until(lambda o: o.exit_code is not None)
        assert stopped.exit_code == 137 and stopped.status is JobStatus.PENDING  # waits for its next time
        assert stopped.reason is Reason.NEXT_RUN
        assert stopped.message is not None
        assert stopped.message.startswith("last run stopped after its deadline of 1 s; next run")
        assert "deadline of 1s exceeded; stopping" in await logs(b, "slow")
    finally:
        await b.delete("alice", "slow")
        await b.shutdown()


async def test_forbid_skips_a_run_while_the_previous_one_is_going(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 9, 0, 30, tzinfo=UTC))
    b = make_backend(tmp_path, clock)
    await b.start()
    try:
        code = "import time\nprint('run', flush=True)\ntime.sleep(30)\n"
        await b.submit(
            spec("long", "scheduled", code, schedule="* * * * *", concurrency_policy="forbid"), ALICE
        )
        await recorder(b).until(lambda o: o.status is JobStatus.PENDING)
        await clock.advance_to(datetime(2026, 11, 25, 9, 1, tzinfo=UTC))
        await recorder(b).until(lambda o: o.status is JobStatus.RUNNING)
        await clock.advance_to(datetime(2026, 11, 25, 9, 2, tzinfo=UTC))
        output = await logged(b, "long", "skipped a run", "run\n")
        assert output.count("run\n") == 1 and "skipped a run" in output
    finally:
        await b.delete("alice", "long")
        await b.shutdown()


async def test_a_restarted_service_re_adopts_running_work_and_settles_finished_work(tmp_path: Path) -> None:
    first = make_backend(tmp_path)
    await first.start()
    await first.submit(spec("keep", "scraper", "import time\nprint('up', flush=True)\ntime.sleep(60)"), ALICE)
    await first.submit(
        spec("quick", "batch", "import time\ntime.sleep(0.5)\nraise SystemExit(3)", retries=0), ALICE
    )
    await recorder(first).until(lambda o: o.status is JobStatus.RUNNING)
    assert "up" in await logged(first, "keep", "up")
    pid = first.runs("alice", "keep")[0].pid
    await first.shutdown()  # the service dies; its processes do not
    await asyncio.sleep(1.0)  # "quick" ends while nobody is watching

    second = make_backend(tmp_path)
    await second.start()
    try:
        quick = await recorder(second).until(lambda o: o.status.finished)
        assert (quick.status, quick.exit_code) == (JobStatus.FAILED, 3)
        # the same process: adopted, not started again
        assert [r.pid for r in second.runs("alice", "keep")] == [pid]
        assert second.observed("alice", "keep").status is JobStatus.RUNNING
        assert os.path.exists(f"/proc/{pid}")
        await second.stop("alice", "keep")
        assert second.observed("alice", "keep").status is JobStatus.STOPPED
        assert (await logs(second, "keep")).count("up") == 1
    finally:
        for name in ("keep", "quick"):
            await second.delete("alice", name)
        await second.shutdown()


async def test_submitting_a_running_job_again_changes_nothing(backend: LocalJobBackend) -> None:
    job = spec("once", "scraper", "import time\nprint('up', flush=True)\ntime.sleep(60)")
    await backend.submit(job, ALICE)
    # its command is up (not only its runner: a confined run takes a moment more to start)
    assert "up" in await logged(backend, "once", "up")
    await backend.submit(job, ALICE)
    await asyncio.sleep(0.3)
    assert len(backend.runs("alice", "once")) == 1
    assert (await logs(backend, "once")).count("up") == 1


def test_schedule_times_respect_the_time_zone() -> None:
    job = parse_submission(
        {
            "name": "t",
            "kind": "scheduled",
            "command": ["x"],
            "schedule": "0 9 * * *",
            "timezone": "Asia/Tokyo",
        }
    )
    assert job.schedule is not None
    after = job.schedule.next_after(datetime(2026, 11, 25, 0, 30, tzinfo=UTC))
    assert after.astimezone(UTC) == datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
    assert after - datetime(2026, 11, 25, 0, 30, tzinfo=UTC) == timedelta(hours=23, minutes=30)


async def test_outputs_outlive_the_job(tmp_path: Path) -> None:
    b = make_backend(tmp_path)
    b.output_dir = str(tmp_path / "outputs")
    await b.start()
    try:
        code = (
            "import os, pathlib\n"
            "pathlib.Path(os.environ['JHUB_EXT_OUTPUT_DIR'], 'result.csv').write_text('a,b\\n')\n"
        )
        await b.submit(spec("writer", "batch", code), ALICE)
        await recorder(b).until(lambda o: o.status is JobStatus.SUCCEEDED)
        await b.delete("alice", "writer")
        assert (tmp_path / "outputs" / "u-alice" / "result.csv").read_text() == "a,b\n"
    finally:
        await b.shutdown()


# --- what hostile or broken jobs cannot do ---------------------------------------------------------


async def test_the_log_stays_under_its_cap_while_the_job_runs(tmp_path: Path) -> None:
    b = make_backend(tmp_path)
    b.max_log_bytes = 64 * 1024
    await b.start()
    try:
        code = "for i in range(40000):\n    print('line %06d' % i + 'x' * 40)\n"  # ~2 MiB in one run
        await b.submit(spec("loud", "batch", code), ALICE)
        await recorder(b).until(lambda o: o.status.finished)
        log = tmp_path / "jobs" / "u-alice" / "loud" / "output.log"
        assert log.stat().st_size <= 64 * 1024
        text = await logs(b, "loud")
        assert "earlier output was cut" in text and text.rstrip().endswith("line 039999" + "x" * 40)
        tail = "".join([c async for c in b.logs("alice", "loud", tail=2)])
        assert tail.splitlines() == [f"line {i:06d}" + "x" * 40 for i in (39998, 39999)]
    finally:
        await b.delete("alice", "loud")
        await b.shutdown()


async def test_a_job_that_cannot_start_fails_with_the_reason(backend: LocalJobBackend) -> None:
    job = dataclasses.replace(spec("nothing", "batch", "", retries=0), command=("/no/such/program",))
    await backend.submit(job, ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    assert (final.status, final.exit_code, final.reason) == (JobStatus.FAILED, 127, Reason.CANNOT_START)
    assert final.message == "its program could not be started (its log says why) (1 attempt)"
    assert "cannot start '/no/such/program'" in await logs(backend, "nothing")


async def test_an_error_in_supervision_ends_the_job_failed_and_stop_delete_shutdown_still_work(
    tmp_path: Path,
) -> None:
    # A schedule that never fires (validation refuses it; a job saved before that would not be)
    job = spec("never", "scheduled", "print(1)", schedule="@daily")
    assert job.schedule is not None
    broken = dataclasses.replace(job, schedule=dataclasses.replace(job.schedule, cron="0 0 31 2 *"))
    b = make_backend(tmp_path)
    await b.start()
    await b.submit(broken, ALICE)
    final = await recorder(b).until(lambda o: o.status.finished)
    assert final.status is JobStatus.FAILED and final.message is not None
    assert final.message.startswith("failed: CroniterBadDateError")
    await b.stop("alice", "never")
    await b.shutdown()  # nothing raised
    again = make_backend(tmp_path)
    await again.start()  # never started again: today's validation refuses it
    assert again.observed("alice", "never") is None
    await again.delete("alice", "never")
    assert not (tmp_path / "jobs" / "u-alice" / "never").exists()
    await again.shutdown()


async def test_a_saved_job_that_cannot_run_any_more_ends_failed_on_start(tmp_path: Path) -> None:
    first = make_backend(tmp_path)
    await first.start()
    await first.submit(spec("old", "scraper", "import time\ntime.sleep(60)"), ALICE)
    await recorder(first).until(lambda o: o.status is JobStatus.RUNNING)
    await first.stop("alice", "old")
    await first.shutdown()
    saved = tmp_path / "jobs" / "u-alice" / "old" / "spec.json"
    body = json.loads(saved.read_text())
    body["spec"]["command"] = ["python", "a\0b"]  # saved by a release that did not refuse NUL bytes
    saved.write_text(json.dumps(body))
    state = saved.with_name("state.json")
    state.write_text(json.dumps({**json.loads(state.read_text()), "desired": "run", "status": "pending"}))

    second = make_backend(tmp_path)
    await second.start()
    try:
        final = await recorder(second).until(lambda o: o.status.finished)
        assert final.status is JobStatus.FAILED and final.message is not None
        assert "cannot run any more" in final.message and "NUL" in final.message
        assert second.observed("alice", "old") is None
        await second.delete("alice", "old")
        assert not saved.parent.exists()
    finally:
        await second.shutdown()


async def test_the_jobs_environment_reaches_the_job_but_not_the_runner(backend: LocalJobBackend) -> None:
    code = "import os, time\nprint('FOO=' + os.environ['FOO'], flush=True)\ntime.sleep(60)\n"
    await backend.submit(spec("env", "scraper", code, env={"FOO": "from-the-user"}), ALICE)
    await recorder(backend).until(lambda o: o.status is JobStatus.RUNNING)
    runner = backend.runs("alice", "env")[0].pid
    assert "FOO=from-the-user" in await logged(backend, "env", "FOO=from-the-user")
    assert b"FOO=" not in Path(f"/proc/{runner}/environ").read_bytes()
    assert not list((tmp_dir := backend.directory("alice", "env")).glob("env.*.json")), tmp_dir


async def test_allow_keeps_at_most_max_live_runs(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 11, 25, 9, 0, 30, tzinfo=UTC))
    b = make_backend(tmp_path, clock)
    await b.start()
    try:
        code = "import time\nprint('run', flush=True)\ntime.sleep(60)\n"
        body = {"schedule": "* * * * *", "concurrency_policy": "allow", "max_live_runs": 2}
        await b.submit(spec("many", "scheduled", code, Limits(max_live_runs=2), **body), ALICE)
        await recorder(b).until(lambda o: o.status is JobStatus.PENDING)
        for minute in (1, 2, 3):
            await clock.advance_to(datetime(2026, 11, 25, 9, minute, tzinfo=UTC))
            await asyncio.sleep(0.5)
        output = await logged(b, "many", "skipped a run")
        assert len(b.runs("alice", "many")) == 2
        assert "max_live_runs" in output
    finally:
        await b.delete("alice", "many")
        await b.shutdown()
