"""Kubernetes-mode scale benchmark: a hub whose caches hold 1,000 users and 5,000 pods, ours against
stock KubeSpawner, on the real control plane.

Like Kubernetes' own kubemark, the pods run on hollow nodes: Node objects whose Leases the benchmark
renews, with pods bound to them directly, so the API server, the controllers and both hubs' watch
caches hold 5,000 real pod objects without 5,000 processes. 1,000 of the pods are labelled as
single-user servers (the label stock KubeSpawner's pod reflector selects), 4,000 as other work (jobs).
The hollow nodes are tainted so that nothing is scheduled there; one real server (on the agent's
nodes) runs on each hub, as on any hub in use, so that both have started every cache they keep.

- hub_rss_mib: the hub process's resident memory once its caches are full and the users exist
- hub_cpu_ms_per_page_view: the hub's CPU time per spawn-page view (PAGE_VIEWS views, by many users)
- background_requests_per_minute_1000_users: the hub's requests at the API server in an idle minute
  (watches opened included), with 1,000 users
- background_growth_10_to_1000_users: that figure with 1,000 users over the same with 10 (flat: 1.0)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devcluster.cluster import LocalCluster  # noqa: E402
from devcluster.rest import KubeClient  # noqa: E402

from benchmarks.spawn_kube import TOKEN, alternate, bench_cluster, cpu_seconds, hub_for, rss_mib  # noqa: E402
from jhub_ext.kubernetes.pods import RESTRICTED_CONTAINER_SECURITY_CONTEXT, RESTRICTED_POD_SECURITY_CONTEXT  # noqa: E402
from tests.hubprocess import HubProcess  # noqa: E402
from tests.kube import Namespace, namespace  # noqa: E402

USERS = int(os.environ.get("JHUB_EXT_BENCH_SCALE_USERS", "1000"))
PODS = int(os.environ.get("JHUB_EXT_BENCH_SCALE_PODS", "5000"))
PAGE_VIEWS = int(os.environ.get("JHUB_EXT_BENCH_SCALE_PAGE_VIEWS", "300"))
IDLE_SECONDS = float(os.environ.get("JHUB_EXT_BENCH_IDLE_SECONDS", "60"))
HOLLOW_NODES = 50
PODS_PER_NODE = 110


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@contextmanager
def hollow_nodes(admin: KubeClient, count: int) -> Iterator[list[str]]:
    """``count`` Ready nodes that no agent runs: their Leases renewed here every 10 s, as a kubelet's;
    tainted, so that the scheduler places no real pod there (the hollow pods are bound directly)."""
    names = [f"hollow-{i}" for i in range(count)]
    taint = {"key": "jhub-ext.io/hollow", "value": "true", "effect": "NoSchedule"}
    for name in names:
        admin.create(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {"taints": [taint]}}
        )
        capacity = {"cpu": "16", "memory": "64Gi", "pods": str(PODS_PER_NODE)}
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow"}
        admin.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"capacity": capacity, "allocatable": capacity, "conditions": [ready]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            for name in names:
                lease = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": {"holderIdentity": name, "renewTime": _now(), "leaseDurationSeconds": 40},
                }
                admin.apply(lease)
            stop.wait(10)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        yield names
    finally:
        stop.set()
        renewer.join()
        for name in names:
            admin.delete("Node", name)


def hollow_pod(ns: Namespace, index: int, node: str) -> dict[str, Any]:
    """A pod bound to a hollow node: the first USERS are single-user servers, the rest other work."""
    server = index < USERS
    labels = {"component": "singleuser-server"} if server else {"jhub-ext.io/job": f"job-{index}"}
    small = {"cpu": "100m", "memory": "128Mi"}
    container = {
        "name": "main",
        "image": "python",
        "command": ["sleep", "infinity"],
        "resources": {"requests": small, "limits": small},
        "securityContext": RESTRICTED_CONTAINER_SECURITY_CONTEXT,
    }
    name = f"jupyter-hollow{index}" if server else f"work-{index}"  # not a hub user's pod name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns.name, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD_SECURITY_CONTEXT,
            "containers": [container],
        },
    }


def fill(ns: Namespace, nodes: list[str]) -> None:
    """PODS pods bound to the hollow nodes, made 16 at a time, in a namespace whose ceiling (the
    ResourceQuota of hub_config/k8s/limits.yaml, 300 pods) an admin raised for so many."""
    raised = {"spec": {"hard": {"pods": str(PODS + 100), "requests.cpu": "2000", "requests.memory": "4Ti"}}}
    ns.admin.merge_patch("ResourceQuota", "jhub-ext-ceiling", ns.name, raised)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: ns.admin.create(hollow_pod(ns, i, nodes[i % len(nodes)])), range(PODS)))


def requests_in(ns: Namespace, seconds: float) -> float:
    """The hub's API requests in an idle window (lists, gets, and each watch opened), per minute."""
    before = len(ns.requests())
    time.sleep(seconds)
    return (len(ns.requests()) - before) * 60 / seconds


def add_users(hub: HubProcess, names: list[str]) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"token {TOKEN}"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: session.post(f"{hub.url}/hub/api/users/{name}", timeout=60), names))


def measure(hub: HubProcess, ns: Namespace) -> dict[str, float]:
    assert hub.process is not None
    names = [f"user{i}" for i in range(USERS)]
    add_users(hub, names[:11])
    viewers = [hub.client(name) for name in names[:10]]
    for viewer in viewers:
        viewer.login()
        viewer.spawn_page()  # ours: the capacity caches start (nodes and pods)
    runner = hub.client(names[10])  # not a viewer: a running server's spawn page is a redirect
    runner.login()
    started = runner.api("POST", f"/users/{runner.username}/server", json={"profile": "small"})
    assert started.status_code in (201, 202), started.text
    runner.wait_ready(timeout=300)  # both: KubeSpawner's pod reflector starts with a server
    time.sleep(5)
    few = requests_in(ns, IDLE_SECONDS)
    add_users(hub, names[11:])
    time.sleep(5)
    many = requests_in(ns, IDLE_SECONDS)
    rss = rss_mib(hub.process.pid)
    cpu_before = cpu_seconds(hub.process.pid)
    for i in range(PAGE_VIEWS):
        page = viewers[i % len(viewers)].spawn_page()
        assert page.status_code == 200, page.status_code
    cpu = cpu_seconds(hub.process.pid) - cpu_before
    return {
        "hub_rss_mib": rss,
        "hub_cpu_ms_per_page_view": cpu * 1000 / PAGE_VIEWS,
        "background_requests_per_minute_1000_users": many,
        "background_growth_10_to_1000_users": many / few if few else float(many > 0) + 1.0,
    }


def run_variant(cluster: LocalCluster, nodes: list[str], stock: bool, workdir: Path) -> dict[str, float]:
    with namespace(cluster, "scale", wait=True) as ns:
        fill(ns, nodes)
        hub = hub_for(ns, stock, workdir, USERS)
        hub.start(timeout=180)
        try:
            return measure(hub, ns)
        finally:
            hub.stop()
            clear_pods(ns)


def clear_pods(ns: Namespace) -> None:
    """Delete every pod of ``ns`` at once (grace 0): no kubelet lets go of a hollow node's pods, and
    a pod deleted gracefully there would keep its namespace terminating for ever. Deleting 5,000
    takes the API server longer than one request's timeout, so ask again until none is left."""
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
    deadline = time.monotonic() + 900
    while ns.admin.list("Pod", ns.name):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the pods of {ns.name} are still there after 900 s")
        try:
            ns.admin.request("DELETE", f"/api/v1/namespaces/{ns.name}/pods", body, timeout=300)
        except requests.Timeout:
            continue  # the API server goes on deleting; see what is left


GOALS = {
    "hub_rss_mib": ("ratio <= 1.5", "MiB"),
    "hub_cpu_ms_per_page_view": ("ratio <= 1.5", "ms"),
    "background_requests_per_minute_1000_users": ("informational", "requests/min"),
    "background_growth_10_to_1000_users": ("ours <= 1.1 (flat)", "x"),
}


def main() -> dict[str, Any]:
    with (
        bench_cluster("jhub-ext-bench-scale-") as (cluster, tmp),
        hollow_nodes(cluster.admin, HOLLOW_NODES) as nodes,
    ):
        # the baseline is stock KubeSpawner
        return alternate(
            "kube_scale", GOALS, tmp, lambda stock, workdir: run_variant(cluster, nodes, stock, workdir)
        )


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
