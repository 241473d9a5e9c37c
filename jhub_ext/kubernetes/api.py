"""The Kubernetes jobs backend's calls on the API server, and its refusals in plain words.

The backend knows what exists from its watch caches (:mod:`jhub_ext.kubernetes.backend`); it
calls the API server for what the caches cannot do or say: create an object (or ask whether it
would be taken: a dry run), read what holds a name right now, wait until an object is gone,
delete one, and open a pod's log. A job's objects are created by :meth:`KubeObjects.claim`,
which replaces what the job itself left under their names and never touches anyone else's.
Deletions name the uid of the object looked up (a precondition), so they never delete another
object that has taken the name meanwhile. The API server's errors become
:class:`~jhub_ext.core.jobs.backend.JobRejected` with a message for the researcher.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from jhub_ext.core.jobs.backend import JobRejected
from jhub_ext.kubernetes.status import owner

Json = dict[str, Any]
#: seconds any one call on the API server may take: one that does not answer (paused, partitioned)
#: fails with TimeoutError, which the service answers 503 with Retry-After, instead of hanging
REQUEST_TIMEOUT = 15

#: the resource (the API's plural) of each kind of object a job is made of
RESOURCES = {"ConfigMap": "configmaps", "Job": "jobs", "Deployment": "deployments", "CronJob": "cronjobs"}
#: the kind of object of each resource
KIND_OF = {resource: kind for kind, resource in RESOURCES.items()}
#: where in the API each kind of object the backend asks for is (the pod's: for a dry run)
API_PATHS = {
    "ConfigMap": "/api/v1/namespaces/{namespace}/configmaps",
    "Pod": "/api/v1/namespaces/{namespace}/pods",
    "Job": "/apis/batch/v1/namespaces/{namespace}/jobs",
    "CronJob": "/apis/batch/v1/namespaces/{namespace}/cronjobs",
    "Deployment": "/apis/apps/v1/namespaces/{namespace}/deployments",
}


def uid_of(obj: Json) -> str:
    """The object's uid: what identifies it, where its name is only where to look."""
    return str(obj["metadata"]["uid"])


class KubeObjects:
    """Create (or claim for a job), read, wait for and delete the objects of one namespace, and open
    its pods' logs."""

    def __init__(
        self, api: client.ApiClient, namespace: str, log: logging.Logger | logging.LoggerAdapter[Any]
    ):
        self.api = api
        self.namespace = namespace
        self.log = log

    async def create(self, manifest: Json, dry_run: bool = False, attempts: int = 6) -> Json:
        """Create (or dry-run) one object; the object as created. A 409 Conflict that is not
        AlreadyExists (the namespace's ResourceQuota was updated by a concurrent create) is retried
        with back-off. Transient answers (429, 5xx, a dropped connection) are retried below, once, by
        the API client (:mod:`jhub_ext.kubernetes.retry`, within the call's own time): retried here
        too, one create could take six times six attempts."""
        for attempt in range(attempts):
            try:
                return await self._create_once(manifest, dry_run)
            except ApiException as e:
                retryable = e.status == 409 and reason(e) != "AlreadyExists"
                if not retryable or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def claim(self, manifest: Json, key: tuple[str, str]) -> Json:
        """Create ``manifest`` for the job ``key`` (user, job name) and return the object created.
        Where its name is taken: by an object of this job (code left behind, a run the caches did
        not show) that is deleted and the object created again; by anything else (or what cannot be
        read) the job is refused, and that object left alone."""
        resource, name = RESOURCES[manifest["kind"]], manifest["metadata"]["name"]
        for _ in range(3):
            try:
                return await self.create(manifest)
            except ApiException as e:
                if not already_exists(e):
                    raise
            try:
                existing = await self.read(resource, name)
            except ApiException as e:
                if e.status != 403:
                    raise
                raise taken(manifest["kind"], name, "could not be checked to be this job's") from None
            if existing is None:
                continue  # gone meanwhile
            if owner(existing) != key:
                raise taken(manifest["kind"], name)
            self.log.info(
                "Replacing %s %s left behind by job %s of %s", manifest["kind"], name, key[1], key[0]
            )
            await self.delete(
                resource, name, uid_of(existing), None if resource == "configmaps" else "Foreground"
            )
            await self.gone(resource, name, uid_of(existing))
        raise TimeoutError("the job's previous objects are still being deleted; try again shortly")

    async def _create_once(self, manifest: Json, dry_run: bool) -> Json:
        query = [("fieldValidation", "Strict")]
        if dry_run:
            query.append(("dryRun", "All"))
        return await self.call("POST", self.path(manifest["kind"]), query, body=manifest)

    def path(self, kind: str, name: str | None = None) -> str:
        """Where objects of ``kind`` in this namespace (or the one named) are in the API."""
        collection = API_PATHS[kind].format(namespace=self.namespace)
        return f"{collection}/{name}" if name else collection

    async def call(
        self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: Json | None = None
    ) -> Json:
        """One call on the API server, answered as plain JSON. The client's generated methods turn
        every answer into model objects, which the backend (working in JSON, as its caches do) turned
        back again: more CPU than the call itself, for every create of every submit."""
        answer = await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=REQUEST_TIMEOUT,
        )
        return answer  # type: ignore[no-any-return]

    def list_method(self, resource: str) -> Any:
        """The API's list method of a workload resource (``jobs``, ``deployments``, ``cronjobs``)."""
        batch, apps = client.BatchV1Api(self.api), client.AppsV1Api(self.api)
        return {
            "jobs": batch.list_namespaced_job,
            "deployments": apps.list_namespaced_deployment,
            "cronjobs": batch.list_namespaced_cron_job,
        }[resource]

    async def read(self, resource: str, name: str) -> Json | None:
        """The object ``name`` of ``resource`` as the API server has it now (not as cached), or None.
        Workloads are read with ``list`` and a name field selector (they may lack the label the
        caches select by); a ConfigMap with ``get``."""
        if resource == "configmaps":
            try:
                return await self.call("GET", self.path("ConfigMap", name))
            except ApiException as e:
                if e.status == 404:
                    return None
                raise
        answer = await self.call(
            "GET", self.path(KIND_OF[resource]), [("fieldSelector", f"metadata.name={name}")]
        )
        items: list[Json] = answer.get("items") or []
        return items[0] if items else None

    async def gone(self, resource: str, name: str, uid: str, timeout: float = 60) -> None:
        """Wait until the object ``name`` with ``uid`` no longer exists (read from the API server:
        what is in the way of a create need not be in the caches)."""
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.1
        while (found := await self.read(resource, name)) is not None and uid_of(found) == uid:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the job's previous objects are still being deleted; try again shortly")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def delete(self, resource: str, name: str, uid: str, propagation: str | None = None) -> bool:
        """Delete the object ``name`` of ``resource`` only if it is still the one with ``uid``: another
        may have taken the name meanwhile. Whether this deleted it (or began to)."""
        options: Json = {"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}}
        if propagation:
            options["propagationPolicy"] = propagation
        try:
            await self.call("DELETE", self.path(KIND_OF[resource], name), body=options)
        except ApiException as e:
            if e.status == 404:
                return False  # gone already
            if e.status == 409:  # the precondition failed: the name holds another object now
                self.log.info("Not deleting %s %s: it is not the object %s any more", resource, name, uid)
                return False
            raise
        return True

    async def list_code(self, label: str) -> list[Json]:
        """Every ConfigMap in the namespace that carries ``label`` (the jobs' code snapshots)."""
        answer = await self.call("GET", self.path("ConfigMap"), [("labelSelector", label)])
        return list(answer.get("items") or [])

    async def delete_quietly(self, resource: str, name: str, uid: str) -> None:
        """Delete as :meth:`delete` does, logging a failure instead of raising it (work in the
        background, which nobody waits for)."""
        try:
            await self.delete(resource, name, uid)
        except Exception:
            self.log.exception("Could not delete %s %s (uid %s)", resource, name, uid)

    async def open_log(self, pod: str, follow: bool, tail: int | None, *, timestamps: bool = False) -> Any:
        """The log response of the pod's ``job`` container (its last ``tail`` lines; with ``follow``,
        kept open; with ``timestamps``, each line after the time it was written, RFC 3339 and a
        space), or None while the container is being created (the API answers 400)."""
        # a followed log may be quiet for long: only connecting is bounded then
        bound = (REQUEST_TIMEOUT, None) if follow else (REQUEST_TIMEOUT, 60)
        arguments: dict[str, Any] = {
            "container": "job",
            "follow": follow,
            "_preload_content": False,
            "_request_timeout": bound,
        }
        if tail is not None:
            arguments["tail_lines"] = tail
        if timestamps:
            arguments["timestamps"] = True
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


# --- the API server's errors ----------------------------------------------------------------------


def status_body(error: ApiException) -> Json:
    """The API server's Status body of an error ({} where there is none)."""
    try:
        body = json.loads(error.body or b"")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def reason(error: ApiException) -> str:
    """The machine-readable reason of an API error (AlreadyExists, Conflict, NotFound...)."""
    return str(status_body(error).get("reason", ""))


def rejected(error: ApiException) -> JobRejected:
    """The API server's refusal, as a message for the researcher naming the submit field at fault."""
    status = status_body(error)
    causes = (status.get("details") or {}).get("causes") or []
    where = " ".join(str(c.get("field", "")) for c in causes)
    field = None
    for marker, name in ((".env", "env"), (".command", "command"), (".args", "command"), ("data", "files")):
        if marker in where:
            field = name
            break
    message = status.get("message") or f"{error.status} {error.reason}"
    return JobRejected(f"the cluster refused this job: {message}", field)


def already_exists(error: ApiException) -> bool:
    """A create met an object of the same name (not: a Conflict on the namespace's quota)."""
    return error.status == 409 and reason(error) == "AlreadyExists"


def taken(kind: str, name: str, why: str = "is not this job's") -> JobRejected:
    """A refusal: the job's name is held by an object that is someone else's (left alone)."""
    return JobRejected(
        f"this job's name is taken in the cluster: a {kind} called {name} exists that {why}; "
        "choose another job name, or ask an admin to remove that object",
        "name",
    )
