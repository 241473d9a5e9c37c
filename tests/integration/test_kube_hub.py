"""Kubernetes mode end to end: a real hub with ProfileKubeSpawner against the API emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ..hubprocess import HubClient, HubProcess, profiles_in_form, wait_for
from ..kubeapi import KubeEmulator
from ..kubeapi.pss import restricted_violations

pytestmark = pytest.mark.integration

A100 = "NVIDIA-A100-SXM4-80GB"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[KubeEmulator]:
    with KubeEmulator() as api:
        api.add_namespace("jhub", {"pod-security.kubernetes.io/enforce": "restricted"})
        api.add_node("cpu-1", cpu="16", memory="64Gi")
        api.add_node(
            "gpu-1",
            labels={"nvidia.com/gpu.product": A100},
            taints=[GPU_TAINT],
            cpu="32",
            memory="256Gi",
            **{"nvidia.com/gpu": "4"},
        )
        yield api


@pytest.fixture(scope="module")
def hub(emulator: KubeEmulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("kubehub"))
    users = {"alice": ["researchers"], "bob": ["researchers", "gpu"], "carol": ["gpu"]}
    process = HubProcess.kubernetes(workdir, emulator, users)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def gpu_line(html: str) -> str:
    start = html.index('data-slug="gpu-a100"')
    return html[start : html.index("</div>", html.index("jhub-ext-availability", start))]


def test_bob_spawns_the_gpu_profile_onto_the_gpu_node(hub: HubProcess, emulator: KubeEmulator) -> None:
    bob = hub.client("bob")
    bob.login()
    page = bob.spawn_page().text
    assert profiles_in_form(page) == ["small", "large-memory", "gpu-a100"]
    assert f"4 of 4 {A100} GPUs free · starts now" in page
    response = bob.submit_spawn_form({"profile": "gpu-a100"})
    assert response.status_code == 200, response.text[-2000:]
    try:
        bob.wait_ready(timeout=180)
        pod = emulator.get("pods", "jhub", "jupyter-bob")
        assert pod is not None and pod["spec"]["nodeName"] == "gpu-1"
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": A100}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
            "tolerations"
        ]
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert restricted_violations(pod["spec"]) == []
        labels = pod["metadata"]["labels"]
        assert labels["jhub-ext.io/user"] == "bob" and labels["jhub-ext.io/profile"] == "gpu-a100"
        assert labels["group.jhub-ext.io/gpu"] == "true"
        lab = bob.session.get(bob.url("/user/bob/lab"))  # through the proxy to the pod's IP, with OAuth
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        assert bob.session.get(bob.url("/user/bob/api/status")).status_code == 200

        carol = hub.client("carol")  # another member of the gpu group, looking at the menu
        carol.login()
        wait_for(
            lambda: f"3 of 4 {A100} GPUs free" in carol.spawn_page().text, 10, "the free-GPU figure to drop"
        )
    finally:
        bob.stop_server()
    assert emulator.get("pods", "jhub", "jupyter-bob") is None


def test_alice_cannot_forge_the_gpu_profile(hub: HubProcess, emulator: KubeEmulator) -> None:
    alice = hub.client("alice")
    alice.login()
    refused = alice.submit_spawn_form({"profile": "gpu-a100"})
    assert (
        refused.status_code == 400
        and "there is no profile &#39;gpu-a100&#39; that you can use" in refused.text
    )
    assert emulator.get("pods", "jhub", "jupyter-alice") is None


def test_the_menu_makes_no_api_calls(hub: HubProcess, emulator: KubeEmulator) -> None:
    alice = hub.client("alice")
    alice.login()
    alice.spawn_page()  # caches are warm
    emulator.reset_requests()
    for _ in range(20):
        assert alice.spawn_page().status_code == 200
    calls = [r for r in emulator.requests if r.verb != "watch"]
    assert calls == []


def test_catalog_edits_and_group_quotas_apply_to_the_next_spawn(
    hub: HubProcess, emulator: KubeEmulator
) -> None:
    shipped = hub.catalog.read_text()
    edited = shipped.replace("cpu: {guarantee: 4, limit: 8}", "cpu: {guarantee: 4, limit: 6}")
    hub.catalog.write_text(edited.replace("gpu: {gpus: 2}", "gpu: {gpus: 1}"))
    bob, carol = hub.client("bob"), hub.client("carol")
    bob.login()
    carol.login()
    try:
        assert bob.submit_spawn_form({"profile": "gpu-a100"}).status_code == 200
        bob.wait_ready(timeout=180)
        pod = emulator.get("pods", "jhub", "jupyter-bob")
        assert pod is not None and float(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]) == 6
        refused = carol.submit_spawn_form({"profile": "gpu-a100"})  # counted from bob's pod
        assert refused.status_code == 403
        assert "group &#39;gpu&#39; may use 1 GPU at once and uses 1; this needs 1 more" in refused.text
        assert emulator.get("pods", "jhub", "jupyter-carol") is None
    finally:
        hub.catalog.write_text(shipped)
        bob.stop_server()


def test_an_expired_watch_is_listed_again_and_the_menu_stays_right(
    hub: HubProcess, emulator: KubeEmulator
) -> None:
    carol = hub.client("carol")
    carol.login()
    assert f"4 of 4 {A100} GPUs free" in carol.spawn_page().text
    gpu_node = {"labels": {"nvidia.com/gpu.product": A100}, "taints": [GPU_TAINT], "nvidia.com/gpu": "4"}
    emulator.add_node("gpu-2", **gpu_node)
    wait_for(lambda: f"8 of 8 {A100} GPUs free" in carol.spawn_page().text, 20, "the second node to show")
    emulator.expire_watches()  # every cache must list again
    wait_for(lambda: "expired (410 Gone); listing again" in hub.log(), 30, "the caches to see 410 Gone")
    emulator.add_node("gpu-3", **gpu_node)
    wait_for(lambda: f"12 of 12 {A100} GPUs free" in carol.spawn_page().text, 20, "the third node to show")


def jobs_api(hub: HubProcess, client: HubClient) -> tuple[str, dict[str, str]]:
    """The jobs API's address and a token header for ``client``'s user, once the service answers."""
    token = client.api("POST", f"/users/{client.username}/tokens", json={"note": "tests"}).json()["token"]
    api, headers = f"{hub.url}/services/jobs/api", {"Authorization": f"token {token}"}

    def answers() -> bool:
        return requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code == 200

    wait_for(answers, 30, "the jobs service")
    return api, headers


def test_jobs_run_as_kubernetes_workloads_through_the_service(
    hub: HubProcess, emulator: KubeEmulator
) -> None:
    client = hub.client("alice")
    client.login()
    api, headers = jobs_api(hub, client)
    body = {
        "name": "exit-three",
        "kind": "batch",
        "command": ["python", "-c", "print('hi'); raise SystemExit(3)"],
        "retries": 0,
    }
    assert requests.post(f"{api}/jobs", headers=headers, json=body, timeout=30).status_code == 201

    def finished() -> dict[str, object] | None:
        job = requests.get(f"{api}/jobs/exit-three", headers=headers, timeout=10).json()
        return job if job["status"] in ("failed", "succeeded") else None

    job = wait_for(finished, 60, "the Kubernetes Job to end")
    assert job["status"] == "failed" and job["exit_code"] == 3
    assert emulator.list("jobs", "jhub", group="batch")  # it really was a Kubernetes Job
    assert "hi" in requests.get(f"{api}/jobs/exit-three/logs", headers=headers, timeout=10).text


def test_a_job_runs_in_the_notebooks_image_unless_it_names_a_profile(
    hub: HubProcess, emulator: KubeEmulator
) -> None:
    alice = hub.client("alice")
    alice.login()
    api, headers = jobs_api(hub, alice)
    assert (
        alice.submit_spawn_form({"profile": "small", "profile-option-small--image": "r"}).status_code == 200
    )
    try:
        alice.wait_ready(timeout=180)
        command = ["python", "-c", "pass"]
        for name, extra in (("same-image", {}), ("profile-image", {"profile": "small"})):
            body = {"name": name, "kind": "batch", "command": command, **extra}
            assert requests.post(f"{api}/jobs", headers=headers, json=body, timeout=30).status_code == 201
        images = {
            job["metadata"]["annotations"]["jhub-ext.io/name"]: job["spec"]["template"]["spec"]["containers"][
                0
            ]["image"]
            for job in emulator.list("jobs", "jhub", group="batch")
        }
        assert images["same-image"] == "quay.io/jupyter/r-notebook:2024-12-09"  # alice's notebook
        assert images["profile-image"] == "quay.io/jupyter/scipy-notebook:2024-12-09"  # the profile's default
    finally:
        alice.stop_server()
