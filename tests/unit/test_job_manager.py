"""JobManager in-process: a real store, catalog and quota lock, a recording backend, no hub unless needed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jhub_ext.admission.jobs import QuotaFull
from jhub_ext.admission.reservations import JobReservations
from jhub_ext.core.jobs.backend import Held, JobRejected
from jhub_ext.core.jobs.errors import Conflict, Invalid, NoSuchJob, NotAllowed, Refusal, TooMany
from jhub_ext.core.jobs.model import JobStatus, Limits
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.reconcile import GONE, reconcile
from jhub_ext.service.store import JobStore

from .managers import (
    ADMIN,
    ALICE,
    BOB,
    GIB,
    SMALL_JOB,
    FakeBackend,
    FakeHub,
    Make,
    batch,
    scheduled,
)


def snapshot(store: JobStore, user: str) -> list[tuple[Any, ...]]:
    return [(j.name, j.status, j.profile, j.usage, j.restarts) for j in store.list_jobs(user)]


async def test_a_valid_submit_is_recorded_pending_and_placed(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    record = await manager.submit(ALICE, batch("news", profile="small", env={"LANG": "C.UTF-8"}))
    assert (record.user, record.name, record.status, record.profile) == ("alice", "news", "pending", "small")
    assert record.groups == ("researchers",) and record.usage == SMALL_JOB
    assert store.get("alice", "news") == record
    assert store.audit("alice")[0]["action"] == "submit"
    assert backend.calls == [("validate", "alice", "news"), ("submit", "alice", "news")]
    [(spec, placement)] = backend.submitted
    assert spec.command == ("python", "run.py") and dict(spec.files) == {"run.py": "1\n"}
    assert dict(spec.env) == {"LANG": "C.UTF-8"}
    assert placement.user == "alice" and placement.groups == ALICE.groups
    assert placement.profile is not None and placement.profile.slug == "small"
    assert placement.image == "example.org/base:1" and dict(placement.env) == {}


async def test_without_a_profile_a_job_takes_the_default_profile_and_the_notebooks_image(
    make: Make, backend: FakeBackend
) -> None:
    manager = make(FakeHub(options={"profile": "small", "image": "sci"}))
    record = await manager.submit(ALICE, batch("news"))
    assert record.profile == "small"
    assert backend.submitted[0][1].image == "example.org/sci:2"


async def test_a_restart_runs_in_the_image_the_job_was_submitted_with(
    make: Make, backend: FakeBackend
) -> None:
    manager = make(FakeHub(options={"profile": "small", "image": "sci"}))
    await manager.submit(ALICE, batch("news"))
    await manager.restart(ALICE, "alice", "news")
    assert [placement.image for _, placement in backend.submitted] == ["example.org/sci:2"] * 2


async def test_a_restart_takes_the_owners_groups_as_they_are_now(make: Make, store: JobStore) -> None:
    hub = FakeHub(groups=frozenset({"researchers", "gpu"}))
    manager = make(hub)
    gpu_user = Caller("alice", hub.user_groups, admin=False)
    await manager.submit(gpu_user, batch("train", profile="gpu"))
    await manager.stop(gpu_user, "alice", "train")
    hub.user_groups = frozenset({"researchers"})  # an admin took her out of the gpu group
    with pytest.raises(NotAllowed) as refused:
        await manager.restart(ALICE, "alice", "train")
    assert refused.value.field == "profile"
    assert store.get("alice", "train").status is JobStatus.STOPPED  # type: ignore[union-attr]
    hub.user_groups = frozenset({"gpu"})  # and moved her into another group
    await manager.restart(ALICE, "alice", "train")
    assert store.get("alice", "train").groups == ("gpu",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        pytest.param(batch("x", profile="huge"), NotAllowed, "profile", id="unknown-profile"),
        pytest.param(batch("x", profile="gpu"), NotAllowed, "profile", id="other-groups-profile"),
        pytest.param(batch("x", profile="desk"), NotAllowed, "profile", id="server-only-profile"),
        pytest.param(["news"], Invalid, "body", id="not-an-object"),
        pytest.param(batch("Bad_Name"), Invalid, "name", id="bad-name"),
        pytest.param(batch("x", image="y"), Invalid, "image", id="unknown-field"),
        pytest.param(batch("x", env={"PATH": "/x"}), Invalid, "env.PATH", id="reserved-env"),
        pytest.param({**batch("x"), "kind": "scraper", "retries": 2}, Invalid, "retries", id="batch-only"),
        pytest.param(scheduled("x", max_live_runs=2), Invalid, "max_live_runs", id="runs-over-limit"),
        pytest.param(batch("keep"), Conflict, "name", id="duplicate-name"),
        pytest.param(batch("new", wait=False), QuotaFull, "profile", id="over-quota"),
        pytest.param(batch("new", wait="no"), Invalid, "wait", id="wait-not-a-boolean"),
    ],
)
async def test_a_refused_submit_names_the_field_and_changes_nothing(
    manager: JobManager, store: JobStore, backend: FakeBackend, body: Any, error: type[Refusal], field: str
) -> None:
    for name in ("keep", "b", "c"):  # 3 x 2 CPUs: all 6 of researchers
        await manager.submit(ALICE, batch(name))
    await backend.report("alice", "keep", JobStatus.RUNNING)
    before = snapshot(store, "alice")
    with pytest.raises(error) as caught:
        await manager.submit(ALICE, body)
    assert type(caught.value) is error and caught.value.field == field
    assert snapshot(store, "alice") == before and before[-1][:2] == ("keep", JobStatus.RUNNING)
    assert backend.actions("submit") == [("alice", "keep"), ("alice", "b"), ("alice", "c")]


async def test_a_submit_the_backend_would_reject_is_refused_before_it_is_stored(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    backend.validate_error = JobRejected("command not found", "command")
    with pytest.raises(Invalid) as caught:
        await manager.submit(ALICE, batch("news"))
    assert (str(caught.value), caught.value.field) == ("command not found", "command")
    assert store.count_jobs() == 0 and backend.actions("submit") == []


async def test_a_scheduled_job_reserves_each_live_run(make: Make) -> None:
    manager = make(limits=Limits(max_live_runs=3))
    body = scheduled("hourly", concurrency_policy="allow", max_live_runs=3)
    record = await manager.submit(ALICE, body)
    assert record.usage == {"cpu": 6.0, "memory": 12 * GIB, "gpus": 0, "servers": 0, "jobs": 1}
    with pytest.raises(NotAllowed) as caught:
        await manager.submit(ALICE, batch("one-more", wait=False))
    assert caught.value.field == "profile"


async def test_jobs_of_other_groups_do_not_count(manager: JobManager, store: JobStore) -> None:
    await manager.submit(BOB, batch("bobs"))  # fills physics (2 CPUs)
    for name in ("a", "b", "c"):  # researchers still has all its 6 CPUs
        await manager.submit(ALICE, batch(name))
    with pytest.raises(NotAllowed) as caught:
        await manager.submit(BOB, batch("bobs-second", wait=False))
    assert caught.value.field == "profile" and "group 'physics'" in str(caught.value)
    assert store.count_jobs("alice") == 3 and store.count_jobs("bob") == 1


async def test_a_finished_job_stops_counting(manager: JobManager, backend: FakeBackend) -> None:
    for name in ("a", "b", "c"):
        await manager.submit(ALICE, batch(name))
    with pytest.raises(NotAllowed):
        await manager.submit(ALICE, batch("d", wait=False))
    await backend.report("alice", "b", JobStatus.SUCCEEDED, exit_code=0)
    assert (await manager.submit(ALICE, batch("d"))).status is JobStatus.PENDING


async def test_concurrent_submits_take_exactly_what_the_quota_fits(
    make: Make, store: JobStore, backend: FakeBackend
) -> None:
    manager = make(FakeHub())  # counting asks the hub, so the submits interleave there
    results = await asyncio.gather(
        *(manager.submit(ALICE, batch(f"job-{i}", wait=False)) for i in range(10)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 7 and all(isinstance(r, NotAllowed) and r.field == "profile" for r in refused)
    assert store.count_jobs("alice") == 3 and len(backend.submitted) == 3
    counted = await JobReservations(store.engine).workloads(manager.catalog, ALICE.groups)
    assert sum(w.usage.cpu for w in counted) == 6


async def test_concurrent_submits_of_one_name_record_it_once(manager: JobManager, store: JobStore) -> None:
    results = await asyncio.gather(
        *(manager.submit(ALICE, batch("same")) for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, Conflict) and r.field == "name" for r in results if isinstance(r, BaseException))
    assert store.count_jobs("alice") == 1


@pytest.mark.parametrize(
    ("failure", "raised"),
    [(RuntimeError("cluster down"), RuntimeError), (JobRejected("no such image", "profile"), Invalid)],
)
async def test_a_failed_backend_submit_leaves_no_record(
    manager: JobManager, store: JobStore, backend: FakeBackend, failure: Exception, raised: type[Exception]
) -> None:
    await manager.submit(ALICE, batch("a"))
    await manager.submit(ALICE, batch("b"))
    backend.submit_error = failure
    with pytest.raises(raised):
        await manager.submit(ALICE, batch("news"))
    assert store.get("alice", "news") is None and store.count_jobs("alice") == 2
    # a crash may have left something behind, so the backend is told to clean up; a rejection left nothing
    assert backend.actions("delete") == ([("alice", "news")] if raised is RuntimeError else [])
    assert store.audit("alice")[-1]["actor"] == "jobs service: not started"
    backend.submit_error = None  # nothing stays counted: the last 2 CPUs are still free
    assert (await manager.submit(ALICE, batch("news"))).status is JobStatus.PENDING


async def test_stop_restart_and_delete_own_jobs(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("news"))
    await backend.report("alice", "news", JobStatus.RUNNING)
    restarted = await manager.restart(ALICE, "alice", "news")  # a running job is stopped first
    assert (restarted.status, restarted.restarts) == (JobStatus.PENDING, 1)
    assert [c[0] for c in backend.calls] == ["validate", "submit", "stop", "submit"]
    assert [spec.name for spec, _ in backend.submitted] == ["news", "news"]
    stopped = await manager.stop(ALICE, "alice", "news")
    assert stopped.status is JobStatus.STOPPED and len(backend.actions("stop")) == 2
    await manager.stop(ALICE, "alice", "news")  # a finished job is left as it is
    assert len(backend.actions("stop")) == 2
    await manager.delete(ALICE, "alice", "news")
    assert store.get("alice", "news") is None and backend.actions("delete") == [("alice", "news")]
    audit = store.audit("alice")
    assert [a["action"] for a in audit] == ["submit", "restart", "stop", "delete"]
    assert {a["actor"] for a in audit} == {"alice"}


async def test_a_restart_over_quota_is_refused_and_the_job_stays_stopped(
    manager: JobManager, store: JobStore
) -> None:
    await manager.submit(ALICE, batch("a", wait=False))  # refused when it cannot start at once
    for name in ("b", "c"):
        await manager.submit(ALICE, batch(name))
    await manager.stop(ALICE, "alice", "a")
    await manager.submit(ALICE, batch("d"))  # takes the CPUs "a" freed
    with pytest.raises(NotAllowed) as caught:
        await manager.restart(ALICE, "alice", "a")
    assert caught.value.field == "profile"
    record = store.get("alice", "a")
    assert record is not None and (record.status, record.restarts) == (JobStatus.STOPPED, 0)


async def test_users_reach_only_their_own_jobs(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(BOB, batch("secret"))
    before = snapshot(store, "bob")
    for action in (manager.stop, manager.restart, manager.delete):
        with pytest.raises(NoSuchJob) as caught:
            await action(ALICE, "alice", "secret")
        assert caught.value.field == "name"
    with pytest.raises(NoSuchJob):
        manager.logs(ALICE, "alice", "secret", follow=False, tail=None)
    with pytest.raises(NotAllowed) as refused:
        manager.owner_for(ALICE, "bob")
    assert refused.value.field == "user"
    with pytest.raises(NotAllowed):
        manager.list_jobs(ALICE, "*")
    assert manager.owner_for(ADMIN, "bob") == "bob" and manager.list_jobs(ADMIN, "*")[1] == 1
    assert snapshot(store, "bob") == before
    assert backend.actions("stop") == backend.actions("delete") == []


async def test_observations_update_the_store(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("news"))
    await backend.report("alice", "news", JobStatus.PENDING, message="pulling image")
    record = store.get("alice", "news")
    assert record is not None and (record.status, record.message) == (JobStatus.PENDING, "pulling image")
    await backend.report("alice", "news", JobStatus.RUNNING)
    record = store.get("alice", "news")
    assert record is not None and record.status is JobStatus.RUNNING and record.started is not None
    assert record.message is None  # it no longer waits for its image
    await backend.report("alice", "news", JobStatus.RUNNING, message="its node n1 was lost: running again")
    await backend.report("alice", "news", JobStatus.RUNNING)  # the evidence went, the reason holds
    record = store.get("alice", "news")
    assert record is not None and record.message == "its node n1 was lost: running again"
    await backend.report("alice", "news", JobStatus.FAILED, exit_code=3, message="exit 3", restarts=2)
    record = store.get("alice", "news")
    assert record is not None and record.finished is not None and record.message == "exit 3"
    assert (record.status, record.exit_code, record.restarts) == (JobStatus.FAILED, 3, 2)
    assert store.log_tail("alice", "news") == backend.output
    await backend.report("alice", "ghost", JobStatus.RUNNING)  # a job the store does not know: ignored
    assert store.get("alice", "ghost") is None


async def test_an_observation_after_a_stop_does_not_undo_it(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("news"))
    await manager.stop(ALICE, "alice", "news")
    await backend.report("alice", "news", JobStatus.FAILED, exit_code=143)
    record = store.get("alice", "news")
    assert record is not None and (record.status, record.exit_code) == (JobStatus.STOPPED, None)


async def test_logs_come_from_the_backend_then_from_the_kept_tail(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("news"))
    live = [chunk async for chunk in manager.logs(ALICE, "alice", "news", follow=False, tail=None)]
    assert live == [backend.output]
    await backend.report("alice", "news", JobStatus.SUCCEEDED, exit_code=0)
    backend.seen.clear()  # the backend forgets it; the store kept its tail
    backend.output = "changed\n"
    kept = [chunk async for chunk in manager.logs(ALICE, "alice", "news", follow=False, tail=1)]
    assert kept == ["last line\n"]


async def test_submits_restarts_stops_and_deletes_beyond_their_rate_limits_are_refused(
    make: Make, store: JobStore
) -> None:
    manager = make(submits_per_minute=2, actions_per_minute=1)
    await manager.submit(ALICE, batch("a"))
    await manager.submit(ALICE, batch("b"))
    with pytest.raises(TooMany) as caught:
        await manager.submit(ALICE, batch("c"))
    assert caught.value.retry_after is not None and 1 <= caught.value.retry_after <= 60
    with pytest.raises(TooMany):  # restarts share the limit
        await manager.restart(ALICE, "alice", "a")
    assert [j.name for j in store.list_jobs("alice")] == ["b", "a"]
    assert (await manager.submit(BOB, batch("c"))).user == "bob"  # per user
    await manager.stop(ALICE, "alice", "a")  # stops and deletes have a limit of their own
    with pytest.raises(TooMany):
        await manager.delete(ALICE, "alice", "a")
    record = store.get("alice", "a")
    assert record is not None and record.status is JobStatus.STOPPED


def test_follow_slots_are_bounded_and_released(make: Make) -> None:
    manager = make(follows_per_user=2)
    with manager.follow_slot(ALICE), manager.follow_slot(ALICE):
        with pytest.raises(TooMany) as caught, manager.follow_slot(ALICE):
            pass
        assert caught.value.field == "follow" and caught.value.retry_after == 10
        with manager.follow_slot(BOB):  # another user's slots are their own
            assert manager.following == {"alice": 2, "bob": 1}
    with manager.follow_slot(ALICE):
        assert manager.following == {"alice": 1}
    assert manager.following == {}


async def test_quota_reports_usage_and_limits_per_group(make: Make) -> None:
    servers = [
        ("alice", ALICE.groups, {"profile": "small"}),
        ("dave", ALICE.groups, {"profile": "no-such-profile"}),  # counts as a server only
        ("bob", BOB.groups, {}),
    ]
    manager = make(FakeHub(servers=servers))
    await manager.submit(ALICE, batch("news", profile="small"))
    carol = Caller("carol", frozenset({"researchers", "physics", "gpu"}), admin=False)
    report = await manager.quota(carol)
    none = dict.fromkeys(["cpu", "memory", "gpus", "servers", "jobs"])
    nothing = {"cpu": 0.0, "memory": 0, "gpus": 0, "servers": 0, "jobs": 0}
    assert report == [
        {
            "group": "physics",
            "usage": {"cpu": 2.0, "memory": 4 * GIB, "gpus": 0, "servers": 1, "jobs": 0},
            "limits": {**none, "cpu": 2.0},
            "waiting": nothing,
        },
        {
            "group": "researchers",
            "usage": {"cpu": 4.0, "memory": 8 * GIB, "gpus": 0, "servers": 2, "jobs": 1},
            "limits": {**none, "cpu": 6.0, "memory": 64 * GIB, "jobs": 10},
            "waiting": nothing,
        },
    ]
    assert await manager.quota(Caller("eve", frozenset({"gpu"}), admin=False)) == []


async def test_a_stopped_jobs_output_is_kept_before_its_pods_go(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("news"))
    await backend.report("alice", "news", JobStatus.RUNNING)
    backend.output, backend.output_goes_on_stop = "scraped 10 pages\n", True
    await manager.stop(ALICE, "alice", "news")
    assert backend.output == ""  # the backend has nothing left to show
    assert store.log_tail("alice", "news") == "scraped 10 pages\n"
    shown = "".join([chunk async for chunk in manager.logs(ALICE, "alice", "news", False, None)])
    assert shown == "scraped 10 pages\n"


# --- the reconciler (jobs/reconcile.py) -------------------------------------------------------------

LATER = datetime.now(UTC) + timedelta(hours=1)  # every record and object is past its grace period
OLD = datetime(2026, 1, 1, tzinfo=UTC)


async def test_records_whose_work_is_gone_fail_saying_why(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    for name in ("lost", "here"):
        await manager.submit(ALICE, batch(name))
        await backend.report("alice", name, JobStatus.RUNNING)
    backend.held = {("alice", "here"): Held(OLD)}
    done = await reconcile(manager, grace_seconds=60, now=LATER)
    assert done.finished == [("alice", "lost")] and not done.stopped and not done.removed
    lost, here = store.get("alice", "lost"), store.get("alice", "here")
    assert lost is not None and (lost.status, lost.message) == (JobStatus.FAILED, GONE)
    assert here is not None and here.status is JobStatus.RUNNING


async def test_a_stopped_job_that_runs_again_is_stopped_and_work_without_a_record_is_deleted(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("zombie"))
    await backend.report("alice", "zombie", JobStatus.RUNNING)
    store.set_status("alice", "zombie", JobStatus.STOPPED)  # its stop never reached the backend
    backend.held = {("alice", "zombie"): Held(OLD), ("bob", "stray"): Held(OLD)}
    done = await reconcile(manager, grace_seconds=60, now=LATER)
    assert done.stopped == [("alice", "zombie")] and done.removed == [("bob", "stray")]
    assert backend.actions("stop") == [("alice", "zombie")]
    assert backend.actions("delete") == [("bob", "stray")]


async def test_young_and_busy_jobs_are_left_alone(manager: JobManager, backend: FakeBackend) -> None:
    await manager.submit(ALICE, batch("new"))
    backend.held = {("bob", "fresh"): Held(datetime.now(UTC))}
    assert not await reconcile(manager, grace_seconds=600)  # the record and the object are too young
    backend.held = {("bob", "fresh"): Held(OLD)}
    async with manager.working_on("alice", "new"), manager.working_on("bob", "fresh"):
        assert not await reconcile(manager, grace_seconds=60, now=LATER)
    assert not manager.busy


async def test_a_start_cut_short_is_finished_and_leftovers_of_an_ended_job_go(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("cut"))  # recorded; the service "died" before its workload
    await manager.submit(ALICE, batch("ended"))
    await backend.report("alice", "ended", JobStatus.RUNNING)
    await backend.report("alice", "ended", JobStatus.SUCCEEDED, exit_code=0)
    backend.held = {("alice", "cut"): Held(OLD, runs=False), ("alice", "ended"): Held(OLD, runs=False)}
    done = await reconcile(manager, grace_seconds=60, now=LATER)
    assert done.resumed == [("alice", "cut")] and done.removed == [("alice", "ended")]
    assert [spec.name for spec, _ in backend.submitted] == ["cut", "ended", "cut"]  # started as submitted
    assert backend.actions("delete") == [("alice", "ended")]
    assert store.get("alice", "ended").status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
