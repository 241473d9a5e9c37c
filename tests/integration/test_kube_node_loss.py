"""A node lost with jobs on it (its node agent killed), against the real control plane.

What happens is what Kubernetes decides: the node lifecycle controller marks the node unreachable
once its Lease goes stale, taint-based eviction takes its pods away, a scraper's Deployment starts
a new pod elsewhere at once, and a batch job's pod stays "terminating" until the node is declared
out of service (as an admin or a cloud provider does), when it is retried without counting
against the job's retries. The product's part: each job says why it moved, and ends right.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from devcluster.cluster import LocalCluster

from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.names import object_name
from jhub_ext.service.manager import Caller, JobManager

from ..kube import Namespace, eventually

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CALLER = Caller("alice", frozenset({"researchers"}), admin=False)
DOOMED = "spot-1"
OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}
# the node lifecycle controller's grace period and the eviction toleration (devcluster.controlplane),
# the pod garbage collector's period, and room for the scheduler and the node agents
LOSS_SECONDS = 40 + 20 + 20 + 40


def schedulable_nodes(cluster: LocalCluster) -> list[str]:
    return [
        n["metadata"]["name"]
        for n in cluster.admin.list("Node")
        if not n["spec"].get("unschedulable") and not n["spec"].get("taints")
    ]


def cordon(cluster: LocalCluster, names: list[str], unschedulable: bool) -> None:
    for name in names:
        cluster.admin.merge_patch("Node", name, None, {"spec": {"unschedulable": unschedulable or None}})


@pytest.fixture
def doomed_node(cluster: LocalCluster) -> Iterator[Any]:
    """A node of its own agent on which alone new pods land (the others cordoned) until released."""
    agent = cluster.start_agent([{"name": DOOMED, "cpu": "16", "memory": "64Gi"}])
    others = [n for n in schedulable_nodes(cluster) if n != DOOMED]
    cordon(cluster, others, True)
    try:
        yield agent, others
    finally:
        cordon(cluster, others, False)
        cluster.remove_agent(agent)  # deletes the Node: its leftover pods are collected


def pods_of(ns: Namespace, name: str) -> list[dict[str, Any]]:
    return ns.pods(labels=f"jhub-ext.io/job={object_name('alice', name)}")


def live_on(ns: Namespace, name: str) -> set[str]:
    """The nodes the job's pods run on, leaving out pods being taken away."""
    return {
        p["spec"].get("nodeName", "")
        for p in pods_of(ns, name)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    }


async def test_jobs_on_a_lost_node_come_back_elsewhere_and_say_why(
    kube_manager: JobManager, kube_namespace: Namespace, cluster: LocalCluster, doomed_node: Any
) -> None:
    ns, (agent, others) = kube_namespace, doomed_node
    manager = kube_manager
    await manager.submit(
        CALLER,
        {"name": "feed", "kind": "scraper", "command": ["python", "-c", "import time; time.sleep(900)"]},
    )
    await manager.submit(
        CALLER,
        {
            "name": "tally",
            "kind": "batch",
            "retries": 0,  # a lost node is not the job's failure: it must not use up a retry
            "command": ["python", "-c", "import time; time.sleep(15); print('tallied')"],
        },
    )
    await eventually(lambda: live_on(ns, "feed") == live_on(ns, "tally") == {DOOMED}, "both on spot-1", 90)
    cordon(cluster, others, False)

    seen: dict[str, set[str]] = {"feed": set(), "tally": set()}

    def record(name: str) -> Any:
        job = manager.store.get("alice", name)
        assert job is not None
        if job.message:
            seen[name].add(job.message)
        return job

    agent.kill()  # the node is lost: its pods die with its agent, and it stops renewing its Lease
    await eventually(
        lambda: record("tally") and record("feed").message and "running again" in record("feed").message,
        "the scraper to run again on another node",
        LOSS_SECONDS,
    )
    assert live_on(ns, "feed") and DOOMED not in live_on(ns, "feed")
    feed = record("feed")
    assert feed.status is JobStatus.RUNNING and feed.restarts == 0
    assert feed.message == f"its node {DOOMED} stopped answering: running again on another node"
    tally = record("tally")
    assert tally.status is JobStatus.PENDING
    assert tally.message == f"its node {DOOMED} stopped answering: waiting to run again on another node"

    # the node will not come back: declared out of service, its pods are collected and the Job retried
    cluster.admin.merge_patch("Node", DOOMED, None, {"spec": {"taints": [OUT_OF_SERVICE]}})
    await eventually(
        lambda: record("tally").status is JobStatus.SUCCEEDED,
        "the batch job to finish elsewhere",
        LOSS_SECONDS,
    )
    assert any(DOOMED in message and "again on another node" in message for message in seen["tally"])
    job = ns.admin.get("Job", object_name("alice", "tally"), ns.name)
    assert job["status"].get("failed", 0) == 0 and job["status"]["succeeded"] == 1
    assert "tallied" in "".join([chunk async for chunk in manager.backend.logs("alice", "tally")])
    assert record("feed").status is JobStatus.RUNNING
