"""The reconciler against the real control plane: the jobs store and the cluster made to agree."""

from __future__ import annotations

from typing import Any

import pytest

from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.workloads import build_manifests
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.reconcile import GONE, reconcile

from ..kube import Namespace, eventually
from .test_kube_jobs import ALICE

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CALLER = Caller("alice", frozenset({"researchers"}), admin=False)
SLEEP = ["python", "-c", "import time\nprint('up', flush=True)\ntime.sleep(300)\n"]


def status(manager: JobManager, name: str) -> Any:
    record = manager.store.get("alice", name)
    return record.status if record else None


def objects_named(ns: Namespace, name: str) -> list[str]:
    object_id = object_name("alice", name)
    return [
        kind
        for kind in ("Deployment", "Job", "CronJob", "ConfigMap")
        if ns.admin.find(kind, object_id, ns.name) is not None
    ]


async def test_the_reconciler_makes_the_store_and_the_cluster_agree(
    kube_manager: JobManager, kube_namespace: Namespace
) -> None:
    ns = kube_namespace
    for name in ("gone", "stopped", "kept"):
        await kube_manager.submit(CALLER, {"name": name, "kind": "scraper", "command": SLEEP})
    await eventually(
        lambda: all(status(kube_manager, n) is JobStatus.RUNNING for n in ("gone", "stopped", "kept")),
        "3 scrapers",
        timeout=90,
    )
    # someone deletes a workload by hand
    ns.admin.delete("Deployment", object_name("alice", "gone"), ns.name)
    # a stop whose deletes never happened (the API server was down): the record says stopped
    kube_manager.store.set_status("alice", "stopped", JobStatus.STOPPED, message="stopped")
    # a submit that died before its record was made, or a delete after its record went: objects
    # no record knows
    orphan = parse_submission({"name": "orphan", "kind": "scraper", "command": SLEEP})
    for manifest in build_manifests(orphan, ALICE, kube_manager.backend.site):  # type: ignore[attr-defined]
        ns.admin.create(manifest)
    cached = kube_manager.backend.view  # type: ignore[attr-defined]
    await eventually(
        lambda: cached.workload("alice", "gone", "deployments") is None, "the deletion to be seen", timeout=90
    )

    done = await reconcile(kube_manager, grace_seconds=0)
    assert done.finished == [("alice", "gone")]
    assert done.stopped == [("alice", "stopped")]
    assert done.removed == [("alice", "orphan")]
    gone = kube_manager.store.get("alice", "gone")
    assert gone is not None and (gone.status, gone.message) == (JobStatus.FAILED, GONE)
    assert gone.reason is Reason.FAILED
    await eventually(
        lambda: not objects_named(ns, "stopped") and not objects_named(ns, "orphan"),
        "the leftovers to go",
        timeout=90,
    )
    assert (
        objects_named(ns, "kept") == ["Deployment", "ConfigMap"]
        and status(kube_manager, "kept") is JobStatus.RUNNING
    )
    # agreement is stable: a second pass changes nothing
    assert not await reconcile(kube_manager, grace_seconds=0)


async def test_young_records_and_objects_and_jobs_in_action_are_left_alone(
    kube_manager: JobManager, kube_namespace: Namespace
) -> None:
    ns = kube_namespace
    orphan = parse_submission({"name": "fresh", "kind": "scraper", "command": SLEEP})
    for manifest in build_manifests(orphan, ALICE, kube_manager.backend.site):  # type: ignore[attr-defined]
        ns.admin.create(manifest)
    assert not await reconcile(kube_manager, grace_seconds=600)  # younger than the grace period
    async with kube_manager.working_on("alice", "fresh"):
        assert not await reconcile(kube_manager, grace_seconds=0)  # a submit may be making it right now
    assert (await reconcile(kube_manager, grace_seconds=0)).removed == [("alice", "fresh")]
