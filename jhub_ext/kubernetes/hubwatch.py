"""The hub's own view of the cluster: one per hub process, shared by the spawners of every server.

- watch-fed caches of nodes and pods (the menu's capacity notes, the quota count of servers);
- a probe that asks the API server every 10 s (every 2 s while it does not answer) whether it
  answers: a paused or cut-off API server breaks no watch, so only asking tells;
- the orphan reaper, which deletes server pods that no hub record knows.

It is started once, by the first spawner that needs it (the hub polls its servers when it starts,
so a restarted hub looks for orphans at once), and it lives with the hub's application (in its
settings, which every user of the hub shares), not in a class of the spawner.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubespawner.clients import shared_client

from jhub_ext.kubernetes.retry import retrying
from jhub_ext.kubernetes.watch import WatchCache

#: where the hub's application settings keep the one ClusterWatch
SETTINGS_KEY = "jhub_ext_cluster_watch"
UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"
PROBE_SECONDS = 10
PROBE_TIMEOUT = 5


def shared_api(kind: str) -> Any:
    """KubeSpawner's shared client of ``kind`` (one per event loop), retrying transient failures."""
    api = shared_client(kind)
    retrying(api.api_client)
    return api


class ClusterWatch:
    """The hub-wide caches, probe and reaper (see the module's docstring)."""

    def __init__(self, log: Any):
        self.log = log
        self.caches: dict[tuple[str, str], WatchCache] = {}  # (resource, namespace or "" for all)
        #: since when the API server has not answered the probe (None: it answers)
        self.api_down_since: float | None = None
        #: capacity notes already worked out, by catalog, profile and the caches' versions
        self.availability_memo: dict[tuple[Any, ...], tuple[str, bool]] = {}
        #: when each profile (by slug) was last seen with room for a server, for the spawn menu
        self.last_room: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def of_hub(cls, settings: Any, log: Any) -> ClusterWatch:
        """The hub's one watch, kept in its application ``settings`` (a dict every user shares)."""
        if not isinstance(settings, dict):  # a spawner made outside a hub: a watch of its own
            return cls(log)
        watch = settings.get(SETTINGS_KEY)
        if watch is None:
            watch = settings[SETTINGS_KEY] = cls(log)
        return watch

    def cache(self, resource: str, scope: str) -> WatchCache | None:
        """The cache of ``resource`` ("nodes" or "pods") for namespace ``scope`` ("": all), if started."""
        return self.caches.get((resource, "" if resource == "nodes" else scope))

    async def start(
        self, scope: str, watch_timeout: int, reap: Callable[[], Awaitable[Any]], reap_every: float
    ) -> None:
        """Start the node cache, the pod cache of ``scope`` ("": every namespace), the probe and the
        reaper (calling ``reap`` every ``reap_every`` seconds), once; later calls return at once."""
        async with self._lock:
            core = shared_api("CoreV1Api")
            wanted: dict[tuple[str, str], WatchCache] = {}
            if ("nodes", "") not in self.caches:
                wanted[("nodes", "")] = WatchCache(
                    core.list_node, resource="nodes", timeout_seconds=watch_timeout, logger=self.log
                )
            if ("pods", scope) not in self.caches:
                list_pods = (
                    core.list_pod_for_all_namespaces
                    if not scope
                    else (lambda **kw: core.list_namespaced_pod(scope, **kw))
                )
                wanted[("pods", scope)] = WatchCache(
                    list_pods,
                    resource="pods",
                    field_selector=UNFINISHED,
                    timeout_seconds=watch_timeout,
                    logger=self.log,
                )
            for key, cache in wanted.items():
                await cache.start()
                self.caches[key] = cache
            if not self._tasks:
                self._tasks = [
                    asyncio.create_task(self._probe_forever()),
                    asyncio.create_task(self._reap_forever(reap, reap_every)),
                ]

    async def answers(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """Whether the API server answers now (tried twice: one failure is not an outage); keeps
        :attr:`api_down_since` up to date."""
        try:
            try:
                await shared_api("VersionApi").get_code(_request_timeout=timeout)
            except Exception:  # once more, on a fresh connection
                await shared_api("VersionApi").get_code(_request_timeout=timeout)
        except Exception as e:
            if self.api_down_since is None:
                self.api_down_since = time.time()
                self.log.warning("The Kubernetes API server does not answer: %s", e or type(e).__name__)
            return False
        if self.api_down_since is not None:
            self.log.info("The Kubernetes API server answers again")
        self.api_down_since = None
        return True

    async def down(self, unsure: bool = False) -> bool:
        """Whether the API server does not answer now. Asked quickly (it may be back) where the probe
        found it down, or where ``unsure`` (nothing has asked it yet); else the probe's word holds."""
        if self.api_down_since is None and not unsure:
            return False
        return not await self.answers(timeout=2)

    async def _probe_forever(self) -> None:
        while True:
            await self.answers()
            await asyncio.sleep(PROBE_SECONDS if self.api_down_since is None else 2)

    async def _reap_forever(self, reap: Callable[[], Awaitable[Any]], every: float) -> None:
        while True:
            try:
                await reap()
            except Exception:
                self.log.exception("Could not look for server pods without a hub record")
            await asyncio.sleep(every)
