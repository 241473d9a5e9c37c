"""Budgets at admission, over a real store and ledger: a group that spent its month's budget has its
new jobs refused or queued as the catalog says (a refusal names the field ``budget``), never
silently started; raising the budget lets the queued ones start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.core.catalog.model import Kind
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.jobs.errors import NotAllowed
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore
from jhub_ext.service.usage import ServerUsage

from .managers import ALICE, BOB, FakeBackend, FakeHub, batch
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


# --- time moved by hand: the service's clock, injected --------------------------------------------


class ManualClock:
    """The service's clock in a test: it stands still until the test moves it (no sleeps)."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def to(self, moment: datetime) -> None:
        assert moment >= self.now, "time moves forward only"
        self.now = moment


#: the evening before the last day of a month: the month turns 28 hours later
EVENING = datetime(2026, 12, 30, 20, 0, tzinfo=UTC)


def clocked(
    tmp_path: Path,
    store: JobStore,
    backend: FakeBackend,
    budget: str,
    clock: ManualClock,
    hub: FakeHub | None = None,
) -> JobManager:
    """A manager on ``clock``, over a catalog where researchers have ``budget``."""
    path = tmp_path / "budgeted.yaml"
    path.write_text(PRICED + f"budgets:\n  researchers: {budget}\n")
    return JobManager(store, backend, CatalogSource(path), hub, clock=clock)


async def test_a_running_job_crosses_the_warning_then_the_budget_then_the_month_turns(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    clock = ManualClock(EVENING)
    budget = "{monthly: 10, warn_at: 0.5, action: queue, stop_running: true}"
    manager = clocked(tmp_path, store, backend, budget, clock)
    told: list[tuple[str, str, str, str]] = []
    manager.on_budget = lambda user, state: told.append(
        (user, state.group, state.level.value, state.month.strftime("%Y-%m"))
    )
    manager.save_notify_settings(ALICE, None, {"notify": {"email": "alice@example.org"}})
    await manager.submit(ALICE, batch("crawl"))
    await backend.report("alice", "crawl", JobStatus.RUNNING)  # 2.50 EUR an hour from EVENING

    def researchers() -> tuple[float, str]:
        (state,) = manager.budgets(ALICE.groups)
        return round(state.spent, 6), state.level.value

    async def budget_pass_at(moment: datetime) -> None:
        clock.to(moment)
        await manager.enforce_budgets()  # what each pass of the queue runs

    await budget_pass_at(EVENING + timedelta(hours=1))
    assert researchers() == (2.5, "ok") and told == []
    await budget_pass_at(EVENING + timedelta(hours=2))  # 5 EUR: warn_at, reached by accrual alone
    assert researchers() == (5.0, "warn")
    assert told == [("alice", "researchers", "warn", "2026-12")]
    assert store.get("alice", "crawl").status is JobStatus.RUNNING  # type: ignore[union-attr]
    await budget_pass_at(EVENING + timedelta(hours=3))
    assert len(told) == 1  # once at each level
    assert not (await manager.submit(ALICE, batch("early"))).queued  # below the budget: it starts
    await manager.stop(ALICE, "alice", "early")

    await budget_pass_at(EVENING + timedelta(hours=4))  # 10 EUR: the whole budget
    assert researchers() == (10.0, "over")
    assert told[1:] == [("alice", "researchers", "over", "2026-12")]
    stopped = store.get("alice", "crawl")
    assert stopped is not None and (stopped.status, stopped.reason) == (
        JobStatus.STOPPED,
        Reason.STOPPED_BY_ADMIN,
    )
    assert (stopped.message or "").startswith("stopped: group 'researchers' has spent its 10 EUR budget")
    held = await manager.submit(ALICE, batch("later"))  # new work waits: action queue
    assert (held.status, held.reason, held.queue) == (JobStatus.PENDING, Reason.QUEUED, "researchers")
    assert "renews on 1 January 2027" in (held.message or "")

    await budget_pass_at(EVENING + timedelta(hours=20))
    assert researchers() == (10.0, "over")  # the stopped job's run ended when it stopped
    assert backend.actions("stop") == [("alice", "early"), ("alice", "crawl")]  # stopped once
    assert len(told) == 2
    assert await manager.queue.dispatch() == []  # still spent

    await budget_pass_at(datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC))  # a new month: the budget renews
    assert researchers() == (0.0, "ok")
    assert manager.ledger.reader.verdict(manager.catalog, ALICE.groups, Kind.JOB).starts
    assert await manager.queue.dispatch() == [("alice", "later")]  # the held job starts by itself
    assert len(told) == 2 and backend.actions("submit")[-1] == ("alice", "later")


class ServersHub(FakeHub):
    """The real HubClient, answered like the hub: users with their groups and active servers (each
    (user, name) "running", "stopping", or "stuck": a stop the hub did not make), and ``DELETE`` of a
    server (202, and then it is stopping; 404 for one it does not have, or that is ``gone`` by then)."""

    def __init__(self, groups: dict[str, frozenset[str]], servers: dict[tuple[str, str], str]):
        super().__init__()
        self.groups_of, self.states = groups, servers
        self.gone: set[tuple[str, str]] = set()
        self.deleted: list[str] = []

    async def _get(self, path: str) -> Any:
        if path.startswith("/users?"):
            return [
                {
                    "name": user,
                    "groups": sorted(groups),
                    "servers": {
                        name: {
                            "user_options": {},
                            "started": "2026-12-30T20:00:00.000000Z",
                            "pending": "stop" if state == "stopping" else None,
                        }
                        for (owner, name), state in self.states.items()
                        if owner == user
                    },
                }
                for user, groups in self.groups_of.items()
            ]
        user = path.rsplit("/", 1)[1]
        return {"name": user, "groups": sorted(self.groups_of[user]), "servers": {}}

    async def _delete(self, path: str) -> int:
        self.deleted.append(path)
        _, _, user, *where = path.split("/")
        key = (user, where[1] if where[0] == "servers" else "")
        if key not in self.states or key in self.gone:
            return 404
        if self.states[key] == "running":
            self.states[key] = "stopping"
        return 202


async def test_a_spent_budget_that_stops_running_work_stops_its_groups_servers_once_telling_their_owners(
    tmp_path: Path, store: JobStore, backend: FakeBackend
) -> None:
    researchers, physics = frozenset({"researchers"}), frozenset({"physics"})
    hub = ServersHub(
        {"alice": researchers, "dave": physics, "erin": researchers, "bob": physics},
        {("alice", ""): "running", ("alice", "lab"): "running", ("dave", ""): "running",
         ("erin", ""): "running", ("bob", ""): "running"},
    )  # fmt: skip
    clock = ManualClock(EVENING)
    budget = "{monthly: 10, action: refuse, stop_running: true}"
    manager = clocked(tmp_path, store, backend, budget, clock, hub)
    told: list[tuple[str, str]] = []
    manager.on_budget = lambda user, state: told.append((user, state.level.value))
    # the ledger charges a server to its owner's groups when it first sees it: dave was in
    # researchers then (he moved to physics since), erin in physics (she joined researchers since)
    hub.groups_of.update(dave=researchers, erin=physics)
    await ServerUsage(manager.ledger, hub, manager.catalog_source.current).read()
    hub.groups_of.update(dave=physics, erin=researchers)

    assert await manager.stop_servers_over_budget() == []  # nothing spent
    assert hub.deleted == []  # the hub is not even asked
    clock.to(EVENING + timedelta(hours=2))  # 3 servers charged to researchers x 2.50 EUR x 2 h = 15 EUR
    manager.save_notify_settings(ALICE, None, {"notify": {"email": "alice@example.org"}})
    await manager.enforce_budgets()  # alice is told by the pass's notice, dave as his server stops
    assert hub.deleted == ["/users/alice/server", "/users/alice/servers/lab", "/users/dave/server"]
    assert sorted(told) == [("alice", "over"), ("dave", "over")]

    await manager.enforce_budgets()  # all three are stopping: left to the hub
    assert len(hub.deleted) == 3 and len(told) == 2
    hub.states["alice", ""] = "stuck"  # the hub's stop did not take: the same run goes on
    assert await manager.stop_servers_over_budget() == []  # asked again, not told again
    assert hub.deleted[3:] == ["/users/alice/server"] and len(told) == 2
    del hub.states["alice", "lab"]  # stopped
    hub.states["dave", ""] = "running"  # listed running, and gone by the time it is asked: a 404
    hub.gone.add(("dave", ""))
    assert await manager.stop_servers_over_budget() == []
    assert hub.deleted[4:] == ["/users/alice/server", "/users/dave/server"] and len(told) == 2
    assert not [path for path in hub.deleted if "/bob/" in path or "/erin/" in path]


async def test_the_hub_client_stops_default_and_named_servers_and_takes_a_gone_one_calmly() -> None:
    from tornado import web
    from tornado.httpclient import HTTPClientError
    from tornado.httpserver import HTTPServer
    from tornado.testing import bind_unused_port

    from jhub_ext.service.hubapi import HubClient

    answers = {"/hub/api/users/alice/server": 204, "/hub/api/users/alice/servers/my%20lab": 202}
    asked: list[tuple[str, str, str | None]] = []

    class Hub(web.RequestHandler):
        def delete(self) -> None:
            asked.append(("DELETE", self.request.path, self.request.headers.get("Authorization")))
            self.set_status(answers.get(self.request.path, 404) if "bob" not in self.request.path else 403)

    sock, port = bind_unused_port()
    server = HTTPServer(web.Application([(r"/hub/api/.*", Hub)]))
    server.add_sockets([sock])
    try:
        hub = HubClient(f"http://127.0.0.1:{port}/hub/api/", "service-token")
        assert await hub.stop_server("alice") is True  # 204: stopped
        assert await hub.stop_server("alice", "my lab") is True  # 202: stopping
        assert await hub.stop_server("carol") is False  # 404: no such server (any more)
        with pytest.raises(HTTPClientError) as refused:  # anything else is an error, for the log
            await hub.stop_server("bob")
        assert refused.value.code == 403
        assert asked[:2] == [
            ("DELETE", "/hub/api/users/alice/server", "token service-token"),
            ("DELETE", "/hub/api/users/alice/servers/my%20lab", "token service-token"),
        ]
    finally:
        server.stop()
        await server.close_all_connections()


def test_the_jobs_service_may_stop_servers_and_nothing_more() -> None:
    from jupyterhub.scopes import scope_definitions

    from jhub_ext.hub.config import JOBS_SERVICE_SCOPES

    assert set(JOBS_SERVICE_SCOPES) <= scope_definitions.keys()  # JupyterHub's own scopes
    # what the hub's DELETE .../server and .../servers/{name} need; not servers (starts them too)
    # nor admin:servers (their state too)
    assert "delete:servers" in JOBS_SERVICE_SCOPES
    assert not {"servers", "start:servers", "admin:servers", "admin:users"} & set(JOBS_SERVICE_SCOPES)
