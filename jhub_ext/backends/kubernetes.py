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
import os
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Integer, Unicode, default

from ..jobs.model import JobKind, JobSpec, JobStatus
from ..k8s.jobs import JOB_LABEL, JobPlacement, build_manifests, object_name
from .base import JobBackend, Observed, Placement
from .watch import WatchCache

Json = dict[str, Any]
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
                annotations = obj["metadata"].get("annotations") or {}
                user, name = annotations.get("jhub-ext.io/user"), annotations.get("jhub-ext.io/name")
                if user and name:
                    self.specs.setdefault((user, name), (None, kind))  # type: ignore[arg-type]
        self._changed("RELISTED", {})

    async def shutdown(self) -> None:
        for cache in self.caches.values():
            await cache.stop()
        if self.api is not None:
            await self.api.close()

    # --- actions ---------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        assert self.api is not None and placement.profile is not None
        where = JobPlacement(
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
        key = (placement.user, spec.name)
        self.specs[key] = (spec, _KINDS[spec.kind])
        self.stopped.discard(key)
        self._last.pop(key, None)
        for manifest in build_manifests(spec, where):
            try:
                await self._create(manifest)
            except ApiException as e:
                if e.status != 409:  # 409: it exists already, from an earlier submit
                    raise
        await self.notify(placement.user, spec.name, Observed(JobStatus.PENDING))

    async def _create(self, manifest: Json) -> None:
        assert self.api is not None
        kind = manifest["kind"]
        if kind == "ConfigMap":
            await client.CoreV1Api(self.api).create_namespaced_config_map(self.namespace, manifest)
        elif kind == "Job":
            await client.BatchV1Api(self.api).create_namespaced_job(self.namespace, manifest)
        elif kind == "CronJob":
            await client.BatchV1Api(self.api).create_namespaced_cron_job(self.namespace, manifest)
        else:
            await client.AppsV1Api(self.api).create_namespaced_deployment(self.namespace, manifest)

    async def _remove(self, user: str, name: str) -> None:
        assert self.api is not None
        object_id = object_name(user, name)
        background = client.V1DeleteOptions(propagation_policy="Background")
        deletions = [
            client.BatchV1Api(self.api).delete_namespaced_job(object_id, self.namespace, body=background),
            client.AppsV1Api(self.api).delete_namespaced_deployment(
                object_id, self.namespace, body=background
            ),
            client.BatchV1Api(self.api).delete_namespaced_cron_job(
                object_id, self.namespace, body=background
            ),
            client.CoreV1Api(self.api).delete_namespaced_config_map(object_id, self.namespace),
        ]
        for deletion in deletions:
            try:
                await deletion
            except ApiException as e:
                if e.status != 404:
                    raise

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

    @staticmethod
    def _exit_code(pod: Json) -> int | None:
        for status in pod.get("status", {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get(
                "terminated"
            )
            if terminated:
                return int(terminated.get("exitCode", 0))
        return None

    def observed(self, user: str, name: str) -> Observed | None:
        key = (user, name)
        if key in self.stopped:
            return Observed(JobStatus.STOPPED, message="stopped")
        if key not in self.specs:
            return None
        _, kind = self.specs[key]
        workload = self.caches[kind].objects.get(f"{self.namespace}/{object_name(user, name)}")
        pods = self._pods(user, name)
        restarts = sum(
            int(s.get("restartCount", 0))
            for p in pods
            for s in p.get("status", {}).get("containerStatuses") or []
        )
        running = any(p.get("status", {}).get("phase") == "Running" for p in pods)
        if kind == "jobs" and workload is not None:
            conditions = {c["type"]: c for c in workload.get("status", {}).get("conditions") or []}
            failures = int(workload.get("status", {}).get("failed", 0))
            if "Complete" in conditions:
                return Observed(JobStatus.SUCCEEDED, 0, "completed", failures)
            if "Failed" in conditions:
                code = next((c for p in reversed(pods) if (c := self._exit_code(p)) is not None), None)
                reason = conditions["Failed"].get("reason", "failed")
                return Observed(JobStatus.FAILED, code, f"{reason}: exited with code {code}", failures)
            return Observed(JobStatus.RUNNING if running else JobStatus.PENDING, restarts=failures)
        if workload is None:
            return Observed(JobStatus.PENDING)
        if kind == "cronjobs":
            last = next((c for p in reversed(pods) if (c := self._exit_code(p)) is not None), None)
            return Observed(JobStatus.RUNNING if running else JobStatus.PENDING, last, None, restarts)
        return Observed(JobStatus.RUNNING if running else JobStatus.PENDING, None, None, restarts)

    def _changed(self, kind: str, obj: Json) -> None:
        """A watched object changed: report every job whose observed state moved."""
        if not self.caches or any(not cache.ready for cache in self.caches.values()):
            return
        for user, name in list(self.specs):
            observed = self.observed(user, name)
            if observed is not None and observed != self._last.get((user, name)):
                self._last[(user, name)] = observed
                asyncio.get_running_loop().create_task(self.notify(user, name, observed))

    async def logs(
        self, user: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        assert self.api is not None
        pods = self._pods(user, name)
        if not pods:
            return
        core = client.CoreV1Api(self.api)
        pod = pods[-1]["metadata"]["name"]
        arguments: dict[str, Any] = {"container": "job", "follow": follow, "_preload_content": False}
        if tail is not None:
            arguments["tail_lines"] = tail
        with contextlib.suppress(ApiException):
            response = await core.read_namespaced_pod_log(pod, self.namespace, **arguments)
            try:
                while chunk := await response.content.read(8192):
                    yield chunk.decode("utf-8", errors="replace")
            finally:
                response.release()


__all__ = ["KubernetesJobBackend"]
