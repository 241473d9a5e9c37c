"""The emulator behaves as the product needs a Kubernetes API server to behave (real client, real HTTP)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from jhub_ext.k8s.pods import RESTRICTED_CONTAINER_SECURITY_CONTEXT, RESTRICTED_POD_SECURITY_CONTEXT

from . import KubeEmulator
from .pss import restricted_violations

SERVE_ON_POD_IP = (
    "import http.server, os\n"
    "server = http.server.HTTPServer((os.environ['IP'], 8888), http.server.SimpleHTTPRequestHandler)\n"
    "server.serve_forever()\n"
)
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def pod(name: str, command: list[str] | None = None, **spec: Any) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": "example.org/python:3",
        "command": command or [sys.executable, "-c", "import time; time.sleep(60)"],
        "securityContext": dict(RESTRICTED_CONTAINER_SECURITY_CONTEXT),
        **spec.pop("container", {}),
    }
    labels = spec.pop("labels", {"app": "test"})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [container],
            "securityContext": dict(RESTRICTED_POD_SECURITY_CONTEXT),
            "restartPolicy": "Never",
            **spec,
        },
    }


async def wait_pod(core: client.CoreV1Api, name: str, predicate: Any, timeout: float = 20) -> dict[str, Any]:
    async def poll() -> dict[str, Any]:
        while True:
            raw = await core.read_namespaced_pod(name, "jhub", _preload_content=False)
            body = json.loads(await raw.read())
            if predicate(body):
                return body
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def test_create_get_list_patch_delete_round_trip(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    created = await core.create_namespaced_config_map(
        "jhub", {"metadata": {"name": "c1", "labels": {"a": "1"}}, "data": {"k": "v"}}
    )
    assert created.metadata.uid and created.metadata.resource_version
    got = await core.read_namespaced_config_map("c1", "jhub")
    assert got.data == {"k": "v"}
    patched = await core.patch_namespaced_config_map("c1", "jhub", {"data": {"k": "w"}})
    assert patched.data == {"k": "w"} and int(patched.metadata.resource_version) > int(
        created.metadata.resource_version
    )
    listed = await core.list_namespaced_config_map("jhub", label_selector="a=1")
    assert [c.metadata.name for c in listed.items] == ["c1"]
    assert (await core.list_namespaced_config_map("jhub", label_selector="a!=1")).items == []
    await core.delete_namespaced_config_map("c1", "jhub")
    with pytest.raises(ApiException) as missing:
        await core.read_namespaced_config_map("c1", "jhub")
    body = json.loads(missing.value.body)
    assert missing.value.status == 404 and body["reason"] == "NotFound" and body["kind"] == "Status"
    assert body["message"] == 'configmaps "c1" not found'


async def test_conflicts_and_invalid_objects_get_real_error_bodies(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_config_map("jhub", {"metadata": {"name": "c2"}})
    with pytest.raises(ApiException) as exists:
        await core.create_namespaced_config_map("jhub", {"metadata": {"name": "c2"}})
    assert exists.value.status == 409 and json.loads(exists.value.body)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as conflict:
        await core.replace_namespaced_config_map(
            "c2", "jhub", {"metadata": {"name": "c2", "resourceVersion": "1"}}
        )
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"
    bad = pod("bad")
    bad["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(ApiException) as invalid:
        await core.create_namespaced_pod("jhub", bad)
    body = json.loads(invalid.value.body)
    assert invalid.value.status == 422 and body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "spec.containers.0.imagePullPolicy"


async def test_watch_resumes_from_a_resource_version_ends_on_timeout_and_bookmarks(
    kube: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube)
    listed = await core.list_namespaced_config_map("jhub")
    start = listed.metadata.resource_version
    await core.create_namespaced_config_map("jhub", {"metadata": {"name": "w1", "labels": {"x": "y"}}})
    await core.create_namespaced_config_map("jhub", {"metadata": {"name": "w2"}})
    seen = []
    async with watch.Watch().stream(
        core.list_namespaced_config_map,
        "jhub",
        resource_version=start,
        timeout_seconds=2,
        allow_watch_bookmarks=True,
        label_selector="x=y",
    ) as stream:
        async for event in stream:
            seen.append((event["type"], event["raw_object"]["metadata"].get("name")))
    assert ("ADDED", "w1") in seen and ("ADDED", "w2") not in seen
    assert any(kind == "BOOKMARK" for kind, _ in seen)  # and the stream ended by itself


async def test_an_expired_resource_version_gets_410(emulator: KubeEmulator, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    listed = await core.list_namespaced_config_map("jhub")
    await core.create_namespaced_config_map("jhub", {"metadata": {"name": "old"}})
    emulator.compact()
    with pytest.raises(ApiException) as gone:
        async with watch.Watch().stream(
            core.list_namespaced_config_map,
            "jhub",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=2,
        ) as stream:
            async for _ in stream:
                pass
    assert gone.value.status == 410


async def test_the_restricted_standard_is_enforced(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    privileged = pod("root", container={"securityContext": {"privileged": True}})
    with pytest.raises(ApiException) as refused:
        await core.create_namespaced_pod("jhub", privileged)
    body = json.loads(refused.value.body)
    assert refused.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith('pods "root" is forbidden: violates PodSecurity "restricted:latest": ')
    assert "allowPrivilegeEscalation != false" in body["message"] and "privileged" in body["message"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: s.update(hostNetwork=True), "host namespaces"),
        (
            lambda s: s["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (
            lambda s: s["containers"][0]["securityContext"].update(
                capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}
            ),
            "capabilities",
        ),
        (lambda s: s["containers"][0]["securityContext"].update(capabilities={}), "capabilities"),
        (
            lambda s: [c["securityContext"].pop("runAsNonRoot") for c in (s, s["containers"][0])],
            "runAsNonRoot",
        ),
        (
            lambda s: [c["securityContext"].pop("seccompProfile") for c in (s, s["containers"][0])],
            "seccompProfile",
        ),
        (lambda s: s.update(volumes=[{"name": "h", "hostPath": {"path": "/"}}]), "restricted volume types"),
        (lambda s: s["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
        (lambda s: s["securityContext"].update(runAsUser=0), "runAsUser=0"),
        (
            lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
            "forbidden sysctls",
        ),
    ],
)
def test_each_restricted_rule(change: Any, words: str) -> None:
    spec = pod("p")["spec"]
    assert restricted_violations(spec) == []
    change(spec)
    assert any(words in problem for problem in restricted_violations(spec))


async def test_scheduling_respects_selectors_taints_and_capacity(
    emulator: KubeEmulator, kube: client.ApiClient
) -> None:
    emulator.add_node("cpu-1", cpu="2", memory="4Gi")
    emulator.add_node(
        "gpu-1", labels={"nvidia.com/gpu.product": "A100"}, taints=[GPU_TAINT], **{"nvidia.com/gpu": "1"}
    )
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod("jhub", pod("cpu", container={"resources": {"requests": {"cpu": "1"}}}))
    gpu = pod(
        "gpu",
        container={"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        nodeSelector={"nvidia.com/gpu.product": "A100"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    await core.create_namespaced_pod("jhub", gpu)
    assert (await wait_pod(core, "cpu", lambda p: p["spec"].get("nodeName")))["spec"]["nodeName"] == "cpu-1"
    assert (await wait_pod(core, "gpu", lambda p: p["spec"].get("nodeName")))["spec"]["nodeName"] == "gpu-1"
    second = dict(gpu, metadata={"name": "gpu2", "labels": {"app": "test"}})
    await core.create_namespaced_pod("jhub", second)
    waiting = await wait_pod(core, "gpu2", lambda p: p["status"].get("conditions"))
    condition = waiting["status"]["conditions"][0]
    assert condition["reason"] == "Unschedulable"
    assert condition["message"] == (
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) didn't match Pod's node affinity/selector."
    )
    events = await core.list_namespaced_event(
        "jhub", field_selector="involvedObject.kind=Pod,reason=FailedScheduling"
    )
    assert [e.involved_object.name for e in events.items] == ["gpu2"]
    await core.delete_namespaced_pod("gpu", "jhub")  # frees the GPU: the waiting pod is scheduled
    assert (await wait_pod(core, "gpu2", lambda p: p["spec"].get("nodeName")))["spec"]["nodeName"] == "gpu-1"


async def test_a_pod_runs_as_a_process_with_its_exit_code_and_logs(
    emulator: KubeEmulator, kube: client.ApiClient
) -> None:
    emulator.add_node("n1")
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(
        "jhub", pod("three", [sys.executable, "-c", "print('hi'); raise SystemExit(3)"])
    )
    done = await wait_pod(core, "three", lambda p: p["status"]["phase"] in ("Succeeded", "Failed"))
    assert done["status"]["phase"] == "Failed"
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3
    assert await core.read_namespaced_pod_log("three", "jhub") == "hi\n"


async def test_a_server_in_a_pod_answers_on_its_pod_ip(
    emulator: KubeEmulator, kube: client.ApiClient
) -> None:
    emulator.add_node("n1")
    core = client.CoreV1Api(kube)
    ip_env = [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    await core.create_namespaced_pod(
        "jhub", pod("web", [sys.executable, "-c", SERVE_ON_POD_IP], container={"env": ip_env})
    )
    running = await wait_pod(core, "web", lambda p: p["status"]["phase"] == "Running")
    ip = running["status"]["podIP"]
    assert ip.startswith("127.0.0.") and ip != "127.0.0.1"

    async def answers() -> int:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://{ip}:8888/") as response:
                        return response.status
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)

    assert await asyncio.wait_for(answers(), 20) == 200
    await core.delete_namespaced_pod("web", "jhub")
    await wait_pod(core, "web", lambda p: False, timeout=0.01) if False else None
    for _ in range(100):
        if emulator.get("pods", "jhub", "web") is None:
            break
        await asyncio.sleep(0.05)
    assert emulator.get("pods", "jhub", "web") is None


def test_every_request_is_recorded(emulator: KubeEmulator) -> None:
    import requests

    emulator.reset_requests()
    requests.get(f"{emulator.url}/api/v1/namespaces/jhub/pods", timeout=5)
    requests.get(f"{emulator.url}/api/v1/nodes?watch=1&timeoutSeconds=0", timeout=5)
    assert [(r.verb, r.resource, r.namespace) for r in emulator.requests] == [
        ("list", "pods", "jhub"),
        ("watch", "nodes", None),
    ]
