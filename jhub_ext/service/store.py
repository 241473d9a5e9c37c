"""The jobs database: history, final status, log tails and an audit trail (SQLAlchemy).

SQLite by default, PostgreSQL with a ``postgresql://`` URL. The backend (Kubernetes or
the local supervisor) is the source of truth for what runs now; this keeps what must
outlive a pod or process: who submitted what, how it ended, the end of its logs, and
who did what to it. A job is unique per (user, name), so a retried or replayed submit
cannot create a duplicate.

The schema is versioned with Alembic (``jhub_ext/service/migrations/``), as JupyterHub's own
database is: the service brings an existing database up to date when it starts, and a change to
the tables below comes with a migration.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    cast,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from jhub_ext.admission.budget import aware
from jhub_ext.core.jobs.model import JobKind, JobSpec, JobStatus, can_transition
from jhub_ext.core.jobs.reasons import STARTING, Reason, parse_reason

LOG_TAIL_BYTES = 64 * 1024


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the columns' default)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of the jobs database's tables."""

    pass


class JobRow(Base):
    """One job as stored: its spec, owner, quota groups and usage, status, and kept log tail."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("user", "name", name="uq_jobs_user_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(16))
    profile: Mapped[str | None] = mapped_column(String(63))
    image: Mapped[str | None] = mapped_column(String(512))  # the notebook's, if the job ran in it
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING.value, index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(String(32))  # a jhub_ext.core.jobs.reasons.Reason
    detail: Mapped[str | None] = mapped_column(Text)  # the platform's own words, for admins
    restarts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    log_tail: Mapped[str] = mapped_column(Text, default="")
    # while it waits in a queue (status pending, reason queued, nothing reserved): the group whose
    # quota it waits for, and since when (the queue's order)
    queue: Mapped[str | None] = mapped_column(String(255))
    queued: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # what the job gave at submit of whom to tell what (jhub_ext.core.notify.parse_job_notify)
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class UsageRow(Base):
    """One run of a server or a job in the usage ledger (``jhub_ext/service/usage.py``): whose, charged
    to which groups, on which profile at what cost per hour (as it was when the run started), from
    when to when (``ended`` None: it runs, and accrues, now)."""

    __tablename__ = "usage_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(8))  # "job" or "server"
    user: Mapped[str] = mapped_column(String(255), index=True)
    name: Mapped[str] = mapped_column(String(255))  # the job's, or the server's ("" by default)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    profile: Mapped[str | None] = mapped_column(String(63))
    cost_per_hour: Mapped[float] = mapped_column(Float, default=0.0)
    currency: Mapped[str] = mapped_column(String(16), default="")
    cpu: Mapped[float] = mapped_column(Float, default=0.0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class BudgetNoticeRow(Base):
    """The last level of a group's budget its members were told of in a month (UTC, ``2026-12``):
    each level is told once, across restarts of the service."""

    __tablename__ = "budget_notices"

    group: Mapped[str] = mapped_column(String(255), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    level: Mapped[str] = mapped_column(String(8))


class SettingsRow(Base):
    """One user's settings: whom to tell what about their jobs (``jhub_ext.core.notify``)."""

    __tablename__ = "user_settings"

    user: Mapped[str] = mapped_column(String(255), primary_key=True)
    notify: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class AuditRow(Base):
    """One entry of the audit trail: who did what to which job, and when."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    owner: Mapped[str] = mapped_column(String(255))
    job_name: Mapped[str] = mapped_column(String(63))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@dataclass(frozen=True)
class JobRecord:
    """A job as the API reports it."""

    id: int
    user: str
    name: str
    kind: JobKind
    profile: str | None
    groups: tuple[str, ...]
    usage: dict[str, Any]
    spec: dict[str, Any]
    status: JobStatus
    exit_code: int | None
    message: str | None
    restarts: int
    created: datetime
    started: datetime | None
    finished: datetime | None
    image: str | None = None
    reason: Reason | None = None
    detail: str | None = None
    queue: str | None = None  # while queued: the group whose quota it waits for
    queue_position: int | None = None  # while queued: 1 for the next to start in its queue
    notify: dict[str, Any] | None = None  # its own notification settings, given at submit

    @property
    def queued(self) -> bool:
        """Whether it waits in a queue (it reserves nothing until it leaves it)."""
        return self.queue is not None

    @classmethod
    def of(cls, row: JobRow, position: int | None = None) -> JobRecord:
        """The record of a stored row, with its times made aware (and its place in its queue)."""
        return cls(
            id=row.id,
            user=row.user,
            name=row.name,
            kind=JobKind(row.kind),
            profile=row.profile,
            groups=tuple(row.groups or ()),
            usage=dict(row.usage or {}),
            spec=dict(row.spec),
            status=JobStatus(row.status),
            exit_code=row.exit_code,
            message=row.message,
            restarts=row.restarts,
            created=aware(row.created),
            started=aware(row.started) if row.started else None,
            finished=aware(row.finished) if row.finished else None,
            image=row.image,
            reason=parse_reason(row.reason),
            detail=row.detail,
            queue=row.queue if row.queued is not None else None,
            queue_position=position if row.queued is not None else None,
            notify=dict(row.notify) if row.notify else None,
        )

    def to_json(self, admin: bool = False) -> dict[str, Any]:
        """The job as the API shows it; ``exit_code`` only once it has finished, ``detail`` (the
        platform's own words) only to an admin. A job waiting with no other reason is starting."""
        reason = self.reason
        if reason is None and self.status is JobStatus.PENDING:
            reason = Reason.STARTING
        body: dict[str, Any] = {
            "name": self.name,
            "user": self.user,
            "kind": self.kind.value,
            "profile": self.profile,
            "status": self.status.value,
            "created": self.created.isoformat(),
            "started": self.started.isoformat() if self.started else None,
            "finished": self.finished.isoformat() if self.finished else None,
            "restarts": self.restarts,
            "reason": reason.value if reason else None,
            "message": self.message or (STARTING.text if reason is Reason.STARTING else None),
            "command": self.spec.get("command"),
        }
        if self.queue is not None:
            body.update(queue=self.queue, queue_position=self.queue_position)
            body["message"] = queued_words(self.queue, self.queue_position, self.message)
        if admin:
            body["detail"] = self.detail
        if self.spec.get("schedule"):
            body["schedule"] = self.spec["schedule"]
            body["timezone"] = self.spec.get("timezone")
        if self.status.finished:
            body["exit_code"] = self.exit_code
        return body


#: the queues of jobs waiting for room on a machine are named after their profile, "machines for
#: <slug>": with a space, which no group's name has (the catalog's rule), so never a group's queue
_ROOM = "machines for "


def room_queue(profile: str) -> str:
    """The queue of the jobs of ``profile`` that wait for room on a machine."""
    return f"{_ROOM}{profile}"


def is_room_queue(queue: str | None) -> bool:
    """Whether ``queue`` is one of jobs waiting for room on a machine (else: a group's)."""
    return bool(queue and queue.startswith(_ROOM))


def queued_words(queue: str, position: int | None, why: str | None) -> str:
    """A queued job's message: its place in the queue, and why it waits (``why``, as recorded)."""
    if is_room_queue(queue):
        place = f"{ordinal(position)} in line" if position else "in line"
        place += f" for a machine of profile '{queue.removeprefix(_ROOM)}'"
    else:
        place = f"{ordinal(position)} in the queue" if position else "in the queue"
        place += f" of group '{queue}'"
    return f"{place}: {why}" if why else place


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st..."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


class JobExists(Exception):
    """A job of that name already exists for that user."""


class StatusConflict(Exception):
    """The requested status change is not allowed from the job's current status."""


class JobStore:
    """All database access of the jobs service."""

    def __init__(self, url: str = "sqlite:///jobs.sqlite", *, migrate: bool = True, **engine_kwargs: Any):
        """Open the database at ``url``; with ``migrate`` (the service), create or upgrade its schema.
        Other readers (the hub's quota count) pass ``migrate=False`` and leave the schema to the service."""
        self.engine = create_engine(url, **engine_kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        if migrate:
            with self.engine.begin() as connection:
                upgrade_schema(connection)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction, committed on leaving the block and rolled back on an error."""
        with self._sessions() as session, session.begin():
            yield session

    def close(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()

    # --- jobs --------------------------------------------------------------------------------------

    def create(
        self,
        user: str,
        spec: JobSpec,
        profile: str | None,
        *,
        groups: frozenset[str] = frozenset(),
        usage: dict[str, Any] | None = None,
        image: str | None = None,
        actor: str | None = None,
        queue: str | None = None,
        message: str | None = None,
        notify: dict[str, Any] | None = None,
    ) -> JobRecord:
        """Record a new job; raise :class:`JobExists` if ``user`` already has one of that name.

        ``groups`` and ``usage`` are what the job counts against quotas until it ends (a restart
        may reserve anew); ``image`` is the image it runs in when not its profile's default.
        With ``queue``, the job joins the end of that group's queue, waiting (``message``) and
        reserving nothing until :meth:`leave_queue`.
        """
        try:
            with self.session() as session:
                row = JobRow(
                    user=user,
                    name=spec.name,
                    kind=spec.kind.value,
                    profile=profile,
                    groups=sorted(groups),
                    usage=usage or {},
                    image=image,
                    spec=spec.to_json(),
                    status=JobStatus.PENDING.value,
                    notify=notify or None,
                )
                if queue is not None:
                    _join(row, queue, message, utcnow())
                session.add(row)
                session.flush()
                self._audit(session, actor or user, "submit", row, {"profile": profile})
                return self._record(session, row)
        except IntegrityError:
            raise JobExists(f"{user}/{spec.name}") from None

    def get(self, user: str, name: str) -> JobRecord | None:
        """``user``'s job named ``name``, or ``None`` if there is none."""
        with self.session() as session:
            row = self._row(session, user, name)
            return self._record(session, row) if row else None

    def exists(self, user: str, name: str) -> bool:
        """Whether ``user`` has a job named ``name`` (cheaper than :meth:`get`)."""
        with self.session() as session:
            query = select(JobRow.id).where(JobRow.user == user, JobRow.name == name)
            return session.scalar(query) is not None

    def list_jobs(
        self, user: str | None = None, limit: int | None = None, offset: int = 0
    ) -> list[JobRecord]:
        """Jobs of ``user`` (everyone's when None), newest first; a page of them with ``limit``."""
        with self.session() as session:
            query = select(JobRow).order_by(JobRow.id.desc())
            if user is not None:
                query = query.where(JobRow.user == user)
            if limit is not None:
                query = query.limit(limit).offset(offset)
            rows = list(session.scalars(query))
            places = self._places(session) if any(row.queued is not None for row in rows) else {}
            return [JobRecord.of(row, places.get(row.id)) for row in rows]

    # --- the queue --------------------------------------------------------------------------------

    def queued_jobs(self) -> list[JobRecord]:
        """Every queued job, first in first: by when it joined its queue."""
        with self.session() as session:
            rows = list(session.scalars(_QUEUE_ORDER))
            places = _places_of(rows)
            return [JobRecord.of(row, places[row.id]) for row in rows]

    def leave_queue(
        self, user: str, name: str, reserved: tuple[frozenset[str], dict[str, Any]]
    ) -> JobRecord | None:
        """Take a queued job out of its queue to start it, reserving ``reserved`` (its quota groups
        and usage) from now on; None, changing nothing, if it is not queued any more (stopped,
        deleted or started meanwhile): so it is never started twice."""
        with self.session() as session:
            row = self._row(session, user, name)
            if row is None or row.queued is None or row.status != JobStatus.PENDING.value:
                return None
            row.queue = row.queued = row.reason = row.message = None
            row.groups, row.usage = sorted(reserved[0]), reserved[1]
            self._audit(session, "jobs service", "dequeue", row, {})
            return JobRecord.of(row)

    def why_queued(self, user: str, name: str, message: str) -> None:
        """Say anew why a queued job still waits (what its group uses has changed)."""
        with self.session() as session:
            row = self._row(session, user, name)
            if row is not None and row.queued is not None:
                row.message = message

    def _record(self, session: Session, row: JobRow) -> JobRecord:
        return JobRecord.of(row, self._places(session).get(row.id) if row.queued is not None else None)

    @staticmethod
    def _places(session: Session) -> dict[int, int]:
        return _places_of(session.scalars(_QUEUE_ORDER))

    def states(self) -> dict[tuple[str, str], tuple[JobStatus, datetime, datetime | None]]:
        """Every job's status, when it was created and when it (last) started running, by (user,
        name): what the reconciler reads. Queued jobs are left out: nothing of theirs runs yet."""
        with self.session() as session:
            rows = session.execute(
                select(JobRow.user, JobRow.name, JobRow.status, JobRow.created, JobRow.started).where(
                    JobRow.queued.is_(None)
                )
            )
            return {
                (u, n): (JobStatus(status), aware(created), aware(started) if started else None)
                for u, n, status, created, started in rows
            }

    def users(self) -> list[str]:
        """Everyone who has a job, for the admins' filter."""
        with self.session() as session:
            return sorted(session.scalars(select(JobRow.user).distinct()))

    def count_jobs(self, user: str | None = None) -> int:
        """How many jobs are stored, all users' or only ``user``'s."""
        with self.session() as session:
            query = select(func.count()).select_from(JobRow)
            if user is not None:
                query = query.where(JobRow.user == user)
            return int(session.scalar(query) or 0)

    def set_status(
        self,
        user: str,
        name: str,
        status: JobStatus,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        reason: str | None = None,
        detail: str | None = None,
        actor: str | None = None,
        when: datetime | None = None,
        reserved: tuple[frozenset[str], dict[str, Any]] | None = None,
        restarts: int = 0,
        queue: str | None = None,
    ) -> JobRecord:
        """Move a job to ``status``; an actor's change (stop, restart) is written to the audit trail.

        ``message``, ``reason`` and ``detail``: why the job waits or ended, from now on, in words, as
        a code (:class:`~jhub_ext.core.jobs.reasons.Reason`) and in the platform's words (None keeps
        the one it has, "" clears it).
        ``reserved``: the quota groups and usage a restarted job counts from now on.
        ``restarts``: the backend's restart count (the recorded count never goes down).
        ``queue``: a job made pending joins the end of that group's queue (reserving nothing); a
        queued job leaves it by :meth:`leave_queue`, or by any other status.
        """
        when = when or utcnow()
        with self.session() as session:
            row = self._row(session, user, name)
            if row is None:
                raise KeyError(f"{user}/{name}")
            old = JobStatus(row.status)
            if not can_transition(old, status):
                raise StatusConflict(f"job '{name}' is {old.value} and cannot become {status.value}")
            _move(row, status, when, exit_code, restarts)
            if reserved is not None:
                row.groups, row.usage = sorted(reserved[0]), reserved[1]
            for column, said in (("message", message), ("reason", reason), ("detail", detail)):
                if said is not None:  # None keeps what is recorded, "" clears it
                    setattr(row, column, said or None)
            if queue is not None and status is JobStatus.PENDING:
                _join(row, queue, message, when)
            elif status is not JobStatus.PENDING:
                row.queue = row.queued = None
            if actor is not None:
                self._audit(session, actor, _ACTIONS.get(status, status.value), row, {"from": old.value})
            return self._record(session, row)

    def running(self, kind: JobKind | None = None) -> list[JobRecord]:
        """The running jobs (of ``kind``, where given: the quiet watcher reads the scrapers)."""
        with self.session() as session:
            query = select(JobRow).where(JobRow.status == JobStatus.RUNNING.value)
            if kind is not None:
                query = query.where(JobRow.kind == kind.value)
            return [JobRecord.of(row) for row in session.scalars(query)]

    def going(self) -> list[JobRecord]:
        """The jobs pending or running, but not those waiting in a queue (nothing of theirs runs)."""
        with self.session() as session:
            query = select(JobRow).where(JobRow.status.in_(_GOING), JobRow.queued.is_(None))
            return [JobRecord.of(row) for row in session.scalars(query)]

    # --- users' settings ---------------------------------------------------------------------------

    def notify_settings(self, user: str) -> dict[str, Any] | None:
        """``user``'s notification settings as saved (``jhub_ext.core.notify``), or None."""
        with self.session() as session:
            row = session.get(SettingsRow, user)
            return dict(row.notify) if row else None

    def users_with_settings(self) -> list[str]:
        """Everyone who saved notification settings."""
        with self.session() as session:
            return sorted(session.scalars(select(SettingsRow.user)))

    def budget_told(self, group: str, month: str) -> str | None:
        """The level of ``group``'s budget its members were last told of in ``month``, or None."""
        with self.session() as session:
            row = session.get(BudgetNoticeRow, (group, month))
            return row.level if row else None

    def tell_budget(self, group: str, month: str, level: str) -> None:
        """Remember that ``group``'s members were told of ``level`` in ``month``."""
        with self.session() as session:
            row = session.get(BudgetNoticeRow, (group, month))
            if row is None:
                session.add(BudgetNoticeRow(group=group, month=month, level=level))
            else:
                row.level = level

    def save_notify_settings(self, user: str, notify: dict[str, Any]) -> None:
        """Save ``user``'s notification settings, replacing what they had."""
        with self.session() as session:
            row = session.get(SettingsRow, user)
            if row is None:
                session.add(SettingsRow(user=user, notify=notify))
            else:
                row.notify = notify

    def replace_log(self, user: str, name: str, text: str) -> None:
        """Keep ``text`` (bounded) as the job's log tail."""
        with self.session() as session:
            row = self._row(session, user, name)
            if row is not None:
                row.log_tail = _tail(text)

    def append_log(self, user: str, name: str, text: str) -> None:
        """Keep the last :data:`LOG_TAIL_BYTES` of a job's output, for after its pod or process is gone."""
        with self.session() as session:
            row = self._row(session, user, name)
            if row is not None:
                row.log_tail = _tail((row.log_tail or "") + text)

    def log_tail(self, user: str, name: str) -> str | None:
        """The end of a job's output kept when it finished, or ``None``."""
        with self.session() as session:
            row = self._row(session, user, name)
            return row.log_tail if row else None

    def delete(self, user: str, name: str, actor: str) -> bool:
        """Remove a job, auditing it as ``actor``'s; ``False`` if there was no such job."""
        with self.session() as session:
            row = self._row(session, user, name)
            if row is None:
                return False
            self._audit(session, actor, "delete", row, {"status": row.status})
            session.delete(row)
            return True

    def audit(self, user: str | None = None) -> list[dict[str, Any]]:
        """The audit trail (of jobs owned by ``user``, or all), oldest first."""
        with self.session() as session:
            query = select(AuditRow).order_by(AuditRow.id)
            if user is not None:
                query = query.where(AuditRow.owner == user)
            return [
                {
                    "time": aware(a.time).isoformat(),
                    "actor": a.actor,
                    "action": a.action,
                    "user": a.owner,
                    "job": a.job_name,
                    "detail": a.detail,
                }
                for a in session.scalars(query)
            ]

    # --- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _row(session: Session, user: str, name: str) -> JobRow | None:
        return session.scalars(select(JobRow).where(JobRow.user == user, JobRow.name == name)).one_or_none()

    @staticmethod
    def _audit(session: Session, actor: str, action: str, row: JobRow, detail: dict[str, Any]) -> None:
        session.add(
            AuditRow(
                actor=actor, action=action, job_id=row.id, owner=row.user, job_name=row.name, detail=detail
            )
        )

    # --- metrics -----------------------------------------------------------------------------------

    def job_counts(self) -> dict[tuple[str, str, str | None, tuple[str, ...], str | None], int]:
        """How many jobs there are of each (status, kind, profile, quota groups, queue), where the
        queue is the group a queued job waits for (None: not queued): one grouped query, which the
        service's metrics read at each scrape."""
        groups = cast(JobRow.groups, String)  # PostgreSQL cannot group ``json`` values; their text it can
        queue = case((JobRow.queued.is_not(None), JobRow.queue))
        columns = (JobRow.status, JobRow.kind, JobRow.profile, groups, queue)
        counts: dict[tuple[str, str, str | None, tuple[str, ...], str | None], int] = {}
        with self.session() as session:
            for status, kind, profile, text, waits, n in session.execute(
                select(*columns, func.count()).group_by(*columns)
            ):
                key = (status, kind, profile, tuple(json.loads(text or "null") or ()), waits)
                counts[key] = counts.get(key, 0) + n  # one list written two ways is one key
        return counts


_ACTIONS = {JobStatus.STOPPED: "stop", JobStatus.PENDING: "restart"}
_GOING = (JobStatus.PENDING.value, JobStatus.RUNNING.value)
#: the queued jobs, first in first (a tie, within one clock tick, goes to the older record)
_QUEUE_ORDER = select(JobRow).where(JobRow.queued.is_not(None)).order_by(JobRow.queued, JobRow.id)


def _move(row: JobRow, status: JobStatus, when: datetime, exit_code: int | None, restarts: int) -> None:
    """Set a row's status, and the times, exit code and restart count that go with it."""
    if status is JobStatus.PENDING and JobStatus(row.status).finished:  # a restart
        row.restarts += 1
        row.started = row.finished = row.exit_code = None
    row.restarts = max(row.restarts, restarts)
    if status is JobStatus.RUNNING and row.started is None:
        row.started = when
    if status.finished:
        row.finished = row.finished or when
        row.exit_code = exit_code
    row.status = status.value


def _join(row: JobRow, queue: str, message: str | None, when: datetime) -> None:
    """Put a pending job at the end of ``queue``, waiting for ``message``'s reason."""
    row.queue, row.queued = queue, when
    reason = Reason.WAITING_FOR_CAPACITY if is_room_queue(queue) else Reason.QUEUED
    row.reason, row.message, row.detail = reason.value, message, None


def _places_of(rows: Iterable[JobRow]) -> dict[int, int]:
    """Each queued row's place (1 for the first) in its own queue, from rows in the queue's order."""
    counts: dict[str, int] = {}
    places = {}
    for row in rows:
        counts[row.queue or ""] = place = counts.get(row.queue or "", 0) + 1
        places[row.id] = place
    return places


#: the revision of the schema the first release created (with ``create_all``, before migrations)
BASELINE = "0001"


def migrations(connection: Connection) -> Config:
    """Alembic's configuration for the jobs database, working on ``connection``."""
    config = Config()
    config.set_main_option("script_location", "jhub_ext.service:migrations")
    config.attributes["connection"] = connection
    return config


def upgrade_schema(connection: Connection) -> None:
    """Create the schema, or bring an existing one to the newest revision. A database made before
    migrations existed (it has the tables but no ``alembic_version``) is the baseline revision."""
    config = migrations(connection)
    tables = set(inspect(connection).get_table_names())
    if "jobs" in tables and "alembic_version" not in tables:
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")


def _tail(text: str) -> str:
    data = text.encode("utf-8")
    if len(data) <= LOG_TAIL_BYTES:
        return text
    return data[-LOG_TAIL_BYTES:].decode("utf-8", errors="ignore")


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # the service and its tests read while a writer writes
    # In WAL mode, NORMAL syncs at checkpoints, not at every commit: a commit survives the service
    # being killed (the OS holds it), only a power cut may lose the last ones, and the database is
    # never corrupted. FULL's fsync per commit blocked the event loop for milliseconds each, several
    # times per submitted job.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
