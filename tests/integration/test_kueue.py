"""A namespace Kueue manages: the real hub and jobs service against real Kueue (v0.17.0, built from its
Go module) on a cluster of its own.

The catalog names a Kueue LocalQueue for the group ``researchers`` (``kueue.queues``) and one of its
own for the profile ``small`` (``kueue_queue``); both LocalQueues feed one ClusterQueue, ``team``,
whose quota the tests set. Kueue holds what does not fit (a suspended Job, a gated pod) and lets it
start once its queue admits it: the researcher is told so in plain words meanwhile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from devcluster.cluster import LocalCluster
from devcluster.kueue import QUEUE_LABEL, Kueue

from jhub_ext.kubernetes.quantities import parse_cpu_quantity

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess, wait_for
from ..kube import Namespace, namespace
from ..kueue import cluster_with_kueue
from .test_kube_hub import jobs_api

pytestmark = pytest.mark.integration

CLUSTER_QUEUE = "team"
ROOMY = {"cpu": "2", "memory": "64Gi"}
#: words of Kubernetes and Kueue that must not reach a researcher
JARGON = ("Workload", "QuotaReserved", "SchedulingGated", "Kueue", "kueue", "ClusterQueue", "suspend")
HELD = "held by the cluster's queue: it starts by itself when the queue admits it"


def catalog_text() -> str:
    """The shipped catalog, with the group researchers' work in LocalQueue ``research`` and the profile
    ``small``'s (servers and jobs) in its own, ``notebooks``."""
    shipped = SHIPPED_CATALOG.read_text()
    marker = "  - slug: small\n"
    assert shipped.count(marker) == 1
    text = shipped.replace(marker, marker + "    kueue_queue: notebooks\n")
    return text + "\nkueue:\n  queues:\n    researchers: research\n"


@pytest.fixture(scope="module")
def kueue_cluster() -> Iterator[tuple[LocalCluster, Kueue]]:
    with cluster_with_kueue() as started:
        yield started


@pytest.fixture(scope="module")
def kueue(kueue_cluster: tuple[LocalCluster, Kueue]) -> Kueue:
    return kueue_cluster[1]


@pytest.fixture(scope="module")
def ns(kueue_cluster: tuple[LocalCluster, Kueue]) -> Iterator[Namespace]:
    cluster, kueue = kueue_cluster
    with namespace(cluster, "kueue") as created:
        kueue.queues(created.name, "research", CLUSTER_QUEUE, ROOMY)
        kueue.queues(created.name, "notebooks", CLUSTER_QUEUE, ROOMY)
        yield created


@pytest.fixture(scope="module")
def hub(ns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("kueuehub"))
    users = {"alice": ["researchers"], "admin": []}
    process = HubProcess.kubernetes(workdir, ns, users, catalog_text=catalog_text())
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def _roomy_queue(kueue: Kueue) -> Iterator[None]:
    """Each test starts with room in the ClusterQueue, and leaves it so."""
    kueue.set_quota(CLUSTER_QUEUE, ROOMY)
    yield
    kueue.set_quota(CLUSTER_QUEUE, ROOMY)


def plain(message: str) -> bool:
    return not any(word in message for word in JARGON)


def named(ns: Namespace, kind: str, name: str) -> dict[str, Any]:
    [obj] = [
        o
        for o in ns.admin.list(kind, ns.name)
        if (o["metadata"].get("annotations") or {}).get("jhub-ext.io/name") == name
    ]
    return obj


def waits_because(kueue: Kueue, ns: Namespace, owner: dict[str, Any]) -> str | None:
    """Why Kueue holds ``owner`` (its Workload's QuotaReserved condition), once it says."""
    for workload in kueue.list("Workload", ns.name):
        if workload["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]:
            for condition in (workload.get("status") or {}).get("conditions") or []:
                if condition["type"] == "QuotaReserved" and condition["status"] == "False":
                    return str(condition["message"])
    return None


def test_a_job_kueue_holds_says_why_and_starts_when_room_frees(
    hub: HubProcess, ns: Namespace, kueue: Kueue
) -> None:
    """A scraper takes the ClusterQueue's 2 CPUs; a batch job submitted meanwhile is held by Kueue
    (a suspended Job), says so in plain words (the cluster's own words for admins only), and runs
    once the scraper stops."""
    alice, admin = hub.client("alice"), hub.client("admin")
    alice.login()
    admin.login()
    api, headers = jobs_api(hub, alice)
    _, admin_headers = jobs_api(hub, admin)
    sleeper = ["python", "-c", "import time; print('up', flush=True); time.sleep(300)"]
    first = {"name": "first", "kind": "scraper", "profile": "large-memory", "command": sleeper}
    assert requests.post(f"{api}/jobs", headers=headers, json=first, timeout=30).status_code == 201

    def job(name: str, as_admin: bool = False) -> dict[str, Any]:
        path = f"{api}/jobs/{name}" + ("?user=alice" if as_admin else "")
        answer = requests.get(path, headers=admin_headers if as_admin else headers, timeout=10)
        return answer.json()  # type: ignore[no-any-return]

    wait_for(lambda: job("first")["status"] == "running", 90, "the scraper to run")
    # the profile names no queue: the group's, on the Deployment (Kueue gives it to its pods)
    assert named(ns, "Deployment", "first")["metadata"]["labels"][QUEUE_LABEL] == "research"

    command = ["python", "-c", "print('admitted')"]
    second = {"name": "second", "kind": "batch", "profile": "large-memory", "retries": 0, "command": command}
    try:
        assert requests.post(f"{api}/jobs", headers=headers, json=second, timeout=30).status_code == 201
        held = wait_for(
            lambda: (j := job("second"))["reason"] == "held-by-cluster-queue" and j,
            60,
            "the second job to be held by Kueue",
        )
        assert held["status"] == "pending" and held["message"].startswith("held by the cluster's queue: ")
        assert "detail" not in held and plain(held["message"])
        workload = named(ns, "Job", "second")
        assert workload["spec"]["suspend"] is True  # Kueue holds it
        assert workload["metadata"]["labels"][QUEUE_LABEL] == "research"
        # Kueue's own words on why it waits (its Workload's), and the researcher's, said plainly
        said = wait_for(lambda: waits_because(kueue, ns, workload), 30, "Kueue to say why")
        assert "insufficient unused quota for cpu in flavor default-flavor" in said, said
        short = said.rsplit(", ", 1)[-1].split()[0]  # "<CPUs> more needed"
        because = wait_for(
            lambda: (m := job("second")["message"]) != HELD and m, 30, "the job to say Kueue's reason"
        )
        needs = f"{parse_cpu_quantity(short):g} more CPUs"
        assert because == (
            f"held by the cluster's queue: its share has no room for it now (it needs {needs});"
            " it starts by itself when the queue admits it"
        ), because
        assert plain(because)
        by_admin = job("second", as_admin=True)  # admins also see Kueue's words, and where to look
        assert by_admin["reason"] == "held-by-cluster-queue", by_admin
        assert "Kueue LocalQueue 'research'" in by_admin["detail"], by_admin
        assert said in by_admin["detail"], by_admin
    finally:
        stopped = requests.post(f"{api}/jobs/first/stop", headers=headers, timeout=60)
        assert stopped.status_code == 200, stopped.text

    done = wait_for(lambda: (j := job("second"))["status"] in ("succeeded", "failed") and j, 90, "its run")
    assert done["status"] == "succeeded", done
    assert "admitted" in requests.get(f"{api}/jobs/second/logs", headers=headers, timeout=10).text
    for name in ("first", "second"):
        assert requests.delete(f"{api}/jobs/{name}", headers=headers, timeout=60).status_code == 204
    # the Role of hub_config/k8s/rbac.yaml let the service follow Kueue's Workloads, refusing nothing
    asked = [e for e in ns.requests() if (e.get("objectRef") or {}).get("resource") == "workloads"]
    assert {e["verb"] for e in asked} >= {"list", "watch"}, asked
    assert all((e.get("responseStatus") or {}).get("code", 200) < 400 for e in asked), asked


def test_a_server_kueue_holds_says_so_while_it_spawns_and_starts_when_admitted(
    hub: HubProcess, ns: Namespace, kueue: Kueue
) -> None:
    """A server of a profile with a queue of its own, while its ClusterQueue has no room for it: the
    spawn's progress says it waits in the cluster's queue (no time-out, no cluster words), and the
    server becomes ready once more quota lets Kueue admit it."""
    kueue.set_quota(CLUSTER_QUEUE, {"cpu": "100m", "memory": "64Gi"})  # small asks for 500m
    alice = hub.client("alice")
    alice.login()
    events: list[dict[str, Any]] = []
    try:
        started = alice.api("POST", "/users/alice/server", json={"profile": "small"})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 120
        with alice.api("GET", "/users/alice/server/progress", stream=True, timeout=120) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if not line.startswith("data:"):
                    continue
                events.append(json.loads(line.removeprefix("data:")))
                if events[-1].get("message", "").startswith("held by the cluster's queue: it asks"):
                    pod = ns.admin.get("Pod", "jupyter-alice", ns.name)
                    assert pod["spec"]["schedulingGates"]  # Kueue holds it
                    kueue.set_quota(CLUSTER_QUEUE, ROOMY)  # room: Kueue admits it
                if events[-1].get("ready") or events[-1].get("failed") or time.monotonic() > deadline:
                    break
        messages = [event.get("message", "") for event in events]
        assert events[-1].get("ready"), messages
        held, admitted = messages.index(HELD), messages.index("the cluster's queue admitted it")
        assert held < admitted < len(messages) - 1, messages
        # and, meanwhile, why: Kueue's reason in plain words (small asks for 500m, the whole queue has 100m)
        because = (
            "held by the cluster's queue: it asks for 0.5 CPUs and the queue's whole share is 0.1 CPUs,"
            " so it can never start there: choose a smaller profile, or ask an admin for a larger share"
        )
        assert held < messages.index(because) < admitted, messages
        assert all(plain(m) for m in messages), messages
        assert not any("raw_event" in event for event in events)  # the cluster's own events: admins only
        alice.wait_ready(timeout=60)
        pod = ns.admin.get("Pod", "jupyter-alice", ns.name)
        # the profile's own queue wins over the group's
        assert pod["metadata"]["labels"][QUEUE_LABEL] == "notebooks"
        assert not pod["spec"].get("schedulingGates")
    finally:
        if alice.server() is not None:
            alice.stop_server()
    wait_for(lambda: ns.admin.find("Pod", "jupyter-alice", ns.name) is None, 60, "alice's pod to go")
