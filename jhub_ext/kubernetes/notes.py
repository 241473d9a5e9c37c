"""What the cluster says of the jobs' objects elsewhere than on them, from watches the backend may
go without: the kubelet's events of the images it is pulling for a pod (``Pulling``); the
Workloads Kueue makes for them, on clusters that run Kueue; and the cluster's nodes and every pod
(the capacity the spawn menu reads too), to tell whether a job has room on a machine now.

A watch here starts only if the cluster serves its kind and the service may read it: without
Kueue, or with the Role of an older install, the jobs run as before and their status says less.
Each change is passed on as the job object it concerns (a Job or a pod, by name), so the backend
reports that job again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from jhub_ext.core.catalog.model import Profile
from jhub_ext.core.jobs.model import ROOMY, Room
from jhub_ext.kubernetes import kueue
from jhub_ext.kubernetes.api import Json
from jhub_ext.kubernetes.capacity import room_for
from jhub_ext.kubernetes.status import Notes
from jhub_ext.kubernetes.watch import WatchCache

#: the kinds a Kueue Workload stands for in the product, and the backend's cache of each
_CACHE_OF = {"Job": "jobs", "Pod": "pods"}
#: a container's place in its pod, as an event names it: ``spec.containers{main}``
_FIELD_PATH = re.compile(r"^spec\.(?:initContainers|containers)\{(.+)\}$")


def pulls(events: Iterable[Json]) -> dict[str, dict[str, str]]:
    """The kubelet's ``Pulling`` events by pod uid: the containers each names (by their name; ``""``
    for an event that names none) and its words."""
    found: dict[str, dict[str, str]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Pod" or not involved.get("uid"):
            continue
        place = _FIELD_PATH.match(str(involved.get("fieldPath") or ""))
        found.setdefault(str(involved["uid"]), {})[place.group(1) if place else ""] = str(
            event.get("message") or ""
        )
    return found


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
        self.pulling: WatchCache | None = None
        self.nodes: WatchCache | None = None
        self.all_pods: WatchCache | None = None
        self._queued: tuple[int, dict[str, Json]] = (-1, {})
        self._pulls: tuple[int, dict[str, dict[str, str]]] = (-1, {})

    async def start(self) -> None:
        """Start the watches the cluster serves and the service may read; the others are skipped."""
        pulling = WatchCache(
            partial(client.CoreV1Api(self.api).list_namespaced_event, self.namespace),
            resource="events",
            field_selector="involvedObject.kind=Pod,reason=Pulling",
            timeout_seconds=self.timeout_seconds,
            logger=self.log,
            on_change=self._pull_changed,
        )
        if await self._started(pulling, "The pods' events"):
            self.pulling = pulling
        core = client.CoreV1Api(self.api)
        nodes = self._cache(core.list_node, "nodes")
        all_pods = self._cache(core.list_pod_for_all_namespaces, "all-pods")
        if await self._started(nodes, "The nodes") and await self._started(
            all_pods, "Every namespace's pods"
        ):
            self.nodes, self.all_pods = nodes, all_pods
        elif nodes.ready:
            await nodes.stop()
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

    def _cache(self, listing: Any, resource: str) -> WatchCache:
        return WatchCache(listing, resource=resource, timeout_seconds=self.timeout_seconds, logger=self.log)

    async def _started(self, cache: WatchCache, what: str) -> bool:
        """Start ``cache`` if one list of what it follows is answered: a kind the cluster does not
        serve (404) or the service may not read (403) is gone without, said once in the log."""
        try:
            await cache.list_method(**cache.selectors(), limit=1)
        except ApiException as e:
            if e.status == 404:
                self.log.debug("%s: not served by this cluster", what)
            elif e.status == 403:
                self.log.warning(
                    "%s cannot be read (403): jobs will say less of why they wait."
                    " Apply hub_config/k8s/rbac.yaml again to let the service read them",
                    what,
                )
            else:
                self.log.warning("%s cannot be read (%s %s): going without", what, e.status, e.reason)
            return False
        await cache.start()
        return True

    def _caches(self) -> list[WatchCache]:
        return [c for c in (self.pulling, self.workloads, self.nodes, self.all_pods) if c is not None]

    async def stop(self) -> None:
        """Stop the watches that started."""
        for cache in self._caches():
            await cache.stop()

    def health(self) -> dict[str, bool]:
        """Each watch that started, by what it follows: whether it follows it now."""
        return {cache.resource: cache.ready and cache.stale_since is None for cache in self._caches()}

    def room(self, profile: Profile) -> Room:
        """Whether a job of ``profile`` has room on a machine now (room, where the nodes and pods
        cannot be read: the scheduler holds what does not fit)."""
        if self.nodes is None or self.all_pods is None:
            return ROOMY
        return room_for(profile, self.nodes.values(), self.all_pods.values())

    def notes(self) -> Notes:
        """What the watches say now (each cache indexed once per change of it)."""
        if self.workloads is not None and self._queued[0] != self.workloads.changes:
            self._queued = (self.workloads.changes, kueue.by_owner(self.workloads.values()))
        if self.pulling is not None and self._pulls[0] != self.pulling.changes:
            self._pulls = (self.pulling.changes, pulls(self.pulling.values()))
        return Notes(queued=self._queued[1], pulling=self._pulls[1])

    def _pull_changed(self, event: str, obj: Json) -> None:
        if event == "RELISTED":
            self.on_change("", "")  # every job
            return
        involved = obj.get("involvedObject") or {}
        if involved.get("kind") == "Pod" and involved.get("name"):
            self.on_change("pods", str(involved["name"]))

    def _workload_changed(self, event: str, obj: Json) -> None:
        if event == "RELISTED":
            self.on_change("", "")  # every job
            return
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("kind") in _CACHE_OF and ref.get("name"):
                self.on_change(_CACHE_OF[ref["kind"]], str(ref["name"]))
