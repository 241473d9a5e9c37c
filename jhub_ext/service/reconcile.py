"""Keeping the jobs store and the backend in agreement, on start-up and then every so often.

The store says which jobs exist and how they ended; the backend (the cluster, or the job
directories) says what is there. They can disagree after a crash of the service, a lost cluster
state, a delete that failed half-way or someone deleting objects by hand. :func:`reconcile` makes
them agree again, leaving alone the jobs an action is under way for, and anything younger than
a grace period (a submit's record and its objects are made one after the other):

- a job recorded but never started whose workload is missing (the service died between the two)
  is started, as submitted;
- a pending or running job whose work is gone ends ``failed``, saying so, and its leftovers go;
- a stopped job whose work runs again (re-adopted after a stop that did not finish) is stopped;
- a finished job's leftovers (code without a workload: a stop cut short) are deleted;
- work that no job record knows (left by a submit or a delete that died half-way) is deleted.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jhub_ext.core.jobs.backend import Held
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.service.manager import JobManager

logger = logging.getLogger(__name__)
Key = tuple[str, str]
GONE = (
    "failed: its workload disappeared while the jobs service was not looking (deleted by hand, or "
    "lost with the cluster); restart it to run it again"
)


@dataclass
class Reconciled:
    """What one pass changed, by job."""

    finished: list[Key] = field(default_factory=list)  # records whose work was gone: now failed
    stopped: list[Key] = field(default_factory=list)  # stopped records whose work ran: stopped again
    removed: list[Key] = field(default_factory=list)  # work no record knew, or leftovers: deleted
    resumed: list[Key] = field(default_factory=list)  # starts cut short: finished

    def __bool__(self) -> bool:
        return bool(self.finished or self.stopped or self.removed or self.resumed)


async def reconcile(manager: JobManager, grace_seconds: float, now: datetime | None = None) -> Reconciled:
    """One pass: make the store and the backend agree (see the module's docstring).

    Each correction is made in the job's turn (:mod:`jhub_ext.core.jobs.oneatatime`), and only if
    the job's record is still as this pass read it: a job an operation holds or waits for, or
    changed meanwhile, is left to the next pass."""
    now = now or datetime.now(UTC)
    held = await manager.backend.inventory()
    records = manager.store.states()
    done = Reconciled()

    def settled(key: Key, since: datetime) -> bool:
        return key not in manager.busy and (now - since).total_seconds() >= grace_seconds

    for key, state in records.items():
        status, created, started = state
        if not settled(key, created):
            continue
        async with manager.busy.turn_if_free(key) as free:
            record = manager.store.get(*key) if free else None
            if record is not None and (record.status, record.created, record.started) == state:
                await _correct(manager, key, status, started, held.get(key), done=done)
    for key, holding in held.items():
        if key not in records and settled(key, holding.created):
            async with manager.busy.turn_if_free(key) as free:
                if free and manager.store.get(*key) is None:  # not submitted meanwhile
                    await manager.backend.delete(*key)
                    done.removed.append(key)
    if done:
        logger.warning("Reconciled the jobs store with the backend: %s", done)
    return done


async def _correct(
    manager: JobManager,
    key: Key,
    status: JobStatus,
    started: datetime | None,
    holding: Held | None,
    *,
    done: Reconciled,
) -> None:
    """Make one recorded job and what the backend holds of it agree (in the job's turn)."""
    runs = holding is not None and holding.runs
    observed = manager.backend.observed(*key)
    if not status.finished and not runs:
        if status is JobStatus.PENDING and started is None:  # its start was cut short
            await manager.resume(*key)
            done.resumed.append(key)
            return
        manager.store.set_status(*key, JobStatus.FAILED, message=GONE, reason=Reason.FAILED.value, detail="")
        done.finished.append(key)
        if holding is not None:  # its code, left behind
            await manager.backend.delete(*key)
    elif status is JobStatus.STOPPED and observed is not None and not observed.status.finished:
        await manager.backend.stop(*key)
        done.stopped.append(key)
    elif status.finished and holding is not None and (not runs or observed is None):
        # a stop or an end cut short, or processes of a job the backend does not supervise
        await manager.backend.delete(*key)
        done.removed.append(key)


async def keep_reconciling(manager: JobManager, interval_seconds: float, grace_seconds: float) -> None:
    """Reconcile now and then every ``interval_seconds``, until cancelled; a failed pass (the cluster
    not answering) is logged and tried again at the next."""
    while True:
        try:
            await reconcile(manager, grace_seconds)
        except Exception:
            logger.exception("Could not reconcile the jobs store with the backend; trying again later")
        await asyncio.sleep(interval_seconds)
