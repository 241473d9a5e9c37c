"""The Kubernetes jobs backend against the API emulator: workloads, status from watches, logs, stop."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.backends.base import Placement
from jhub_ext.backends.kubernetes import KubernetesJobBackend
from jhub_ext.catalog import load_catalog
from jhub_ext.jobs.model import JobStatus, parse_submission
from jhub_ext.k8s.jobs import object_name

from ..conftest import SHIPPED_CATALOG
from ..kubeapi import KubeEmulator
from ..observations import Recorder

pytestmark = pytest.mark.integration
SMALL = load_catalog(SHIPPED_CATALOG).profile("small")
ALICE = Placement(
    user="alice", groups=frozenset({"researchers"}), profile=SMALL, image="example.org/python:3"
)


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with KubeEmulator() as api:
        api.add_namespace("jhub", {"pod-security.kubernetes.io/enforce": "restricted"})
        api.add_node("n1", cpu="16", memory="64Gi")
        monkeypatch.setenv("KUBECONFIG", str(api.write_kubeconfig(tmp_path / "kubeconfig", namespace="jhub")))
        yield api


@pytest.fixture
async def backend(emulator: KubeEmulator) -> AsyncIterator[KubernetesJobBackend]:
    b = KubernetesJobBackend(namespace="jhub", watch_timeout_seconds=30)
    b.on_change = Recorder()
    await b.start()
    yield b
    await b.shutdown()


def spec(name: str, kind: str, code: str, **extra: Any) -> Any:
    return parse_submission({"name": name, "kind": kind, "command": [sys.executable, "-c", code], **extra})


async def test_a_batch_job_exiting_3_fails_after_its_retries_with_its_logs(
    backend: KubernetesJobBackend, emulator: KubeEmulator
) -> None:
    await backend.submit(
        spec("exit-three", "batch", "print('working'); raise SystemExit(3)", retries=1), ALICE
    )
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    final = await seen.until(lambda o: o.status.finished)
    assert (final.status, final.exit_code) == (JobStatus.FAILED, 3)
    job = emulator.get("jobs", "jhub", object_name("alice", "exit-three"), group="batch")
    assert job is not None and job["spec"]["backoffLimit"] == 1 and job["status"]["failed"] == 2
    logs = "".join([chunk async for chunk in backend.logs("alice", "exit-three")])
    assert "working" in logs


async def test_a_scraper_runs_as_a_deployment_until_stopped(
    backend: KubernetesJobBackend, emulator: KubeEmulator
) -> None:
    code = "import time\nprint('scraping', flush=True)\ntime.sleep(120)\n"
    job = spec("news", "scraper", code)
    await backend.submit(job, ALICE)
    await backend.submit(job, ALICE)  # idempotent: the same objects, nothing twice
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    name = object_name("alice", "news")
    assert len(emulator.list("deployments", "jhub", group="apps")) == 1
    pods = [
        p for p in emulator.list("pods", "jhub") if p["metadata"]["labels"].get("jhub-ext.io/job") == name
    ]
    assert len(pods) == 1 and pods[0]["metadata"]["labels"]["jhub-ext.io/kind"] == "scraper"
    await backend.stop("alice", "news")
    assert backend.observed("alice", "news").status is JobStatus.STOPPED
    assert emulator.get("deployments", "jhub", name, group="apps") is None
    assert emulator.get("configmaps", "jhub", name) is None


async def test_a_restarted_service_finds_its_jobs_in_the_cluster(
    backend: KubernetesJobBackend, emulator: KubeEmulator
) -> None:
    await backend.submit(spec("keeper", "scraper", "import time\ntime.sleep(120)\n"), ALICE)
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    second = KubernetesJobBackend(namespace="jhub", watch_timeout_seconds=30)
    await second.start()
    try:
        observed = second.observed("alice", "keeper")
        assert observed is not None and observed.status is JobStatus.RUNNING
        assert len(emulator.list("deployments", "jhub", group="apps")) == 1  # nothing created again
    finally:
        await second.shutdown()


async def test_the_role_grants_exactly_what_the_jobs_backend_uses(
    backend: KubernetesJobBackend, emulator: KubeEmulator
) -> None:
    """hub_config/k8s/rbac.yaml's Role, compared with the requests the backend really makes."""
    import yaml

    from ..conftest import HUB_CONFIG

    seen: Recorder = backend.on_change  # type: ignore[assignment]
    await backend.submit(spec("once", "batch", "print('done')"), ALICE)
    await seen.until(lambda o: o.status is JobStatus.SUCCEEDED)
    assert "done" in "".join([chunk async for chunk in backend.logs("alice", "once")])
    await backend.submit(spec("nightly", "scheduled", "print(1)", schedule="@daily"), ALICE)
    await backend.submit(spec("scrape", "scraper", "import time; time.sleep(60)"), ALICE)
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    for name in ("once", "nightly", "scrape"):
        await backend.stop("alice", name)
        await backend.delete("alice", name)

    def plural(recorded: str) -> str:  # "batch/jobs" -> "jobs"; "pods/log" stays
        return recorded if recorded.startswith("pods") else recorded.rsplit("/", 1)[-1]

    used = {(r.verb, plural(r.resource)) for r in emulator.requests if r.namespace == "jhub"}
    documents = list(yaml.safe_load_all((HUB_CONFIG / "k8s" / "rbac.yaml").read_text()))
    role = next(d for d in documents if d["kind"] == "Role")
    granted = {
        (verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]
    }
    assert used == granted, f"used but not granted: {used - granted}; granted but unused: {granted - used}"


async def test_a_scheduled_job_runs_when_the_cronjob_fires(
    backend: KubernetesJobBackend, emulator: KubeEmulator
) -> None:
    from datetime import timedelta

    await backend.submit(
        spec("nightly", "scheduled", "print('tick')", schedule="0 2 * * *", timezone="Europe/Berlin"), ALICE
    )
    seen: Recorder = backend.on_change  # type: ignore[assignment]
    cronjob = emulator.get("cronjobs", "jhub", object_name("alice", "nightly"), group="batch")
    assert cronjob is not None and cronjob["spec"]["timeZone"] == "Europe/Berlin"
    assert emulator.list("jobs", "jhub", group="batch") == []
    emulator.advance_clock(emulator.controllers.now + timedelta(days=1))
    done = await seen.until(lambda o: o.exit_code == 0)
    assert done.status in (JobStatus.PENDING, JobStatus.RUNNING)  # waiting for its next run
    assert len(emulator.list("jobs", "jhub", group="batch")) == 1
    assert "tick" in "".join([chunk async for chunk in backend.logs("alice", "nightly")])
    await backend.delete("alice", "nightly")
    assert emulator.list("jobs", "jhub", group="batch") == []  # the CronJob took its Jobs with it
