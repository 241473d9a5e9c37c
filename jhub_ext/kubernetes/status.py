"""A job's status from what Kubernetes shows of it: pure functions over API objects (as dicts).

The backend feeds them its watch caches; the tests feed them literal objects. Nothing here
talks to a cluster. The words come from :mod:`jhub_ext.core.jobs.lifecycle`, which the local backend
reports its jobs' events with too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jhub_ext.core.jobs.lifecycle import COMPLETED, OUT_OF_MEMORY, deadline_message, exited, failed_message
from jhub_ext.core.jobs.model import JobStatus, Observed
from jhub_ext.kubernetes.workloads import MAX_LIVE_RUNS_ANNOTATION, NAME_ANNOTATION, USER_ANNOTATION

Json = dict[str, Any]


def owner(obj: Json) -> tuple[str, str] | None:
    """(user, job name) from an object's annotations: what identifies it (labels are sanitised and
    lossy, names are only where to look)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    user, name = annotations.get(USER_ANNOTATION), annotations.get(NAME_ANNOTATION)
    return (user, name) if user and name else None


# --- a scheduled job's live runs ------------------------------------------------------------------


def controller(obj: Json, kind: str) -> str | None:
    """The uid of the object's controller, if that is a ``kind``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == kind:
            return str(ref.get("uid"))
    return None


def job_finished(job: Json) -> bool:
    """Whether a Job has ended, one way or the other (its Complete or Failed condition is true)."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions)


def max_live_runs(cronjob: Json) -> int:
    """The job's bound on its live runs, as the CronJob carries it (1 where it carries none)."""
    text = ((cronjob.get("metadata") or {}).get("annotations") or {}).get(MAX_LIVE_RUNS_ANNOTATION, "1")
    try:
        return max(int(text), 1)
    except ValueError:
        return 1


def extra_runs(cronjob: Json, jobs: Iterable[Json], limit: int) -> list[Json]:
    """The live runs of ``cronjob`` beyond its ``limit`` oldest, newest first: the Jobs it controls
    (and that name no other owner) which have neither finished nor begun to be deleted."""
    uid, whose = cronjob["metadata"].get("uid"), owner(cronjob)
    live = [
        job
        for job in jobs
        if uid is not None
        and controller(job, "CronJob") == uid
        and owner(job) in (whose, None)
        and not job["metadata"].get("deletionTimestamp")
        and not job_finished(job)
    ]
    # a CronJob's runs are named "<name>-<minutes since the epoch>": by name, ties in time sort too
    live.sort(key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"].get("name") or ""))
    return live[limit:][::-1]


# --- status, from the objects alone ---------------------------------------------------------------


def _containers(pod_status: Json) -> list[Json]:
    """A pod's container statuses, init containers first."""
    return [*(pod_status.get("initContainerStatuses") or []), *(pod_status.get("containerStatuses") or [])]


def _terminated(pod: Json) -> list[tuple[str, Json]]:
    """(container name, terminated state) of every container that has ended, init containers first."""
    ended = []
    for entry in _containers(pod.get("status") or {}):
        state = entry.get("state") or {}
        terminated = state.get("terminated") or (entry.get("lastState") or {}).get("terminated")
        if terminated:
            ended.append((str(entry.get("name")), terminated))
    return ended


_CANNOT_PULL = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


def _clip(text: Any, limit: int = 200) -> str:
    """A message from the cluster, kept short enough for a status line."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def waiting_reason(pods: list[Json]) -> str | None:
    """Why the job's latest pod is not running, in plain words (None: nothing holds it up): an
    image that cannot be pulled, a crash loop, no room in the cluster, a container that cannot be
    created."""
    if not pods:
        return None
    status = pods[-1].get("status") or {}
    for entry in _containers(status):
        waiting = (entry.get("state") or {}).get("waiting") or {}
        reason, detail = waiting.get("reason"), _clip(waiting.get("message"))
        if reason in _CANNOT_PULL:
            return f"its image cannot be pulled ({reason}){': ' + detail if detail else ''}"
        if reason == "CrashLoopBackOff":
            last = ((entry.get("lastState") or {}).get("terminated") or {}).get("exitCode")
            ended = f"; its last run {exited(int(last))}" if last is not None else ""
            restarts = int(entry.get("restartCount", 0))
            return f"crashing: restarted {restarts} times, waiting before the next try{ended}"
        if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
            return f"its container cannot be started ({reason}){': ' + detail if detail else ''}"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return f"waiting for room in the cluster: {_clip(condition.get('message')) or 'no node fits'}"
    return None


#: Why Kubernetes took a pod away (its DisruptionTarget condition's reason), in plain words
_DISRUPTIONS = {
    "DeletionByTaintManager": "its node{node} stopped answering",
    "DeletionByPodGC": "its node{node} was lost",
    "EvictionByEvictionAPI": "its node{node} was drained",
    "PreemptionByScheduler": "it made way for more urgent work on its node{node}",
    "TerminationByKubelet": "its node{node} ran short or shut down",
}


def _disruption(pod: Json) -> str | None:
    """Why the cluster took ``pod`` away from its node, if it did (its DisruptionTarget condition)."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            words = _DISRUPTIONS.get(str(condition.get("reason")), "its node{node} was drained or lost")
            node = (pod.get("spec") or {}).get("nodeName")
            return words.format(node=f" {node}" if node else "")
    return None


def _running(pod: Json) -> bool:
    """Whether ``pod`` runs: a pod the cluster is taking away from a lost node still says Running."""
    return (pod.get("status") or {}).get("phase") == "Running" and _disruption(pod) is None


def displaced_reason(pods: list[Json]) -> str | None:
    """Why a job is running (or waiting to run) again elsewhere: its newest pod the cluster took
    away from a lost, drained or short node (None: none was). A lost node's pods stay "terminating"
    until the node is removed, so this holds as long as the evidence does."""
    for index in range(len(pods) - 1, -1, -1):
        why = _disruption(pods[index])
        if why is None:
            continue
        if any(_running(p) for p in pods[index + 1 :]):
            return f"{why}: running again on another node"
        return f"{why}: waiting to run again on another node"
    return None


def _exit(pods: list[Json]) -> tuple[int | None, str | None]:
    """The exit code and a plain reason of the latest pod that has one."""
    for pod in reversed(pods):
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            return None, f"evicted from its node ({_clip(status.get('message')) or 'the node ran short'})"
        displaced = _disruption(pod)
        if displaced and not _terminated(pod):
            return None, displaced
        for container, terminated in reversed(_terminated(pod)):
            code = int(terminated.get("exitCode", 0))
            if container == "code" and code:
                return code, "its code could not be copied into place"
            if terminated.get("reason") == "OOMKilled":
                return code, OUT_OF_MEMORY
            if code or container != "code":
                return code, None
    return None, None


def derive_status(resource: str, workload: Json | None, pods: list[Json]) -> Observed:
    """A job's status from its workload and its pods (as the watch caches hold them)."""
    restarts = sum(
        int(s.get("restartCount", 0))
        for p in pods
        for s in (p.get("status") or {}).get("containerStatuses") or []
    )
    now = JobStatus.RUNNING if any(_running(p) for p in pods) else JobStatus.PENDING
    if workload is None:
        return Observed(JobStatus.PENDING)
    if resource == "jobs":
        status = workload.get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
        failures = int(status.get("failed", 0))
        if "Complete" in conditions:
            return Observed(JobStatus.SUCCEEDED, 0, COMPLETED, failures)
        if "Failed" in conditions:
            code, why = _exit(pods)
            settled = all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods)
            reason = conditions["Failed"].get("reason", "")
            if code is None and why is None and not settled and reason != "DeadlineExceeded":
                return Observed(JobStatus.RUNNING, restarts=failures)  # the pod's exit code is on its way
            if reason == "DeadlineExceeded":
                deadline = (workload.get("spec") or {}).get("activeDeadlineSeconds")
                return Observed(JobStatus.FAILED, code, deadline_message(deadline), failures)
            return Observed(JobStatus.FAILED, code, failed_message(code, failures or 1, why), failures)
        return Observed(now, message=_now_reason(pods), restarts=failures)
    if resource == "cronjobs":
        code, _ = _exit(pods)
        return Observed(now, code, _now_reason(pods), restarts)
    return Observed(now, None, _now_reason(pods), restarts)


def _now_reason(pods: list[Json]) -> str | None:
    """What holds a live job up, or else why it moved: the words a running or pending job shows."""
    return waiting_reason(pods) or displaced_reason(pods)
