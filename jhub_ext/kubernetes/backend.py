"""The Kubernetes jobs backend: a job is a ConfigMap (its code) and a Job, Deployment or CronJob.

Manifests come from the pure builders in :mod:`jhub_ext.kubernetes.workloads`. Status comes from
watch-fed caches of the workloads and their pods (no polling); logs from the pod log API.
Creation is idempotent: objects are named from (user, job name), so a repeated submit or a
restarted service finds what exists instead of creating it twice. The service keeps no state
of its own here: after a restart, the caches rebuild it from the cluster.

A name is only where to look. Whose an object is says its annotations (``jhub-ext.io/user`` and
``jhub-ext.io/name``, exact, unlike labels): an object found under a job's name that does not carry
exactly that job's owner and name is never used, stopped, deleted or followed as the job's, and a
submit that meets one is refused. Deletions name the uid of the object looked up (a precondition),
so they never delete another object that has taken the name meanwhile; the ConfigMap a workload runs
is recorded by uid on the workload (``jhub-ext.io/code-uid``). The calls on the API server are in
:mod:`jhub_ext.kubernetes.api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Integer, List, Unicode

from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.backend import Held, JobBackend, Observed, Placement
from jhub_ext.core.jobs.model import ROOMY, JobKind, JobSpec, JobStatus, Room
from jhub_ext.core.names import object_name
from jhub_ext.core.settings import env_default, names
from jhub_ext.kubernetes.api import KIND_OF as _KIND_OF
from jhub_ext.kubernetes.api import Json, KubeObjects
from jhub_ext.kubernetes.api import already_exists as _already_exists
from jhub_ext.kubernetes.api import rejected as _rejected
from jhub_ext.kubernetes.api import taken as _taken
from jhub_ext.kubernetes.api import uid_of as _uid
from jhub_ext.kubernetes.cronruns import LiveRuns
from jhub_ext.kubernetes.logs import Target, follow_logs, last_line_time, log_target
from jhub_ext.kubernetes.notes import SideWatches
from jhub_ext.kubernetes.pods import DEFAULT_GID, DEFAULT_UID
from jhub_ext.kubernetes.retry import retrying
from jhub_ext.kubernetes.status import NO_NOTES, derive_status
from jhub_ext.kubernetes.status import controller as _controller
from jhub_ext.kubernetes.status import job_finished as _job_finished
from jhub_ext.kubernetes.status import owner as _owner
from jhub_ext.kubernetes.view import CachedJobs
from jhub_ext.kubernetes.watch import WatchCache
from jhub_ext.kubernetes.workloads import (
    CODE_UID_ANNOTATION,
    JOB_LABEL,
    Site,
    admission_key,
    build_manifests,
    pod_to_check,
)

Key = tuple[str, str]
#: how long a dry run's "yes" for a pod stands for the next pods alike (see ``validate``): long
#: enough for a burst of submits, short enough that a changed LimitRange or Pod Security level
#: is soon asked about again
ADMITTED_SECONDS = 30.0


#: the resource of each job kind's workload (the jobs domain's table says which)
_RESOURCE_OF = {kind: kind.rules.workload for kind in JobKind}


class KubernetesJobBackend(JobBackend):
    """Run jobs as Kubernetes workloads in one namespace (one submit, stop or delete of a job at a
    time: the service's rule, ``core/jobs/oneatatime.py``, so no lock of its own)."""

    namespace = Unicode(
        config=True,
        help="""
        The namespace jobs run in (with the jobs Role of ``hub_config/k8s/rbac.yaml``).
        Default: $JHUB_EXT_NAMESPACE, else ``jhub``.

        Example::

            c.KubernetesJobBackend.namespace = "research"
        """,
    )
    default_image = Unicode(
        config=True,
        help="""
        The image of jobs whose profile names none and whose user has no notebook server running.
        Default: $JHUB_EXT_SINGLEUSER_IMAGE, else the Jupyter scipy-notebook image.

        Example::

            c.KubernetesJobBackend.default_image = "quay.io/jupyter/scipy-notebook:2024-12-09"
        """,
    )
    uid = Integer(
        DEFAULT_UID,
        config=True,
        help="""
        The user id job pods run as (never root: the namespace enforces the restricted standard). Example::

            c.KubernetesJobBackend.uid = 1000
        """,
    )
    gid = Integer(
        DEFAULT_GID,
        config=True,
        help="""
        The group id job pods run as, which also owns their volumes (``fsGroup``). Example::

            c.KubernetesJobBackend.gid = 100
        """,
    )
    output_claim = Unicode(
        config=True,
        help="""
        A PersistentVolumeClaim in the namespace for job outputs, mounted at /jhub-ext/output
        (``$JHUB_EXT_OUTPUT_DIR`` in the job), one sub-directory per user. Empty: no output volume.
        Default: $JHUB_EXT_JOBS_OUTPUT_CLAIM.

        Example::

            c.KubernetesJobBackend.output_claim = "jobs-output"
        """,
    )
    image_pull_secrets = List(
        Unicode(),
        config=True,
        help="""
        Secrets in the namespace that job pods pull their images with, like the servers' (the chart's
        ``imagePullSecrets``). Default: $JHUB_EXT_JOBS_IMAGE_PULL_SECRETS, comma-separated. Example::

            c.KubernetesJobBackend.image_pull_secrets = ["registry-credentials"]
        """,
    )
    finished_ttl_seconds = Integer(
        24 * 3600,
        config=True,
        help="""
        How long a finished batch Job (and its pods) is kept before Kubernetes deletes it. The
        service keeps the end of its log when it finishes, so the log outlives it.

        Example::

            c.KubernetesJobBackend.finished_ttl_seconds = 3600
        """,
    )
    watch_timeout_seconds = Integer(
        300,
        config=True,
        help="""
        How long one watch request of the jobs' objects lasts before it is renewed.

        Example::

            c.KubernetesJobBackend.watch_timeout_seconds = 300
        """,
    )

    _default_namespace = env_default("namespace", "JHUB_EXT_NAMESPACE", "jhub")
    _default_default_image = env_default("default_image", "JHUB_EXT_SINGLEUSER_IMAGE", Site.default_image)
    _default_output_claim = env_default("output_claim", "JHUB_EXT_JOBS_OUTPUT_CLAIM")
    _default_image_pull_secrets = env_default(
        "image_pull_secrets", "JHUB_EXT_JOBS_IMAGE_PULL_SECRETS", "", names
    )

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.api: client.ApiClient | None = None
        self._objects: KubeObjects | None = None  # the calls on the API server, once started
        self.caches: dict[str, WatchCache] = {}
        self.view = CachedJobs(self.caches, self.namespace)  # the jobs' objects, as cached
        self.specs: dict[Key, tuple[JobSpec, str]] = {}
        self.stopped: set[Key] = set()
        self._last: dict[Key, Observed] = {}
        self._change = asyncio.Event()  # set on every watch event
        self._by_object: dict[str, Key] = {}
        self._code_uids: dict[Key, str] = {}  # ConfigMaps created here whose deletion is not yet known
        #: the manifests a validate built, for the submit of the very same spec and placement
        self._built: dict[Key, tuple[JobSpec, Placement, list[Json]]] = {}
        #: workloads created here that the caches have not shown yet: (resource, uid) by job
        self._unseen: dict[Key, tuple[str, str]] = {}
        #: pods let in by a dry run, by their admission key: until when that answer stands
        self._admitted: dict[str, float] = {}
        self._live_runs = LiveRuns(self._api, self._spawn, self.log)  # scheduled jobs' bound
        self.side: SideWatches | None = None  # what else the cluster says (Kueue's Workloads)
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the cluster, fill the watch caches and re-adopt the jobs whose workloads exist."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            # read $KUBECONFIG now: the client's default was fixed when it was imported
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        self.api = retrying(client.ApiClient(configuration))
        self._objects = KubeObjects(self.api, self.namespace, self.log)
        core = client.CoreV1Api(self.api)
        lists = {
            "pods": core.list_namespaced_pod,
            **{
                resource: self._objects.list_method(resource)
                for resource in ("jobs", "deployments", "cronjobs")
            },
        }
        for resource, method in lists.items():
            cache = WatchCache(
                partial(method, self.namespace),
                resource=resource,
                label_selector=JOB_LABEL,
                timeout_seconds=self.watch_timeout_seconds,
                logger=self.log,
                on_change=self._changed,
            )
            self.caches[resource] = cache
        await asyncio.gather(*(cache.start() for cache in self.caches.values()))
        self.side = SideWatches(
            self.api,
            self.namespace,
            timeout_seconds=self.watch_timeout_seconds,
            log=self.log,
            on_change=self._noted,
        )
        await self.side.start()
        # re-adopt: a workload named for the job its annotations name (not a CronJob's runs)
        for resource in ("jobs", "deployments", "cronjobs"):
            for obj in self.caches[resource].values():
                owner = _owner(obj)
                if owner is not None and obj["metadata"]["name"] == object_name(*owner):
                    self.specs.setdefault(owner, (None, resource))  # type: ignore[arg-type]
        self._changed("RELISTED", {})

    async def shutdown(self) -> None:
        """Stop the watches and background tasks and close the API client; the workloads keep running."""
        for cache in self.caches.values():
            await cache.stop()
        if self.side is not None:
            await self.side.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.api is not None:
            await self.api.close()
            # TLS connections finish closing on the next turns of the loop (aiohttp's advice for a
            # graceful shutdown); without this they outlive a loop that stops right after
            await asyncio.sleep(0.25)

    def health(self) -> dict[str, bool]:
        """Each watch cache (pods, jobs, deployments, cronjobs) by resource: whether it has listed
        its objects and follows their changes now; False while it retries after an error, when
        what it shows may be out of date; and the optional watches that started (Kueue's
        ``workloads``). Empty before :meth:`start`."""
        health = {name: cache.ready and cache.stale_since is None for name, cache in self.caches.items()}
        return {**health, **(self.side.health() if self.side is not None else {})}

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background (watch callbacks cannot wait); shutdown ends what is left."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- actions ---------------------------------------------------------------------------------------

    @property
    def site(self) -> Site:
        """What every job's objects share, from this backend's settings."""
        return Site(
            namespace=self.namespace,
            uid=self.uid,
            gid=self.gid,
            default_image=self.default_image,
            output_claim=self.output_claim or None,
            finished_ttl_seconds=self.finished_ttl_seconds,
            image_pull_secrets=tuple(self.image_pull_secrets),
        )

    async def validate(self, spec: JobSpec, placement: Placement) -> None:
        """Ask the API server (a dry run: nothing is stored) whether it would take the job's pod.

        The workload itself is not asked: its create, right after, answers the same refusals (a name
        taken, an invalid spec) before anything runs, and the submit removes the code again. A pod
        let in a moment ago that differed only in its job's name stands for this one
        (:func:`~jhub_ext.kubernetes.workloads.admission_key`), for :data:`ADMITTED_SECONDS`: a
        burst of alike submits asks once.
        """
        _, workload = self._manifests(spec, placement, keep=True)
        pod = pod_to_check(workload)
        key = admission_key(pod)
        now = asyncio.get_running_loop().time()
        if self._admitted.get(key, 0.0) > now:
            return
        try:
            await self._api().create(pod, dry_run=True)
        except ApiException as e:
            # AlreadyExists: no job's pod has exactly this name; the dry run has passed admission already
            if not _already_exists(e):
                raise _rejected(e) from None
        if len(self._admitted) >= 256:
            self._admitted = {k: until for k, until in self._admitted.items() if until > now}
        self._admitted[key] = now + ADMITTED_SECONDS

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        """Create the job's code ConfigMap and workload (replacing an earlier run's); nothing to do
        where the same job runs already. The job is pending from then on, as its caller records:
        only what the watches show afterwards is reported."""
        assert self.api is not None and placement.profile is not None
        key = (placement.user, spec.name)
        resource = _RESOURCE_OF[spec.kind]
        object_id = object_name(*key)
        if self._active(key, resource):
            return  # idempotent: the same job runs already
        other = self.caches[resource].objects.get(f"{self.namespace}/{object_id}")
        if other is not None and _owner(other) != key:
            raise _taken(_KIND_OF[resource], object_id)  # someone else's: left alone
        if (
            any(self.view.workload(*key, k) is not None for k in _RESOURCE_OF.values())
            or key in self._code_uids
        ):
            # A finished run (or a leftover) holds the names: remove it first, or the creates
            # below would meet 409 AlreadyExists and nothing new would run.
            await self._remove(*key, wait=True)
        self.specs[key] = (spec, resource)
        self.stopped.discard(key)
        # the caller records it pending: watch events of the new objects that say no more are not reported
        self._last[key] = Observed(JobStatus.PENDING)
        configmap, workload = self._manifests(spec, placement)
        try:
            code = await self._api().claim(configmap, key)
        except Exception:
            self.specs.pop(key, None)
            self._last.pop(key, None)
            raise
        code_uid = self._code_uids[key] = _uid(code)
        workload["metadata"]["annotations"][CODE_UID_ANNOTATION] = code_uid
        try:
            created = await self._api().claim(workload, key)
        except Exception as e:
            # never leave the code without its workload
            with contextlib.suppress(ApiException):
                await self._api().delete("configmaps", object_id, code_uid)
                self._code_uids.pop(key, None)
            self.specs.pop(key, None)
            self._last.pop(key, None)
            if isinstance(e, ApiException) and e.status in (400, 403, 409, 422):
                raise _rejected(e) from None
            raise
        # until the caches show it (a moment), a repeated submit finds it here
        self._unseen[key] = (resource, _uid(created))

    def _manifests(self, spec: JobSpec, placement: Placement, keep: bool = False) -> list[Json]:
        """The job's ConfigMap and workload, built once per submit: a validate keeps what it built
        for the submit of the very same ``spec`` and ``placement`` objects, which takes it."""
        key = (placement.user, spec.name)
        kept = self._built.pop(key, None)
        if kept is not None and kept[0] is spec and kept[1] is placement:
            built = kept[2]
        else:
            built = build_manifests(spec, placement, self.site)
        if keep:
            if len(self._built) >= 256:  # validates whose submit never came (refused, say)
                self._built.pop(next(iter(self._built)))
            self._built[key] = (spec, placement, built)
        return built

    def _active(self, key: Key, resource: str) -> bool:
        """Whether the job's workload exists, is ours, is not being deleted and has not finished
        (created here a moment ago and not yet in the caches counts)."""
        workload = self.view.workload(*key, resource)
        if key in self.stopped:
            return False
        if workload is None:
            return self._unseen.get(key, ("", ""))[0] == resource
        if workload["metadata"].get("deletionTimestamp"):
            return False
        return resource != "jobs" or not _job_finished(workload)

    # --- calls on the API server (see kubeapi) ----------------------------------------------------------

    def _api(self) -> KubeObjects:
        assert self._objects is not None, "the backend has not been started"
        return self._objects

    async def _remove(self, user: str, name: str, *, wait: bool = False, timeout: float = 60) -> None:
        """Delete the job's workload and code (only objects that are the job's); with ``wait``,
        return once they and their pods are gone."""
        key = (user, name)
        object_id = object_name(user, name)
        self._unseen.pop(key, None)
        known = self.specs.get(key)
        # the resource the job has, and whatever else of the job the caches hold under its name (a leftover)
        cached = {k for k in _RESOURCE_OF.values() if self.view.workload(user, name, k) is not None}
        # a job known neither here nor to the caches (work left without a record): look everywhere
        resources = sorted(({known[1]} if known else set()) | cached) or sorted(_RESOURCE_OF.values())
        code_uids = {self._code_uids[key]} if key in self._code_uids else set()
        for resource in resources:
            workload = self.view.workload(user, name, resource)
            if workload is None:  # not (yet) in the cache: ask the API server
                found = await self._api().read(resource, object_id)
                workload = found if found is not None and _owner(found) == key else None
            if workload is None or workload["metadata"].get("deletionTimestamp"):
                continue  # gone, or going: deleted (with its code) by an earlier stop, or by anyone
            if code_uid := (workload["metadata"].get("annotations") or {}).get(CODE_UID_ANNOTATION):
                code_uids.add(code_uid)
            # Foreground: the workload goes only after its pods, so a new run never meets the old pods.
            await self._api().delete(resource, object_id, _uid(workload), "Foreground")
        if not code_uids:  # no workload names its code (left on its own, or made by hand): look
            code = await self._api().read("configmaps", object_id)
            if code is not None and _owner(code) == key and not code["metadata"].get("deletionTimestamp"):
                code_uids.add(_uid(code))
        for code_uid in sorted(code_uids):
            await self._api().delete("configmaps", object_id, code_uid)
            if self._code_uids.get(key) == code_uid:
                del self._code_uids[key]
        if wait:
            await self._until(
                lambda: (
                    not any(self.view.workload(user, name, k) is not None for k in resources)
                    and not self.view.pods(user, name)
                ),
                timeout,
            )

    async def _until(self, predicate: Any, timeout: float) -> None:
        """Wait until ``predicate()`` holds in the watch caches."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("the job's previous objects are still being deleted; try again shortly")
            self._change.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), min(remaining, 1.0))

    async def stop(self, user: str, name: str) -> None:
        """Delete the job's workload and code, and report it ``stopped``."""
        self.stopped.add((user, name))
        await self._remove(user, name)
        self._last[(user, name)] = Observed(JobStatus.STOPPED, message=lifecycle.STOPPED)
        await self.notify(user, name, self._last[(user, name)])

    async def delete(self, user: str, name: str) -> None:
        """Delete the job's workload and code and forget the job."""
        await self._remove(user, name)
        self.specs.pop((user, name), None)
        self._last.pop((user, name), None)

    # --- what is happening -------------------------------------------------------------------------------

    def room(self, placement: Placement) -> Room:
        """Whether a machine the job's profile may run on has room for its pod now, from the cached
        nodes and pods (see :func:`jhub_ext.kubernetes.capacity.room_for`)."""
        if self.side is None or placement.profile is None:
            return ROOMY
        return self.side.room(placement.profile)

    def observed(self, user: str, name: str) -> Observed | None:
        """The job's status from the cached workload and pods; ``None`` for a job unknown here."""
        key = (user, name)
        if key in self.stopped:
            return Observed(JobStatus.STOPPED, message=lifecycle.STOPPED)
        if key not in self.specs:
            return None
        _, resource = self.specs[key]
        return derive_status(
            resource,
            self.view.workload(user, name, resource),
            self.view.run_pods(user, name, resource),
            self.side.notes() if self.side is not None else NO_NOTES,
        )

    async def inventory(self) -> dict[Key, Held]:
        """Jobs whose workload (from the caches) or code snapshot (listed now) exists, by when their
        oldest such object was created; a CronJob's runs belong to their CronJob."""
        return self.view.inventory(await self._api().list_code(JOB_LABEL))

    def _changed(self, event: str, obj: Json) -> None:
        """A watched object changed: report the job it belongs to if its observed state moved
        (after a relist, every job); keep a CronJob's live runs within its bound; remove the code
        of a workload that went (whoever deleted it)."""
        self._change.set()
        if not self.caches or any(not cache.ready for cache in self.caches.values()):
            return
        if event == "RELISTED":
            keys = list(self.specs)
            for key, (resource, uid) in list(self._unseen.items()):  # a list is newer than any create
                shown = self.view.workload(*key, resource)
                if shown is None or _uid(shown) != uid:
                    del self._unseen[key]
            for cronjob in self.caches["cronjobs"].values():
                self._live_runs.bound(cronjob, self.caches["jobs"].values())
        else:
            owner = _owner(obj)
            if owner in self._unseen and self._unseen[owner][1] == (obj.get("metadata") or {}).get("uid"):
                del self._unseen[owner]  # the caches show it from now on
            keys = self._keys(obj)
            self._after(event, obj)
        self._report(keys)

    def _keys(self, obj: Json) -> list[Key]:
        """The job ``obj`` belongs to (none: no job known here)."""
        owner = _owner(obj)
        if owner is not None and owner in self.specs:
            return [owner]
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(JOB_LABEL):  # a CronJob's Jobs of old carry only the label
            found = self._owner_of(labels[JOB_LABEL])
            return [found] if found else []
        return []

    def _noted(self, resource: str, name: str) -> None:
        """What the side watches say of the object ``name`` of ``resource`` changed (no name: of
        every object): report its job again if that moves its observed state."""
        if not self.caches or any(not cache.ready for cache in self.caches.values()):
            return
        if not resource:
            self._report(list(self.specs))
        elif (obj := self.caches[resource].objects.get(f"{self.namespace}/{name}")) is not None:
            self._report(self._keys(obj))

    def _report(self, keys: list[Key]) -> None:
        """Tell of each job of ``keys`` whose observed state moved since it was last told."""
        for user, name in keys:
            observed = self.observed(user, name)
            if observed is not None and observed != self._last.get((user, name)):
                self._last[(user, name)] = observed
                self._spawn(self.notify(user, name, observed))

    def _after(self, event: str, obj: Json) -> None:
        """What a watch event of a Job or CronJob asks of the backend besides a report."""
        meta = obj.get("metadata") or {}
        if event == "DELETED":
            self._live_runs.gone(str(meta.get("uid")))
            owner, code_uid = _owner(obj), (meta.get("annotations") or {}).get(CODE_UID_ANNOTATION)
            if owner is not None and code_uid and meta.get("name") == object_name(*owner):
                # the job's workload went: its code goes too (by uid: never a newer run's)
                self._spawn(self._api().delete_quietly("configmaps", str(meta["name"]), code_uid))
            return
        if obj.get("kind") == "CronJob":
            self._live_runs.bound(obj, self.caches["jobs"].values())
        elif obj.get("kind") == "Job" and (parent := _controller(obj, "CronJob")) is not None:
            for cronjob in self.caches["cronjobs"].values():
                if cronjob["metadata"].get("uid") == parent:
                    self._live_runs.bound(cronjob, self.caches["jobs"].values())

    def _owner_of(self, object_id: str) -> Key | None:
        """The (user, name) whose objects are called ``object_id`` (an index rebuilt on a miss)."""
        found = self._by_object.get(object_id)
        if found is None or found not in self.specs:
            self._by_object = {object_name(*key): key for key in self.specs}
            found = self._by_object.get(object_id)
        return found

    async def logs(
        self, user: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The output of the job's latest container; with ``follow``, of every container it starts
        from now until it ends (a Job's retries, a scraper's restarts), waiting for the first one.
        Only the job's own pods (its exact owner and name in their annotations) are read."""
        objects = self._api()
        key = (user, name)
        resource = self.specs[key][1] if key in self.specs else "jobs"
        target, finished = partial(self._log_target, user, name, resource), partial(self._finished, key)
        chunks = follow_logs(objects, target, finished, self._change, follow=follow, tail=tail)
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                yield chunk

    async def last_output(self, user: str, name: str) -> datetime | None:
        """When the job's latest container (the one :meth:`logs` reads) wrote its last line, as the
        kubelet stamped it; None where it has written nothing, or none has started. A failing call
        on the API server raises (an unreachable node's kubelet, say): not knowing is not silence."""
        key = (user, name)
        resource = self.specs[key][1] if key in self.specs else "jobs"
        target = self._log_target(user, name, resource)
        if target is None:
            return None
        return await last_line_time(self._api(), target[0])

    def _log_target(self, user: str, name: str, resource: str) -> Target | None:
        """(pod name, pod uid, restart count) of the job's latest container that has started."""
        return log_target(self.view.run_pods(user, name, resource))

    def _finished(self, key: Key) -> bool:
        observed = self.observed(*key)
        return observed is None or observed.status.finished


__all__ = ["KubernetesJobBackend"]
