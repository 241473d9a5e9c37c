"""Jobs' quota reservations, read from the jobs service's database: a usage source of the ledger.

The hub (for its spawn checks) and the service (for its submissions) both count jobs through this
one reader, so they count them alike. It reads only the columns it needs, with SQLAlchemy
Core, and never changes the database: the service owns the schema (``service/store.py`` and its
Alembic migrations); a test checks this reader against a database the store wrote.
"""

from __future__ import annotations

import functools
import logging

from sqlalchemy import JSON, DateTime, Engine, String, column, create_engine, select, table
from sqlalchemy.exc import SQLAlchemyError

from jhub_ext.core.catalog.model import Catalog
from jhub_ext.core.catalog.quota import Usage, Workload
from jhub_ext.core.jobs.model import JobStatus

_JOBS = table(
    "jobs",
    column("status", String),
    column("groups", JSON),
    column("usage", JSON),
    column("user", String),
    column("name", String),
    column("queued", DateTime),
)
_UNFINISHED = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
log = logging.getLogger(__name__)


class JobReservations:
    """The reservations of jobs that are pending or running (what they count until they end); a job
    waiting in a queue reserves nothing."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    @functools.cache
    def at(cls, url: str) -> JobReservations:
        """One reader per database URL for the whole process."""
        return cls(create_engine(url))

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """Pending and running jobs charged to any of ``groups``; none while the database is not there
        yet (the service creates it when it first starts)."""
        query = select(_JOBS.c.groups, _JOBS.c.usage, _JOBS.c.user, _JOBS.c.name).where(
            _JOBS.c.status.in_(_UNFINISHED), _JOBS.c.queued.is_(None)
        )
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
        except SQLAlchemyError as e:
            log.warning("Cannot count jobs for quotas from %s: %s", self.engine.url, e)
            return []
        return [
            Workload(frozenset(job_groups or ()), Usage(**usage), user, f"job '{name}'")
            for job_groups, usage, user, name in rows
            if usage and groups & set(job_groups or ())
        ]
