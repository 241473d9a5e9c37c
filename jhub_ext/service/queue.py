"""The jobs' fair queue: a job its groups' quota has no room for now waits, and starts by itself.

A submit (or restart) that would take a group past its quota is not refused: the job is recorded
*queued* (status ``pending``, reason ``queued``), reserving nothing, at the end of the queue of the
first group that is full. A job whose groups already have a queue waits behind it, even if it would
fit now, so that nobody overtakes. ``"wait": false`` keeps the immediate refusal.

The queue lives in the jobs database (``jobs.queue`` and ``jobs.queued``), so it survives restarts
of the service. :class:`JobQueue` starts queued jobs as room frees:

- first in, first out within a group: a group's first job that still does not fit holds the ones
  behind it (no smaller job slips past it);
- groups interleaved: each pass takes one job from each group's queue in turn, the group whose first
  job has waited longest first;
- never twice: a job leaves its queue only in its turn (:meth:`JobManager.working_on`), under its
  groups' quota locks, and only if it is still queued (:meth:`JobStore.leave_queue`); then it starts
  as any admitted job does, and a start cut short is finished by the reconciler.

A pass runs when a job ends or is deleted (this is an observer of the lifecycle events), every
``interval`` seconds (servers stopping in the hub free room too, and an admin may raise a quota),
and once at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from enum import Enum
from typing import TYPE_CHECKING

from jhub_ext.core.events import Event, Happened, Subject

if TYPE_CHECKING:
    from jhub_ext.service.manager import JobManager
    from jhub_ext.service.store import JobRecord

logger = logging.getLogger(__name__)

#: why a job waits behind others that came first, though it may fit now
BEHIND = "jobs submitted before it wait for room first; it starts by itself in its turn"


def room_words(short: str) -> str:
    """Why a job waits for room on a machine: what is short, and that it starts by itself."""
    return f"waiting for room in the cluster: {short}; it starts by itself as soon as a machine has room"


def waiting_words(problems: Sequence[str]) -> str:
    """Why a job waits in its queue: what its groups use beside what it needs, and that it starts
    by itself."""
    return "; ".join(problems) + "; it starts by itself as soon as there is room"


class Tried(Enum):
    """What became of a queued job that was tried."""

    STARTED = "started"  # it left the queue and was started (or ended trying: it is gone from it)
    FULL = "full"  # still no room: it stays first of its queue


def interleaved(queued: Sequence[JobRecord]) -> list[deque[JobRecord]]:
    """The queues of ``queued`` (first in first), each in its order, the queue whose first job has
    waited longest first."""
    queues: dict[str, deque[JobRecord]] = {}
    for record in queued:
        queues.setdefault(record.queue or "", deque()).append(record)
    return list(queues.values())  # dicts keep the order of first insertion: the oldest head first


class JobQueue:
    """Starts queued jobs when their groups' quotas have room (see the module's docstring)."""

    def __init__(self, manager: JobManager):
        self.manager = manager
        self._wake = asyncio.Event()
        self._one_pass = asyncio.Lock()

    async def __call__(self, event: Event) -> None:
        """A lifecycle observer: an ended or deleted job may have freed room."""
        if event.subject is Subject.JOB and event.happened in (Happened.ENDED, Happened.DELETED):
            self.wake()

    def wake(self) -> None:
        """Run a pass soon (the running :meth:`keep_dispatching` does)."""
        self._wake.set()

    async def dispatch(self) -> list[tuple[str, str]]:
        """One pass: start every queued job that has room now, in the queue's order; the jobs
        that left the queue, by (user, name)."""
        async with self._one_pass:
            started: list[tuple[str, str]] = []
            queues = interleaved(self.manager.store.queued_jobs())
            while queues:
                for queue in list(queues):
                    first = queue[0]
                    if await self.manager.start_queued(first) is Tried.FULL:
                        queues.remove(queue)  # those behind it wait for it
                        continue
                    started.append((first.user, first.name))
                    queue.popleft()
                    if not queue:
                        queues.remove(queue)
            return started

    async def keep_dispatching(self, interval: float) -> None:
        """A pass now, then whenever woken and at least every ``interval`` seconds, until
        cancelled; a failed pass is logged and tried again at the next."""
        while True:
            self._wake.clear()
            try:
                await self.dispatch()
            except Exception:
                logger.exception("Could not start queued jobs; trying again later")
            try:  # a spent budget that stops running work (the catalog's ``stop_running``)
                await self.manager.enforce_budgets()
            except Exception:
                logger.exception("Could not stop the work of spent budgets; trying again later")
            # asyncio.timeout, not wait_for: Python 3.11's wait_for may swallow a cancellation that
            # comes as its wait ends, and this loop would then never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
