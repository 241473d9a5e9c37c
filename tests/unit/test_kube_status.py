"""A job's status from its Kubernetes objects, as the watch caches hold them (literal objects); which
objects are a job's; which runs of a scheduled job are too many."""

from __future__ import annotations

from typing import Any

from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.logs import log_target
from jhub_ext.kubernetes.notes import pulls
from jhub_ext.kubernetes.status import Notes, derive_status, event_in_words, extra_runs
from jhub_ext.kubernetes.view import CachedJobs
from jhub_ext.kubernetes.watch import WatchCache


def job(*conditions: tuple[str, str], failed: int = 0, deadline: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "alice-x-123456", "uid": "u1"},
        "spec": {"activeDeadlineSeconds": deadline} if deadline else {},
        "status": {
            "failed": failed,
            "conditions": [{"type": kind, "status": "True", "reason": reason} for kind, reason in conditions],
        },
    }


def pod(
    phase: str, *, code: int | None = None, reason: str = "Error", init_code: int | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "job", "restartCount": 0, "state": {}}],
    }
    if code is not None:
        status["containerStatuses"][0]["state"] = {"terminated": {"exitCode": code, "reason": reason}}
    elif phase == "Running":
        status["containerStatuses"][0]["state"] = {"running": {}}
    if init_code is not None:
        status["initContainerStatuses"] = [{"name": "code", "state": {"terminated": {"exitCode": init_code}}}]
    return {"metadata": {"name": "p", "creationTimestamp": "2026-11-25T10:00:00Z"}, "status": status}


def test_a_complete_job_succeeded() -> None:
    observed = derive_status("jobs", job(("Complete", "")), [pod("Succeeded", code=0, reason="Completed")])
    assert (observed.status, observed.exit_code) == (JobStatus.SUCCEEDED, 0)


def test_a_failed_job_reports_the_exit_code_and_attempts() -> None:
    pods = [pod("Failed", code=3), pod("Failed", code=3)]
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=2), pods)
    assert (observed.status, observed.exit_code) == (JobStatus.FAILED, 3)
    assert observed.message == "exited with code 3 (2 attempts)"


def test_a_failed_job_waits_for_its_pods_exit_code_from_the_other_watch() -> None:
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=1), [pod("Running")])
    assert observed.status is JobStatus.RUNNING


def test_deadline_out_of_memory_and_code_copy_failures_say_so() -> None:
    deadline = derive_status("jobs", job(("Failed", "DeadlineExceeded"), deadline=30), [pod("Running")])
    assert deadline.status is JobStatus.FAILED and deadline.message == "stopped after its deadline of 30 s"
    oom = derive_status(
        "jobs",
        job(("Failed", "BackoffLimitExceeded"), failed=1),
        [pod("Failed", code=137, reason="OOMKilled")],
    )
    assert oom.exit_code == 137 and "ran out of memory" in (oom.message or "")
    copy = derive_status(
        "jobs", job(("Failed", "BackoffLimitExceeded"), failed=1), [pod("Failed", init_code=1)]
    )
    assert copy.exit_code == 1 and "code could not be copied" in (copy.message or "")


def test_workloads_without_a_result_are_pending_or_running() -> None:
    assert derive_status("jobs", None, []).status is JobStatus.PENDING
    assert derive_status("deployments", {"metadata": {}}, [pod("Running")]).status is JobStatus.RUNNING
    assert derive_status("cronjobs", {"metadata": {}}, [pod("Succeeded", code=0)]).exit_code == 0


# --- whose objects: annotations, not names ----------------------------------------------------------

OWNER = {"jhub-ext.io/user": "alice", "jhub-ext.io/name": "x"}
STRANGER = {"jhub-ext.io/user": "mallory", "jhub-ext.io/name": "x"}


def view_holding(**objects: list[dict[str, Any]]) -> CachedJobs:
    """The jobs' objects as the backend sees them, from watch caches holding ``objects`` (by resource),
    as if listed from the cluster."""
    caches = {}
    for resource in ("pods", "jobs", "deployments", "cronjobs"):
        cache = WatchCache(lambda **_: None, resource=resource)  # type: ignore[arg-type, return-value]
        cache.objects = {f"jhub/{o['metadata']['name']}": o for o in objects.get(resource, [])}
        caches[resource] = cache
    return CachedJobs(caches, "jhub")


def alices_x(view: CachedJobs) -> Any:
    """What the backend observes of alice's batch job ``x``: from its own workload and pods only."""
    return derive_status("jobs", view.workload("alice", "x", "jobs"), view.run_pods("alice", "x", "jobs"))


def named(obj: dict[str, Any], name: str, annotations: dict[str, str] | None, uid: str) -> dict[str, Any]:
    meta = {**obj["metadata"], "name": name, "namespace": "jhub", "uid": uid}
    meta["labels"] = {"jhub-ext.io/job": object_name("alice", "x")}
    if annotations is not None:
        meta["annotations"] = annotations
    return {**obj, "metadata": meta}


def job_pod(name: str, annotations: dict[str, str] | None, controller: str, **status: Any) -> dict[str, Any]:
    p = named(pod("Running", **status), name, annotations, f"pod-{name}")
    p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"] = controller
    return p


def test_an_object_under_the_jobs_name_that_is_someone_elses_is_never_the_jobs() -> None:
    name = object_name("alice", "x")
    squatter = named(job(("Complete", "")), name, STRANGER, "j-other")
    view = view_holding(
        jobs=[squatter], pods=[job_pod(f"{name}-abcde", STRANGER, "j-other", code=0, reason="Completed")]
    )
    assert view.workload("alice", "x", "jobs") is None
    assert view.pods("alice", "x") == [] and log_target(view.run_pods("alice", "x", "jobs")) is None
    assert alices_x(view).status is JobStatus.PENDING  # not the stranger's success
    assert ("alice", "x") not in view.inventory()  # nor counted as alice's
    unannotated = view_holding(jobs=[named(job(("Complete", "")), name, None, "j-other")])
    assert unannotated.workload("alice", "x", "jobs") is None


def test_the_jobs_own_pods_are_those_carrying_its_exact_owner() -> None:
    name = object_name("alice", "x")
    ours = job_pod(f"{name}-aaaaa", OWNER, "j1")
    foreign = job_pod(f"{name}-bbbbb", STRANGER, "j1")  # labelled alike, even under the same Job uid
    view = view_holding(jobs=[named(job(), name, OWNER, "j1")], pods=[ours, foreign])
    assert view.pods("alice", "x") == [ours]
    assert log_target(view.run_pods("alice", "x", "jobs")) == (f"{name}-aaaaa", f"pod-{name}-aaaaa", 0)
    assert alices_x(view).status is JobStatus.RUNNING


# --- a scheduled job's live runs ----------------------------------------------------------------------


def cronjob(uid: str = "c1") -> dict[str, Any]:
    return {"metadata": {"name": "cj", "uid": uid, "annotations": OWNER}, "spec": {}}


def run(
    name: str,
    second: int,
    *,
    parent: str = "c1",
    finished: bool = False,
    deleting: bool = False,
    annotations: dict[str, str] | None = OWNER,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "uid": f"uid-{name}",
        "creationTimestamp": f"2026-11-25T10:00:{second:02d}Z",
        "ownerReferences": [{"kind": "CronJob", "name": "cj", "uid": parent, "controller": True}],
    }
    if annotations is not None:
        meta["annotations"] = annotations
    if deleting:
        meta["deletionTimestamp"] = "2026-11-25T10:01:00Z"
    conditions = [{"type": "Complete", "status": "True"}] if finished else []
    return {"metadata": meta, "status": {"conditions": conditions}}


def names(jobs: list[dict[str, Any]]) -> list[str]:
    return [j["metadata"]["name"] for j in jobs]


def test_the_extra_live_runs_are_the_newest_beyond_the_bound() -> None:
    runs = [run("cj-3", 3), run("cj-1", 1), run("cj-2", 2)]
    assert names(extra_runs(cronjob(), runs, 1)) == ["cj-3", "cj-2"]
    assert names(extra_runs(cronjob(), runs, 2)) == ["cj-3"]
    assert extra_runs(cronjob(), runs, 3) == []


def test_ties_in_time_go_by_the_runs_names() -> None:
    runs = [run("cj-29000002", 5), run("cj-29000001", 5), run("cj-29000003", 5)]
    assert names(extra_runs(cronjob(), runs, 1)) == ["cj-29000003", "cj-29000002"]


def test_only_live_runs_of_that_cronjob_count() -> None:
    runs = [
        run("old", 0, finished=True),
        run("going", 1, deleting=True),
        run("elsewhere", 2, parent="c2"),
        run("strangers", 3, annotations=STRANGER),
        run("legacy", 4, annotations=None),  # before runs carried their owner: the controller says
        run("current", 5),
    ]
    assert names(extra_runs(cronjob(), runs, 1)) == ["current"]


def waiting(
    reason: str, message: str = "", *, restarts: int = 0, last_code: int | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "job",
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message}},
    }
    if last_code is not None:
        entry["lastState"] = {"terminated": {"exitCode": last_code, "reason": "Error"}}
    return {
        "metadata": {"name": "p", "creationTimestamp": "2026-11-25T10:00:00Z"},
        "status": {"phase": "Pending" if not restarts else "Running", "containerStatuses": [entry]},
    }


def test_an_image_that_cannot_be_pulled_says_so_while_the_job_waits() -> None:
    pods = [waiting("ImagePullBackOff", 'Back-off pulling image "example.org/nope:1"')]
    observed = derive_status("deployments", {"metadata": {}}, pods)
    assert observed.status is JobStatus.PENDING and observed.reason is Reason.IMAGE_NOT_FOUND
    assert observed.message == "its image cannot be downloaded: check the image's name, or ask an admin"
    # the cluster's own words are for admins
    assert observed.detail == 'ImagePullBackOff: Back-off pulling image "example.org/nope:1"'


def test_a_crash_loop_says_how_often_and_how_it_last_ended() -> None:
    pods = [waiting("CrashLoopBackOff", "back-off 40s", restarts=4, last_code=2)]
    observed = derive_status("deployments", {"metadata": {}}, pods)
    assert observed.restarts == 4 and observed.reason is Reason.CRASH_LOOP
    assert observed.message == (
        "crashing: restarted 4 times, waiting before the next try; its last run exited with code 2;"
        " its log shows why"
    )
    assert observed.detail == "CrashLoopBackOff: back-off 40s"


def test_a_pod_without_room_in_the_cluster_says_why_it_waits() -> None:
    unschedulable = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    observed = derive_status("jobs", job(), [unschedulable])
    assert observed.status is JobStatus.PENDING and observed.reason is Reason.WAITING_FOR_CAPACITY
    assert observed.message == (
        "waiting for room in the cluster: no machine has enough free GPUs for it now;"
        " it starts by itself when room frees"
    )
    assert observed.detail == "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    message = (
        "0/4 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "3 Insufficient cpu, 3 Insufficient memory. preemption: 0/4 nodes are available"
    )
    unschedulable["status"]["conditions"][0]["message"] = message
    said = derive_status("jobs", job(), [unschedulable]).message or ""
    assert "enough free CPUs and memory" in said
    for jargon in ("taint", "node(s)", "Insufficient", "preemption", "Unschedulable"):
        assert jargon not in said


def test_an_evicted_or_disrupted_pod_is_the_reason_a_job_failed() -> None:
    evicted = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: memory.",
        },
    }
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=1), [evicted])
    assert observed.status is JobStatus.FAILED and observed.reason is Reason.EVICTED
    assert observed.message == "its machine ran short and put it out; restart it (1 attempt)"
    assert "The node was low on resource: memory." in (observed.detail or "")
    lost = {
        "metadata": {"name": "p"},
        "status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True"}]},
    }
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=2), [lost])
    assert observed.message == "its node was drained or lost (2 attempts)"
    assert observed.reason is Reason.NODE_LOST


def test_a_running_job_has_no_reason_to_give() -> None:
    assert derive_status("jobs", job(), [pod("Running")]).message is None


def taken_away(reason: str, node: str = "cpu-3", phase: str = "Running") -> dict[str, Any]:
    """A pod the cluster is taking away from its node: it still says what its node last reported."""
    return {
        "metadata": {"name": "old", "deletionTimestamp": "2026-11-26T10:00:00Z"},
        "spec": {"nodeName": node},
        "status": {
            "phase": phase,
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": reason}],
        },
    }


def test_a_scraper_moved_off_a_lost_node_says_so_while_it_runs_elsewhere() -> None:
    observed = derive_status("deployments", {"metadata": {}}, [taken_away("DeletionByTaintManager")])
    assert (observed.status, observed.message) == (
        JobStatus.PENDING,
        "its node cpu-3 stopped answering: waiting to run again on another node",
    )
    moved = [taken_away("DeletionByTaintManager"), pod("Running")]
    observed = derive_status("deployments", {"metadata": {}}, moved)
    assert (observed.status, observed.message) == (
        JobStatus.RUNNING,
        "its node cpu-3 stopped answering: running again on another node",
    )


def test_a_batch_job_whose_node_was_lost_waits_for_its_retry_and_says_why() -> None:
    gone = [taken_away("DeletionByPodGC", phase="Failed")]
    observed = derive_status("jobs", job(), gone)
    assert (observed.status, observed.message) == (
        JobStatus.PENDING,
        "its node cpu-3 was lost: waiting to run again on another node",
    )
    observed = derive_status("jobs", job(), [*gone, pod("Running")])
    assert observed.status is JobStatus.RUNNING
    assert observed.message == "its node cpu-3 was lost: running again on another node"


def test_each_way_a_pod_is_taken_away_has_its_own_words() -> None:
    words = {
        reason: derive_status("deployments", {"metadata": {}}, [taken_away(reason, "n1")]).message
        for reason in ("EvictionByEvictionAPI", "PreemptionByScheduler", "TerminationByKubelet", "Other")
    }
    assert words == {
        "EvictionByEvictionAPI": "its node n1 was drained: waiting to run again on another node",
        "PreemptionByScheduler": (
            "it made way for more urgent work on its node n1: waiting to run again on another node"
        ),
        "TerminationByKubelet": "its node n1 ran short or shut down: waiting to run again on another node",
        "Other": "its node n1 was drained or lost: waiting to run again on another node",
    }


def test_a_spawns_events_are_said_in_plain_words() -> None:
    def said(reason: str, message: str = "") -> str:
        return event_in_words({"reason": reason, "message": message, "type": "Normal"})

    crowded = (
        "0/4 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: present}, "
        "3 Insufficient memory. preemption: 0/4 nodes are available"
    )
    assert said("FailedScheduling", crowded) == (
        "waiting for room in the cluster: no machine has enough free memory for it now;"
        " it starts by itself when room frees"
    )
    assert (
        said("Scheduled", "Successfully assigned hub/jupyter-alice to cpu-1") == "a machine was found for it"
    )
    assert said("Pulling", 'Pulling image "x"').startswith("downloading its software image")
    assert said("Failed", 'Failed to pull image "x": not found') == (
        "its image cannot be downloaded: check the image's name, or ask an admin"
    )
    assert said("SchedulingGated").startswith("held by the cluster's queue")
    assert said("SomethingNew", "whatever the cluster says") == "the cluster is preparing it"


def test_a_job_the_clusters_queue_holds_says_so_in_plain_words() -> None:
    suspended = {
        "metadata": {},
        "spec": {"suspend": True},
        "status": {"conditions": [{"type": "Suspended", "status": "True", "message": "Job suspended"}]},
    }
    observed = derive_status("jobs", suspended, [])
    assert (observed.status, observed.reason) == (JobStatus.PENDING, Reason.HELD_BY_CLUSTER_QUEUE)
    assert observed.message == "held by the cluster's queue: it starts by itself when the queue admits it"
    assert observed.detail == "Job suspended"
    gated = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        },
    }
    observed = derive_status("deployments", {"metadata": {}}, [gated])
    assert observed.reason is Reason.HELD_BY_CLUSTER_QUEUE and "SchedulingGated" not in (
        observed.message or ""
    )


def test_a_job_whose_image_is_being_pulled_says_so_until_its_container_starts() -> None:
    def pulling_event(uid: str, field_path: str | None) -> dict[str, Any]:
        involved = {
            "kind": "Pod",
            "name": "p",
            "uid": uid,
            **({"fieldPath": field_path} if field_path else {}),
        }
        return {
            "involvedObject": involved,
            "reason": "Pulling",
            "message": 'Pulling image "registry.test/x:1"',
        }

    def pending(state: dict[str, Any], *, init: dict[str, Any] | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {"phase": "Pending", "containerStatuses": [{"name": "main", "state": state}]}
        if init is not None:
            status["initContainerStatuses"] = [{"name": "code", "state": init}]
        return {"metadata": {"name": "p", "uid": "pod-1"}, "status": status}

    creating = {"waiting": {"reason": "ContainerCreating"}}
    notes = Notes(pulling=pulls([pulling_event("pod-1", "spec.containers{main}")]))
    observed = derive_status("deployments", {"metadata": {}}, [pending(creating)], notes)
    assert (observed.status, observed.reason) == (JobStatus.PENDING, Reason.PULLING_IMAGE)
    assert observed.message is not None and observed.message.startswith("downloading its software image")
    assert observed.detail == 'Pulling image "registry.test/x:1"'  # the cluster's words, for admins
    # once the container runs, or for another pod, or without the events: nothing about images
    running = pending({"running": {"startedAt": "2026-12-05T10:00:00Z"}})
    assert derive_status("deployments", {"metadata": {}}, [running], notes).reason is None
    other = Notes(pulling=pulls([pulling_event("pod-2", "spec.containers{main}")]))
    assert derive_status("deployments", {"metadata": {}}, [pending(creating)], other).reason is None
    assert derive_status("deployments", {"metadata": {}}, [pending(creating)]).reason is None
    # the init container's image: the main container waits too, but it is not the one pulled
    init_pull = Notes(pulling=pulls([pulling_event("pod-1", "spec.initContainers{code}")]))
    initialising = pending({"waiting": {"reason": "PodInitializing"}}, init={"running": {}})
    assert derive_status("deployments", {"metadata": {}}, [initialising], init_pull).reason is None
    assert derive_status(
        "deployments", {"metadata": {}}, [pending(creating, init=creating)], init_pull
    ).reason is (Reason.PULLING_IMAGE)
    # an image that cannot be pulled says that, whatever was tried before
    backoff = pending({"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}})
    assert derive_status("deployments", {"metadata": {}}, [backoff], notes).reason is Reason.IMAGE_NOT_FOUND
