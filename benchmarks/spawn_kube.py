"""Kubernetes-mode spawn benchmark: ProfileKubeSpawner against stock KubeSpawner, on the real control plane.

One local cluster (devcluster: kube-apiserver, controller manager, scheduler, etcd, and a
node agent with 20 nodes) serves every run. Each run is a fresh namespace and a fresh hub process
from hub_config/; the baseline hub swaps in stock KubeSpawner with the shipped catalog as an
equivalent static profile_list and the same least-privilege settings. USERS users spawn the "small"
profile at once through the REST API; pods run a stand-in server (fake_singleuser.py), so the figures
measure the spawner, not JupyterLab's start-up. Each variant runs RUNS times, in alternating order;
the figures are medians, with the spread (min, max) beside them.

- api_requests_per_spawn: requests of the hub's ServiceAccount at the API server (its audit log)
  during the spawns, per spawn
- hub_cpu_seconds_per_spawn: the hub process's CPU time during the spawns, per spawn
- seconds_to_all_ready: from the first spawn request until the hub has called every server ready,
  observed through each server's progress event stream (the hub's own "ready" event), not by polling
- api_requests_per_1000_page_views: requests during 1,000 views of the spawn page, less those of an
  idle window of the same length (the reflectors' periodic lists), per 1,000 views (goal 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devcluster.cluster import DEFAULT_NODES, LocalCluster  # noqa: E402

from tests.hubprocess import HubProcess  # noqa: E402
from tests.kube import Namespace, namespace  # noqa: E402

USERS = int(os.environ.get("JHUB_EXT_BENCH_USERS", "200"))
PAGE_VIEWS = int(os.environ.get("JHUB_EXT_BENCH_PAGE_VIEWS", "1000"))
RUNS = int(os.environ.get("JHUB_EXT_BENCH_RUNS", "3"))
NODES = [{"name": f"node-{i}", "cpu": "16", "memory": "64Gi", "pods": 250} for i in range(20)]
TOKEN = "bench-" + os.urandom(8).hex()

OVERLAY = """
import json, os, sys
load_subconfig({config!r})
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0
c.JupyterHub.services.append({{"name": "bench", "api_token": os.environ["BENCH_TOKEN"]}})
c.JupyterHub.load_roles.append(
    {{
        "name": "bench",
        "scopes": ["admin:users", "admin:servers", "list:users", "read:servers"],
        "services": ["bench"],
    }}
)
c.KubeSpawner.cmd = ["python", "-c", {fake!r}]
c.KubeSpawner.start_timeout = 600
c.KubeSpawner.http_timeout = 600
if os.environ.get("BENCH_STOCK"):
    from jhub_ext.core.catalog import load_catalog
    from jhub_ext.core.catalog.model import Kind
    from jhub_ext.core.catalog.selection import Selection
    from jhub_ext.kubernetes.pods import pod_plan
    from jhub_ext.kubernetes.spawner import kubespawner_traits

    catalog = load_catalog(os.environ["JHUB_EXT_CATALOG"])
    from jhub_ext.kubernetes.pods import (
        RESTRICTED_CONTAINER_SECURITY_CONTEXT,
        RESTRICTED_POD_SECURITY_CONTEXT,
    )

    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    # the same least-privilege settings ProfileKubeSpawner applies by default
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.gid = 100
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.container_security_context = RESTRICTED_CONTAINER_SECURITY_CONTEXT
    c.KubeSpawner.pod_security_context = RESTRICTED_POD_SECURITY_CONTEXT
    c.KubeSpawner.automount_service_account_token = False
    # the same pods as ours: each profile's translation, as a static profile_list entry
    c.KubeSpawner.profile_list = [
        {{
            "slug": p.slug,
            "display_name": p.display_name,
            "default": p.default,
            "kubespawner_override": kubespawner_traits(
                pod_plan(p, user="bench", kind=Kind.SERVER, groups={{"researchers"}}),
                Selection(p, p.default_image),
            ),
        }}
        for p in catalog.visible_to({{"researchers"}}, Kind.SERVER)
    ]
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """The process's resident memory."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def hub_for(ns: Namespace, stock: bool, workdir: Path, user_count: int = USERS) -> HubProcess:
    overlay = workdir / "bench_config.py"
    overlay.write_text(
        OVERLAY.format(
            config=str(ROOT / "hub_config" / "jupyterhub_config.py"),
            fake=(ROOT / "benchmarks" / "fake_singleuser.py").read_text(),
        )
    )
    users = {f"user{i}": ["researchers"] for i in range(user_count)}
    bench_env = {"BENCH_TOKEN": TOKEN, **({"BENCH_STOCK": "1"} if stock else {})}
    hub = HubProcess.kubernetes(workdir, ns, users, bench_env)
    hub.command = lambda: [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(overlay)]  # type: ignore[method-assign]
    # a generous quota, so the benchmark measures spawning rather than refusals
    generous = {
        "servers: 10": f"servers: {user_count + 10}",
        "cpu: 16,": "cpu: 1000,",
        "memory: 128Gi": "memory: 10Ti",
    }
    catalog = hub.catalog.read_text()
    for old, new in generous.items():
        catalog = catalog.replace(old, new)
    hub.catalog.write_text(catalog)
    return hub


async def spawn_all(base: str, names: list[str]) -> float:
    """Start every server at once; seconds until the hub's progress stream said "ready" for all."""
    headers = {"Authorization": f"token {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=900)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def one(name: str) -> None:
            async with session.post(
                f"{base}/users/{name}/server", json={"user_options": {"profile": "small"}}
            ) as r:
                assert r.status in (201, 202), await r.text()
            async with session.get(f"{base}/users/{name}/server/progress") as events:
                async for line in events.content:
                    if line.startswith(b"data:") and json.loads(line[5:]).get("ready"):
                        return
            raise AssertionError(f"{name}'s progress stream ended before the server was ready")

        started = time.monotonic()
        await asyncio.gather(*(one(name) for name in names))
        return time.monotonic() - started


def measure(hub: HubProcess, ns: Namespace) -> dict[str, float]:
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"token {TOKEN}"
    base = f"{hub.url}/hub/api"
    names = [f"user{i}" for i in range(USERS)]
    for name in names:
        session.post(f"{base}/users/{name}", timeout=30)
    # warm up: one page view and a quiet second, so the caches exist in both variants
    viewer = hub.client("user0")
    viewer.login()
    viewer.spawn_page()
    time.sleep(1)
    assert hub.process is not None
    before = len(ns.requests())
    cpu_before = cpu_seconds(hub.process.pid)
    elapsed = asyncio.run(spawn_all(base, names[1:]))
    cpu = cpu_seconds(hub.process.pid) - cpu_before
    spawn_requests = len(ns.requests()) - before

    def calls_during(action: Any) -> int:
        before = len(ns.requests())
        action()
        return len([e for e in ns.requests()[before:] if e["verb"] != "watch"])

    started = time.monotonic()
    with_views = calls_during(lambda: [viewer.spawn_page() for _ in range(PAGE_VIEWS)])
    # KubeSpawner's own reflectors list again now and then, views or not: what an idle window of the
    # same length sees is background, not the page views' doing
    background = calls_during(lambda: time.sleep(time.monotonic() - started))
    page_requests = max(0, with_views - background)
    spawns = len(names) - 1
    return {
        "api_requests_per_spawn": spawn_requests / spawns,
        "hub_cpu_seconds_per_spawn": cpu / spawns,
        "seconds_to_all_ready": elapsed,
        "api_requests_per_1000_page_views": page_requests * 1000 / PAGE_VIEWS,
    }


def run_variant(cluster: LocalCluster, stock: bool, workdir: Path) -> dict[str, float]:
    with namespace(cluster, "bench", wait=True) as ns:
        hub = hub_for(ns, stock, workdir)
        hub.start()
        try:
            return measure(hub, ns)
        finally:
            hub.stop()


GOALS = {
    "api_requests_per_spawn": ("<= 1.05", "requests"),
    "hub_cpu_seconds_per_spawn": ("<= 1.05", "s"),
    "seconds_to_all_ready": ("<= 1.05", "s"),
    "api_requests_per_1000_page_views": ("ours == 0", "requests"),
}


@contextlib.contextmanager
def bench_cluster(
    prefix: str, nodes: list[dict[str, Any]] = DEFAULT_NODES
) -> Iterator[tuple[LocalCluster, Path]]:
    """A local cluster with ``nodes`` and a work directory, both removed
    afterwards, the cluster's directory once the cluster has stopped. That directory is not a
    TemporaryDirectory: pods must reach it as another user, and TemporaryDirectory makes it private."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with (
            LocalCluster(directory, nodes=[dict(n) for n in nodes]) as cluster,
            tempfile.TemporaryDirectory() as tmp,
        ):
            yield cluster, Path(tmp)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def ratio(ours: float, baseline: float) -> float | None:
    if baseline == 0:
        return 1.0 if ours == 0 else None
    return ours / baseline


def summarise(
    prefix: str,
    ours: list[dict[str, float]],
    baseline: list[dict[str, float]],
    goals: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """Medians of each variant's runs, with every run's figure and the spread kept beside them."""
    results = {}
    for name, (goal, unit) in goals.items():
        mine, theirs = [r[name] for r in ours], [r[name] for r in baseline]
        results[f"{prefix}.{name}"] = {
            "ours": statistics.median(mine),
            "baseline": statistics.median(theirs),
            "ratio": ratio(statistics.median(mine), statistics.median(theirs)),
            "goal": goal,
            "unit": unit,
            "ours_runs": mine,
            "baseline_runs": theirs,
        }
    return results


def alternate(
    prefix: str, goals: dict[str, tuple[str, str]], tmp: Path, run: Callable[[bool, Path], dict[str, float]]
) -> dict[str, Any]:
    """``run(baseline, workdir)`` RUNS times for the baseline and for ours, alternating (baseline
    first, so that drift hits both alike), each in a fresh work directory; their summary."""
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for index in range(2 * RUNS):
        baseline = index % 2 == 0
        workdir = tmp / f"run-{index}"
        workdir.mkdir()
        runs[baseline].append(run(baseline, workdir))
        which = "baseline" if baseline else "ours"
        print(
            f"{prefix}: run {index + 1}/{2 * RUNS} ({which}): {runs[baseline][-1]}",
            file=sys.stderr,
            flush=True,
        )
    return summarise(prefix, runs[False], runs[True], goals)


def main() -> dict[str, Any]:
    with bench_cluster("jhub-ext-bench-cluster-", NODES) as (cluster, tmp):
        # the baseline is stock KubeSpawner
        return alternate(
            "kube_spawn", GOALS, tmp, lambda stock, workdir: run_variant(cluster, stock, workdir)
        )


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
