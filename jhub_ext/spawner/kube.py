"""ProfileKubeSpawner: the profile menu for servers that run as Kubernetes pods.

A KubeSpawner subclass riding on its public hooks: ``profile_list`` is a callable built
from the live catalog (filtered by the user's groups, last choice as the default), and
KubeSpawner applies the chosen entry's overrides as usual. On top of that it shows live
capacity in the menu from watch-fed caches of nodes and pods (no API call per page view),
enforces group quotas by counting the group's pods, and runs every pod under the
"restricted" Pod Security Standard with no service-account token.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from kubespawner import KubeSpawner
from kubespawner.clients import shared_client
from traitlets import Bool, Integer, default

from ..catalog import Catalog, Kind
from ..catalog.quota import Workload
from ..catalog.selection import Selection, preselect
from ..k8s.capacity import availability, pod_workload
from ..k8s.pods import RESTRICTED_CONTAINER_SECURITY_CONTEXT, RESTRICTED_POD_SECURITY_CONTEXT
from ..runtime.watch import WatchCache
from .kubeprofiles import kubespawner_profile
from .profiles import ProfileMenuMixin

UNFINISHED = "status.phase!=Succeeded,status.phase!=Failed"


class ProfileKubeSpawner(ProfileMenuMixin, KubeSpawner):
    """Spawn pods with the resources of a catalog profile, showing live capacity in the menu."""

    capacity_all_namespaces = Bool(
        True,
        config=True,
        help="""
        Count pods in every namespace when computing free capacity (needs read access to
        pods cluster-wide). When False, only pods in the spawner's namespace are counted,
        which over-states what is free on nodes shared with other workloads.

        Example::

            c.ProfileKubeSpawner.capacity_all_namespaces = False
        """,
    )

    watch_timeout_seconds = Integer(
        300,
        config=True,
        help="""
        How long one watch request of the capacity and quota caches lasts before it is renewed.

        Example::

            c.ProfileKubeSpawner.watch_timeout_seconds = 300
        """,
    )

    # One cache per kind and scope for the whole hub, as KubeSpawner does with its reflectors.
    caches: ClassVar[dict[tuple[str, str], WatchCache]] = {}
    _caches_lock: ClassVar[asyncio.Lock | None] = None
    _availability_memo: ClassVar[dict[tuple[Any, ...], str]] = {}

    # --- least privilege by default ----------------------------------------------------------------

    @default("uid")
    def _default_uid(self) -> int:
        return 1000

    @default("gid")
    def _default_gid(self) -> int:
        return 100

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return 100

    @default("allow_privilege_escalation")
    def _default_allow_privilege_escalation(self) -> bool:
        return False

    @default("container_security_context")
    def _default_container_security_context(self) -> dict[str, Any]:
        return dict(RESTRICTED_CONTAINER_SECURITY_CONTEXT)

    @default("pod_security_context")
    def _default_pod_security_context(self) -> dict[str, Any]:
        return dict(RESTRICTED_POD_SECURITY_CONTEXT)

    @default("automount_service_account_token")
    def _default_automount_service_account_token(self) -> bool:
        return False

    # --- the catalog as KubeSpawner's profile_list ---------------------------------------------------

    @default("profile_list")
    def _default_profile_list(self) -> Any:
        return ProfileKubeSpawner.catalog_profile_list

    def catalog_profile_list(self) -> list[dict[str, Any]]:
        """KubeSpawner ``profile_list`` for this user, from the live catalog."""
        catalog = self.catalog
        groups = self.user_groups
        selected = preselect(catalog, self.user_options, groups, Kind.SERVER)
        default_slug = selected.profile.slug if selected else None
        return [
            kubespawner_profile(p, self.user.name, groups, default=p.slug == default_slug)
            for p in catalog.visible_to(groups, Kind.SERVER)
        ]

    def apply_selection(self, selection: Selection) -> None:
        """Nothing to do here: KubeSpawner applies the chosen ``profile_list`` entry when it starts."""

    # --- watch-fed caches ------------------------------------------------------------------------------

    async def ensure_caches(self) -> None:
        """Start the shared node and pod caches once; later calls return at once."""
        cls = ProfileKubeSpawner
        if cls._caches_lock is None:
            cls._caches_lock = asyncio.Lock()
        async with cls._caches_lock:
            core = shared_client("CoreV1Api")
            wanted: dict[tuple[str, str], WatchCache] = {}
            if ("nodes", "") not in cls.caches:
                wanted[("nodes", "")] = WatchCache(
                    core.list_node, kind="nodes", timeout_seconds=self.watch_timeout_seconds, logger=self.log
                )
            scope = "" if self.capacity_all_namespaces else self.namespace
            if ("pods", scope) not in cls.caches:
                list_pods = (
                    core.list_pod_for_all_namespaces
                    if not scope
                    else (lambda **kw: core.list_namespaced_pod(scope, **kw))
                )
                wanted[("pods", scope)] = WatchCache(
                    list_pods,
                    kind="pods",
                    field_selector=UNFINISHED,
                    timeout_seconds=self.watch_timeout_seconds,
                    logger=self.log,
                )
            for key, cache in wanted.items():
                await cache.start()
                cls.caches[key] = cache

    def _cache(self, kind: str) -> WatchCache | None:
        scope = "" if kind == "nodes" or self.capacity_all_namespaces else self.namespace
        return ProfileKubeSpawner.caches.get((kind, scope))

    # --- the menu --------------------------------------------------------------------------------------

    async def render_profile_form(self) -> str:  # type: ignore[override]
        """Start the node and pod caches for the capacity notes, then render the menu.

        If the cluster cannot be read, the menu is shown without them.
        """
        try:
            await self.ensure_caches()
        except Exception:
            self.log.exception("Could not read nodes and pods for the capacity display")
        return super().render_profile_form()

    def profile_availability(self, slug: str) -> str | None:
        """The capacity note for ``slug`` from the cached nodes and pods, marked if they are stale."""
        nodes, pods = self._cache("nodes"), self._cache("pods")
        profile = self.catalog.profile(slug)
        if profile is None or nodes is None or pods is None:
            return None
        key = (self.catalog_path, self.catalog_source.loaded_at, slug, nodes.changes, pods.changes)
        text = self._availability_memo.get(key)
        if text is None:
            if len(self._availability_memo) > 1024:
                self._availability_memo.clear()
            text = availability(profile, nodes.values(), pods.values()).describe(profile)
            self._availability_memo[key] = text
        if nodes.stale_since or pods.stale_since:
            since = time.strftime("%H:%M", time.localtime(nodes.stale_since or pods.stale_since))
            text += f" (as of {since}: the cluster is not answering)"
        return text

    # --- quotas: count the group's pods, servers and jobs alike ----------------------------------------

    async def apply_profile_options(self, user_options: dict[str, Any]) -> None:
        """Start the pod cache the quota check counts from, then validate, check and apply the choice."""
        await self.ensure_caches()
        await super().apply_profile_options(user_options)

    def running_workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """Our pods (servers and jobs alike) charged to ``groups``, from the watch-fed pod cache."""
        pods = self._cache("pods")
        if pods is None:
            return []
        gpu_resources = {p.resources.gpu_resource for p in catalog.profiles}
        own = (self.namespace, self.pod_name)
        counted = [
            workload
            for pod in pods.values()
            if (pod["metadata"].get("namespace"), pod["metadata"]["name"]) != own
            and (workload := pod_workload(pod, groups, gpu_resources)) is not None
            # with the jobs database, jobs count as the service counts them (from their records,
            # so a job whose pod does not exist yet counts too), not by their pods
            and not (self.jobs_db_url and workload.usage.jobs)
        ]
        # A server that is starting has its hub record before its pod: count it from the record,
        # so that two spawns at the same moment cannot both take the last of a quota.
        with_pods = {
            (annotations.get("hub.jupyter.org/username"), annotations.get("hub.jupyter.org/servername", ""))
            for pod in pods.values()
            if (annotations := pod["metadata"].get("annotations") or {})
        }
        starting = [
            workload
            for row, workload in self.server_records(catalog, groups)
            if (row.user.name, row.name) not in with_pods
        ]
        return counted + starting + self.job_workloads(groups)
