"""A job's status from what Kubernetes shows of it: pure functions over API objects (as dicts).

The backend feeds them its watch caches; the tests feed them literal objects. Nothing here
talks to a cluster. The words and reasons come from :mod:`jhub_ext.core.jobs.lifecycle` and
:mod:`jhub_ext.core.jobs.reasons`, which the local backend reports its jobs' events with too. No
Kubernetes word goes into a message: the cluster's own words go into ``detail``, for admins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jhub_ext.core.jobs.lifecycle import (
    COMPLETED,
    OUT_OF_MEMORY,
    deadline_message,
    exited,
    failed_message,
    failed_reason,
)
from jhub_ext.core.jobs.model import JobStatus, Observed
from jhub_ext.core.jobs.reasons import Reason, Why
from jhub_ext.kubernetes import kueue
from jhub_ext.kubernetes.workloads import (
    KUEUE_QUEUE_LABEL,
    MAX_LIVE_RUNS_ANNOTATION,
    NAME_ANNOTATION,
    USER_ANNOTATION,
)

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


@dataclass(frozen=True)
class Held:
    """Why a live job's pod is held up, in plain words, and the cluster's own words (for admins)."""

    why: Why
    detail: str | None = None


@dataclass(frozen=True)
class Notes:
    """What the cluster says of a job's objects elsewhere than on them: the Workloads a cluster
    queue (Kueue) made for them, by the uid of the Job or pod each stands for; and the images the
    kubelet is pulling for a pod (its ``Pulling`` events), by pod uid: the containers, by name
    (``""``: the event names none), and the event's words."""

    queued: Mapping[str, Json] = field(default_factory=dict)
    pulling: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def pull(self, pod: Json) -> Held | None:
        """Whether the pod (pending) waits for an image of one of its containers still waiting: the
        kubelet said it pulls it, and the container has not started since."""
        status = pod.get("status") or {}
        said = self.pulling.get(str((pod.get("metadata") or {}).get("uid") or ""))
        if not said or status.get("phase", "Pending") != "Pending":
            return None
        for entry in _containers(status):
            if "waiting" not in (entry.get("state") or {}):
                continue
            words = said.get(str(entry.get("name")), said.get(""))
            if words is not None:
                return Held(PULLING, _clip(words))
        return None

    def held(self, obj: Json, said: str) -> Held:
        """Why the cluster's queue holds ``obj`` (a suspended Job, a gated pod): its own reason in
        plain words where its Workload gives one; for admins, the cluster's words and where to look."""
        workload = self.queued.get(str((obj.get("metadata") or {}).get("uid") or ""))
        because = kueue.held_because(workload)
        reason = _kueue_said(workload)
        detail = f"{_in_queue(obj, said)}; {reason}" if reason else _in_queue(obj, said)
        return Held(Why(Reason.HELD_BY_CLUSTER_QUEUE, because or kueue.HELD), detail)


NO_NOTES = Notes()
#: a job whose image is being downloaded onto its machine
PULLING = Why(
    Reason.PULLING_IMAGE,
    "downloading its software image onto a machine (the first start of an image there takes a while);"
    " it starts by itself once the download ends",
)


#: what the scheduler finds short (its "Insufficient <resource>"), in words
_SHORT = {"cpu": "CPUs", "memory": "memory", "pods": "room for more programs"}
_INSUFFICIENT = re.compile(r"Insufficient ([\w./-]+)")


def _short_of(scheduler_message: str) -> str:
    """What no node has enough of, as the scheduler's message says, in words ("GPUs and memory")."""
    found = []
    for resource in (name.rstrip(".") for name in _INSUFFICIENT.findall(scheduler_message)):
        word = _SHORT.get(resource, "GPUs" if "gpu" in resource.lower() else resource.rsplit("/", 1)[-1])
        if word not in found:
            found.append(word)
    return " and ".join(found)


def waiting_reason(pods: list[Json], notes: Notes = NO_NOTES) -> Held | None:
    """Why the job's latest pod is not running (None: nothing holds it up): an image that cannot
    be pulled, a crash loop, a container that cannot be created, an image being pulled, no room in
    the cluster, a cluster queue that holds it."""
    if not pods:
        return None
    status = pods[-1].get("status") or {}
    for entry in _containers(status):
        trouble = _container_trouble(entry)
        if trouble is not None:
            return trouble
    pulling = notes.pull(pods[-1])
    if pulling is not None:
        return pulling
    for condition in status.get("conditions") or []:
        if condition.get("type") != "PodScheduled":
            continue
        message = _clip(condition.get("message"))
        if condition.get("reason") == "Unschedulable":
            return Held(Why(Reason.WAITING_FOR_CAPACITY, no_room(message)), message)
        if condition.get("reason") == "SchedulingGated":  # a cluster queue (Kueue) holds its pods
            return notes.held(pods[-1], message or "SchedulingGated")
    return None


def _container_trouble(entry: Json) -> Held | None:
    """What keeps a container (its status ``entry``) from running, if it is in trouble: an image
    that cannot be pulled, a crash loop, a container that cannot be created."""
    waiting = (entry.get("state") or {}).get("waiting") or {}
    reason, message = waiting.get("reason"), _clip(waiting.get("message"))
    detail = f"{reason}: {message}" if message else reason
    if reason in _CANNOT_PULL:
        text = "its image cannot be downloaded: check the image's name, or ask an admin"
        return Held(Why(Reason.IMAGE_NOT_FOUND, text), detail)
    if reason == "CrashLoopBackOff":
        last = ((entry.get("lastState") or {}).get("terminated") or {}).get("exitCode")
        ended = f"; its last run {exited(int(last))}" if last is not None else ""
        restarts = int(entry.get("restartCount", 0))
        text = f"crashing: restarted {restarts} times, waiting before the next try{ended}"
        return Held(Why(Reason.CRASH_LOOP, text + "; its log shows why"), detail)
    if reason in ("CreateContainerConfigError", "CreateContainerError", "RunContainerError"):
        text = "its program cannot be started as configured; an admin can see why"
        return Held(Why(Reason.CANNOT_START, text), detail)
    return None


def _kueue_said(workload: Json | None) -> str | None:
    """Kueue's own words on why it holds ``workload`` (its QuotaReserved condition's), for admins."""
    for condition in ((workload or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == "QuotaReserved" and condition.get("status") == "False":
            name = (workload or {}).get("metadata", {}).get("name")
            return f"Workload {name}: {_clip(condition.get('message'), 400)}"
    return None


def _in_queue(obj: Json, said: str) -> str:
    """The cluster's words on a held workload or pod, and for admins where to look: the Kueue
    LocalQueue its label names (the Workload Kueue made for it there says why it waits)."""
    queue = ((obj.get("metadata") or {}).get("labels") or {}).get(KUEUE_QUEUE_LABEL)
    return f"{said}; in Kueue LocalQueue {queue!r} (its Workload object says why)" if queue else said


def no_room(scheduler_message: str) -> str:
    """What the scheduler's refusal to place a pod means, in plain words."""
    short = _short_of(scheduler_message)
    if short:
        return (
            f"waiting for room in the cluster: no machine has enough free {short} for it now;"
            " it starts by itself when room frees"
        )
    return "waiting for room in the cluster: no machine can take it now; it starts by itself when one can"


#: what a pod's events (as a server's spawn shows them) mean, in plain words, by their reason
_EVENTS = {
    "Scheduled": "a machine was found for it",
    "Pulling": "downloading its software image (the first start of an image takes a while)",
    "Pulled": "its software image is ready",
    "Created": "its container was created",
    "Started": "it started; waiting for it to answer",
    "SchedulingGated": "held by the cluster's queue: it starts when the queue admits it",
    "Killing": "it is being stopped",
}


#: what Kueue's own events on a pod (its "CreatedWorkload", "Started", "Stopped") mean, in plain words:
#: Kueue's "Started" is not the kubelet's (its container started) but its queue's admission
_KUEUE_EVENTS = {
    "CreatedWorkload": kueue.HELD,
    "Started": "the cluster's queue admitted it",
    "Stopped": "the cluster's queue took its place back for other work; it waits in the queue again",
}


def _from_kueue(event: Json) -> bool:
    """Whether Kueue (its pod or job controller, or its admission) reported ``event``."""
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or ""
    return "kueue" in str(source)


def queue_holds(event: Json) -> bool:
    """Whether a pod's ``event`` says the cluster's queue holds it (or holds it again)."""
    reason = event.get("reason")
    if _from_kueue(event):
        return reason in ("CreatedWorkload", "Stopped")
    return reason == "SchedulingGated"


def event_in_words(event: Json) -> str:
    """A pod's event (a spawn's progress) in plain words: no Kubernetes word reaches a researcher."""
    reason, message = str(event.get("reason") or ""), str(event.get("message") or "")
    if _from_kueue(event):
        return _KUEUE_EVENTS.get(reason, "the cluster's queue is handling it")
    if reason == "FailedScheduling":
        return no_room(message)
    if reason in ("Failed", "BackOff", "ErrImagePull", "InspectFailed") and "image" in message.lower():
        return "its image cannot be downloaded: check the image's name, or ask an admin"
    if reason == "BackOff":
        return "it keeps ending soon after it starts: the server's log says why"
    return _EVENTS.get(reason, "the cluster is preparing it")


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


def displaced_reason(pods: list[Json]) -> Held | None:
    """Why a job is running (or waiting to run) again elsewhere: its newest pod the cluster took
    away from a lost, drained or short node (None: none was). A lost node's pods stay "terminating"
    until the node is removed, so this holds as long as the evidence does."""
    for index in range(len(pods) - 1, -1, -1):
        why = _disruption(pods[index])
        if why is None:
            continue
        if any(_running(p) for p in pods[index + 1 :]):
            return Held(Why(Reason.NODE_LOST, f"{why}: running again on another node"))
        return Held(Why(Reason.NODE_LOST, f"{why}: waiting to run again on another node"))
    return None


def _exit(pods: list[Json]) -> tuple[int | None, Why | None]:
    """The exit code and the cause (where the cluster says it) of the latest pod that has one."""
    for pod in reversed(pods):
        status = pod.get("status") or {}
        if status.get("reason") == "Evicted":
            return None, Why(Reason.EVICTED, "its machine ran short and put it out; restart it")
        displaced = _disruption(pod)
        if displaced and not _terminated(pod):
            return None, Why(Reason.NODE_LOST, displaced)
        for container, terminated in reversed(_terminated(pod)):
            code = int(terminated.get("exitCode", 0))
            if container == "code" and code:
                return code, Why(Reason.CANNOT_START, "its code could not be copied into place")
            if terminated.get("reason") == "OOMKilled":
                return code, OUT_OF_MEMORY
            if code or container != "code":
                return code, None
    return None, None


def derive_status(
    resource: str, workload: Json | None, pods: list[Json], notes: Notes = NO_NOTES
) -> Observed:
    """A job's status from its workload and its pods (as the watch caches hold them), and what else
    the cluster says of them (``notes``)."""
    now = JobStatus.RUNNING if any(_running(p) for p in pods) else JobStatus.PENDING
    if workload is None:
        return Observed(JobStatus.PENDING)
    if resource == "jobs":
        return _job_status(workload, pods, now, notes)
    restarts = sum(
        int(s.get("restartCount", 0))
        for p in pods
        for s in (p.get("status") or {}).get("containerStatuses") or []
    )
    code = _exit(pods)[0] if resource == "cronjobs" else None
    return _live(now, code, restarts, pods, notes)


def _job_status(job: Json, pods: list[Json], now: JobStatus, notes: Notes) -> Observed:
    """A batch job's status from its Job and its pods (a Job counts its failed pods itself)."""
    status = job.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failures = int(status.get("failed", 0))
    if (job.get("spec") or {}).get("suspend") and not pods:  # a cluster queue holds it
        held = notes.held(job, (conditions.get("Suspended") or {}).get("message") or "Job suspended")
        return Observed(JobStatus.PENDING, None, held.why.text, failures, held.why.reason, held.detail)
    if "Complete" in conditions:
        return Observed(JobStatus.SUCCEEDED, 0, COMPLETED, failures, Reason.COMPLETED)
    if "Failed" not in conditions:
        return _live(now, None, failures, pods, notes)
    code, why = _exit(pods)
    settled = all((p.get("status") or {}).get("phase") in ("Succeeded", "Failed") for p in pods)
    reason = conditions["Failed"].get("reason", "")
    if code is None and why is None and not settled and reason != "DeadlineExceeded":
        return Observed(JobStatus.RUNNING, restarts=failures)  # the pod's exit code is on its way
    if reason == "DeadlineExceeded":
        deadline = (job.get("spec") or {}).get("activeDeadlineSeconds")
        return Observed(
            JobStatus.FAILED, code, deadline_message(deadline), failures, Reason.DEADLINE_EXCEEDED
        )
    message, cause = failed_message(code, failures or 1, why), failed_reason(code, why)
    return Observed(JobStatus.FAILED, code, message, failures, cause, _said(conditions["Failed"], pods))


def _said(condition: Json, pods: list[Json]) -> str | None:
    """The cluster's own words on a failed Job: its condition's, and its latest pod's (for admins)."""
    words = [condition.get("message"), *((p.get("status") or {}).get("message") for p in pods[-1:])]
    return "; ".join(_clip(w) for w in words if w) or None


def _live(status: JobStatus, code: int | None, restarts: int, pods: list[Json], notes: Notes) -> Observed:
    """A live job, with what holds it up, or else why it moved (a running job keeps saying why it
    runs elsewhere now)."""
    held = waiting_reason(pods, notes) or displaced_reason(pods)
    if held is None:
        return Observed(status, code, None, restarts)
    return Observed(status, code, held.why.text, restarts, held.why.reason, held.detail)
