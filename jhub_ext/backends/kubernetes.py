"""The Kubernetes jobs backend: a job is a ConfigMap (its code) and a Job, Deployment or CronJob.

Manifests come from the pure builders in :mod:`jhub_ext.k8s.jobs`. Status comes from
watch-fed caches of the workloads and their pods (no polling); logs from the pod log API.
Creation is idempotent: objects are named from (user, job name), so a repeated submit or a
restarted service finds what exists instead of creating it twice. The service keeps no state
of its own here: after a restart, the caches rebuild it from the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Integer, Unicode, default

from ..jobs.model import JobKind, JobSpec, JobStatus
from ..k8s.jobs import JOB_LABEL, JobPlacement, build_manifests, object_name
from .base import JobBackend, JobRejected, Observed, Placement
from .watch import WatchCache

Json = dict[str, Any]


@contextlib.contextmanager
def _ignore_missing() -> Iterator[None]:
    """A 404 on delete: it is gone already."""
    try:
        yield
    except ApiException as e:
        if e.status != 404:
            raise


_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


def _owner(obj: Json) -> tuple[str, str] | None:
    """(user, job name) from an object's annotations (labels are sanitised; these are exact)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    user, name = annotations.get("jhub-ext.io/user"), annotations.get("jhub-ext.io/name")
    return (user, name) if user and name else None


_KINDS = {JobKind.BATCH: "jobs", JobKind.SCRAPER: "deployments", JobKind.SCHEDULED: "cronjobs"}


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
        self.specs: dict[tuple[str, str], tuple[JobSpec, str]] = {}
        self.stopped: set[tuple[str, str]] = set()
        self._last: dict[tuple[str, str], Observed] = {}
        self._change = asyncio.Event()  # set on every watch event
        self._by_object: dict[str, tuple[str, str]] = {}

    # --- life cycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            # read $KUBECONFIG now: the client's default was fixed when it was imported
            await config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
            )
        self.api = client.ApiClient(configuration)
        core, batch, apps = (
            client.CoreV1Api(self.api),
            client.BatchV1Api(self.api),
            client.AppsV1Api(self.api),
        )
        lists = {
            "pods": core.list_namespaced_pod,
            "jobs": batch.list_namespaced_job,
            "deployments": apps.list_namespaced_deployment,
            "cronjobs": batch.list_namespaced_cron_job,
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
        # re-adopt: everything our label selects belongs to a job
        for kind in ("jobs", "deployments", "cronjobs"):
            for obj in self.caches[kind].values():
                if (owner := _owner(obj)) is not None:
                    self.specs.setdefault(owner, (None, kind))  # type: ignore[arg-type]
        self._changed("RELISTED", {})

    async def shutdown(self) -> None:
        for cache in self.caches.values():
            await cache.stop()
        if self.api is not None:
            await self.api.close()
            # TLS connections finish closing on the next turns of the loop (aiohttp's advice for a
            # graceful shutdown); without this they outlive a loop that stops right after
            await asyncio.sleep(0.25)

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
                if e.status == 409 and _reason(e) == "AlreadyExists":  # an earlier run's: submit replaces it
                    continue
                raise _rejected(e) from None

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        assert self.api is not None and placement.profile is not None
        where = self._where(placement)
        key = (placement.user, spec.name)
        kind = _KINDS[spec.kind]
        object_key = f"{self.namespace}/{object_name(*key)}"
        if self._active(key, kind):
            return  # idempotent: the same job runs already
        if any(object_key in self.caches[k].objects for k in _KINDS.values()):
            # A finished run (or a leftover) holds the names: remove it first, or the creates below
            # would meet 409 AlreadyExists and nothing new would run.
            await self._remove(*key, wait=True)
        self.specs[key] = (spec, kind)
        self.stopped.discard(key)
        self._last.pop(key, None)
        configmap, workload = build_manifests(spec, where)
        try:
            await self._create(configmap)
        except ApiException as e:
            if e.status != 409 or _reason(e) != "AlreadyExists":
                raise
            # code left behind without its workload (or an identical concurrent submit): renew it
            await self._delete_code(object_name(*key))
            await self._create(configmap)
        try:
            await self._create(workload)
        except ApiException as e:
            if e.status == 409 and _reason(e) == "AlreadyExists":
                # a concurrent identical submit created it: fine once the cache shows it is ours and active
                await self._until(lambda: object_key in self.caches[kind].objects, 10)
                if self._active(key, kind):
                    return
            # never leave the code without its workload
            await self._delete_code(object_name(*key))
            self.specs.pop(key, None)
            if e.status in (400, 403, 409, 422):
                raise _rejected(e) from None
            raise
        await self.notify(placement.user, spec.name, Observed(JobStatus.PENDING))

    def _active(self, key: tuple[str, str], kind: str) -> bool:
        """Whether the job's workload exists, is ours, is not being deleted and has not finished."""
        workload = self._workload(*key, kind)
        if key in self.stopped or workload is None or workload["metadata"].get("deletionTimestamp"):
            return False
        if _owner(workload) != key:
            return False
        if kind == "jobs":
            conditions = workload.get("status", {}).get("conditions") or []
            return not any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)
        return True

    async def _create(self, manifest: Json, dry_run: bool = False, attempts: int = 6) -> None:
        """Create (or dry-run) one object. A 409 Conflict that is not AlreadyExists (the namespace's
        ResourceQuota was updated by a concurrent create) and a 429 are retried with back-off."""
        for attempt in range(attempts):
            try:
                await self._create_once(manifest, dry_run)
                return
            except ApiException as e:
                retryable = e.status == 429 or (e.status == 409 and _reason(e) != "AlreadyExists")
                if not retryable or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)

    async def _create_once(self, manifest: Json, dry_run: bool) -> None:
        assert self.api is not None
        options: dict[str, Any] = {"field_validation": "Strict"}
        if dry_run:
            options["dry_run"] = "All"
        kind = manifest["kind"]
        if kind == "ConfigMap":
            await client.CoreV1Api(self.api).create_namespaced_config_map(self.namespace, manifest, **options)
        elif kind == "Job":
            await client.BatchV1Api(self.api).create_namespaced_job(self.namespace, manifest, **options)
        elif kind == "CronJob":
            await client.BatchV1Api(self.api).create_namespaced_cron_job(self.namespace, manifest, **options)
        elif kind == "Pod":
            await client.CoreV1Api(self.api).create_namespaced_pod(self.namespace, manifest, **options)
        else:
            await client.AppsV1Api(self.api).create_namespaced_deployment(self.namespace, manifest, **options)

    async def _remove(self, user: str, name: str, *, wait: bool = False, timeout: float = 60) -> None:
        """Delete the job's workload and code; with ``wait``, return once they and their pods are gone."""
        assert self.api is not None
        object_id = object_name(user, name)
        key = f"{self.namespace}/{object_id}"
        known = self.specs.get((user, name))
        # the kind the job has, and whatever else the caches hold under its name (a leftover)
        cached = {k for k in _KINDS.values() if key in self.caches[k].objects}
        kinds = sorted(({known[1]} if known else set()) | cached)
        # Foreground: the workload goes only after its pods, so a new run never meets the old pods.
        foreground = client.V1DeleteOptions(propagation_policy="Foreground")
        calls = {
            "jobs": client.BatchV1Api(self.api).delete_namespaced_job,
            "deployments": client.AppsV1Api(self.api).delete_namespaced_deployment,
            "cronjobs": client.BatchV1Api(self.api).delete_namespaced_cron_job,
        }
        for kind in kinds:
            with _ignore_missing():
                await calls[kind](object_id, self.namespace, body=foreground)
        await self._delete_code(object_id)
        if wait:
            await self._until(
                lambda: not any(key in self.caches[k].objects for k in kinds) and not self._pods(user, name),
                timeout,
            )

    async def _delete_code(self, object_id: str) -> None:
        with _ignore_missing():
            await client.CoreV1Api(self.api).delete_namespaced_config_map(object_id, self.namespace)

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
        self.stopped.add((user, name))
        await self._remove(user, name)
        self._last[(user, name)] = Observed(JobStatus.STOPPED, message="stopped")
        await self.notify(user, name, self._last[(user, name)])

    async def delete(self, user: str, name: str) -> None:
        await self._remove(user, name)
        self.specs.pop((user, name), None)
        self._last.pop((user, name), None)

    # --- what is happening -------------------------------------------------------------------------------

    def _pods(self, user: str, name: str) -> list[Json]:
        object_id = object_name(user, name)
        pods = [
            p
            for p in self.caches["pods"].values()
            if (p["metadata"].get("labels") or {}).get(JOB_LABEL) == object_id
        ]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def _workload(self, user: str, name: str, kind: str) -> Json | None:
        return self.caches[kind].objects.get(f"{self.namespace}/{object_name(user, name)}")

    def _run_pods(self, user: str, name: str, kind: str) -> list[Json]:
        """The pods of the job's current workload (a Job's own pods, not an earlier run's)."""
        pods = self._pods(user, name)
        workload = self._workload(user, name, kind)
        if kind == "jobs" and workload is not None:
            uid = workload["metadata"].get("uid")
            pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(_CONTROLLER_UID) == uid]
        return pods

    def observed(self, user: str, name: str) -> Observed | None:
        key = (user, name)
        if key in self.stopped:
            return Observed(JobStatus.STOPPED, message="stopped")
        if key not in self.specs:
            return None
        _, kind = self.specs[key]
        return derive_status(kind, self._workload(user, name, kind), self._run_pods(user, name, kind))

    def _changed(self, kind: str, obj: Json) -> None:
        """A watched object changed: report the job it belongs to if its observed state moved
        (after a relist, every job)."""
        self._change.set()
        if not self.caches or any(not cache.ready for cache in self.caches.values()):
            return
        if kind == "RELISTED":
            keys = list(self.specs)
        else:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            owner = _owner(obj)
            keys = [owner] if owner in self.specs else []
            if not keys and labels.get(JOB_LABEL):  # a CronJob's Jobs carry only the label
                found = self._owner_of(labels[JOB_LABEL])
                keys = [found] if found else []
        for user, name in keys:
            observed = self.observed(user, name)
            if observed is not None and observed != self._last.get((user, name)):
                self._last[(user, name)] = observed
                asyncio.get_running_loop().create_task(self.notify(user, name, observed))

    def _owner_of(self, object_id: str) -> tuple[str, str] | None:
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
        from now until it ends (a Job's retries, a scraper's restarts), waiting for the first one."""
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
            response = await client.CoreV1Api(self.api).read_namespaced_pod_log(
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

    def _finished(self, key: tuple[str, str]) -> bool:
        observed = self.observed(*key)
        return observed is None or observed.status.finished


__all__ = ["KubernetesJobBackend"]


def _status(error: ApiException) -> Json:
    """The API server's Status body of an error ({} where there is none)."""
    try:
        body = json.loads(error.body)
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


# --- status, from the objects alone ---------------------------------------------------------------


def _terminated(pod: Json) -> list[tuple[str, Json]]:
    """(container name, terminated state) of every container that has ended, init containers first."""
    status = pod.get("status") or {}
    ended = []
    for entry in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = entry.get("state") or {}
        terminated = state.get("terminated") or (entry.get("lastState") or {}).get("terminated")
        if terminated:
            ended.append((str(entry.get("name")), terminated))
    return ended


def _exit(pods: list[Json]) -> tuple[int | None, str | None]:
    """The exit code and a plain reason of the latest pod that has one."""
    for pod in reversed(pods):
        for container, terminated in reversed(_terminated(pod)):
            code = int(terminated.get("exitCode", 0))
            if container == "code" and code:
                return code, "its code could not be copied into place"
            if terminated.get("reason") == "OOMKilled":
                return code, "ran out of memory (killed at its memory limit)"
            if code or container != "code":
                return code, None
    return None, None


def derive_status(kind: str, workload: Json | None, pods: list[Json]) -> Observed:
    """A job's status from its workload and its pods (as the watch caches hold them)."""
    restarts = sum(
        int(s.get("restartCount", 0))
        for p in pods
        for s in (p.get("status") or {}).get("containerStatuses") or []
    )
    running = any((p.get("status") or {}).get("phase") == "Running" for p in pods)
    now = JobStatus.RUNNING if running else JobStatus.PENDING
    if workload is None:
        return Observed(JobStatus.PENDING)
    if kind == "jobs":
        status = workload.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failures = int(status.get("failed", 0))
        if "Complete" in conditions:
            return Observed(JobStatus.SUCCEEDED, 0, "completed", failures)
        if "Failed" in conditions:
            code, why = _exit(pods)
            settled = all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods)
            reason = conditions["Failed"].get("reason", "")
            if code is None and not settled and reason != "DeadlineExceeded":
                return Observed(JobStatus.RUNNING, restarts=failures)  # the pod's exit code is on its way
            if reason == "DeadlineExceeded":
                deadline = (workload.get("spec") or {}).get("activeDeadlineSeconds")
                return Observed(
                    JobStatus.FAILED, code, f"stopped after its deadline of {deadline} s", failures
                )
            attempts = failures or 1
            what = why or (f"exited with code {code}" if code is not None else "failed")
            tries = "attempt" if attempts == 1 else "attempts"
            return Observed(JobStatus.FAILED, code, f"{what} ({attempts} {tries})", failures)
        return Observed(now, restarts=failures)
    if kind == "cronjobs":
        code, _ = _exit(pods)
        return Observed(now, code, None, restarts)
    return Observed(now, None, None, restarts)
