"""Minimal Job and Deployment controllers for the emulator: enough for the jobs backend.

- A Job gets a pod from its template; a failed pod is replaced until ``backoffLimit`` failures,
  then the Job is Failed (BackoffLimitExceeded); a succeeded pod makes it Complete.
- A Deployment keeps one pod from its template (the kubelet restarts its container in place).
- Deleting a Job or Deployment deletes its pods (their ownerReferences).
- A CronJob creates a Job from its template at each time of its schedule (in ``timeZone``) when
  the test moves the emulator's clock with :meth:`Controllers.advance`, honouring
  ``concurrencyPolicy`` (Forbid, Replace, Allow) and the history limits.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from croniter import croniter

from .server import ApiError, now

if TYPE_CHECKING:
    from .server import KubeEmulator

Json = dict[str, Any]
PODS = ("", "v1", "pods")
JOBS = ("batch", "v1", "jobs")
CRONJOBS = ("batch", "v1", "cronjobs")
DEPLOYMENTS = ("apps", "v1", "deployments")


class Controllers:
    def __init__(self, api: KubeEmulator):
        self.api = api
        self.now = datetime(2026, 1, 1, tzinfo=UTC)  # the CronJob clock; tests move it with advance()
        self.counted: set[str] = set()  # pods whose end a Job has already counted
        api.listeners.append(self.on_change)

    def on_change(self, gvp: tuple[str, str, str], kind: str, obj: Json) -> None:
        loop = asyncio.get_running_loop()
        if gvp in (JOBS, DEPLOYMENTS) and kind == "ADDED":
            loop.call_soon(self.create_pod, gvp, obj["metadata"]["namespace"], obj["metadata"]["name"])
        elif gvp in (JOBS, DEPLOYMENTS, CRONJOBS) and kind == "DELETED":
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
        for gvp in (JOBS, PODS):  # a CronJob owns Jobs, which own pods
            for (namespace, name), obj in list(self.api.objects[gvp].items()):
                if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or []):
                    self.api.delete_object(gvp, namespace, name)

    # --- CronJobs ---------------------------------------------------------------------------------------

    def advance(self, to: datetime) -> None:
        """Move the clock to ``to``, running every CronJob once for each schedule time it passes."""
        for cronjob in list(self.api.objects[CRONJOBS].values()):
            spec = cronjob["spec"]
            if spec.get("suspend"):
                continue
            zone = ZoneInfo(spec.get("timeZone") or "UTC")
            times = croniter(spec["schedule"], self.now.astimezone(zone))
            due = times.get_next(datetime)
            fired = False
            while due <= to.astimezone(zone):
                fired = True
                due = times.get_next(datetime)
            if fired:
                self.fire(cronjob)
        self.now = to

    def fire(self, cronjob: Json) -> None:
        namespace, name = cronjob["metadata"]["namespace"], cronjob["metadata"]["name"]
        owned = [
            job
            for job in self.api.objects[JOBS].values()
            if any(
                ref.get("uid") == cronjob["metadata"]["uid"]
                for ref in job["metadata"].get("ownerReferences") or []
            )
        ]
        active = [job for job in owned if not (job.get("status") or {}).get("conditions")]
        policy = cronjob["spec"].get("concurrencyPolicy", "Allow")
        if active and policy == "Forbid":
            return
        if active and policy == "Replace":
            for job in active:
                self.api.delete_object(JOBS, namespace, job["metadata"]["name"])
        template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{name}-{int(self.now.timestamp()) // 60}-{uuid.uuid4().hex[:4]}"[:63],
                "namespace": namespace,
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": name,
                        "uid": cronjob["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
        }
        self.api.create_object(JOBS, namespace, job)
        finished = sorted(
            (j for j in owned if (j.get("status") or {}).get("conditions")),
            key=lambda j: j["metadata"]["creationTimestamp"],
        )
        keep = cronjob["spec"].get("successfulJobsHistoryLimit", 3)
        for old in finished[: max(0, len(finished) - keep)]:
            self.api.delete_object(JOBS, namespace, old["metadata"]["name"])
        cronjob.setdefault("status", {})["lastScheduleTime"] = self.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.api.touch(CRONJOBS, cronjob)
