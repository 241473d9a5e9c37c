"""The usage ledger: every server and job run, whose, charged to which groups, on which profile, at
what cost per hour, from when to when; kept in the jobs database (``usage_runs``).

- **Jobs** are an observer of the lifecycle events (:mod:`jhub_ext.core.events`): a job that starts
  running opens a run; one that stops running (it ended, waits to run again, or was deleted) closes
  it. Only time spent running is charged: waiting for room or in the queue costs nothing.
- **Servers** run in the hub, another process: :class:`ServerUsage` reads the hub's active servers
  every ``interval`` seconds, opens a run from the hub's own start time for each new one, and closes
  the run of a server no longer there when it first sees it gone.
- **Restarts** of the hub or the service lose nothing: at start-up, :func:`settle_jobs` closes the
  runs of jobs that ended meanwhile (at their recorded end) and opens those of jobs that started (at
  their recorded start); the first read of the hub does the same for servers.

A run's cost per hour and currency are the catalog's when it started: a later edit of the catalog
changes only later runs. A run still going accrues up to the moment it is read: the book's
``clock`` (the service's one source of "now"; see ``JobManager.clock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from jhub_ext.admission.budget import Clock, LedgerReader, aware, utc_now
from jhub_ext.core.catalog.model import Catalog, Kind, Profile
from jhub_ext.core.catalog.selection import SelectionError, resolve_selection
from jhub_ext.core.events import Event, Happened, Subject
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.usage import (
    By,
    Run,
    SpendRow,
    UsageQueryError,
    month_bounds,
    parse_by,
    parse_moment,
    spend,
    total_cost,
    usage_csv,
)
from jhub_ext.service.hubapi import HubClient
from jhub_ext.service.store import JobStore, UsageRow

logger = logging.getLogger(__name__)

JOB, SERVER = "job", "server"


@dataclass(frozen=True)
class Started:
    """What a run is charged, fixed when it starts."""

    groups: frozenset[str]
    profile: Profile | None
    currency: str


class UsageBook:
    """The ledger's runs in the jobs database: opened and closed, never changed otherwise. ``clock``:
    when "now" is, for everything that reads or writes the ledger without naming a moment."""

    def __init__(self, store: JobStore, clock: Clock = utc_now):
        self.store = store
        self.clock = clock
        # the reader the hub's budget checks use too, on the same clock
        self.reader = LedgerReader(store.engine, clock)

    def open(self, subject: str, user: str, name: str, charged: Started, at: datetime) -> bool:
        """Open a run of ``user``'s ``name`` from ``at``, unless one is open already; whether one was."""
        resources = charged.profile.resources if charged.profile else None
        with self.store.session() as session:
            if self._open_row(session, subject, user, name) is not None:
                return False
            session.add(
                UsageRow(
                    subject=subject,
                    user=user,
                    name=name,
                    groups=sorted(charged.groups),
                    profile=charged.profile.slug if charged.profile else None,
                    cost_per_hour=charged.profile.cost_per_hour if charged.profile else 0.0,
                    currency=charged.currency,
                    cpu=resources.cpu if resources else 0.0,
                    memory=resources.memory if resources else 0,
                    gpus=resources.gpu_count if resources else 0,
                    started=at,
                )
            )
            return True

    def close(self, subject: str, user: str, name: str, at: datetime) -> bool:
        """Close the open run of ``user``'s ``name`` at ``at`` (not before it started); whether one was."""
        with self.store.session() as session:
            row = self._open_row(session, subject, user, name)
            if row is None:
                return False
            row.ended = max(at, aware(row.started))
            return True

    def runs(
        self,
        *,
        since: datetime,
        until: datetime,
        user: str | None = None,
        group: str | None = None,
        profile: str | None = None,
    ) -> list[Run]:
        """The runs that had time inside [``since``, ``until``), of ``user``, charged to ``group``, on
        ``profile`` (each where given)."""
        runs = self.reader.runs(since=since, until=until, user=user, profile=profile)
        return [run for run in runs if group is None or group in run.groups]

    def open_runs(self, subject: str) -> set[tuple[str, str]]:
        """(user, name) of every open run of ``subject``."""
        with self.store.session() as session:
            query = select(UsageRow.user, UsageRow.name).where(
                UsageRow.subject == subject, UsageRow.ended.is_(None)
            )
            return {(user, name) for user, name in session.execute(query)}

    def open_groups(self, subject: str) -> dict[tuple[str, str], frozenset[str]]:
        """The groups each open run of ``subject`` is charged to, by (user, name)."""
        with self.store.session() as session:
            query = select(UsageRow.user, UsageRow.name, UsageRow.groups).where(
                UsageRow.subject == subject, UsageRow.ended.is_(None)
            )
            return {(user, name): frozenset(groups or ()) for user, name, groups in session.execute(query)}

    @staticmethod
    def _open_row(session: Any, subject: str, user: str, name: str) -> UsageRow | None:
        query = select(UsageRow).where(
            UsageRow.subject == subject,
            UsageRow.user == user,
            UsageRow.name == name,
            UsageRow.ended.is_(None),
        )
        return session.scalars(query.order_by(UsageRow.id.desc())).first()  # type: ignore[no-any-return]


@dataclass(frozen=True)
class UsageQuery:
    """What ``GET usage`` asks: whose (``user``, ``*`` for everyone), which group's and profile's,
    when (``since``, ``until``: dates or times) and totalled by what (``by``: day, user, profile, group)."""

    user: str | None = None
    group: str | None = None
    profile: str | None = None
    since: str | None = None
    until: str | None = None
    by: str | None = None


@dataclass(frozen=True)
class UsageReport:
    """The answer to a usage query: rows of cost, hours and runs by the ``by`` asked for."""

    currency: str
    since: datetime
    until: datetime
    by: tuple[By, ...]
    rows: list[SpendRow]
    total: float

    def to_json(self) -> dict[str, Any]:
        """The report as ``GET usage`` answers it."""
        return {
            "currency": self.currency,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "by": [dimension.value for dimension in self.by],
            "total": round(self.total, 6),
            "rows": [row.to_json() for row in self.rows],
        }

    def to_csv(self) -> str:
        """The report's rows as CSV, for a spreadsheet."""
        return usage_csv(self.rows, by=self.by, currency=self.currency)


def usage_report(
    book: UsageBook, currency: str, query: UsageQuery, *, owner: str | None, now: datetime | None = None
) -> UsageReport:
    """Answer ``query`` from the runs of ``owner`` (everyone's for None): this month by day, unless
    it says otherwise; :class:`UsageQueryError` naming the parameter at fault."""
    now = now or book.clock()
    by = parse_by(query.by or "day")
    since = parse_moment(query.since, "since") if query.since else month_bounds(now)[0]
    until = parse_moment(query.until, "until", end_of_day=True) if query.until else now
    if until <= since:
        raise UsageQueryError(
            "until", "until must come after since, such as since=2026-12-01&until=2026-12-31"
        )
    runs = book.runs(since=since, until=until, user=owner, group=query.group, profile=query.profile)
    rows = spend(runs, now=now, since=since, until=until, by=by)
    total = total_cost(runs, now=now, since=since, until=until)
    return UsageReport(currency, since, min(until, now), by, rows, total)


#: what a job's lifecycle event means for its run: it runs from now, or no longer
_RUNNING = (Happened.STARTED, Happened.RESTARTED)
_NOT_RUNNING = (Happened.WAITING, Happened.ENDED, Happened.DELETED)


class JobUsage:
    """Opens and closes jobs' runs as their lifecycle events say (an observer; see the module), at
    each event's time (the service's clock's, stamped by the manager)."""

    def __init__(self, book: UsageBook, catalog: Callable[[], Catalog]):
        self.book = book
        self.catalog = catalog

    async def __call__(self, event: Event) -> None:
        """Open or close the run of the job ``event`` is about."""
        if event.subject is not Subject.JOB:
            return
        if event.happened in _RUNNING and event.status is JobStatus.RUNNING:
            self.book.open(JOB, event.user, event.name, self.charged(event.groups, event.profile), event.at)
        elif event.happened in _NOT_RUNNING:
            self.book.close(JOB, event.user, event.name, event.at)

    def charged(self, groups: frozenset[str], slug: str | None) -> Started:
        """What a run of profile ``slug`` by a member of ``groups`` is charged now."""
        catalog = self.catalog()
        return Started(groups, catalog.profile(slug) if slug else None, catalog.currency)


def settle_jobs(book: UsageBook, usage: JobUsage, now: datetime | None = None) -> None:
    """Make the jobs' runs agree with their records after the service was away: a job no longer
    running has its run closed (at its recorded end, else now); a running job without an open run
    gets one (from its recorded start, or now if it had a run since)."""
    now = now or book.clock()
    store = book.store
    running = {(r.user, r.name): r for r in store.running()}
    for user, name in book.open_runs(JOB) - running.keys():
        record = store.get(user, name)
        book.close(JOB, user, name, (record.finished if record and record.finished else None) or now)
    for (user, name), record in running.items():
        started = record.started or now
        book.open(JOB, user, name, usage.charged(frozenset(record.groups), record.profile), started)


class ServerUsage:
    """Keeps the servers' runs from the hub's active servers, read every ``interval`` seconds."""

    def __init__(
        self,
        book: UsageBook,
        hub: HubClient,
        catalog: Callable[[], Catalog],
        interval: float = 30.0,
    ):
        self.book = book
        self.hub = hub
        self.catalog = catalog
        self.interval = interval

    async def read(self, now: datetime | None = None) -> None:
        """One reading: open the runs of servers that appeared, close those of servers gone. A run is
        charged to its owner's groups when it is first seen (what ``stop_running`` goes by too)."""
        now = now or self.book.clock()
        catalog = self.catalog()
        active = await self.hub.active_servers()
        seen = set()
        for server in active:
            seen.add((server.user, server.name))
            profile = _profile_of(catalog, server.options, server.groups)
            charged = Started(server.groups, profile, catalog.currency)
            self.book.open(SERVER, server.user, server.name, charged, server.started or now)
        for user, name in self.book.open_runs(SERVER) - seen:
            self.book.close(SERVER, user, name, now)

    async def keep_reading(self) -> None:
        """Read now and then every ``interval`` seconds, until cancelled; a failed reading (the hub
        not answering) is logged and tried again at the next."""
        while True:
            try:
                await self.read()
            except Exception as e:
                logger.warning("Could not read the hub's servers for the usage ledger: %s", e)
            await asyncio.sleep(self.interval)


def _profile_of(catalog: Catalog, options: dict[str, Any], groups: frozenset[str]) -> Profile | None:
    """The profile a server's options chose (the default for none), or None if they no longer resolve."""
    with contextlib.suppress(SelectionError):
        return resolve_selection(catalog, options, groups, Kind.SERVER).profile
    return None
