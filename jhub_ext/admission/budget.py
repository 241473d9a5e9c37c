"""Budgets at admission: what a user's groups spent this month, read from the usage ledger in the jobs
service's database, and what their budgets (the catalog's ``budgets``) say about a new server or job.

The hub (for its spawns) and the service (for its submits and its queue) read the ledger through this
one reader (SQLAlchemy Core, the ``usage_runs`` columns only; the service owns the schema, see
``service/store.py``), and decide with :func:`jhub_ext.core.usage.budget_verdict`, so both answer
alike. Running work accrues up to the moment of the check: the reader's ``clock`` (the wall clock,
in UTC), unless a caller names the moment; the service gives its own clock (see
``JobManager.clock``), so that a test can move time instead of waiting for it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    Integer,
    String,
    column,
    create_engine,
    or_,
    select,
    table,
)
from sqlalchemy.exc import SQLAlchemyError

from jhub_ext.core.catalog.model import Catalog, Kind
from jhub_ext.core.usage import (
    BudgetState,
    BudgetVerdict,
    Run,
    budget_states,
    budget_verdict,
    month_bounds,
    month_spend,
)

log = logging.getLogger(__name__)

#: where "now" comes from: a function answering an aware datetime (in UTC)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: every :data:`Clock`'s default."""
    return datetime.now(UTC)


_RUNS = table(
    "usage_runs",
    column("subject", String),
    column("user", String),
    column("name", String),
    column("groups", JSON),
    column("profile", String),
    column("cost_per_hour", Float),
    column("cpu", Float),
    column("memory", Integer),
    column("gpus", Integer),
    column("started", DateTime),
    column("ended", DateTime),
)


class LedgerReader:
    """Reads the runs of the usage ledger; ``clock`` says when "now" is where a caller does not."""

    def __init__(self, engine: Engine, clock: Clock = utc_now):
        self.engine = engine
        self.clock = clock

    @classmethod
    @functools.cache
    def at(cls, url: str) -> LedgerReader:
        """One reader per database URL for the whole process."""
        return cls(create_engine(url))

    def runs(
        self, *, since: datetime, until: datetime, user: str | None = None, profile: str | None = None
    ) -> list[Run]:
        """The runs that had time inside [``since``, ``until``), of ``user`` and on ``profile`` where
        given, in the order they started; none while the database is not there yet."""
        query = select(_RUNS).where(
            _RUNS.c.started < until, or_(_RUNS.c.ended.is_(None), _RUNS.c.ended > since)
        )
        if user is not None:
            query = query.where(_RUNS.c.user == user)
        if profile is not None:
            query = query.where(_RUNS.c.profile == profile)
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query.order_by(_RUNS.c.started)).mappings().all()
        except SQLAlchemyError as e:
            log.warning("Cannot read the usage ledger from %s: %s", self.engine.url, e)
            return []
        return [
            Run(
                subject=row["subject"],
                user=row["user"],
                name=row["name"],
                groups=frozenset(row["groups"] or ()),
                profile=row["profile"],
                cost_per_hour=row["cost_per_hour"] or 0.0,
                started=aware(row["started"]),
                ended=aware(row["ended"]) if row["ended"] else None,
                cpu=row["cpu"] or 0.0,
                memory=row["memory"] or 0,
                gpus=row["gpus"] or 0,
            )
            for row in rows
        ]

    def month_spend(self, groups: Iterable[str], now: datetime | None = None) -> dict[str, float]:
        """What each of ``groups`` spent this month (UTC), up to ``now``."""
        now = now or self.clock()
        start, _ = month_bounds(now)
        return month_spend(self.runs(since=start, until=now), groups, now=now)

    def states(
        self, catalog: Catalog, groups: frozenset[str], now: datetime | None = None
    ) -> tuple[BudgetState, ...]:
        """Where each of ``groups`` with a budget stands this month (none read without one)."""
        now = now or self.clock()
        budgeted = groups & catalog.budgets.keys()
        if not budgeted:
            return ()
        return budget_states(catalog, budgeted, self.month_spend(budgeted, now), now=now)

    def verdict(
        self, catalog: Catalog, groups: frozenset[str], kind: Kind, now: datetime | None = None
    ) -> BudgetVerdict:
        """What the budgets of a member of ``groups`` say about new work of ``kind`` now."""
        return budget_verdict(self.states(catalog, groups, now), kind)


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; the ledger's are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
