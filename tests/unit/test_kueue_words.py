"""Kueue's reasons for holding a workload (its Workload's QuotaReserved message, in the formats of
Kueue v0.17's flavor assigner and workload controller), in plain words."""

from __future__ import annotations

from typing import Any

import pytest

from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.kubernetes.kueue import HELD, by_owner, held_because, queue_words
from jhub_ext.kubernetes.status import Notes, derive_status

#: words no researcher should meet
NO_QUEUE = "the queue it was given does not exist or is switched off: ask an admin"
CPU_SHORT = (
    "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor f, 4 more needed"
)
JARGON = ("flavor", "Workload", "ClusterQueue", "LocalQueue", "podset", "pod set", "quota", "Kueue", "Gi ")


def workload(
    message: str, *, uid: str = "job-1", admitted: bool = False, evicted: bool = False
) -> dict[str, Any]:
    conditions = [
        {"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": message},
        {"type": "Admitted", "status": "True" if admitted else "False", "reason": "NoReservation"},
    ]
    if evicted:
        conditions.append({"type": "Evicted", "status": "True", "reason": "Preempted", "message": "x"})
    return {
        "metadata": {
            "name": f"job-{uid}-1a2b3",
            "labels": {"kueue.x-k8s.io/job-uid": uid},
            "creationTimestamp": "2026-12-05T10:00:00Z",
        },
        "status": {"conditions": conditions},
    }


@pytest.mark.parametrize(
    ("said", "words"),
    [
        (
            "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor"
            " default-flavor, 4 more needed",
            "its share has no room for it now (it needs 4 more CPUs); it starts by itself when the queue"
            " admits it",
        ),
        (
            "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor"
            " default-flavor, 500m more needed, insufficient unused quota for memory in flavor"
            " default-flavor, 2Gi more needed",
            "its share has no room for it now (it needs 0.5 more CPUs and 2 GiB more memory); it starts"
            " by itself when the queue admits it",
        ),
        (  # two flavors tried: the one nearest to fitting counts
            "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in"
            " flavor a100, 1 more needed, insufficient unused quota for nvidia.com/gpu in flavor h100,"
            " 3 more needed",
            "its share has no room for it now (it needs 1 more GPU); it starts by itself when the queue"
            " admits it",
        ),
        (
            "couldn't assign flavors to pod set main: insufficient quota for cpu in flavor default-flavor,"
            " previously considered podsets requests (0) + current podset request (24) > maximum"
            " capacity (16)",
            "it asks for 24 CPUs and the queue's whole share is 16 CPUs, so it can never start there:"
            " choose a smaller profile, or ask an admin for a larger share",
        ),
        (
            "couldn't assign flavors to pod set main: resource nvidia.com/gpu unavailable in ClusterQueue",
            "the queue has no share of GPUs at all: ask an admin",
        ),
        (
            "LocalQueue research doesn't exist",
            "the queue it was given does not exist or is switched off: ask an admin",
        ),
        (
            "ClusterQueue team is inactive",
            "the queue it was given does not exist or is switched off: ask an admin",
        ),
        (
            "couldn't assign flavors to pod set main: untolerated taint {gpu NoSchedule} in flavor a100",
            "none of the queue's kinds of machine suit it: ask an admin",
        ),
        (
            "couldn't assign flavors to pod set main: insufficient unused quota for cpu in flavor"
            " default-flavor, 2 more needed. Pending the preemption of 1 workload(s)",
            "it needs 2 more CPUs than its share has free; 1 other job is being put back in the queue to"
            " make room",
        ),
        ("something Kueue will say one day", None),
    ],
)
def test_kueues_reasons_in_plain_words(said: str, words: str | None) -> None:
    assert queue_words(said) == words
    if words is not None:
        assert not any(word in words for word in JARGON), words


def test_only_a_held_workload_has_a_reason() -> None:
    said = CPU_SHORT
    assert held_because(None) is None
    assert held_because(workload(said, admitted=True)) is None
    assert held_because({"metadata": {}, "status": {}}) is None  # not looked at yet
    assert held_because(workload(said)).startswith("held by the cluster's queue: its share has no room")  # type: ignore[union-attr]
    assert held_because(workload(said, evicted=True)).startswith("put back in the cluster's queue")  # type: ignore[union-attr]
    assert held_because(workload("something new")) is None


def test_workloads_are_found_by_what_they_stand_for_the_newest_first() -> None:
    old, new = workload("a", uid="u"), workload("b", uid="u")
    new["metadata"]["creationTimestamp"] = "2026-12-05T11:00:00Z"
    unlabelled = {"metadata": {"name": "w"}}
    assert by_owner([new, old, unlabelled]) == {"u": new}


def test_a_held_job_and_a_held_pod_say_kueues_reason_and_admins_see_its_words() -> None:
    said = CPU_SHORT
    suspended = {
        "metadata": {"uid": "job-1", "labels": {"kueue.x-k8s.io/queue-name": "research"}},
        "spec": {"suspend": True},
        "status": {"conditions": [{"type": "Suspended", "status": "True", "message": "Job suspended"}]},
    }
    notes = Notes(queued=by_owner([workload(said, uid="job-1")]))
    observed = derive_status("jobs", suspended, [], notes)
    assert (observed.status, observed.reason) == (JobStatus.PENDING, Reason.HELD_BY_CLUSTER_QUEUE)
    assert observed.message == (
        "held by the cluster's queue: its share has no room for it now (it needs 4 more CPUs); it starts by"
        " itself when the queue admits it"
    )
    assert observed.detail is not None
    assert said in observed.detail and "LocalQueue 'research'" in observed.detail
    # before Kueue has said why, and without Kueue's Workloads, the plain generic words
    assert derive_status("jobs", suspended, []).message == HELD
    gated = {
        "metadata": {"name": "p", "uid": "pod-1"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
        },
    }
    notes = Notes(queued=by_owner([workload(said, uid="pod-1")]))
    observed = derive_status("deployments", {"metadata": {}}, [gated], notes)
    assert observed.reason is Reason.HELD_BY_CLUSTER_QUEUE
    assert observed.message is not None and "4 more CPUs" in observed.message
