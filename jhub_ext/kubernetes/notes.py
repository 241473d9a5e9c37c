"""What the cluster says of the jobs' objects elsewhere than on them, from watches the backend may
go without: the Workloads Kueue makes for them, on clusters that run Kueue.

A watch here starts only if the cluster serves its kind and the service may read it: without
Kueue, or with the Role of an older install, the jobs run as before and their status says less.
Each change is passed on as the job object it concerns (a Job or a pod, by name), so the backend
reports that job again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from jhub_ext.kubernetes import kueue
from jhub_ext.kubernetes.api import Json
from jhub_ext.kubernetes.status import Notes
from jhub_ext.kubernetes.watch import WatchCache

#: the kinds a Kueue Workload stands for in the product, and the backend's cache of each
_CACHE_OF = {"Job": "jobs", "Pod": "pods"}


class SideWatches:
    """The optional watches of a namespace, and the :class:`Notes` they give the jobs' status."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        *,
        timeout_seconds: int,
        log: logging.Logger,
        on_change: Callable[[str, str], None],
    ):
        self.api, self.namespace, self.timeout_seconds, self.log = api, namespace, timeout_seconds, log
        self.on_change = on_change  # (the backend's cache, object name) of a job object concerned
        self.workloads: WatchCache | None = None
        self._queued: tuple[int, dict[str, Json]] = (-1, {})

    async def start(self) -> None:
        """Start the watches the cluster serves and the service may read; the others are skipped."""
        custom = client.CustomObjectsApi(self.api)
        for version in kueue.VERSIONS:
            listing = partial(
                custom.list_namespaced_custom_object, kueue.GROUP, version, self.namespace, "workloads"
            )
            cache = WatchCache(
                listing,
                resource="workloads",
                timeout_seconds=self.timeout_seconds,
                logger=self.log,
                on_change=self._workload_changed,
            )
            if await self._started(cache, f"Kueue's Workloads ({kueue.GROUP}/{version})"):
                self.workloads = cache
                return

    async def _started(self, cache: WatchCache, what: str) -> bool:
        try:
            await cache.start()
            return True
        except ApiException as e:
            await cache.stop()
            if e.status == 404:
                self.log.debug("%s: not served by this cluster", what)
            elif e.status == 403:
                self.log.warning(
                    "%s cannot be read (403): jobs held by the cluster's queue will not say why."
                    " Apply hub_config/k8s/rbac.yaml again to let the service read them",
                    what,
                )
            else:
                self.log.warning("%s cannot be read (%s %s): going without", what, e.status, e.reason)
            return False

    async def stop(self) -> None:
        """Stop the watches that started."""
        if self.workloads is not None:
            await self.workloads.stop()

    def health(self) -> dict[str, bool]:
        """Each watch that started: whether it follows its objects now."""
        if self.workloads is None:
            return {}
        return {"workloads": self.workloads.ready and self.workloads.stale_since is None}

    def notes(self) -> Notes:
        """What the watches say now (the Workloads indexed once per change of their cache)."""
        if self.workloads is None:
            return Notes()
        if self._queued[0] != self.workloads.changes:
            self._queued = (self.workloads.changes, kueue.by_owner(self.workloads.values()))
        return Notes(queued=self._queued[1])

    def _workload_changed(self, event: str, obj: Json) -> None:
        if event == "RELISTED":
            self.on_change("", "")  # every job
            return
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") in _CACHE_OF and ref.get("name"):
                self.on_change(_CACHE_OF[ref["kind"]], str(ref["name"]))
