"""A scheduled job's live runs on Kubernetes, kept within the job's ``max_live_runs``.

A CronJob whose ``concurrencyPolicy`` is ``Allow`` starts a run on every tick however many are
alive; Kubernetes has no bound for that. :class:`LiveRuns` deletes the newest runs beyond the
job's bound (carried on the CronJob in an annotation), by uid, each once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.api import Json, KubeObjects, uid_of
from jhub_ext.kubernetes.status import extra_runs, max_live_runs, owner


class LiveRuns:
    """Deletes a CronJob's runs beyond its job's bound; each extra run is deleted once."""

    def __init__(
        self,
        objects: Callable[[], KubeObjects],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
        log: logging.Logger | logging.LoggerAdapter[Any],
    ):
        self.objects, self.spawn, self.log = objects, spawn, log
        self.culling: set[str] = set()  # uids of extra runs being deleted

    def gone(self, uid: str) -> None:
        """A run was deleted (by us or anyone): forget it."""
        self.culling.discard(uid)

    def bound(self, cronjob: Json, jobs: Iterable[Json]) -> None:
        """Delete the newest runs of ``cronjob`` (among ``jobs``) beyond its job's ``max_live_runs``."""
        whose, meta = owner(cronjob), cronjob.get("metadata") or {}
        if whose is None or meta.get("name") != object_name(*whose) or meta.get("deletionTimestamp"):
            return
        if (cronjob.get("spec") or {}).get("concurrencyPolicy") != "Allow":
            return  # Forbid and Replace: Kubernetes keeps one run at most
        limit = max_live_runs(cronjob)
        for job in extra_runs(cronjob, [j for j in jobs if uid_of(j) not in self.culling], limit):
            self.culling.add(uid_of(job))
            self.spawn(self._delete(whose, job, limit))

    async def _delete(self, whose: tuple[str, str], job: Json, limit: int) -> None:
        name, uid = job["metadata"]["name"], uid_of(job)
        try:
            # Background: the run is over at once; its pods follow
            if await self.objects().delete("jobs", name, uid, "Background"):
                self.log.warning(
                    "Scheduled job %s of %s: more than %d run(s) alive; deleted the newest extra run %s",
                    whose[1],
                    whose[0],
                    limit,
                    name,
                )
        except Exception:
            self.culling.discard(uid)
            self.log.exception("Could not delete the extra run %s of job %s of %s", name, whose[1], whose[0])
