"""The fair queue: a job the quota has no room for waits, reserving nothing, and starts by itself in
its turn (first in, first out within a group, groups interleaved, never twice), over a real store."""

from __future__ import annotations

import asyncio

import pytest

from jhub_ext.admission.reservations import JobReservations
from jhub_ext.core.catalog.quota import Usage
from jhub_ext.core.jobs.errors import NotAllowed
from jhub_ext.core.jobs.model import JobStatus, Limits, Room
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.reconcile import reconcile
from jhub_ext.service.store import JobRow, JobStore, ordinal

from .managers import ALICE, BOB, SMALL_JOB, FakeBackend, Make, batch, scheduled

CAROL = Caller("carol", frozenset({"researchers"}), admin=False)


async def fill(manager: JobManager, caller: Caller = ALICE, names: tuple[str, ...] = ("a", "b", "c")) -> None:
    """Submit jobs that each start at once (3 x 2 CPUs fill researchers' 6)."""
    for name in names:
        assert not (await manager.submit(caller, batch(name))).queued


def started(backend: FakeBackend) -> list[str]:
    return [name for _user, name in backend.actions("submit")]


async def counted_cpus(manager: JobManager, store: JobStore) -> float:
    workloads = await JobReservations(store.engine).workloads(manager.catalog, ALICE.groups)
    return sum(w.usage.cpu for w in workloads)


async def test_a_job_over_the_quota_waits_in_the_queue_reserving_nothing(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await fill(manager)
    queued = [await manager.submit(ALICE, batch(name)) for name in ("d", "e", "f")]
    assert [(r.status, r.reason, r.queue, r.queue_position) for r in queued] == [
        (JobStatus.PENDING, Reason.QUEUED, "researchers", place) for place in (1, 2, 3)
    ]
    shown = queued[2].to_json()
    assert (shown["status"], shown["reason"], shown["queue_position"]) == ("pending", "queued", 3)
    assert shown["message"].startswith("3rd in the queue of group 'researchers': group 'researchers' ")
    assert "uses 6; this needs 2 more" in shown["message"] and "starts by itself" in shown["message"]
    assert started(backend) == ["a", "b", "c"]  # nothing of the queued ones runs
    assert await counted_cpus(manager, store) == 6  # ... or counts: the hub may still spawn
    report = await manager.quota(ALICE)
    assert report[0]["usage"]["cpu"] == 6 and report[0]["waiting"] == {
        **Usage().to_json(),
        "cpu": 6.0,
        "memory": 3 * SMALL_JOB["memory"],
        "jobs": 3,
    }


async def test_queued_jobs_start_in_order_as_room_frees_and_move_up(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await fill(manager)
    for name in ("d", "e", "f"):
        await manager.submit(ALICE, batch(name))
    assert await manager.queue.dispatch() == []  # still no room
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("alice", "d")]
    record = store.get("alice", "d")
    assert record is not None and not record.queued and record.reason is None
    assert record.to_json()["reason"] == "starting" and "queue_position" not in record.to_json()
    assert [(r.name, r.queue_position) for r in store.queued_jobs()] == [("e", 1), ("f", 2)]
    await manager.stop(ALICE, "alice", "b")
    await backend.report("alice", "c", JobStatus.FAILED, exit_code=1)
    assert await manager.queue.dispatch() == [("alice", "e"), ("alice", "f")]
    assert started(backend) == ["a", "b", "c", "d", "e", "f"] and store.queued_jobs() == []
    assert await counted_cpus(manager, store) == 6


async def test_the_first_of_a_group_that_does_not_fit_holds_those_behind_it(make: Make) -> None:
    manager = make(limits=Limits(max_live_runs=2))
    backend = manager.backend
    assert isinstance(backend, FakeBackend)
    await fill(manager)
    big = scheduled("big", concurrency_policy="allow", max_live_runs=2)  # 2 live runs: 4 CPUs
    assert (await manager.submit(ALICE, big)).queue_position == 1
    assert (await manager.submit(CAROL, batch("small-after"))).queue_position == 2
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0)  # 2 CPUs free: not 4
    assert await manager.queue.dispatch() == []  # the small one does not slip past the big one
    await backend.report("alice", "b", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("alice", "big")]
    await backend.report("alice", "c", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("carol", "small-after")]


async def test_a_new_job_waits_behind_the_queue_even_when_it_would_fit(
    manager: JobManager, backend: FakeBackend
) -> None:
    await fill(manager)
    await manager.submit(ALICE, batch("first"))
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0)  # room for one, unused yet
    late = await manager.submit(CAROL, batch("late"))
    assert (late.queued, late.queue_position) == (True, 2)
    with pytest.raises(NotAllowed) as refused:  # one that may not wait is refused, not let through
        await manager.submit(CAROL, batch("impatient", wait=False))
    assert refused.value.field == "wait" and "wait for room before it" in str(refused.value)
    assert await manager.queue.dispatch() == [("alice", "first")]


async def test_groups_take_turns(manager: JobManager, backend: FakeBackend) -> None:
    await fill(manager)
    await manager.submit(BOB, batch("p0"))  # physics: 2 CPUs, full
    for name in ("r1", "r2"):
        await manager.submit(ALICE, batch(name))
    for name in ("p1", "p2"):
        await manager.submit(BOB, batch(name))
    for user, name in (("alice", "a"), ("alice", "b"), ("bob", "p0")):
        await backend.report(user, name, JobStatus.SUCCEEDED, exit_code=0)
    # researchers has room for both of its queued jobs, physics for one: they take turns
    assert await manager.queue.dispatch() == [("alice", "r1"), ("bob", "p1"), ("alice", "r2")]


async def test_a_queued_job_is_never_started_twice_whatever_races_it(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await fill(manager)
    for name in ("d", "e", "f"):
        await manager.submit(ALICE, batch(name))
    for name in ("a", "b", "c"):
        await backend.report("alice", name, JobStatus.SUCCEEDED, exit_code=0)
    passes = [manager.queue.dispatch() for _ in range(3)]
    await asyncio.gather(*passes, manager.stop(ALICE, "alice", "e"))
    assert sorted(started(backend)) == ["a", "b", "c", "d", "f"]
    record = store.get("alice", "e")
    assert record is not None and record.status is JobStatus.STOPPED and not record.queued
    assert record.reason is Reason.STOPPED_BY_USER


async def test_the_queue_survives_a_restart_of_the_service(
    make: Make, store: JobStore, backend: FakeBackend
) -> None:
    first = make()
    await fill(first)
    await first.submit(ALICE, batch("d"))
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0)
    again = make()  # a new service over the same database; nothing started "d" before
    assert await reconcile(again, grace_seconds=0) is not None
    assert "d" not in started(backend)  # the reconciler leaves a queued job to the queue
    assert await again.queue.dispatch() == [("alice", "d")]


async def test_a_restart_when_the_quota_is_full_waits_in_the_queue(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await fill(manager)
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0)
    await manager.submit(ALICE, batch("d"))  # takes the room "a" left
    record = await manager.restart(ALICE, "alice", "a")
    assert (record.status, record.reason, record.queue_position, record.restarts) == (
        JobStatus.PENDING,
        Reason.QUEUED,
        1,
        1,
    )
    await backend.report("alice", "d", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("alice", "a")]


async def test_a_queued_job_that_may_no_longer_run_ends_failed_saying_why(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await fill(manager, BOB, ("p0",))
    await manager.submit(BOB, batch("p1"))
    with store.session() as session:  # bob's profile was taken away from his group meanwhile
        row = session.query(JobRow).filter_by(user="bob", name="p1").one()
        row.profile = "gpu"
    await backend.report("bob", "p0", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("bob", "p1")]
    record = store.get("bob", "p1")
    assert record is not None and record.status is JobStatus.FAILED
    assert record.reason is Reason.CANNOT_START and "gpu" in (record.message or "")
    assert started(backend) == ["p0"]


async def test_an_ended_job_wakes_the_queue(manager: JobManager, backend: FakeBackend) -> None:
    await fill(manager)
    await manager.submit(ALICE, batch("d"))
    running = asyncio.create_task(manager.queue.keep_dispatching(interval=3600))
    try:
        await asyncio.sleep(0.05)
        await backend.report("alice", "b", JobStatus.SUCCEEDED, exit_code=0)
        for _ in range(100):
            if "d" in started(backend):
                break
            await asyncio.sleep(0.01)
        assert "d" in started(backend)
    finally:
        running.cancel()


async def test_a_job_no_quota_could_ever_hold_is_refused_at_once_saying_so(make: Make) -> None:
    manager = make(limits=Limits(max_live_runs=2))
    body = scheduled("huge", concurrency_policy="allow", max_live_runs=2)  # 4 CPUs; physics has 2
    with pytest.raises(NotAllowed) as never:
        await manager.submit(BOB, body)
    assert never.value.reason == "can-never-fit" and never.value.to_json()["reason"] == "can-never-fit"
    assert "can never start as it is" in str(never.value) and manager.store.count_jobs() == 0


def test_places_are_said_in_words() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"
    ]  # fmt: skip


GPU_CALLER = Caller("gina", frozenset({"researchers", "gpu"}), admin=False)
NO_GPU = Room(now=False, short="0 of 4 A100 GPUs are free, and it needs 1")


async def test_a_job_no_machine_has_room_for_waits_in_line_for_its_profile_and_starts_when_room_frees(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    backend.rooms["gpu"] = NO_GPU
    first = await manager.submit(GPU_CALLER, batch("train-1", profile="gpu"))
    second = await manager.submit(GPU_CALLER, batch("train-2", profile="gpu"))
    assert [(r.status, r.reason, r.queue, r.queue_position) for r in (first, second)] == [
        (JobStatus.PENDING, Reason.WAITING_FOR_CAPACITY, "machines for gpu", place) for place in (1, 2)
    ]
    assert second.to_json()["message"] == (
        "2nd in line for a machine of profile 'gpu': waiting for room in the cluster: 0 of 4 A100 GPUs are"
        " free, and it needs 1; it starts by itself as soon as a machine has room"
    )
    # other profiles' jobs are not held behind them: they start at once
    assert not (await manager.submit(GPU_CALLER, batch("small-one"))).queued
    assert await manager.queue.dispatch() == []  # still no GPU
    assert started(backend) == ["small-one"]
    report = await manager.quota(GPU_CALLER)  # they count as waiting in their groups, not as using
    researchers = next(q for q in report if q["group"] == "researchers")
    assert researchers["waiting"]["jobs"] == 2
    del backend.rooms["gpu"]  # a GPU frees
    assert await manager.queue.dispatch() == [("gina", "train-1")]
    # the second would take researchers past their 6 CPUs now: it waits on, and says so
    [waiting] = store.queued_jobs()
    assert waiting.name == "train-2" and "group 'researchers' may use 6 CPUs" in (waiting.message or "")
    await backend.report("gina", "train-1", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("gina", "train-2")]
    assert started(backend) == ["small-one", "train-1", "train-2"] and store.queued_jobs() == []


async def test_a_job_without_room_and_wait_false_is_refused_and_one_that_can_never_fit_names_a_smaller(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    backend.rooms["gpu"] = NO_GPU
    with pytest.raises(NotAllowed) as refused:
        await manager.submit(GPU_CALLER, batch("now-or-never", profile="gpu", wait=False))
    assert refused.value.field == "wait" and "0 of 4 A100 GPUs are free" in str(refused.value)
    backend.rooms["gpu"] = Room(now=False, ever=False, short="no machine of its kind is that large (2 CPUs)")
    with pytest.raises(NotAllowed) as never:
        await manager.submit(GPU_CALLER, batch("huge", profile="gpu"))
    assert never.value.field == "profile" and never.value.reason == Reason.CAN_NEVER_FIT.value
    assert str(never.value) == (
        "profile 'gpu' can never start: no machine of its kind is that large (2 CPUs);"
        " choose a smaller profile, such as 'small'"
    )
    assert store.get("gina", "huge") is None and store.get("gina", "now-or-never") is None
    assert started(backend) == []
