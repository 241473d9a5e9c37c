"""Budgets at admission, over a real store and ledger: a group that spent its month's budget has its
new jobs refused or queued as the catalog says (a refusal names the field ``budget``), never
silently started; raising the budget lets the queued ones start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.jobs.errors import NotAllowed
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore

from .managers import ALICE, BOB, FakeBackend, batch
from .test_usage_ledger import PRICED


def make(tmp_path: Path, store: JobStore, backend: FakeBackend, budget: str) -> tuple[JobManager, Path]:
    path = tmp_path / "budgeted.yaml"
    path.write_text(PRICED + f"budgets:\n  researchers: {budget}\n")
    return JobManager(store, backend, CatalogSource(path), None), path


def spend(manager: JobManager, hours: float) -> None:
    """A run of the month so far, charged to researchers, at 2.5 EUR an hour."""
    now = datetime.now(UTC)
    start = max(now - timedelta(hours=hours), now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    charged = manager.job_usage.charged(ALICE.groups, "small")
    manager.ledger.open("server", "carol", "", charged, start)
    manager.ledger.close("server", "carol", "", now)


async def test_a_spent_budget_that_refuses_refuses_new_jobs_naming_it(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    manager, _ = make(tmp_path, store, backend, "{monthly: 0.01, action: refuse}")
    assert not (await manager.submit(ALICE, batch("before"))).queued  # nothing spent yet
    spend(manager, 1)  # 2.50 EUR of 0.01 (at least 0.01 from 15 s into a month)
    with pytest.raises(NotAllowed) as refused:
        await manager.submit(ALICE, batch("after"))
    assert refused.value.field == "budget"
    assert "group 'researchers' has spent its 0.01 EUR budget for" in str(refused.value)
    assert store.get("alice", "after") is None
    assert not (await manager.submit(BOB, batch("physics"))).queued  # another group's work starts


async def test_a_spent_budget_that_queues_holds_new_jobs_until_it_is_raised(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    manager, path = make(tmp_path, store, backend, "{monthly: 0.01, action: queue}")
    spend(manager, 1)
    record = await manager.submit(ALICE, batch("held"))
    assert (record.status, record.reason, record.queue) == (JobStatus.PENDING, Reason.QUEUED, "researchers")
    assert "budget" in (record.message or "") and "renews" in (record.message or "")
    with pytest.raises(NotAllowed) as refused:  # one that may not wait is refused
        await manager.submit(ALICE, batch("impatient", wait=False))
    assert refused.value.field == "budget"
    assert await manager.queue.dispatch() == []  # still spent
    assert backend.actions("submit") == []
    path.write_text(path.read_text().replace("monthly: 0.01,", "monthly: 100,"))  # the admin raises it
    assert await manager.queue.dispatch() == [("alice", "held")]
    assert backend.actions("submit") == [("alice", "held")]


async def test_a_budget_that_warns_lets_work_start_and_shows_the_spend(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    manager, _ = make(tmp_path, store, backend, "{monthly: 0.01, warn_at: 0.5}")
    spend(manager, 1)
    assert not (await manager.submit(ALICE, batch("anyway"))).queued
    (researchers,) = [g for g in await manager.quota(ALICE) if g["group"] == "researchers"]
    assert researchers["budget"]["level"] == "over" and researchers["budget"]["action"] == "warn"


async def test_a_spent_budget_that_stops_running_work_stops_its_groups_jobs_saying_why(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    manager, _ = make(tmp_path, store, backend, "{monthly: 0.01, action: refuse, stop_running: true}")
    await manager.submit(ALICE, batch("mine"))
    await backend.report("alice", "mine", JobStatus.RUNNING)
    await manager.submit(BOB, batch("theirs"))  # physics has no budget
    assert await manager.stop_over_budget() == []  # nothing spent yet
    spend(manager, 1)
    assert await manager.stop_over_budget() == [("alice", "mine")]
    record = store.get("alice", "mine")
    assert record is not None and (record.status, record.reason) == (
        JobStatus.STOPPED,
        Reason.STOPPED_BY_ADMIN,
    )
    assert (record.message or "").startswith("stopped: group 'researchers' has spent its 0.01 EUR budget")
    assert (store.get("bob", "theirs") or record).status is JobStatus.PENDING
    assert await manager.stop_over_budget() == []  # once


async def test_members_are_told_once_at_each_level_this_month_even_across_restarts(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    manager, path = make(tmp_path, store, backend, "{monthly: 100, warn_at: 0.5, action: queue}")
    told: list[tuple[str, str, str]] = []
    manager.on_budget = lambda user, state: told.append((user, state.group, state.level.value))
    for caller in (ALICE, BOB):  # their groups are their latest job's (no hub here)
        manager.save_notify_settings(caller, None, {"notify": {"email": f"{caller.name}@example.org"}})
        await manager.submit(caller, batch("anything"))
    assert await manager.tell_budgets() == []  # nothing spent
    path.write_text(path.read_text().replace("monthly: 100,", "monthly: 0.01,"))  # now spent
    spend(manager, 1)
    assert await manager.tell_budgets() == [("alice", "researchers")]  # bob is in physics
    assert told == [("alice", "researchers", "over")]
    assert await manager.tell_budgets() == []  # told once
    again = make(tmp_path, store, backend, "{monthly: 0.01, warn_at: 0.5, action: queue}")[0]
    again.on_budget = manager.on_budget
    assert await again.tell_budgets() == []  # a restarted service remembers


def test_the_budget_message_says_what_was_spent_and_what_happens_now() -> None:
    from jhub_ext.core.catalog.model import Budget, BudgetAction
    from jhub_ext.core.notify import NotifySettings, budget_notification
    from jhub_ext.core.usage import budget_state

    now = datetime(2026, 12, 5, 10, tzinfo=UTC)
    state = budget_state("researchers", Budget(500, 0.8, BudgetAction.QUEUE), 412.5, now=now)
    told = budget_notification(
        "alice", state, NotifySettings(email="alice@example.org"), "EUR", "https://hub/services/jobs/"
    )
    assert told is not None and told.subject == "Group researchers is close to its budget for December 2026"
    assert (
        "412.50 EUR (82%) of its 500 EUR budget" in told.text
        and "https://hub/services/jobs/usage" in told.text
    )
    quiet = NotifySettings(email="alice@example.org", events=frozenset())
    assert budget_notification("alice", state, quiet, "EUR") is None
