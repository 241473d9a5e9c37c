"""Minimal Job and Deployment controllers for the emulator: enough for the jobs backend.

- A Job gets a pod from its template; a failed pod is replaced until ``backoffLimit`` failures,
  then the Job is Failed (BackoffLimitExceeded); a succeeded pod makes it Complete.
- A Deployment keeps one pod from its template (the kubelet restarts its container in place).
- Deleting a Job or Deployment deletes its pods (their ownerReferences).
CronJobs are stored but not run.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import TYPE_CHECKING, Any

from .server import ApiError, now

if TYPE_CHECKING:
    from .server import KubeEmulator

Json = dict[str, Any]
PODS = ("", "v1", "pods")
JOBS = ("batch", "v1", "jobs")
DEPLOYMENTS = ("apps", "v1", "deployments")


class Controllers:
    def __init__(self, api: KubeEmulator):
        self.api = api
        self.counted: set[str] = set()  # pods whose end a Job has already counted
        api.listeners.append(self.on_change)

    def on_change(self, gvp: tuple[str, str, str], kind: str, obj: Json) -> None:
        loop = asyncio.get_running_loop()
        if gvp in (JOBS, DEPLOYMENTS) and kind == "ADDED":
            loop.call_soon(self.create_pod, gvp, obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif gvp in (JOBS, DEPLOYMENTS) and kind == "DELETED":
            loop.call_soon(self.delete_owned, obj["metadata"]["uid"])
        elif gvp == PODS and kind == "MODIFIED":
            loop.call_soon(self.pod_changed, obj)

    def owner(self, pod: Json) -> tuple[tuple[str, str, str], Json] | None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            gvp = JOBS if ref["kind"] == "Job" else DEPLOYMENTS if ref["kind"] == "Deployment" else None
            if gvp is None:
                continue
            owner = self.api.objects[gvp].get((pod["metadata"]["namespace"], ref["name"]))
            if owner is not None and owner["metadata"]["uid"] == ref["uid"]:
                return gvp, owner
        return None

    def create_pod(self, gvp: tuple[str, str, str], namespace: str, name: str) -> None:
        owner = self.api.objects[gvp].get((namespace, name))
        if owner is None:
            return
        template = copy.deepcopy(owner["spec"]["template"])
        labels = dict(template.get("metadata", {}).get("labels") or {})
        if gvp == JOBS:
            labels.update({"job-name": name, "batch.kubernetes.io/job-name": name})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{uuid.uuid4().hex[:5]}",
                "namespace": namespace,
                "labels": labels,
                "annotations": dict(template.get("metadata", {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": name,
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        try:
            self.api.create_object(PODS, namespace, pod)
        except ApiError as e:
            self.api.record_event(owner, "FailedCreate", e.message)
            return
        if gvp == JOBS:
            owner.setdefault("status", {}).update(active=1, startTime=owner["status"].get("startTime", now()))
            self.api.touch(JOBS, owner)

    def pod_changed(self, pod: Json) -> None:
        found = self.owner(pod)
        if found is None or found[0] != JOBS:
            return
        _, job = found
        phase = pod["status"].get("phase")
        status = job.setdefault("status", {})
        if status.get("conditions") or phase not in ("Succeeded", "Failed"):
            return
        if pod["metadata"]["uid"] in self.counted:
            return
        self.counted.add(pod["metadata"]["uid"])
        if phase == "Succeeded":
            status.update(succeeded=1, active=0, completionTime=now())
            status["conditions"] = [{"type": "Complete", "status": "True"}]
        else:
            status["failed"] = status.get("failed", 0) + 1
            if status["failed"] > job["spec"].get("backoffLimit", 6):
                status.update(active=0)
                status["conditions"] = [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}
                ]
            else:
                asyncio.get_running_loop().call_later(
                    0.1 * 2 ** (status["failed"] - 1),
                    self.create_pod,
                    JOBS,
                    job["metadata"]["namespace"],
                    job["metadata"]["name"],
                )
        self.api.touch(JOBS, job)

    def delete_owned(self, uid: str) -> None:
        for (namespace, name), pod in list(self.api.objects[PODS].items()):
            if any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or []):
                self.api.delete_object(PODS, namespace, name)
