"""The jobs service's first observer of lifecycle events: it keeps the store in step with what the
backend observes (a job waiting, started, restarted by its platform, ended), and keeps the end of a
finished job's output, where it outlives the job's pods or process.

What users do (submit, restart, stop, delete) is not its to record: the manager records those in
the same step as their quota reservation, then publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jhub_ext.core.events import Dropped, Event, Subject
from jhub_ext.core.jobs.backend import JobBackend
from jhub_ext.core.jobs.reasons import TOLD_BY_ITS_LOG, with_last_lines
from jhub_ext.service.store import JobStore, StatusConflict

logger = logging.getLogger(__name__)
#: how much of a job's output is kept once it ends, and how long reading it may take
KEPT_LINES = 2000
KEEP_LOG_SECONDS = 15


class Recorder:
    """Records observed changes of jobs in the store (an observer of lifecycle events)."""

    def __init__(self, store: JobStore, backend: JobBackend):
        self.store = store
        self.backend = backend

    async def __call__(self, event: Event) -> None:
        """Record what the backend observed of a job; :class:`Dropped` if the store refuses it."""
        if event.subject is not Subject.JOB or event.actor is not None or event.status is None:
            return
        try:
            self.store.set_status(
                event.user,
                event.name,
                event.status,
                exit_code=event.exit_code,
                message=event.message,
                reason=event.reason.value if event.reason else "",
                detail=event.detail.get("platform") or "",
                restarts=event.restarts,
            )
        except (StatusConflict, KeyError):
            # out of date (a scraper restarting after it was stopped: the store wins), or deleted
            raise Dropped from None
        if event.status.finished:
            tail = await self.keep_log(event.user, event.name)
            if tail and event.message and event.reason in TOLD_BY_ITS_LOG:
                told = with_last_lines(event.message, tail)
                with contextlib.suppress(StatusConflict, KeyError):  # changed or deleted meanwhile
                    self.store.set_status(
                        event.user, event.name, event.status, exit_code=event.exit_code, message=told
                    )

    async def keep_log(self, user: str, name: str) -> str:
        """Keep the end of a job's output in the store, and return it. Nothing read (the output is
        gone already, the cluster does not answer in time) keeps what was kept before."""
        try:
            async with asyncio.timeout(KEEP_LOG_SECONDS):
                tail = "".join([chunk async for chunk in self.backend.logs(user, name, tail=KEPT_LINES)])
        except Exception as e:  # the job's end is recorded whether or not its log can be read
            logger.warning("Could not keep the log of job %s of %s: %s", name, user, e)
            return ""
        if tail:
            self.store.replace_log(user, name, tail)
        return tail
