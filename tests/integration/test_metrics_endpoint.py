"""``/services/jobs/metrics`` behind a real hub: JupyterHub's ``read:metrics`` scope decides who reads
it (an admin's token and a Prometheus service's do, alice's does not), and what it reports is what
the service holds; against the real control plane, the Kubernetes backend reports its watches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from jhub_ext.service.manager import JobManager
from jhub_ext.service.metrics import ServiceMetrics

from ..hubprocess import HubProcess, wait_for
from .test_jobs_service import token_for

pytestmark = pytest.mark.integration
PROMETHEUS_TOKEN = "prometheus-test-token-" + "0123456789abcdef" * 2
# the recipe of docs/reference/metrics.md: a service of Prometheus's own, with read:metrics only
PROMETHEUS = f"""
c.JupyterHub.services.append({{"name": "prometheus", "api_token": {PROMETHEUS_TOKEN!r}}})
c.JupyterHub.load_roles.append(
    {{"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]}}
)
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(Path(tmp_path_factory.mktemp("metrics")), extra_config=PROMETHEUS).start()
    try:
        yield process
    finally:
        process.stop()


def get(url: str, token: str | None) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(url, headers=headers, timeout=60)


def parse(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def values(families: dict[str, Metric], sample: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[label] for label in labels): s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample
    }


def test_the_read_metrics_scope_decides_who_reads_the_metrics(hub: HubProcess) -> None:
    jobs = f"{hub.url}/services/jobs/"
    admin, alice = token_for(hub, "admin"), token_for(hub, "alice")

    def answers() -> bool:
        try:
            return get(f"{jobs}api/jobs", alice).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(answers, 30, "the jobs service")
    submitted = requests.post(
        f"{jobs}api/jobs",
        headers={"Authorization": f"token {alice}"},
        json={"name": "counted", "kind": "batch", "command": ["python", "-c", "print(1)"]},
        timeout=60,
    )
    assert submitted.status_code in (201, 202), submitted.text

    answer = get(f"{jobs}metrics", admin)  # an admin's token inherits the admin role's read:metrics
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    families = parse(answer.text)
    assert values(families, "jhub_jobs_backend_up", "backend") == {("LocalJobBackend",): 1}
    assert values(families, "jhub_jobs_database_up") == {(): 1}
    counted = values(families, "jhub_jobs_jobs", "kind", "group")
    assert counted.get(("batch", "researchers"), 0) >= 1  # alice's job, in her group
    assert set(values(families, "jhub_jobs_notifications_total", "outcome")) == {
        ("delivered",),
        ("failed",),
        ("dropped",),
    }

    refused = get(f"{jobs}metrics", alice)
    assert refused.status_code == 403 and refused.headers["Content-Type"].startswith("application/json")
    assert "read:metrics" in refused.json()["error"]
    assert get(f"{jobs}metrics", None).status_code == 401
    assert get(f"{jobs}metrics", "not-a-token").status_code == 401

    # Prometheus's service reads the jobs service's metrics and the hub's own with the same token
    assert get(f"{jobs}metrics", PROMETHEUS_TOKEN).status_code == 200
    assert get(f"{hub.url}/hub/metrics", PROMETHEUS_TOKEN).status_code == 200

    timed = values(
        parse(get(f"{jobs}metrics", admin).text),
        "jhub_jobs_request_duration_seconds_count",
        "method",
        "handler",
        "code",
    )
    assert timed[("GET", "MetricsHandler", "200")] >= 2
    assert timed[("GET", "MetricsHandler", "403")] >= 1
    assert timed[("POST", "JobsHandler", str(submitted.status_code))] >= 1


async def test_the_kubernetes_backend_reports_each_watch(kube_manager: JobManager) -> None:
    metrics = ServiceMetrics(kube_manager.store, kube_manager.backend)
    families = parse(generate_latest(metrics.registry).decode())
    assert values(families, "jhub_jobs_backend_watch_up", "watch") == {
        ("cronjobs",): 1,
        ("deployments",): 1,
        ("jobs",): 1,
        ("pods",): 1,
        ("events",): 1,  # the kubelet's image pulls
        ("nodes",): 1,  # the cluster's room for jobs: its nodes, and every namespace's pods
        ("all-pods",): 1,
        # (and Kueue's workloads, where Kueue runs)
    }
    assert values(families, "jhub_jobs_backend_up", "backend") == {("KubernetesJobBackend",): 1}
