"""The Kubernetes jobs backend: a job is a ConfigMap (its code) and a Job, Deployment or CronJob.

Manifests come from the pure builders in :mod:`jhub_ext.k8s.jobs`. Status comes from
watch-fed caches of the workloads and their pods (no polling); logs from the pod log API.
Creation is idempotent: objects are named from (user, job name), so a repeated submit or a
restarted service finds what exists instead of creating it twice. The service keeps no state
of its own here: after a restart, the caches rebuild it from the cluster.

A name is only where to look. Whose an object is says its annotations (``jhub-ext.io/user`` and
``jhub-ext.io/name``, exact, unlike labels): an object found under a job's name that does not carry
exactly that job's owner and name is never used, stopped, deleted or followed as the job's, and a
submit that meets one is refused. Deletions name the uid of the object looked up (a precondition),
so they never delete another object that has taken the name meanwhile; the ConfigMap a workload runs
is recorded by uid on the workload (``jhub-ext.io/code-uid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Coroutine
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Integer, Unicode, default

from ..jobs.backend import JobBackend, JobRejected, Observed, Placement
from ..jobs.model import JobKind, JobSpec, JobStatus
from ..jobs.status import controller as _controller
from ..jobs.status import derive_status, extra_runs
from ..jobs.status import job_finished as _job_finished
from ..jobs.status import max_live_runs as _max_live_runs
from ..jobs.status import owner as _owner
from ..k8s.jobs import (
    CODE_UID_ANNOTATION,
    JOB_LABEL,
    JobPlacement,
    build_manifests,
    object_name,
)
from ..runtime.watch import WatchCache

Json = dict[str, Any]
Key = tuple[str, str]

_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


def _uid(obj: Json) -> str:
    return str(obj["metadata"]["uid"])


_KINDS = {JobKind.BATCH: "jobs", JobKind.SCRAPER: "deployments", JobKind.SCHEDULED: "cronjobs"}
_RESOURCES = {"ConfigMap": "configmaps", "Job": "jobs", "Deployment": "deployments", "CronJob": "cronjobs"}
_KIND_OF = {resource: kind for kind, resource in _RESOURCES.items()}


class KubernetesJobBackend(JobBackend):
    """Run jobs as Kubernetes workloads in one namespace."""

    namespace = Unicode(config=True, help="Namespace for jobs. Default: $JHUB_EXT_NAMESPACE, or jhub.")
    default_image = Unicode(
        config=True,
        help="Image for jobs whose profile names none. Default: $JHUB_EXT_SINGLEUSER_IMAGE.",
    )
    uid = Integer(1000, config=True, help="User id jobs run as.")
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

    @default("output_claim")
    def _default_output_claim(self) -> str:
        return os.environ.get("JHUB_EXT_JOBS_OUTPUT_CLAIM", "")

    gid = Integer(100, config=True, help="Group id jobs run as.")
    watch_timeout_seconds = Integer(300, config=True, help="Length of one watch request.")

    @default("namespace")
    def _default_namespace(self) -> str:
        return os.environ.get("JHUB_EXT_NAMESPACE", "jhub")

    @default("default_image")
    def _default_default_image(self) -> str:
        return os.environ.get("JHUB_EXT_SINGLEUSER_IMAGE", "quay.io/jupyter/scipy-notebook:2024-12-09")

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.api: client.ApiClient | None = None
        self.caches: dict[str, WatchCache] = {}
        self.specs: dict[Key, tuple[JobSpec, str]] = {}
        self.stopped: set[Key] = set()
        self._last: dict[Key, Observed] = {}
        self._change = asyncio.Event()  # set on every watch event
        self._by_object: dict[str, Key] = {}
        self._locks: dict[Key, asyncio.Lock] = {}  # one submit, stop or delete of a job at a time
        self._code_uids: dict[Key, str] = {}  # ConfigMaps created here whose deletion is not yet known
        self._culling: set[str] = set()  # uids of a CronJob's extra runs being deleted
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
        self.api = client.ApiClient(configuration)
        core = client.CoreV1Api(self.api)
        lists = {
            "pods": core.list_namespaced_pod,
            **{kind: self._list_method(kind) for kind in ("jobs", "deployments", "cronjobs")},
        }
        for kind, method in lists.items():
            cache = WatchCache(
                partial(method, self.namespace),
                kind=kind,
                label_selector=JOB_LABEL,
                timeout_seconds=self.watch_timeout_seconds,
                logger=self.log,
                on_change=self._changed,
            )
            self.caches[kind] = cache
        await asyncio.gather(*(cache.start() for cache in self.caches.values()))
        # re-adopt: a workload named for the job its annotations name (not a CronJob's runs)
        for kind in ("jobs", "deployments", "cronjobs"):
            for obj in self.caches[kind].values():
                owner = _owner(obj)
                if owner is not None and obj["metadata"]["name"] == object_name(*owner):
                    self.specs.setdefault(owner, (None, kind))  # type: ignore[arg-type]
        self._changed("RELISTED", {})

    async def shutdown(self) -> None:
        """Stop the watches and background tasks and close the API client; the workloads keep running."""
        for cache in self.caches.values():
            await cache.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.api is not None:
            await self.api.close()
            # TLS connections finish closing on the next turns of the loop (aiohttp's advice for a
            # graceful shutdown); without this they outlive a loop that stops right after
            await asyncio.sleep(0.25)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` in the background (watch callbacks cannot wait); shutdown ends what is left."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    # --- actions ---------------------------------------------------------------------------------------

    def _where(self, placement: Placement) -> JobPlacement:
        assert placement.profile is not None
        return JobPlacement(
            user=placement.user,
            profile=placement.profile,
            image=placement.image or self.default_image,
            namespace=self.namespace,
            groups=placement.groups,
            env=placement.env,
            uid=self.uid,
            gid=self.gid,
            output_claim=self.output_claim or None,
        )

    async def validate(self, spec: JobSpec, placement: Placement) -> None:
        """Ask the API server (a dry run: nothing is stored) whether it would take the job's objects."""
        key = (placement.user, spec.name)
        configmap, workload = build_manifests(spec, self._where(placement))
        # the pod its controller will create: Pod Security, LimitRange and ResourceQuota apply to pods
        template = (workload["spec"].get("jobTemplate") or workload)["spec"]["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", **template}
        pod["metadata"] = {**template["metadata"], "name": configmap["metadata"]["name"]}
        # (the ConfigMap needs no asking: the submission's own limits keep it far below 1 MiB)
        for manifest in (workload, pod):
            try:
                await self._create(manifest, dry_run=True)
            except ApiException as e:
                if not _already_exists(e):
                    raise _rejected(e) from None
                if manifest is pod:
                    # no job's pod has exactly this name; the dry run has passed admission already
                    continue
                existing = await self._read(_RESOURCES[manifest["kind"]], manifest["metadata"]["name"])
                if existing is not None and _owner(existing) != key:
                    raise _taken(manifest["kind"], manifest["metadata"]["name"]) from None
                # this job's earlier run: submit replaces it

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        """Create the job's code ConfigMap and workload (replacing an earlier run's) and report it pending."""
        assert self.api is not None and placement.profile is not None
        key = (placement.user, spec.name)
        async with self._lock(key):
            if await self._submit(spec, placement, key):
                await self.notify(placement.user, spec.name, Observed(JobStatus.PENDING))

    async def _submit(self, spec: JobSpec, placement: Placement, key: Key) -> bool:
        """Create the job's objects; False where the same job runs already (nothing to do)."""
        kind = _KINDS[spec.kind]
        object_id = object_name(*key)
        if self._active(key, kind):
            return False  # idempotent: the same job runs already
        other = self.caches[kind].objects.get(f"{self.namespace}/{object_id}")
        if other is not None and _owner(other) != key:
            raise _taken(_KIND_OF[kind], object_id)  # someone else's: left alone
        if any(self._workload(*key, k) is not None for k in _KINDS.values()) or key in self._code_uids:
            # A finished run (or a leftover) holds the names: remove it first, or the creates below
            # would meet 409 AlreadyExists and nothing new would run.
            await self._remove(*key, wait=True)
        self.specs[key] = (spec, kind)
        self.stopped.discard(key)
        self._last.pop(key, None)
        configmap, workload = build_manifests(spec, self._where(placement))
        try:
            code = await self._claim(configmap, key)
        except Exception:
            self.specs.pop(key, None)
            raise
        code_uid = self._code_uids[key] = _uid(code)
        workload["metadata"]["annotations"][CODE_UID_ANNOTATION] = code_uid
        try:
            created = await self._claim(workload, key)
        except Exception as e:
            # never leave the code without its workload
            with contextlib.suppress(ApiException):
                await self._delete("configmaps", object_id, code_uid)
                self._code_uids.pop(key, None)
            self.specs.pop(key, None)
            if isinstance(e, ApiException) and e.status in (400, 403, 409, 422):
                raise _rejected(e) from None
            raise

        # the job's state is read from the caches: let them show the new workload (a moment), so that
        # a repeated submit or a stop right after finds it
        def cached() -> bool:
            shown = self._workload(*key, kind)
            return shown is not None and _uid(shown) == _uid(created)

        with contextlib.suppress(TimeoutError):
            await self._until(cached, 10)
        return True

    async def _claim(self, manifest: Json, key: Key) -> Json:
        """Create ``manifest`` and return the object created. Where its name is taken: by an object of
        this job (code left behind, a run the caches did not show) that is deleted and the object
        created again; by anything else (or what cannot be read) the job is refused, and that object
        left alone."""
        kind, name = _RESOURCES[manifest["kind"]], manifest["metadata"]["name"]
        for _ in range(3):
            try:
                return await self._create(manifest)
            except ApiException as e:
                if not _already_exists(e):
                    raise
            try:
                existing = await self._read(kind, name)
            except ApiException as e:
                if e.status != 403:
                    raise
                raise _taken(manifest["kind"], name, "could not be checked to be this job's") from None
            if existing is None:
                continue  # gone meanwhile
            if _owner(existing) != key:
                raise _taken(manifest["kind"], name)
            self.log.info(
                "Replacing %s %s left behind by job %s of %s", manifest["kind"], name, key[1], key[0]
            )
            await self._delete(kind, name, _uid(existing), None if kind == "configmaps" else "Foreground")
            await self._gone(kind, name, _uid(existing))
        raise TimeoutError("the job's previous objects are still being deleted; try again shortly")

    def _active(self, key: Key, kind: str) -> bool:
        """Whether the job's workload exists, is ours, is not being deleted and has not finished."""
        workload = self._workload(*key, kind)
        if key in self.stopped or workload is None or workload["metadata"].get("deletionTimestamp"):
            return False
        return kind != "jobs" or not _job_finished(workload)

    async def _create(self, manifest: Json, dry_run: bool = False, attempts: int = 6) -> Json:
        """Create (or dry-run) one object; the object as created. A 409 Conflict that is not
        AlreadyExists (the namespace's ResourceQuota was updated by a concurrent create) and a 429 are
        retried with back-off."""
        for attempt in range(attempts):
            try:
                return await self._create_once(manifest, dry_run)
            except ApiException as e:
                retryable = e.status == 429 or (e.status == 409 and _reason(e) != "AlreadyExists")
                if not retryable or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _create_once(self, manifest: Json, dry_run: bool) -> Json:
        assert self.api is not None
        options: dict[str, Any] = {"field_validation": "Strict"}
        if dry_run:
            options["dry_run"] = "All"
        kind = manifest["kind"]
        call: Any
        if kind == "ConfigMap":
            call = client.CoreV1Api(self.api).create_namespaced_config_map
        elif kind == "Job":
            call = client.BatchV1Api(self.api).create_namespaced_job
        elif kind == "CronJob":
            call = client.BatchV1Api(self.api).create_namespaced_cron_job
        elif kind == "Pod":
            call = client.CoreV1Api(self.api).create_namespaced_pod
        else:
            call = client.AppsV1Api(self.api).create_namespaced_deployment
        created = await call(self.namespace, manifest, **options)
        return self.api.sanitize_for_serialization(created)  # type: ignore[no-any-return]

    def _list_method(self, kind: str) -> Any:
        batch, apps = client.BatchV1Api(self.api), client.AppsV1Api(self.api)
        return {
            "jobs": batch.list_namespaced_job,
            "deployments": apps.list_namespaced_deployment,
            "cronjobs": batch.list_namespaced_cron_job,
        }[kind]

    async def _read(self, kind: str, name: str) -> Json | None:
        """The object ``name`` of ``kind`` as the API server has it now (not as cached), or None.
        Workloads are read with ``list`` and a name field selector (they may lack the label the
        caches select by); a ConfigMap with ``get``."""
        assert self.api is not None
        if kind == "configmaps":
            try:
                found = await client.CoreV1Api(self.api).read_namespaced_config_map(name, self.namespace)
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
            return self.api.sanitize_for_serialization(found)  # type: ignore[no-any-return]
        answer = await self._list_method(kind)(self.namespace, field_selector=f"metadata.name={name}")
        items = [self.api.sanitize_for_serialization(item) for item in answer.items]
        return items[0] if items else None

    async def _gone(self, kind: str, name: str, uid: str, timeout: float = 60) -> None:
        """Wait until the object ``name`` with ``uid`` no longer exists (read from the API server:
        what is in the way of a create need not be in the caches)."""
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.1
        while (found := await self._read(kind, name)) is not None and _uid(found) == uid:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the job's previous objects are still being deleted; try again shortly")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _delete(self, kind: str, name: str, uid: str, propagation: str | None = None) -> bool:
        """Delete the object ``name`` of ``kind`` only if it is still the one with ``uid``: another
        may have taken the name meanwhile. Whether this deleted it (or began to)."""
        assert self.api is not None
        calls = {
            "configmaps": client.CoreV1Api(self.api).delete_namespaced_config_map,
            "jobs": client.BatchV1Api(self.api).delete_namespaced_job,
            "deployments": client.AppsV1Api(self.api).delete_namespaced_deployment,
            "cronjobs": client.BatchV1Api(self.api).delete_namespaced_cron_job,
        }
        options = client.V1DeleteOptions(
            propagation_policy=propagation, preconditions=client.V1Preconditions(uid=uid)
        )
        try:
            await calls[kind](name, self.namespace, body=options)
        except ApiException as e:
            if e.status == 404:
                return False  # gone already
            if e.status == 409:  # the precondition failed: the name holds another object now
                self.log.info("Not deleting %s %s: it is not the object %s any more", kind, name, uid)
                return False
            raise
        return True

    async def _remove(self, user: str, name: str, *, wait: bool = False, timeout: float = 60) -> None:
        """Delete the job's workload and code (only objects that are the job's); with ``wait``,
        return once they and their pods are gone."""
        key = (user, name)
        object_id = object_name(user, name)
        known = self.specs.get(key)
        # the kind the job has, and whatever else of the job the caches hold under its name (a leftover)
        cached = {k for k in _KINDS.values() if self._workload(user, name, k) is not None}
        kinds = sorted(({known[1]} if known else set()) | cached)
        code_uids = {self._code_uids[key]} if key in self._code_uids else set()
        for kind in kinds:
            workload = self._workload(user, name, kind)
            if workload is None:  # not (yet) in the cache: ask the API server
                found = await self._read(kind, object_id)
                workload = found if found is not None and _owner(found) == key else None
            if workload is None:
                continue
            if code_uid := (workload["metadata"].get("annotations") or {}).get(CODE_UID_ANNOTATION):
                code_uids.add(code_uid)
            # Foreground: the workload goes only after its pods, so a new run never meets the old pods.
            await self._delete(kind, object_id, _uid(workload), "Foreground")
        for code_uid in sorted(code_uids):
            await self._delete("configmaps", object_id, code_uid)
            if self._code_uids.get(key) == code_uid:
                del self._code_uids[key]
        if wait:
            await self._until(
                lambda: (
                    not any(self._workload(user, name, k) is not None for k in kinds)
                    and not self._pods(user, name)
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
        async with self._lock((user, name)):
            self.stopped.add((user, name))
            await self._remove(user, name)
            self._last[(user, name)] = Observed(JobStatus.STOPPED, message="stopped")
        await self.notify(user, name, self._last[(user, name)])

    async def delete(self, user: str, name: str) -> None:
        """Delete the job's workload and code and forget the job."""
        async with self._lock((user, name)):
            await self._remove(user, name)
            self.specs.pop((user, name), None)
            self._last.pop((user, name), None)

    # --- what is happening -------------------------------------------------------------------------------

    def _pods(self, user: str, name: str) -> list[Json]:
        """The job's pods: labelled with its object name, and carrying its exact owner and name."""
        object_id = object_name(user, name)
        pods = [
            p
            for p in self.caches["pods"].values()
            if (p["metadata"].get("labels") or {}).get(JOB_LABEL) == object_id and _owner(p) == (user, name)
        ]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def _workload(self, user: str, name: str, kind: str) -> Json | None:
        """The job's workload of ``kind`` as cached: the object under its name, if it is the job's."""
        found = self.caches[kind].objects.get(f"{self.namespace}/{object_name(user, name)}")
        return found if found is not None and _owner(found) == (user, name) else None

    def _run_pods(self, user: str, name: str, kind: str) -> list[Json]:
        """The pods of the job's current workload (a Job's own pods, not an earlier run's)."""
        pods = self._pods(user, name)
        workload = self._workload(user, name, kind)
        if kind == "jobs" and workload is not None:
            uid = workload["metadata"].get("uid")
            pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(_CONTROLLER_UID) == uid]
        return pods

    def observed(self, user: str, name: str) -> Observed | None:
        """The job's status from the cached workload and pods; ``None`` for a job unknown here."""
        key = (user, name)
        if key in self.stopped:
            return Observed(JobStatus.STOPPED, message="stopped")
        if key not in self.specs:
            return None
        _, kind = self.specs[key]
        return derive_status(kind, self._workload(user, name, kind), self._run_pods(user, name, kind))

    def _changed(self, event: str, obj: Json) -> None:
        """A watched object changed: report the job it belongs to if its observed state moved
        (after a relist, every job); keep a CronJob's live runs within its bound; remove the code
        of a workload that went (whoever deleted it)."""
        self._change.set()
        if not self.caches or any(not cache.ready for cache in self.caches.values()):
            return
        if event == "RELISTED":
            keys = list(self.specs)
            for cronjob in self.caches["cronjobs"].values():
                self._bound_live_runs(cronjob)
        else:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            owner = _owner(obj)
            keys = [owner] if owner in self.specs else []
            if not keys and labels.get(JOB_LABEL):  # a CronJob's Jobs of old carry only the label
                found = self._owner_of(labels[JOB_LABEL])
                keys = [found] if found else []
            self._after(event, obj)
        for user, name in keys:
            observed = self.observed(user, name)
            if observed is not None and observed != self._last.get((user, name)):
                self._last[(user, name)] = observed
                self._spawn(self.notify(user, name, observed))

    def _after(self, event: str, obj: Json) -> None:
        """What a watch event of a Job or CronJob asks of the backend besides a report."""
        meta = obj.get("metadata") or {}
        if event == "DELETED":
            self._culling.discard(str(meta.get("uid")))
            owner, code_uid = _owner(obj), (meta.get("annotations") or {}).get(CODE_UID_ANNOTATION)
            if owner is not None and code_uid and meta.get("name") == object_name(*owner):
                # the job's workload went: its code goes too (by uid: never a newer run's)
                self._spawn(self._delete_quietly("configmaps", str(meta["name"]), code_uid))
            return
        if obj.get("kind") == "CronJob":
            self._bound_live_runs(obj)
        elif obj.get("kind") == "Job" and (parent := _controller(obj, "CronJob")) is not None:
            for cronjob in self.caches["cronjobs"].values():
                if cronjob["metadata"].get("uid") == parent:
                    self._bound_live_runs(cronjob)

    def _bound_live_runs(self, cronjob: Json) -> None:
        """A CronJob of a job that allows concurrent runs starts one on every tick, however many
        are alive: delete the newest ones beyond the job's ``max_live_runs``."""
        owner, meta = _owner(cronjob), cronjob.get("metadata") or {}
        if owner is None or meta.get("name") != object_name(*owner) or meta.get("deletionTimestamp"):
            return
        if (cronjob.get("spec") or {}).get("concurrencyPolicy") != "Allow":
            return  # Forbid and Replace: Kubernetes keeps one run at most
        limit = _max_live_runs(cronjob)
        jobs = [j for j in self.caches["jobs"].values() if _uid(j) not in self._culling]
        for job in extra_runs(cronjob, jobs, limit):
            self._culling.add(_uid(job))
            self._spawn(self._delete_extra_run(owner, job, limit))

    async def _delete_extra_run(self, owner: Key, job: Json, limit: int) -> None:
        name, uid = job["metadata"]["name"], _uid(job)
        try:
            # Background: the run is over at once; its pods follow
            if await self._delete("jobs", name, uid, "Background"):
                self.log.warning(
                    "Scheduled job %s of %s: more than %d run(s) alive; deleted the newest extra run %s",
                    owner[1],
                    owner[0],
                    limit,
                    name,
                )
        except Exception:
            self._culling.discard(uid)
            self.log.exception("Could not delete the extra run %s of job %s of %s", name, owner[1], owner[0])

    async def _delete_quietly(self, kind: str, name: str, uid: str) -> None:
        try:
            await self._delete(kind, name, uid)
        except Exception:
            self.log.exception("Could not delete %s %s (uid %s)", kind, name, uid)

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
        assert self.api is not None
        key = (user, name)
        kind = self.specs[key][1] if key in self.specs else "jobs"
        streamed: set[tuple[str, int]] = set()  # (pod uid, restart count) already followed to its end
        while True:
            target = self._log_target(user, name, kind)
            if target is not None and target[1:] not in streamed:
                response = await self._open_log(target[0], follow, tail)
                if response is not None:
                    try:
                        while chunk := await response.content.read(8192):
                            yield chunk.decode("utf-8", errors="replace")
                    finally:
                        response.release()
                    if not follow:
                        return
                    streamed.add(target[1:])
                    tail = None  # later containers: everything they print
            elif not follow:
                return
            if self._finished(key):
                return
            self._change.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change.wait(), 5)

    async def _open_log(self, pod: str, follow: bool, tail: int | None) -> Any:
        """The pod log response, or None while the container is being created (the API answers 400)."""
        arguments: dict[str, Any] = {"container": "job", "follow": follow, "_preload_content": False}
        if tail is not None:
            arguments["tail_lines"] = tail
        try:
            response: Any = await client.CoreV1Api(self.api).read_namespaced_pod_log(
                pod, self.namespace, **arguments
            )
        except ApiException as e:
            if e.status in (400, 404):
                return None
            raise
        if response.status >= 400:  # without preloading, the client does not raise
            response.release()
            if response.status in (400, 404):
                return None
            raise ApiException(status=response.status, reason=response.reason)
        return response

    def _log_target(self, user: str, name: str, kind: str) -> tuple[str, str, int] | None:
        """(pod name, pod uid, restart count) of the job's latest container that has started."""
        for pod in reversed(self._run_pods(user, name, kind)):
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                state = status.get("state") or {}
                if status.get("name") == "job" and ("running" in state or "terminated" in state):
                    meta = pod["metadata"]
                    return meta["name"], meta["uid"], int(status.get("restartCount", 0))
        return None

    def _finished(self, key: Key) -> bool:
        observed = self.observed(*key)
        return observed is None or observed.status.finished


__all__ = ["KubernetesJobBackend"]


def _status(error: ApiException) -> Json:
    """The API server's Status body of an error ({} where there is none)."""
    try:
        body = json.loads(error.body or b"")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _reason(error: ApiException) -> str:
    """The machine-readable reason of an API error (AlreadyExists, Conflict, NotFound...)."""
    return str(_status(error).get("reason", ""))


def _rejected(error: ApiException) -> JobRejected:
    """The API server's refusal, as a message for the researcher naming the submit field at fault."""
    status = _status(error)
    causes = (status.get("details") or {}).get("causes") or []
    where = " ".join(str(c.get("field", "")) for c in causes)
    field = None
    for marker, name in ((".env", "env"), (".command", "command"), (".args", "command"), ("data", "files")):
        if marker in where:
            field = name
            break
    message = status.get("message") or f"{error.status} {error.reason}"
    return JobRejected(f"the cluster refused this job: {message}", field)


def _already_exists(error: ApiException) -> bool:
    """A create met an object of the same name (not: a Conflict on the namespace's quota)."""
    return error.status == 409 and _reason(error) == "AlreadyExists"


def _taken(kind: str, name: str, why: str = "is not this job's") -> JobRejected:
    """A refusal: the job's name is held by an object that is someone else's (left alone)."""
    return JobRejected(
        f"this job's name is taken in the cluster: a {kind} called {name} exists that {why}; "
        "choose another job name, or ask an admin to remove that object",
        "name",
    )
