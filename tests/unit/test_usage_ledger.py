"""The usage ledger over a real store: jobs' runs from their lifecycle events, servers' from the
hub's answers, and both made right after the service was away."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.jobs.errors import Invalid, NotAllowed
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore, UsageRow
from jhub_ext.service.usage import SERVER, ServerUsage, UsageQuery, settle_jobs

from .managers import ADMIN, ALICE, CATALOG, FakeBackend, FakeHub, batch

PRICED = CATALOG.replace("    default: true\n", "    default: true\n    cost_per_hour: 2.5\n", 1).replace(
    "version: 1\n", "version: 1\ncurrency: EUR\n", 1
)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> CatalogSource:
    path = tmp_path / "priced.yaml"
    path.write_text(PRICED)
    return CatalogSource(path)


@pytest.fixture
def manager(store: JobStore, backend: FakeBackend, catalog: CatalogSource) -> JobManager:
    return JobManager(store, backend, catalog, None)


def runs(store: JobStore) -> list[dict[str, Any]]:
    with store.session() as session:
        return [
            {
                "subject": r.subject,
                "user": r.user,
                "name": r.name,
                "profile": r.profile,
                "cost_per_hour": r.cost_per_hour,
                "currency": r.currency,
                "groups": r.groups,
                "open": r.ended is None,
            }
            for r in session.scalars(select(UsageRow).order_by(UsageRow.id))
        ]


async def test_a_job_is_charged_only_while_it_runs_at_the_price_it_started_with(
    manager: JobManager, store: JobStore, backend: FakeBackend, catalog: CatalogSource
) -> None:
    await manager.submit(ALICE, batch("news"))
    assert runs(store) == []  # pending: nothing runs yet
    await backend.report("alice", "news", JobStatus.RUNNING)
    (run,) = runs(store)
    assert run == {
        "subject": "job",
        "user": "alice",
        "name": "news",
        "profile": "small",
        "cost_per_hour": 2.5,
        "currency": "EUR",
        "groups": ["researchers"],
        "open": True,
    }
    Path(catalog.path).write_text(PRICED.replace("cost_per_hour: 2.5", "cost_per_hour: 9.0"))
    await backend.report("alice", "news", JobStatus.PENDING, restarts=1, message="restarting")
    await backend.report("alice", "news", JobStatus.RUNNING, restarts=1)  # a second run, at today's price
    await backend.report("alice", "news", JobStatus.SUCCEEDED, exit_code=0, restarts=1)
    assert [(r["cost_per_hour"], r["open"]) for r in runs(store)] == [(2.5, False), (9.0, False)]


async def test_runs_are_made_right_after_the_service_was_away(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    for name in ("ended", "started"):
        await manager.submit(ALICE, batch(name))
    await backend.report("alice", "ended", JobStatus.RUNNING)
    # while the service is away: "ended" ends, "started" starts (recorded by the next service's relist)
    store.set_status("alice", "ended", JobStatus.SUCCEEDED, exit_code=0, when=T0)
    store.set_status("alice", "started", JobStatus.RUNNING, when=T0 - timedelta(minutes=5))
    settle_jobs(manager.ledger, manager.job_usage, now=T0 + timedelta(hours=1))
    with store.session() as session:
        rows = {r.name: r for r in session.scalars(select(UsageRow))}
    assert rows["ended"].ended is not None and rows["ended"].ended.replace(tzinfo=UTC) >= T0 - timedelta(
        seconds=1
    )
    assert rows["started"].ended is None
    assert rows["started"].started.replace(tzinfo=UTC) == T0 - timedelta(minutes=5)
    settle_jobs(manager.ledger, manager.job_usage)  # a second time changes nothing
    assert len(runs(store)) == 2


async def test_servers_are_charged_from_the_hubs_start_time_until_seen_gone(
    manager: JobManager, store: JobStore, catalog: CatalogSource
) -> None:
    hub = FakeHub(servers=[("bob", frozenset({"researchers"}), {"profile": "small"})])
    started = "2026-12-01T08:00:00.000000Z"

    async def answer(path: str) -> Any:
        return [
            {
                "name": user,
                "groups": sorted(groups),
                "servers": {"": {"user_options": options, "started": started}},
            }
            for user, groups, options in hub.servers
        ]

    hub._get = answer  # type: ignore[method-assign]
    servers = ServerUsage(manager.ledger, hub, catalog.current)
    await servers.read(now=T0)
    await servers.read(now=T0 + timedelta(minutes=1))  # still there: one run
    (run,) = runs(store)
    assert (run["subject"], run["user"], run["name"], run["cost_per_hour"], run["open"]) == (
        SERVER, "bob", "", 2.5, True
    )  # fmt: skip
    hub.servers = []
    await servers.read(now=T0 + timedelta(hours=2))
    with store.session() as session:
        (row,) = session.scalars(select(UsageRow))
        assert row.started.replace(tzinfo=UTC) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
        assert row.ended is not None and row.ended.replace(tzinfo=UTC) == T0 + timedelta(hours=2)


def charge(
    manager: JobManager, user: str, name: str, hours: float, groups: frozenset[str] = ALICE.groups
) -> None:
    """A finished run of ``hours`` from T0, charged to ``groups``."""
    charged = manager.job_usage.charged(groups, "small")
    manager.ledger.open("job", user, name, charged, T0)
    manager.ledger.close("job", user, name, T0 + timedelta(hours=hours))


def test_each_user_sees_their_own_usage_and_their_groups_totals(manager: JobManager) -> None:
    charge(manager, "alice", "a", 2)  # 2 h x 2.5 = 5.0
    charge(manager, "bob", "b", 4)  # 10.0
    now = T0 + timedelta(days=1)
    mine = manager.usage_report(ALICE, UsageQuery(), now=now).to_json()
    assert (mine["currency"], mine["total"], mine["by"]) == ("EUR", 5.0, ["day"])
    assert mine["rows"] == [{"day": "2026-12-01", "cost": 5.0, "hours": 2.0, "runs": 1}]
    group = manager.usage_report(ALICE, UsageQuery(group="researchers", by="profile"), now=now).to_json()
    assert group["total"] == 15.0 and group["rows"] == [
        {"profile": "small", "cost": 15.0, "hours": 6.0, "runs": 2}
    ]
    for query, field in (
        (UsageQuery(user="bob"), "user"),
        (UsageQuery(user="*"), "user"),
        (UsageQuery(group="physics"), "group"),
        (UsageQuery(group="researchers", by="day,user"), "by"),
    ):
        with pytest.raises(NotAllowed) as refused:
            manager.usage_report(ALICE, query, now=now)
        assert refused.value.field == field
    everyone = manager.usage_report(ADMIN, UsageQuery(user="*", by="user"), now=now).to_json()
    assert [(r["user"], r["cost"]) for r in everyone["rows"]] == [("alice", 5.0), ("bob", 10.0)]


def test_a_usage_query_that_cannot_be_answered_names_its_parameter(manager: JobManager) -> None:
    for query, field in (
        (UsageQuery(by="week"), "by"),
        (UsageQuery(since="yesterday"), "since"),
        (UsageQuery(since="2026-12-05", until="2026-12-01"), "until"),
    ):
        with pytest.raises(Invalid) as refused:
            manager.usage_report(ALICE, query, now=T0)
        assert refused.value.field == field


def test_running_work_accrues_up_to_now_and_exports_as_csv(manager: JobManager) -> None:
    charged = manager.job_usage.charged(ALICE.groups, "small")
    manager.ledger.open("server", "alice", "", charged, T0 - timedelta(hours=1))  # across midnight? no: 08:00
    report = manager.usage_report(ALICE, UsageQuery(by="day,profile"), now=T0 + timedelta(hours=3))
    assert report.total == pytest.approx(10.0)  # 4 h so far, still running
    lines = report.to_csv().splitlines()
    assert lines[0].startswith("day,profile") and "2026-12-01,small" in lines[1]


def test_quota_shows_each_groups_budget_this_month(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    path = tmp_path / "budgeted.yaml"
    path.write_text(PRICED + "budgets:\n  researchers: {monthly: 20, warn_at: 0.5, action: refuse}\n")
    manager = JobManager(store, backend, CatalogSource(path), None)
    charge(manager, "bob", "b", 4)  # 10.0 of 20: the warning level
    (researchers,) = [g for g in asyncio.run(manager.quota(ALICE)) if g["group"] == "researchers"]
    budget = researchers["budget"]
    assert (budget["spent"], budget["limit"], budget["level"], budget["action"]) == (
        10.0,
        20,
        "warn",
        "refuse",
    )
    assert budget["message"].startswith(
        "group 'researchers' has spent 10.00 EUR of its 20 EUR budget this month"
    )
