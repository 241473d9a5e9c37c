"""The reconciler against the real control plane: the jobs store and the cluster made to agree."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.backends.kubernetes import KubernetesJobBackend
from jhub_ext.catalog.reload import CatalogSource
from jhub_ext.jobs.manager import Caller, JobManager
from jhub_ext.jobs.model import JobStatus, parse_submission
from jhub_ext.jobs.reconcile import GONE, reconcile
from jhub_ext.jobs.store import JobStore
from jhub_ext.k8s.jobs import build_manifests, object_name

from ..conftest import SHIPPED_CATALOG
from ..kube import Namespace
from .test_kube_jobs import ALICE

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CALLER = Caller("alice", frozenset({"researchers"}), admin=False)
SLEEP = ["python", "-c", "import time\nprint('up', flush=True)\ntime.sleep(300)\n"]


@pytest.fixture
async def manager(
    kube_namespace: Namespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[JobManager]:
    monkeypatch.setenv("KUBECONFIG", str(kube_namespace.kubeconfig))
    backend = KubernetesJobBackend(namespace=kube_namespace.name, watch_timeout_seconds=30)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    m = JobManager(store, backend, CatalogSource(SHIPPED_CATALOG), None)
    await backend.start()
    yield m
    await backend.shutdown()
    store.close()


async def eventually(predicate: Callable[[], Any], what: str, timeout: float = 90) -> None:
    """Wait for ``predicate`` while the event loop runs (the backend's watches need it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


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
    manager: JobManager, kube_namespace: Namespace
) -> None:
    ns = kube_namespace
    for name in ("gone", "stopped", "kept"):
        await manager.submit(CALLER, {"name": name, "kind": "scraper", "command": SLEEP})
    await eventually(
        lambda: all(status(manager, n) is JobStatus.RUNNING for n in ("gone", "stopped", "kept")),
        "3 scrapers",
    )
    # someone deletes a workload by hand
    ns.admin.delete("Deployment", object_name("alice", "gone"), ns.name)
    # a stop whose deletes never happened (the API server was down): the record says stopped
    manager.store.set_status("alice", "stopped", JobStatus.STOPPED, message="stopped")
    # a submit that died before its record was made, or a delete after its record went: objects
    # no record knows
    orphan = parse_submission({"name": "orphan", "kind": "scraper", "command": SLEEP})
    for manifest in build_manifests(orphan, ALICE, manager.backend.site):  # type: ignore[attr-defined]
        ns.admin.create(manifest)
    cached = manager.backend.view  # type: ignore[attr-defined]
    await eventually(
        lambda: cached.workload("alice", "gone", "deployments") is None, "the deletion to be seen"
    )

    done = await reconcile(manager, grace_seconds=0)
    assert done.finished == [("alice", "gone")]
    assert done.stopped == [("alice", "stopped")]
    assert done.removed == [("alice", "orphan")]
    gone = manager.store.get("alice", "gone")
    assert gone is not None and (gone.status, gone.message) == (JobStatus.FAILED, GONE)
    await eventually(
        lambda: not objects_named(ns, "stopped") and not objects_named(ns, "orphan"), "the leftovers to go"
    )
    assert (
        objects_named(ns, "kept") == ["Deployment", "ConfigMap"]
        and status(manager, "kept") is JobStatus.RUNNING
    )
    # agreement is stable: a second pass changes nothing
    assert not await reconcile(manager, grace_seconds=0)


async def test_young_records_and_objects_and_jobs_in_action_are_left_alone(
    manager: JobManager, kube_namespace: Namespace
) -> None:
    ns = kube_namespace
    orphan = parse_submission({"name": "fresh", "kind": "scraper", "command": SLEEP})
    for manifest in build_manifests(orphan, ALICE, manager.backend.site):  # type: ignore[attr-defined]
        ns.admin.create(manifest)
    assert not await reconcile(manager, grace_seconds=600)  # younger than the grace period
    with manager.working_on("alice", "fresh"):
        assert not await reconcile(manager, grace_seconds=0)  # a submit may be making it right now
    assert (await reconcile(manager, grace_seconds=0)).removed == [("alice", "fresh")]
