"""Jobs-service benchmark against the emulator: the service versus creating the same objects directly.

The jobs service runs standalone (one user, one token) with the Kubernetes backend against a
fresh API emulator. The baseline creates the same ConfigMap and Job with ``kubernetes_asyncio``.

- submit_latency_seconds: mean of 30 sequential submissions (goal: ratio <= 1.5)
- submit_throughput_per_second: 200 submissions by 50 concurrent submitters (goal: ratio >= 0.7)
- api_requests_per_lifecycle: requests at the API server for submit, running, finished and one
  log read of one job (the service's watches counted as opened, not per event)
- list_latency_seconds_10000_jobs: GET jobs (one page) with 10,000 jobs in history, against 100
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jhub_ext.catalog import load_catalog  # noqa: E402
from jhub_ext.jobs.model import parse_submission  # noqa: E402
from jhub_ext.jobs.store import JobStore  # noqa: E402
from jhub_ext.k8s.jobs import JobPlacement, build_manifests  # noqa: E402
from tests.conftest import SHIPPED_CATALOG, free_port  # noqa: E402
from tests.hubprocess import wait_for  # noqa: E402
from tests.kubeapi import KubeEmulator  # noqa: E402

TOKEN = "bench-" + os.urandom(8).hex()
SEQUENTIAL, CONCURRENT, SUBMITTERS = 30, 200, 50


def body(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "batch", "command": ["python", "-c", "pass"], "retries": 0}


class Service:
    def __init__(self, workdir: Path, kubeconfig: Path, db_url: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/jobs/api"
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "JHUB_EXT_STANDALONE_TOKEN": TOKEN,
            "JHUB_EXT_STANDALONE_USER": "alice",
            "JHUB_EXT_CATALOG": str(SHIPPED_CATALOG),
            "JHUB_EXT_JOBS_DB_URL": db_url,
            "JHUB_EXT_JOBS_BACKEND": "kubernetes",
            "JHUB_EXT_NAMESPACE": "jhub",
            "KUBECONFIG": str(kubeconfig),
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/jobs/",
        }
        for key in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"):
            env.pop(key, None)
        self.log = (workdir / "service.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jhub_ext.jobs.app", "--JobsService.submits_per_minute=100000"],
            env=env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import requests

        wait_for(lambda: _ok(requests, f"{self.url}/openapi.json"), 30, "the jobs service")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def _ok(requests: Any, url: str) -> bool:
    try:
        return bool(requests.get(url, timeout=2).ok)
    except requests.ConnectionError:
        return False


async def timed_submits(submit: Any, names: list[str], concurrency: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for name in names:
        queue.put_nowait(name)

    async def worker() -> None:
        while not queue.empty():
            await submit(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def through_service(url: str) -> dict[str, float]:
    headers = {"Authorization": f"token {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def submit(name: str) -> None:
            async with session.post(f"{url}/jobs", json=body(name)) as response:
                assert response.status == 201, await response.text()

        sequential = await timed_submits(submit, [f"seq-{i}" for i in range(SEQUENTIAL)], 1)
        concurrent = await timed_submits(submit, [f"par-{i}" for i in range(CONCURRENT)], SUBMITTERS)
    return {
        "submit_latency_seconds": sequential / SEQUENTIAL,
        "submit_throughput_per_second": CONCURRENT / concurrent,
    }


async def directly(kubeconfig: Path) -> dict[str, float]:
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    placement = JobPlacement(
        user="alice", profile=load_catalog(SHIPPED_CATALOG).profile("small"), image="x/y:1", namespace="jhub"
    )
    async with client.ApiClient(configuration) as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)

        async def submit(name: str) -> None:
            configmap, job = build_manifests(parse_submission(body(name)), placement)
            await core.create_namespaced_config_map("jhub", configmap)
            await batch.create_namespaced_job("jhub", job)

        sequential = await timed_submits(submit, [f"seq-{i}" for i in range(SEQUENTIAL)], 1)
        concurrent = await timed_submits(submit, [f"par-{i}" for i in range(CONCURRENT)], SUBMITTERS)
    return {
        "submit_latency_seconds": sequential / SEQUENTIAL,
        "submit_throughput_per_second": CONCURRENT / concurrent,
    }


def emulator() -> KubeEmulator:
    api = KubeEmulator()
    api.start()
    api.add_namespace("jhub", {"pod-security.kubernetes.io/enforce": "restricted"})
    for i in range(10):
        api.add_node(f"node-{i}", cpu="64", memory="256Gi", pods="500")
    return api


def lifecycle_requests(url: str, api: KubeEmulator) -> int:
    import requests

    headers = {"Authorization": f"token {TOKEN}"}
    api.reset_requests()
    assert requests.post(f"{url}/jobs", headers=headers, json=body("life"), timeout=30).status_code == 201
    wait_for(
        lambda: requests.get(f"{url}/jobs/life", headers=headers, timeout=10).json()["status"] == "succeeded",
        120,
        "the job to finish",
    )
    requests.get(f"{url}/jobs/life/logs", headers=headers, timeout=10)
    return len([r for r in api.requests if r.verb != "watch"])


def list_latency(url: str, db_url: str, history: int) -> float:
    import requests

    store = JobStore(db_url)
    spec = parse_submission(body("x"))
    with store.session() as session:  # bulk history, as years of use would leave it
        from jhub_ext.jobs.store import JobRow

        session.add_all(
            JobRow(
                user="alice",
                name=f"old-{i}",
                kind="batch",
                profile="small",
                spec=spec.to_json(),
                status="succeeded",
            )
            for i in range(history)
        )
    store.close()
    headers = {"Authorization": f"token {TOKEN}"}
    started = time.perf_counter()
    for _ in range(20):
        assert requests.get(f"{url}/jobs?limit=100", headers=headers, timeout=30).status_code == 200
    return (time.perf_counter() - started) / 20


def main() -> dict[str, Any]:
    results: dict[str, dict[str, float]] = {"ours": {}, "baseline": {}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # direct creation: the baseline
        api = emulator()
        try:
            kubeconfig = api.write_kubeconfig(workdir / "kc-direct", namespace="jhub")
            results["baseline"].update(asyncio.run(directly(kubeconfig)))
            results["baseline"]["api_requests_per_lifecycle"] = 3.0  # two creates and one log read
        finally:
            api.stop()
        # through the service
        api = emulator()
        try:
            kubeconfig = api.write_kubeconfig(workdir / "kc-service", namespace="jhub")
            db_url = f"sqlite:///{workdir / 'jobs.sqlite'}"
            service = Service(workdir, kubeconfig, db_url)
            try:
                results["ours"].update(asyncio.run(through_service(service.url)))
            finally:
                service.stop()
        finally:
            api.stop()
        for history, side in ((100, "baseline"), (10_000, "ours")):
            api = emulator()
            try:
                kubeconfig = api.write_kubeconfig(workdir / f"kc-{history}", namespace="jhub")
                db_url = f"sqlite:///{workdir / f'history-{history}.sqlite'}"
                JobStore(db_url).close()
                service = Service(workdir, kubeconfig, db_url)
                try:
                    if history == 100:  # a quiet service: count one job's lifecycle alone
                        results["ours"]["api_requests_per_lifecycle"] = float(
                            lifecycle_requests(service.url, api)
                        )
                    results[side]["list_latency_seconds_10000_jobs"] = list_latency(
                        service.url, db_url, history
                    )
                finally:
                    service.stop()
            finally:
                api.stop()
    goals = {
        "submit_latency_seconds": ("<= 1.5", "s"),
        "submit_throughput_per_second": (">= 0.7", "jobs/s"),
        "api_requests_per_lifecycle": ("informational", "requests"),
        "list_latency_seconds_10000_jobs": ("informational (baseline: 100 jobs)", "s"),
    }
    return {
        f"jobs.{name}": {
            "ours": results["ours"][name],
            "baseline": results["baseline"][name],
            "ratio": results["ours"][name] / results["baseline"][name],
            "goal": goal,
            "unit": unit,
        }
        for name, (goal, unit) in goals.items()
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2))
