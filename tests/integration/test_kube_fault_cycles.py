"""Mixed work through a fault-injecting proxy: a real hub and jobs service in Kubernetes mode
whose every API call passes a proxy that fails 10 % of them (500s, 429s with Retry-After, answers
lost after the change was made, stalls, watches cut). Researchers spawn and stop servers and
submit, stop and delete jobs of every kind; none of them sees a 5xx, and at the end nothing is
left in the cluster and no record disagrees with it.

``make test`` runs a short form (40 cycles); ``make test-faults`` the issue's 1,000.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from devcluster.cluster import LocalCluster
from devcluster.controlplane import write_kubeconfig

from ..faultproxy import FaultProxy
from ..faults import size
from ..hubprocess import HubClient, HubProcess, wait_for
from ..kube import Namespace
from .test_kube_hub import jobs_api

pytestmark = [pytest.mark.integration, pytest.mark.faults]
CYCLES = size(40, 1000)
WORKERS = size(4, 8)  # more researchers at full size: most of a cycle is waiting
USERS = [f"r{i}" for i in range(1, WORKERS + 1)]
KINDS = ("server", "batch", "scraper", "scheduled")
SLEEP = "import time\nprint('up', flush=True)\ntime.sleep(300)\n"
OURS = ("ConfigMap", "Job", "Deployment", "CronJob")


@pytest.fixture
def proxy(cluster: LocalCluster) -> Iterator[FaultProxy]:
    assert cluster.control_plane is not None
    with FaultProxy(cluster.control_plane.server, cluster.control_plane.pki.ca_cert, rate=0.0) as started:
        yield started


@pytest.fixture
def faulty_hub(kube_namespace: Namespace, proxy: FaultProxy, tmp_path: Path) -> Iterator[HubProcess]:
    """A hub (and its jobs service) whose only way to the API server is through the proxy."""
    config = yaml.safe_load(kube_namespace.kubeconfig.read_text())
    token = config["users"][0]["user"]["token"]
    ca = Path(config["clusters"][0]["cluster"]["certificate-authority"])
    kubeconfig = write_kubeconfig(
        tmp_path / "proxied.kubeconfig",
        proxy.url,
        ca,
        token=token,
        namespace=kube_namespace.name,
        user=kube_namespace.hub_user,
    )
    through_proxy = Namespace(kube_namespace.name, kubeconfig, kube_namespace.cluster)
    jobs_config = (
        "c.JobsService.reconcile_seconds = 5\n"
        "c.JobsService.orphan_grace_seconds = 10\n"
        "c.JobsService.submits_per_minute = 1000\n"
        "c.JobsService.actions_per_minute = 1000\n"
    )
    with HubProcess.kubernetes(
        tmp_path,
        through_proxy,
        {user: ["researchers"] for user in USERS},
        extra_env={"JHUB_EXT_ORPHAN_GRACE_SECONDS": "30"},
        jobs_config=jobs_config,
    ) as process:
        yield process


class Researcher:
    """One user's session with the hub and the jobs service, noting the status of every answer."""

    def __init__(self, hub: HubProcess, name: str, answers: Counter[int], failures: list[str]):
        self.name, self.answers, self.failures = name, answers, failures
        self.client: HubClient = hub.client(name)
        self.client.session.hooks["response"].append(self._note)
        self.client.login()
        self.api, self.headers = jobs_api(hub, self.client)
        self.jobs = requests.Session()
        self.jobs.headers.update(self.headers)
        self.jobs.hooks["response"].append(self._note)

    def _note(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.answers[response.status_code] += 1
        if response.status_code >= 500:
            self.failures.append(f"{response.request.method} {response.url}: {response.text[:300]}")

    def jobs_call(self, method: str, path: str, expected: tuple[int, ...], **kwargs: Any) -> Any:
        response = self.jobs.request(method, f"{self.api}{path}", timeout=120, **kwargs)
        assert response.status_code in expected, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def server_cycle(self) -> None:
        created = self.client.api("POST", f"/users/{self.name}/server", json={"profile": "small"})
        assert created.status_code in (201, 202), created.text
        self.client.wait_ready(timeout=180)
        stopped = self.client.api("DELETE", f"/users/{self.name}/server")
        assert stopped.status_code in (202, 204), stopped.text
        wait_for(lambda: self.client.server() is None, 120, f"{self.name}'s server to stop", interval=0.5)

    def job_cycle(self, kind: str, name: str, rng: random.Random) -> None:
        code = "print('done')" if kind == "batch" else SLEEP
        job: dict[str, Any] = {"name": name, "kind": kind, "command": ["python", "-c", code]}
        if kind == "scheduled":
            job["schedule"] = "0 0 1 1 *"  # not while the test runs
        self.jobs_call("POST", "/jobs", (201,), json=job)
        if rng.random() < 0.5:  # sometimes let it get under way first
            time.sleep(rng.uniform(0, 1))
            self.jobs_call("GET", f"/jobs/{name}", (200,))
        if rng.random() < 0.7:
            self.jobs_call("POST", f"/jobs/{name}/stop", (200,))
        self.jobs_call("DELETE", f"/jobs/{name}", (204,))

    def cycles(self, count: int, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 (a repeatable mix of work, not a secret)
        for i in range(count):
            kind = rng.choice(KINDS)
            if kind == "server":
                self.server_cycle()
            else:
                self.job_cycle(kind, f"c{i}", rng)


def leftovers(ns: Namespace) -> dict[str, list[str]]:
    """What is left in the namespace: pods, and the jobs' objects (ours carry our annotations)."""
    left = {"Pod": [p["metadata"]["name"] for p in ns.pods()]}
    for kind in OURS:
        left[kind] = [
            obj["metadata"]["name"]
            for obj in ns.admin.list(kind, ns.name)
            if "jhub-ext.io/user" in (obj["metadata"].get("annotations") or {})
        ]
    return {kind: names for kind, names in left.items() if names}


def test_mixed_work_through_a_faulty_api_leaves_nothing_behind_and_no_5xx(
    faulty_hub: HubProcess, kube_namespace: Namespace, proxy: FaultProxy
) -> None:
    hub, ns = faulty_hub, kube_namespace
    answers: Counter[int] = Counter()
    failures: list[str] = []  # every 5xx answered, with what it said
    researchers = [Researcher(hub, user, answers, failures) for user in USERS]
    proxy.rate = 0.1
    proxy.watch_rate = 0.1 if CYCLES >= 1000 else 0.5  # a short run starts few watches: cut more of them
    proxy.cut_a_watch_first = True  # and at least one of them, not by chance alone
    share = -(-CYCLES // WORKERS)
    with ThreadPoolExecutor(WORKERS) as pool:
        done = [pool.submit(r.cycles, share, seed) for seed, r in enumerate(researchers)]
        for future in done:
            future.result()
    proxy.rate = 0.0
    injected = proxy.counts_snapshot()
    assert not failures and all(code < 500 for code in answers), (answers, failures)
    for fault in ("error", "throttle", "lost", "stall", "cut"):
        assert injected.get(fault, 0) > 0, injected  # every kind of fault was met

    try:
        wait_for(lambda: not leftovers(ns), 120, "nothing to be left in the namespace", interval=1)
    except TimeoutError:
        left = leftovers(ns)
        names = {name for kind, found in left.items() if kind != "Pod" for name in found}
        history = [
            (
                e["requestReceivedTimestamp"][11:23],
                e["verb"],
                e["objectRef"].get("resource"),
                e["objectRef"].get("name"),
                e.get("responseStatus", {}).get("code"),
            )
            for e in ns.requests()
            if e.get("objectRef", {}).get("name") in names
        ]
        pytest.fail(f"left behind: {left}; faults injected: {injected}; what the product asked: {history}")
    for r in researchers:  # the records agree: no job, no server
        assert r.jobs_call("GET", "/jobs", (200,))["jobs"] == []
        assert r.client.server() is None
