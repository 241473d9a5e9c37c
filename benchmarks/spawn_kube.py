"""Kubernetes-mode spawn benchmark: ProfileKubeSpawner against stock KubeSpawner, in one run.

Both hubs run from hub_config/ against the same kind of emulated cluster; the baseline
swaps in stock KubeSpawner with the shipped catalog as an equivalent static profile_list.
200 users spawn the "small" profile concurrently through the REST API. Figures:

- api_requests_per_spawn: requests the emulated API server received during the spawns / 200
- hub_cpu_seconds_per_spawn: the hub process's CPU time during the spawns / 200
- seconds_to_all_ready: from the first spawn request until every server is ready
- api_requests_per_1000_page_views: requests during 1,000 views of the spawn page (goal 0)
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hubprocess import HubProcess, wait_for  # noqa: E402
from tests.kubeapi import KubeEmulator  # noqa: E402

USERS = int(os.environ.get("JHUB_EXT_BENCH_USERS", "200"))
PAGE_VIEWS = int(os.environ.get("JHUB_EXT_BENCH_PAGE_VIEWS", "1000"))
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
c.KubeSpawner.cmd = [sys.executable, {fake!r}]
c.KubeSpawner.start_timeout = 600
c.KubeSpawner.http_timeout = 600
if os.environ.get("BENCH_STOCK"):
    from jhub_ext.catalog import load_catalog
    from jhub_ext.catalog.model import Kind
    from jhub_ext.spawner.kubeprofiles import kubespawner_profile

    catalog = load_catalog(os.environ["JHUB_EXT_CATALOG"])
    from jhub_ext.k8s.pods import RESTRICTED_CONTAINER_SECURITY_CONTEXT, RESTRICTED_POD_SECURITY_CONTEXT

    c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
    # the same least-privilege settings ProfileKubeSpawner applies by default
    c.KubeSpawner.uid = 1000
    c.KubeSpawner.gid = 100
    c.KubeSpawner.fs_gid = 100
    c.KubeSpawner.allow_privilege_escalation = False
    c.KubeSpawner.container_security_context = RESTRICTED_CONTAINER_SECURITY_CONTEXT
    c.KubeSpawner.pod_security_context = RESTRICTED_POD_SECURITY_CONTEXT
    c.KubeSpawner.automount_service_account_token = False
    c.KubeSpawner.profile_list = [
        kubespawner_profile(p, "bench", frozenset({{"researchers"}}), default=p.default)
        for p in catalog.visible_to({{"researchers"}}, Kind.SERVER)
    ]
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_variant(stock: bool, workdir: Path) -> dict[str, float]:
    with KubeEmulator() as api:
        api.add_namespace("jhub", {"pod-security.kubernetes.io/enforce": "restricted"})
        for i in range(20):
            api.add_node(f"node-{i}", cpu="16", memory="64Gi", pods="250")
        overlay = workdir / "bench_config.py"
        overlay.write_text(
            OVERLAY.format(
                config=str(ROOT / "hub_config" / "jupyterhub_config.py"),
                fake=str(ROOT / "benchmarks" / "fake_singleuser.py"),
            )
        )
        users = {f"user{i}": ["researchers"] for i in range(USERS)}
        bench_env = {"BENCH_TOKEN": TOKEN, **({"BENCH_STOCK": "1"} if stock else {})}
        hub = HubProcess.kubernetes(workdir, api, users, bench_env)
        hub.command = lambda: [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(overlay)]  # type: ignore[method-assign]
        # a generous quota, so the benchmark measures spawning rather than refusals
        generous = {
            "servers: 10": f"servers: {USERS + 10}",
            "cpu: 16,": "cpu: 1000,",
            "memory: 128Gi": "memory: 10Ti",
        }
        catalog = hub.catalog.read_text()
        for old, new in generous.items():
            catalog = catalog.replace(old, new)
        hub.catalog.write_text(catalog)
        hub.start()
        try:
            return measure(hub, api)
        finally:
            hub.stop()


def measure(hub: HubProcess, api: KubeEmulator) -> dict[str, float]:
    session = requests.Session()
    session.headers["Authorization"] = f"token {TOKEN}"
    base = f"{hub.url}/hub/api"
    names = [f"user{i}" for i in range(USERS)]
    for name in names:
        session.post(f"{base}/users/{name}", timeout=30)
    # warm up: one page view and one spawn-free second, so the caches exist in both variants
    viewer = hub.client("user0")
    viewer.login()
    viewer.spawn_page()
    time.sleep(1)
    assert hub.process is not None
    api.reset_requests()
    cpu_before = cpu_seconds(hub.process.pid)
    started = time.monotonic()

    def spawn(name: str) -> int:
        return session.post(
            f"{base}/users/{name}/server", json={"user_options": {"profile": "small"}}, timeout=600
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(spawn, names[1:]))
    assert all(code in (201, 202) for code in statuses), statuses

    def all_ready() -> bool:
        users = session.get(f"{base}/users?state=ready&limit=1000", timeout=60).json()
        items = users["items"] if isinstance(users, dict) else users
        return len(items) >= len(names) - 1

    wait_for(all_ready, 900, "every server to be ready", interval=1.0)
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(hub.process.pid) - cpu_before
    spawn_requests = len(api.requests)

    api.reset_requests()
    for _ in range(PAGE_VIEWS):
        viewer.spawn_page()
    page_requests = len([r for r in api.requests if r.verb != "watch"])
    spawns = len(names) - 1
    return {
        "api_requests_per_spawn": spawn_requests / spawns,
        "hub_cpu_seconds_per_spawn": cpu / spawns,
        "seconds_to_all_ready": elapsed,
        "api_requests_per_1000_page_views": page_requests * 1000 / PAGE_VIEWS,
    }


GOALS = {
    "api_requests_per_spawn": ("<= 1.05", "requests"),
    "hub_cpu_seconds_per_spawn": ("<= 1.05", "s"),
    "seconds_to_all_ready": ("<= 1.05", "s"),
    "api_requests_per_1000_page_views": ("ours == 0", "requests"),
}


def ratio(ours: float, baseline: float) -> float | None:
    if baseline == 0:
        return 1.0 if ours == 0 else None
    return ours / baseline


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir, ours_dir = Path(tmp) / "stock", Path(tmp) / "ours"
        baseline_dir.mkdir()
        ours_dir.mkdir()
        baseline = run_variant(True, baseline_dir)
        ours = run_variant(False, ours_dir)
    return {
        f"kube_spawn.{name}": {
            "ours": ours[name],
            "baseline": baseline[name],
            "ratio": ratio(ours[name], baseline[name]),
            "goal": GOALS[name][0],
            "unit": GOALS[name][1],
        }
        for name in ours
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
