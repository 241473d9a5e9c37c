"""The jobs service killed (SIGKILL) while jobs of every kind are being submitted and stopped, then
restarted by the hub: no job is lost or duplicated, and the store and the cluster agree again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from jhub_ext.core.names import object_name

from ..conftest import SHIPPED_CATALOG
from ..faults import full, roomy_catalog, size
from ..hubprocess import HubProcess, jobs_service_keeper, wait_for
from ..kube import Namespace
from .test_kube_hub import jobs_api

pytestmark = [pytest.mark.integration, pytest.mark.faults]
KINDS = ("batch", "scraper", "scheduled")
SLEEP = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"
RUNNING = ("pending", "running")
WORKLOAD = {"batch": "Job", "scraper": "Deployment", "scheduled": "CronJob"}


@pytest.fixture
def service_hub(kube_namespace: Namespace, tmp_path: Path) -> Iterator[HubProcess]:
    config = (
        "c.JobsService.reconcile_seconds = 3\nc.JobsService.orphan_grace_seconds = 5\n"
        "c.JobsService.submits_per_minute = 1000\n"
    )
    users = {"alice": ["researchers"]}
    catalog = roomy_catalog(SHIPPED_CATALOG.read_text(), cpu=64, memory="512Gi", jobs=60)
    with HubProcess.kubernetes(
        tmp_path, kube_namespace, users, catalog_text=catalog if full() else None, jobs_config=config
    ) as process:
        yield process


def body(i: int) -> dict[str, Any]:
    kind = KINDS[i % 3]
    code = "print('done')" if kind == "batch" else SLEEP
    job: dict[str, Any] = {"name": f"j{i}", "kind": kind, "command": ["python", "-c", code]}
    if kind == "scheduled":
        job["schedule"] = "0 0 1 1 *"  # not during the test
    return job


def test_a_killed_service_loses_and_duplicates_nothing(
    service_hub: HubProcess, kube_namespace: Namespace
) -> None:
    ns, hub = kube_namespace, service_hub
    alice = hub.client("alice")
    alice.login()
    api, headers = jobs_api(hub, alice)

    def call(method: str, path: str, **kwargs: Any) -> int:
        try:
            return requests.request(method, f"{api}{path}", headers=headers, timeout=60, **kwargs).status_code
        except requests.RequestException:
            return 0  # the service went away under the request

    # 16 jobs in the shipped quota of 16 CPUs (the 50 at full size, in a roomier one)
    first = size(8, 25)  # and as many more while the service is killed
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: call("POST", "/jobs", json=body(i)), range(first)))
    assert answers.count(201) == first
    victim = jobs_service_keeper()
    with ThreadPoolExecutor(6) as pool:  # more submits, and stops, while the service is killed
        later = [pool.submit(call, "POST", "/jobs", json=body(i)) for i in range(first, 2 * first)]
        stops = [pool.submit(call, "POST", f"/jobs/j{i}/stop") for i in range(1, first, 3)]
        time.sleep(0.5)  # some served, some under way
        os.kill(victim, signal.SIGKILL)
        outcomes = [f.result() for f in later + stops]
    # served, cut off by the kill, or refused cleanly (403: a batch job not yet done holds quota)
    assert set(outcomes) <= {0, 200, 201, 403, 502, 503}, outcomes  # never a 500

    def answers_again() -> bool:
        try:
            return requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code == 200
        except requests.RequestException:
            return False

    wait_for(answers_again, 90, "the hub to restart the jobs service")
    assert jobs_service_keeper() != victim

    def listed() -> dict[str, dict[str, Any]]:
        page = requests.get(f"{api}/jobs?limit=100", headers=headers, timeout=30).json()
        return {job["name"]: job for job in page["jobs"]}

    def cluster() -> dict[str, list[str]]:
        """The kinds of object each job has in the namespace (a CronJob's runs are its own)."""
        held: dict[str, list[str]] = {}
        for kind in ("Job", "Deployment", "CronJob", "ConfigMap"):
            for obj in ns.admin.list(kind, ns.name):
                meta = obj["metadata"]
                name = (meta.get("annotations") or {}).get("jhub-ext.io/name")
                if name and meta["name"] == object_name("alice", name) and not meta.get("deletionTimestamp"):
                    held.setdefault(name, []).append(kind)
        return held

    def agree() -> bool:
        jobs, held = listed(), cluster()
        for name, job in jobs.items():
            objects = sorted(held.get(name, []))
            if job["status"] in RUNNING and objects != sorted([WORKLOAD[job["kind"]], "ConfigMap"]):
                return False  # a live record whose objects are missing (or more than one of each)
            if job["status"] == "stopped" and objects:
                return False  # a stopped job still holding objects
        batches_done = all(job["status"] not in RUNNING for job in jobs.values() if job["kind"] == "batch")
        return set(held) <= set(jobs) and batches_done  # no object without a record; batch jobs ran

    try:
        wait_for(agree, 90, "the store and the cluster to agree")
    except TimeoutError:
        states = {name: (job["status"], job.get("message")) for name, job in listed().items()}
        pytest.fail(f"they disagree: records {states}, objects {cluster()}, answers {outcomes}")
    jobs = listed()
    assert {f"j{i}" for i in range(first)} <= set(jobs)  # accepted before the kill: none lost
    assert len(jobs) == len(set(jobs))
    for job in jobs.values():  # every status right for what it is
        if job["kind"] == "batch":
            assert job["status"] in ("succeeded", "failed", "stopped"), job
            if job["status"] == "failed":
                assert job["message"], job  # a lost job says why
        elif job["kind"] == "scraper":
            assert job["status"] in ("running", "stopped", "failed", "pending"), job
        else:
            assert job["status"] in ("pending", "stopped", "failed"), job
    for name in jobs:
        assert call("DELETE", f"/jobs/{name}") == 204
    wait_for(lambda: not cluster(), 60, "every object to go")
