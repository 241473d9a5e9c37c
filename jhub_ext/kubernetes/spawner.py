"""ProfileKubeSpawner: the profile menu for servers that run as Kubernetes pods.

A KubeSpawner subclass. The menu, validation and quotas are the mixin's (the same as in local
mode); the validated :class:`Selection` is translated into the pod once, by
:func:`jhub_ext.kubernetes.pods.pod_plan` (the translation jobs use too), and mapped onto
KubeSpawner's traits here. KubeSpawner's own ``profile_list`` is not used: the catalog is the
menu. On top of that it shows live capacity in the menu from watch-fed caches of nodes and pods
(no API call per page view), counts the group's pods for quotas, and runs every pod under the
"restricted" Pod Security Standard with no service-account token.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from jupyterhub import orm
from kubernetes_asyncio.client import CustomObjectsApi, V1DeleteOptions, V1Preconditions
from kubernetes_asyncio.client.exceptions import ApiException
from kubespawner import KubeSpawner
from traitlets import Bool, Integer, default

from jhub_ext.core.catalog import Catalog, Kind
from jhub_ext.core.catalog.quota import Workload
from jhub_ext.core.catalog.selection import Selection
from jhub_ext.core.events import Happened
from jhub_ext.kubernetes import kueue
from jhub_ext.kubernetes.capacity import availability, orphan_server_pods, pod_workload
from jhub_ext.kubernetes.hubwatch import ClusterWatch, shared_api
from jhub_ext.kubernetes.pods import (
    DEFAULT_GID,
    DEFAULT_UID,
    RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    RESTRICTED_POD_SECURITY_CONTEXT,
    PodPlan,
    pod_plan,
)
from jhub_ext.kubernetes.retry import retrying
from jhub_ext.kubernetes.status import event_in_words, queue_holds
from jhub_ext.kubernetes.watch import WatchCache
from jhub_ext.kubernetes.workloads import kueue_labels
from jhub_ext.spawner.profiles import ProfileChoiceError, ProfileMenuMixin
from jhub_ext.spawner.servers import ServerRecord

_AFFINITY_TRAITS = {
    ("nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "node_affinity_required",
    ("nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "node_affinity_preferred",
    ("podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "pod_affinity_required",
    ("podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "pod_affinity_preferred",
    ("podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "pod_anti_affinity_required",
    ("podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "pod_anti_affinity_preferred",
}


def kubespawner_traits(plan: PodPlan, selection: Selection, kueue_queue: str | None = None) -> dict[str, Any]:
    """KubeSpawner trait values that give a server's pod what ``plan`` says, and the label of the
    Kueue LocalQueue ``kueue_queue`` if the catalog names one (Kueue's pod integration reads it on
    the pod). Dicts are merged into the admin's own values, as KubeSpawner merges a profile's
    overrides."""
    r = selection.profile.resources
    traits: dict[str, Any] = {
        # the numbers, for the variables KubeSpawner sets from them (MEM_LIMIT, CPU_GUARANTEE, ...)
        "cpu_guarantee": r.cpu_guarantee,
        "cpu_limit": r.cpu_limit,
        "mem_guarantee": r.mem_guarantee,
        "mem_limit": r.mem_limit,
        # the container's resources exactly as translated (KubeSpawner applies these last)
        "extra_resource_guarantees": plan.resources.get("requests", {}),
        "extra_resource_limits": plan.resources.get("limits", {}),
        "node_selector": plan.node_selector,
        "tolerations": plan.tolerations,
        "extra_labels": {**plan.labels, **kueue_labels(kueue_queue)},
        "environment": plan.env,
    }
    if selection.image is not None:
        traits["image"] = selection.image.image
    for (section, field), trait in _AFFINITY_TRAITS.items():
        value = plan.affinity.get(section, {}).get(field)
        if value is not None:
            # KubeSpawner takes node affinity terms as a list of NodeSelectorTerms
            traits[trait] = value.get("nodeSelectorTerms", []) if isinstance(value, dict) else value
    return traits


#: every trait a profile may set (those it does not set go back to the admin's value)
PROFILE_TRAITS = (
    "cpu_guarantee",
    "cpu_limit",
    "mem_guarantee",
    "mem_limit",
    "extra_resource_guarantees",
    "extra_resource_limits",
    "node_selector",
    "tolerations",
    "extra_labels",
    "environment",
    "image",
    *_AFFINITY_TRAITS.values(),
)


#: how often a spawn the cluster's queue holds asks it why, while nothing else happens
QUEUE_REASON_SECONDS = 3.0


def _clock(moment: float) -> str:
    """A moment as the hub's users read it: ``HH:MM``, local time."""
    return time.strftime("%H:%M", time.localtime(moment))


class ProfileKubeSpawner(ProfileMenuMixin, KubeSpawner):
    """Spawn pods with the resources of a catalog profile, showing live capacity in the menu."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        if getattr(self, "api", None) is not None:  # KubeSpawner's client (and its reflectors')
            retrying(self.api.api_client)

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

    orphan_grace_seconds = Integer(
        600,
        config=True,
        help="""
        A server pod of this hub's namespace that no hub record knows (its spawn was cut short by a
        hub restart, say) is deleted once it is this old. Spawns under way are never touched (they
        have ``start_timeout``). One hub per namespace, as with Zero to JupyterHub.

        Example::

            c.ProfileKubeSpawner.orphan_grace_seconds = 600
        """,
    )

    #: the admin's values of PROFILE_TRAITS, taken before the first profile is applied
    _configured: dict[str, Any] | None = None
    _cluster: ClusterWatch | None = None

    @property
    def cluster(self) -> ClusterWatch:
        """The hub's one view of the cluster: caches, probe, orphan reaper (see :mod:`.hubwatch`)."""
        if self._cluster is None:
            self._cluster = ClusterWatch.of_hub(getattr(self.user, "settings", None), self.log)
        return self._cluster

    # --- least privilege by default ----------------------------------------------------------------

    @default("uid")
    def _default_uid(self) -> int:
        return DEFAULT_UID

    @default("gid")
    def _default_gid(self) -> int:
        return DEFAULT_GID

    @default("fs_gid")
    def _default_fs_gid(self) -> int:
        return DEFAULT_GID

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

    # --- the chosen profile, onto KubeSpawner's traits -----------------------------------------------

    def apply_selection(self, selection: Selection) -> None:
        """Give this server's pod what the chosen profile asks for: the one translation, mapped.

        Each start begins from the admin's configured values, so nothing of an earlier start's
        profile (a GPU, a node selector) is left behind when the same spawner starts another one.
        """
        groups = self.user_groups
        plan = pod_plan(selection.profile, user=self.user.name, kind=Kind.SERVER, groups=groups)
        traits = kubespawner_traits(plan, selection, selection.profile.kueue_queue_for(groups))
        if self._configured is None:
            self._configured = {name: copy.deepcopy(getattr(self, name)) for name in PROFILE_TRAITS}
        for name in PROFILE_TRAITS:
            configured = copy.deepcopy(self._configured[name])
            value = traits.get(name, configured)
            if isinstance(value, dict) and isinstance(configured, dict):
                value = {**configured, **value}
            setattr(self, name, value)

    async def load_user_options(self) -> None:
        """Nothing left to load: :meth:`apply_selection` applied the validated choice before the start
        (KubeSpawner would look the profile up again in its own ``profile_list``, which is unused)."""

    # --- the hub's view of the cluster ------------------------------------------------------------------

    async def ensure_caches(self) -> None:
        """Start the hub's node and pod caches, its API probe and its orphan reaper, once."""
        await self.cluster.start(
            self._scope,
            self.watch_timeout_seconds,
            self.reap_orphan_pods,
            max(5.0, min(60.0, float(self.orphan_grace_seconds))),
        )

    @property
    def _scope(self) -> str:
        """The namespace whose pods count for capacity ("": every namespace)."""
        return "" if self.capacity_all_namespaces else self.namespace

    async def reap_orphan_pods(self) -> list[str]:
        """Delete (by uid) this namespace's server pods that no hub record knows, once they are
        older than ``orphan_grace_seconds``; the names of those deleted."""
        pods = self._cache("pods")
        if pods is None:
            return []
        now = datetime.now(UTC).replace(tzinfo=None)  # the hub's database keeps naive UTC
        known = {
            (row.user.name, row.name)
            for row in self.db.query(orm.Spawner)
            if row.server_id is not None
            or (row.started is not None and (now - row.started).total_seconds() < self.start_timeout)
        }
        deleted = []
        for pod in orphan_server_pods(pods.values(), self.namespace, known, self.orphan_grace_seconds):
            meta = pod["metadata"]
            try:
                await shared_api("CoreV1Api").delete_namespaced_pod(
                    meta["name"],
                    meta["namespace"],
                    body=V1DeleteOptions(preconditions=V1Preconditions(uid=meta["uid"])),
                )
            except ApiException as e:
                if e.status not in (404, 409):  # gone already, or another pod by now
                    raise
                continue
            self.log.warning("Deleted server pod %s: no hub record knows it", meta["name"])
            deleted.append(meta["name"])
        return deleted

    def _cache(self, resource: str) -> WatchCache | None:
        return self.cluster.cache(resource, self._scope)

    async def poll(self) -> int | None:
        """KubeSpawner's poll, with the hub's caches (and their reaper and probe) started first: the
        hub polls running servers when it starts, so a restarted hub looks for orphans at once."""
        try:
            await self.ensure_caches()
        except Exception:
            self.log.exception("Could not start the node and pod caches")
        reflector = self.__class__.reflectors.get(self._get_reflector_key("pods"))
        loaded = reflector is not None and reflector.first_load_future.done()
        known_down = self.cluster.api_down_since is not None  # the probe asks every 2 s then
        if not loaded and (known_down or await self.cluster.down(unsure=True)):
            # KubeSpawner would start (or wait for) its pod reflector, whose first list waits a minute for
            # an API server that does not answer. Without it nobody can look: a server the hub records
            # as running is taken to run still (the next poll looks again); any other has nothing
            # running (a spawn refused for the outage made nothing).
            return None if self.server is not None else 0
        return await super().poll()  # type: ignore[no-any-return]

    async def stop(self, now: bool = False) -> None:
        """KubeSpawner's stop, unless the API server does not answer: then the hub forgets the server
        at once (instead of retrying its delete for half a minute while the user waits), and the
        orphan reaper deletes its pod, if it made one, once the API server answers again."""
        if await self.cluster.down():
            self.log.warning(
                "The Kubernetes API server does not answer: pod %s is left to the orphan reaper",
                self.pod_name,
            )
            await self.publish(Happened.ENDED)  # for the hub, it has ended
            return
        await super().stop(now=now)

    # --- the spawn's progress, in plain words ------------------------------------------------------

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """KubeSpawner's progress events, each said in plain words (:func:`event_in_words`: a pod
        Kueue holds is "held by the cluster's queue" until it admits it); the cluster's own words,
        and the raw event, only for admins. While the cluster's queue holds the pod, its reason
        (:meth:`queue_reason`) is told too, each time it changes."""
        events = super().progress()
        following: asyncio.Future[dict[str, Any]] | None = None
        progress, held, told = 0, False, None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(anext(events))
                await asyncio.wait({following}, timeout=QUEUE_REASON_SECONDS if held else None)
                if not following.done():  # held, and no news: ask the queue why
                    because = await self.queue_reason()
                    if because is not None and because != told:
                        told = because
                        yield {"progress": progress, "message": because}
                    continue
                try:
                    event = following.result()
                except StopAsyncIteration:
                    return
                finally:
                    following = None
                raw = event.get("raw_event")
                if raw is None:  # KubeSpawner's own words (a slow spawn's patience message)
                    yield event
                    continue
                progress = event.get("progress") or progress
                held, told = queue_holds(raw), None
                said = {"progress": event.get("progress"), "message": event_in_words(raw)}
                if self.user.admin:
                    said.update(
                        raw_event=raw, message=f"{said['message']} (the cluster: {raw.get('message')})"
                    )
                yield said
        finally:
            if following is not None:  # the generator is left running: stop it before closing it
                following.cancel()
                await asyncio.wait({following})
            await events.aclose()

    async def queue_reason(self) -> str | None:
        """Why the cluster's queue (Kueue) holds this server's pod, in plain words, from the Workload
        it made for the pod; None where it says nothing yet, or cannot be read."""
        pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}") if self.pod_reflector else None
        uid = ((pod or {}).get("metadata") or {}).get("uid")
        if not uid:
            return None
        workloads = CustomObjectsApi(self.api.api_client)
        for version in kueue.VERSIONS:
            try:
                found = await workloads.list_namespaced_custom_object(
                    kueue.GROUP,
                    version,
                    self.namespace,
                    "workloads",
                    label_selector=f"{kueue.JOB_UID_LABEL}={uid}",
                )
            except ApiException as e:
                if e.status == 404:
                    continue  # not this version (or no Kueue)
                self.log.debug("Cannot read the Workload of pod %s: %s %s", self.pod_name, e.status, e.reason)
                return None
            return kueue.held_because(kueue.by_owner(found.get("items") or []).get(uid))
        return None

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
        memo = self.cluster.availability_memo
        if key not in memo:
            if len(memo) > 1024:
                memo.clear()
            now = availability(profile, nodes.values(), pods.values())
            memo[key] = (now.describe(profile), now.fits_now)
        text, fits = memo[key]
        if fits:
            self.cluster.last_room[slug] = time.time()
        elif slug in self.cluster.last_room:
            text += f" · it last had room at {_clock(self.cluster.last_room[slug])}"
        down = [t for t in (nodes.stale_since, pods.stale_since, self.cluster.api_down_since) if t]
        if down:
            text += f" (as of {_clock(min(down))}: the cluster is not answering)"
        return text

    # --- admission: refused during an outage; servers counted by their pods --------------------------

    async def before_admission(self) -> None:
        """While the API server does not answer, a spawn is refused at once: 503 with Retry-After.
        Else the pod cache the quota check counts from is started (once)."""
        # a fresh hub's caches would wait on their first list: ask first
        if await self.cluster.down(unsure=self._cache("pods") is None):
            down = self.cluster.api_down_since or time.time()
            raise ProfileChoiceError(
                f"The cluster has not answered since {_clock(down)}, so your server cannot start now. "
                "Try again in a minute; an admin can see why in the hub's log.",
                status_code=503,
                retry_after=30,
            )
        await self.ensure_caches()

    def count_servers(
        self, records: list[ServerRecord], catalog: Catalog, groups: frozenset[str]
    ) -> list[Workload]:
        """Servers charged to ``groups``: each server pod (not this one's) by its limits, from the
        watch-fed pod cache, and each server still starting (hub record, no pod yet) by its record.

        Jobs are the jobs service's records' to count (``admission.reservations``): a job counts from
        its submission, before its pod exists. Without the jobs database, jobs' pods count here.
        """
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
            and not (self.jobs_db_url and workload.usage.jobs)
        ]
        # A server that is starting has its hub record before its pod: count it from the record,
        # so that two spawns at the same moment cannot both take the last of a quota.
        with_pods = {
            (annotations.get("hub.jupyter.org/username"), annotations.get("hub.jupyter.org/servername", ""))
            for pod in pods.values()
            if (annotations := pod["metadata"].get("annotations") or {})
        }
        starting = [record.workload for record in records if (record.user, record.server) not in with_pods]
        return counted + starting
