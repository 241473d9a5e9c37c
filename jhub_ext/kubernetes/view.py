"""The jobs' Kubernetes objects as the backend's watch caches hold them, looked up by job.

A name is only where to look: an object counts as a job's only if its annotations carry exactly
that job's owner and name (see :mod:`jhub_ext.kubernetes.workloads`). Reading the caches costs no request.
"""

from __future__ import annotations

from collections.abc import Iterable

from jhub_ext.core.jobs.backend import Held
from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.api import Json
from jhub_ext.kubernetes.capacity import created_at
from jhub_ext.kubernetes.status import owner
from jhub_ext.kubernetes.watch import WatchCache
from jhub_ext.kubernetes.workloads import JOB_LABEL

Key = tuple[str, str]
WORKLOADS = ("jobs", "deployments", "cronjobs")
_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"


class CachedJobs:
    """Finds a job's workload and pods in the watch caches (filled by the backend's ``start``)."""

    def __init__(self, caches: dict[str, WatchCache], namespace: str):
        self.caches, self.namespace = caches, namespace

    def workload(self, user: str, name: str, resource: str) -> Json | None:
        """The job's workload of ``resource`` as cached: the object under its name, if it is the job's."""
        found = self.caches[resource].objects.get(f"{self.namespace}/{object_name(user, name)}")
        return found if found is not None and owner(found) == (user, name) else None

    def pods(self, user: str, name: str) -> list[Json]:
        """The job's pods, oldest first: labelled with its object name, carrying its exact owner."""
        object_id = object_name(user, name)
        pods = [
            p
            for p in self.caches["pods"].values()
            if (p["metadata"].get("labels") or {}).get(JOB_LABEL) == object_id and owner(p) == (user, name)
        ]
        return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")

    def run_pods(self, user: str, name: str, resource: str) -> list[Json]:
        """The pods of the job's current workload (a Job's own pods, not an earlier run's)."""
        pods = self.pods(user, name)
        workload = self.workload(user, name, resource)
        if resource == "jobs" and workload is not None:
            uid = workload["metadata"].get("uid")
            pods = [p for p in pods if (p["metadata"].get("labels") or {}).get(_CONTROLLER_UID) == uid]
        return pods

    def inventory(self, code: Iterable[Json] = ()) -> dict[Key, Held]:
        """Every job with a cached workload (or one of the ``code`` ConfigMaps) under its own name, not
        being deleted: since when, and whether a workload is among them. A CronJob's runs are not
        counted: they are named after their CronJob, not after a job."""
        found: dict[Key, Held] = {}
        cached = [(obj, True) for resource in WORKLOADS for obj in self.caches[resource].values()]
        for obj, runs in [*cached, *((obj, False) for obj in code)]:
            whose, meta = owner(obj), obj.get("metadata") or {}
            if whose is None or meta.get("name") != object_name(*whose) or meta.get("deletionTimestamp"):
                continue
            created = created_at(obj)
            if (known := found.get(whose)) is not None:
                created, runs = min(known.created, created), known.runs or runs
            found[whose] = Held(created, runs)
        return found
