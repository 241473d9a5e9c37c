"""Lifecycle events of jobs and servers, and the one seam observers subscribe to.

What happens to a job or a server (submitted, waiting and why, started, restarted, ended and why,
deleted) is published as an :class:`Event` to the observers of an :class:`Events`, in the order they
were registered. The jobs service registers its own first, the recorder that keeps the store in
step with what the backend observes; admins add theirs with ``c.JobsService.event_observers``
(jobs) and ``c.ProfileKubeSpawner.event_observers`` or ``c.LocalProfileSpawner.event_observers``
(servers). Notifications, metrics and a usage ledger are observers like any other.

An observer is a callable taking the event, plain or async. One that fails is logged and skipped:
it never stops the others, nor the action that published. Only an observer that raises
:class:`Dropped` ends an event there (the recorder does, for an observation the store refuses as
out of date, so that no later observer hears of a change that did not happen).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from traitlets.utils.importstring import import_item

from jhub_ext.core.jobs.model import JobStatus, Observed
from jhub_ext.core.jobs.reasons import Reason

logger = logging.getLogger(__name__)


class Subject(StrEnum):
    """What an event is about."""

    JOB = "job"
    SERVER = "server"


class Happened(StrEnum):
    """What happened to it."""

    SUBMITTED = "submitted"  # admitted and recorded; its work is being started
    WAITING = "waiting"  # not running (yet, or again), with why in ``message``
    STARTED = "started"  # running
    RESTARTED = "restarted"  # started again: by its owner, or by its platform after a failure
    ENDED = "ended"  # finished (succeeded, failed, stopped), with why in ``message``
    DELETED = "deleted"  # gone, with its record


@dataclass(frozen=True)
class Event:
    """One thing that happened to a job or a server.

    ``actor`` names who made it happen (a user or an admin); None means it was observed (the
    backend or the platform saw it). ``status``, ``exit_code`` and ``reason`` (why it waits or
    ended, see :mod:`jhub_ext.core.jobs.reasons`) are a job's after the event; ``detail`` may say
    more, such as the platform's own words (``"platform"``), for admins.
    """

    subject: Subject
    happened: Happened
    user: str
    name: str  # the job's name, or the server's ("" for a user's default server)
    status: JobStatus | None = None
    message: str | None = None
    reason: Reason | None = None
    exit_code: int | None = None
    restarts: int = 0
    kind: str | None = None  # a job's kind
    profile: str | None = None
    groups: frozenset[str] = frozenset()
    actor: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: a job's status as recorded before the event, where known (a finished job observed again
    #: after a restart of the service ends with the status it had: nothing new to tell anyone)
    previous: JobStatus | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


Observer = Callable[[Event], Awaitable[None] | None]


class Dropped(Exception):
    """Raised by an observer to end an event there: it did not happen after all."""


class Events:
    """Observers of lifecycle events, called in the order they were registered."""

    def __init__(self, observers: Iterable[Observer] = ()):
        self.observers: list[Observer] = list(observers)

    def subscribe(self, observer: Observer) -> None:
        """Call ``observer`` with every event published from now on (after the ones before it)."""
        self.observers.append(observer)

    async def publish(self, event: Event) -> bool:
        """Tell every observer about ``event``; False if one dropped it (see :class:`Dropped`)."""
        for observer in self.observers:
            try:
                result = observer(event)
                if inspect.isawaitable(result):
                    await result
            except Dropped:
                return False
            except Exception:
                logger.exception(
                    "The observer %r failed on %s %s of %s",
                    observer,
                    event.subject,
                    event.happened,
                    event.user,
                )
        return True


def resolve_observers(items: Iterable[Any], setting: str) -> list[Observer]:
    """The observers a setting names: callables, or import strings of callables (a class is made
    with no arguments). One that cannot be used is logged, naming the setting and the fix, and left
    out: a typo in an observer never stops a hub or a service."""
    observers: list[Observer] = []
    for item in items:
        try:
            found = import_item(item) if isinstance(item, str) else item
            observer = found() if isinstance(found, type) else found
            if not callable(observer):
                raise TypeError(f"{type(observer).__name__} is not callable")
        except Exception as e:
            logger.error(
                "%s: %r cannot observe events (%s), so it is left out; name a function or a class taking "
                "one event, e.g. %s = ['mysite.events.notify']",
                setting,
                item,
                e,
                setting,
            )
            continue
        observers.append(observer)
    return observers


def observed_job_event(
    user: str,
    name: str,
    observed: Observed,
    *,
    recorded: JobStatus,
    recorded_message: str | None,
    recorded_restarts: int,
    recorded_reason: Reason | None = None,
) -> Event | None:
    """What a backend's observation of a job means, given the job's record: None if nothing new."""
    if (
        observed.status is recorded
        and not observed.status.finished  # (a finished job is told again: its log may have changed)
        and observed.message in (None, recorded_message or "")
        and observed.reason in (None, recorded_reason)
        and observed.restarts <= recorded_restarts
    ):
        return None  # nothing new (every submit reports its job pending, as it was recorded)
    if observed.status is JobStatus.PENDING:
        happened = Happened.WAITING
    elif observed.status.finished:
        happened = Happened.ENDED
    elif observed.restarts > recorded_restarts and recorded is JobStatus.RUNNING:
        happened = Happened.RESTARTED
    else:
        happened = Happened.STARTED
    # a reason holds while the status it explains does: a job now running is no longer "waiting
    # for room", but a running scraper keeps saying why it moved
    if observed.status is JobStatus.PENDING and recorded is JobStatus.PENDING:
        message = observed.message
    else:
        message = observed.message if observed.message or observed.status is recorded else ""
    reason = observed.reason or (recorded_reason if observed.status is recorded else None)
    return Event(
        Subject.JOB,
        happened,
        user,
        name,
        status=observed.status,
        message=message,
        reason=reason,
        exit_code=observed.exit_code,
        restarts=observed.restarts,
        detail=MappingProxyType({"platform": observed.detail} if observed.detail else {}),
        previous=recorded,
    )
