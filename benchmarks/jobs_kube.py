"""Jobs-service benchmark on the real control plane: the service versus creating the same objects directly.

One local cluster (devcluster, 10 nodes) serves every run; each run has a namespace of its
own, set up from hub_config/k8s/, and both sides act as the hub's ServiceAccount. The jobs service
runs standalone (one user, one token) with the Kubernetes backend. The baseline creates the same
ConfigMap and Job with ``kubernetes_asyncio`` in a process of its own (``python jobs_kube.py direct
KUBECONFIG NAMESPACE``), so neither side shares an interpreter with a server. Each side runs RUNS
times in alternating order; figures are medians, with every run kept beside them.

- submit_latency_seconds: mean of 30 sequential submissions (goal: ratio <= 1.5)
- submit_throughput_per_second: 200 submissions by 50 concurrent submitters (goal: ratio >= 0.7)
- api_requests_per_lifecycle: requests of the ServiceAccount at the API server (its audit log) for
  submit, running, finished and one log read of one job; watches are not counted (both follow by
  watch). The service's include the server-side dry runs that check a job before it is stored.
- list_p95_seconds_10000_jobs: the 95th percentile of 50 GET jobs (one page of 100) with 10,000 jobs
  in history, against the same service with 100
- service_rss_mib_10000_jobs: the service's resident memory after those requests, against 100
- seconds_to_all_running_200_queued: 200 long jobs submitted at once into an empty namespace; from the
  first submit until every one's pod is Running (followed by watch, the same way on both sides)
- submit_to_running_p95_seconds_200_queued: among those 200, the 95th percentile of each job's time
  from its own submit to its pod Running
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devcluster.cluster import LocalCluster  # noqa: E402

from benchmarks.spawn_kube import alternate, bench_cluster, rss_mib  # noqa: E402
from jhub_ext.core.catalog import load_catalog  # noqa: E402
from jhub_ext.core.jobs.model import Placement, parse_submission  # noqa: E402
from jhub_ext.core.names import object_name  # noqa: E402
from jhub_ext.kubernetes.workloads import NAME_ANNOTATION, Site, build_manifests  # noqa: E402
from jhub_ext.service.store import JobStore  # noqa: E402
from tests.conftest import SHIPPED_CATALOG, free_port  # noqa: E402
from tests.hubprocess import wait_for  # noqa: E402
from tests.kube import Namespace, namespace  # noqa: E402

NODES = [{"name": f"node-{i}", "cpu": "64", "memory": "256Gi", "pods": 500} for i in range(10)]

TOKEN = "bench-" + os.urandom(8).hex()
SEQUENTIAL, CONCURRENT, SUBMITTERS, QUEUED = 30, 200, 50, 200
LONG = "import time; time.sleep(900)"  # outlives the measurement; the namespace's deletion ends it


def body(name: str, code: str = "pass") -> dict[str, Any]:
    return {"name": name, "kind": "batch", "command": ["python", "-c", code], "retries": 0}


class Service:
    def __init__(self, workdir: Path, ns: Namespace, db_url: str):
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
            "JHUB_EXT_NAMESPACE": ns.name,
            "KUBECONFIG": str(ns.kubeconfig),
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{self.port}",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/jobs/",
        }
        for key in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL"):
            env.pop(key, None)
        self.log = (workdir / "service.log").open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jhub_ext.service.app",
                "--JobsService.submits_per_minute=100000",
                "--JobsService.actions_per_minute=100000",
            ],
            env=env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        import requests

        try:
            wait_for(lambda: _ok(requests, f"{self.url}/openapi.json"), 30, "the jobs service")
        except BaseException:
            self.stop()  # never leave it behind
            raise

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def _ok(requests: Any, url: str) -> bool:
    try:
        return bool(requests.get(url, timeout=2).ok)
    except requests.RequestException:  # not listening yet, or too busy to answer in time
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


async def kube_api(kubeconfig: Path) -> Any:
    """A ``kubernetes_asyncio`` ApiClient acting as the kubeconfig's user."""
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


def direct_submit(api: Any, ns: str, code: str = "pass") -> Any:
    """What the baseline does for one submission: the service's ConfigMap and Job, created directly."""
    from kubernetes_asyncio import client

    placement = Placement(user="alice", profile=load_catalog(SHIPPED_CATALOG).profile("small"), image="x/y:1")
    site = Site(namespace=ns)
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)

    async def create(call: Any, manifest: dict[str, Any]) -> None:
        for attempt in range(10):  # what any client must do: retry a contended ResourceQuota
            try:
                await call(ns, manifest)
                return
            except client.ApiException as e:
                if e.status != 409 or '"AlreadyExists"' in str(e.body) or attempt == 9:
                    raise
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))

    async def submit(name: str) -> None:
        configmap, job = build_manifests(parse_submission(body(name, code)), placement, site)
        await create(core.create_namespaced_config_map, configmap)
        await create(batch.create_namespaced_job, job)

    return submit


async def queued_start(api: Any, ns: str, submit: Any) -> dict[str, float]:
    """Submit QUEUED long jobs at once with ``submit(name)`` and follow their pods by watch until every
    one is Running; the same on both sides, so only the way of submitting differs."""
    from kubernetes_asyncio import client, watch

    core = client.CoreV1Api(api)
    names = [f"q-{i}" for i in range(QUEUED)]
    asked: dict[str, float] = {}
    running: dict[str, float] = {}
    listed = await core.list_namespaced_pod(ns)

    async def follow() -> None:
        version = listed.metadata.resource_version
        while len(running) < QUEUED:  # a watch may end; go on from where it was
            async with watch.Watch().stream(
                core.list_namespaced_pod, ns, resource_version=version, timeout_seconds=300
            ) as events:
                async for event in events:
                    pod = event["object"]
                    version = pod.metadata.resource_version
                    name = (pod.metadata.annotations or {}).get(NAME_ANNOTATION)
                    if name in asked and name not in running and pod.status.phase == "Running":
                        running[name] = time.perf_counter()
                        if len(running) == QUEUED:
                            return

    async def one(name: str) -> None:
        asked[name] = time.perf_counter()
        await submit(name)

    follower = asyncio.create_task(follow())
    started = time.perf_counter()
    await asyncio.gather(*(one(name) for name in names))
    await asyncio.wait_for(follower, 900)
    waits = [running[name] - asked[name] for name in names]
    return {
        "seconds_to_all_running_200_queued": max(running.values()) - started,
        "submit_to_running_p95_seconds_200_queued": p95(waits),
    }


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


async def directly(kubeconfig: Path, ns: str) -> dict[str, float]:
    """The baseline, run in a process of its own: the same objects, created straight away."""
    from kubernetes_asyncio import client, watch

    async with await kube_api(kubeconfig) as api:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        submit = direct_submit(api, ns)
        sequential = await timed_submits(submit, [f"seq-{i}" for i in range(SEQUENTIAL)], 1)
        concurrent = await timed_submits(submit, [f"par-{i}" for i in range(CONCURRENT)], SUBMITTERS)
        # one lifecycle, followed by watch: submit, wait until complete, read the log once
        print("LIFECYCLE", flush=True)
        sys.stdin.readline()
        await submit("life")
        name = object_name("alice", "life")
        async with watch.Watch().stream(
            batch.list_namespaced_job, ns, field_selector=f"metadata.name={name}", timeout_seconds=300
        ) as events:
            async for event in events:
                if any(c.type == "Complete" for c in event["object"].status.conditions or []):
                    break
        pods = await core.list_namespaced_pod(ns, label_selector=f"job-name={name}")
        await core.read_namespaced_pod_log(pods.items[0].metadata.name, ns, container="job")
    return {
        "submit_latency_seconds": sequential / SEQUENTIAL,
        "submit_throughput_per_second": CONCURRENT / concurrent,
    }


def baseline_run(cluster: LocalCluster, ns: Namespace) -> dict[str, float]:
    """``directly`` in its own process, no pod starting while it submits (as for the service); the
    lifecycle's requests counted from the audit log."""
    with cluster.pods_held():
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "direct", str(ns.kubeconfig), ns.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stdout.readline().strip() == "LIFECYCLE"
    before = len(ns.requests())
    process.stdin.write("go\n")
    process.stdin.flush()
    figures = json.loads(process.stdout.read())
    assert process.wait(60) == 0
    figures["api_requests_per_lifecycle"] = float(
        len([e for e in ns.requests()[before:] if e["verb"] != "watch"])
    )
    return figures  # type: ignore[no-any-return]


def lifecycle_requests(url: str, ns: Namespace) -> int:
    import requests

    def reconciled() -> bool:  # the service's start-up pass is not part of a lifecycle
        return any(
            e["verb"] == "list" and e["objectRef"].get("resource") == "configmaps" for e in ns.requests()
        )

    wait_for(reconciled, 30, "the service's first reconcile pass")
    headers = {"Authorization": f"token {TOKEN}"}
    before = len(ns.requests())
    assert requests.post(f"{url}/jobs", headers=headers, json=body("life"), timeout=30).status_code == 201
    wait_for(
        lambda: requests.get(f"{url}/jobs/life", headers=headers, timeout=10).json()["status"] == "succeeded",
        120,
        "the job to finish",
    )
    requests.get(f"{url}/jobs/life/logs", headers=headers, timeout=10)
    made = [e for e in ns.requests()[before:] if e["verb"] != "watch"]
    what = [
        f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource', '')}" for e in made
    ]
    print(f"  one lifecycle's requests: {', '.join(what)}", file=sys.stderr, flush=True)
    return len(made)


def list_p95(url: str, db_url: str, history: int) -> float:
    import requests

    store = JobStore(db_url)
    spec = parse_submission(body("x"))
    with store.session() as session:  # bulk history, as years of use would leave it
        from jhub_ext.service.store import JobRow

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
    took = []
    for _ in range(50):
        started = time.perf_counter()
        assert requests.get(f"{url}/jobs?limit=100", headers=headers, timeout=30).status_code == 200
        took.append(time.perf_counter() - started)
    return p95(took)


def service_run(cluster: LocalCluster, workdir: Path) -> dict[str, float]:
    with namespace(cluster, "bench-jobs", wait=True) as ns:
        db_url = f"sqlite:///{workdir / 'jobs.sqlite'}"
        service = Service(workdir, ns, db_url)
        try:
            with cluster.pods_held():  # the submits alone, as for the baseline: pods start after them
                return asyncio.run(through_service(service.url))
        finally:
            service.stop()


def quiet_run(cluster: LocalCluster, workdir: Path, history: int) -> dict[str, float]:
    """A service with nothing running (history only): one job's lifecycle alone, then list latency."""
    with namespace(cluster, "bench-quiet", wait=True) as ns:
        db_url = f"sqlite:///{workdir / f'history-{history}.sqlite'}"
        JobStore(db_url).close()
        service = Service(workdir, ns, db_url)
        try:
            return {
                "api_requests_per_lifecycle": float(lifecycle_requests(service.url, ns)),
                "list_p95_seconds_10000_jobs": list_p95(service.url, db_url, history),
                "service_rss_mib_10000_jobs": rss_mib(service.process.pid),
            }
        finally:
            service.stop()


async def queued_through_service(url: str, ns: Namespace) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=QUEUED)  # all at once, as 200 researchers' submits would be
    headers = {"Authorization": f"token {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers, connector=connector) as session,
        await kube_api(ns.kubeconfig) as api,
    ):

        async def submit(name: str) -> None:
            async with session.post(f"{url}/jobs", json=body(name, LONG)) as response:
                assert response.status == 201, await response.text()

        return await queued_start(api, ns.name, submit)


async def queued_directly(kubeconfig: Path, ns: str) -> dict[str, float]:
    async with await kube_api(kubeconfig) as api:
        return await queued_start(api, ns, direct_submit(api, ns, LONG))


def queued_run(cluster: LocalCluster, workdir: Path, baseline: bool) -> dict[str, float]:
    """200 long jobs at once into an empty namespace, through the service or directly."""
    with namespace(cluster, "bench-queue", wait=True) as ns:
        if baseline:  # in a process of its own, as the service is
            command = [sys.executable, str(Path(__file__).resolve()), "queued", str(ns.kubeconfig), ns.name]
            done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1200)
            return json.loads(done.stdout)  # type: ignore[no-any-return]
        service = Service(workdir, ns, f"sqlite:///{workdir / 'queue.sqlite'}")
        try:
            return asyncio.run(queued_through_service(service.url, ns))
        finally:
            service.stop()


GOALS = {
    "submit_latency_seconds": ("<= 1.5", "s"),
    "submit_throughput_per_second": (">= 0.7", "jobs/s"),
    "api_requests_per_lifecycle": ("ours <= 6", "requests"),
    "list_p95_seconds_10000_jobs": ("<= 2 (baseline: 100 jobs)", "s"),
    "service_rss_mib_10000_jobs": ("<= 1.2 (baseline: 100 jobs)", "MiB"),
    "seconds_to_all_running_200_queued": ("<= 1.5", "s"),
    "submit_to_running_p95_seconds_200_queued": ("<= 1.5", "s"),
}


def main() -> dict[str, Any]:
    with bench_cluster("jhub-ext-bench-cluster-", NODES) as (cluster, tmp):

        def run(baseline: bool, workdir: Path) -> dict[str, float]:
            queued = queued_run(cluster, workdir, baseline)
            if not baseline:
                return {**service_run(cluster, workdir), **quiet_run(cluster, workdir, 10_000), **queued}
            with namespace(cluster, "bench-direct", wait=True) as ns:
                figures = baseline_run(cluster, ns)
            quiet = quiet_run(cluster, workdir, 100)
            del quiet["api_requests_per_lifecycle"]  # the baseline's own lifecycle is counted above
            return {**figures, **quiet, **queued}

        return alternate("jobs", GOALS, tmp, run)


if __name__ == "__main__":
    if sys.argv[1:2] == ["direct"]:
        print(json.dumps(asyncio.run(directly(Path(sys.argv[2]), sys.argv[3]))), flush=True)
    elif sys.argv[1:2] == ["queued"]:
        print(json.dumps(asyncio.run(queued_directly(Path(sys.argv[2]), sys.argv[3]))), flush=True)
    else:
        print(json.dumps(main(), indent=2))
