"""Kubernetes mode end to end: a real hub with ProfileKubeSpawner against the real control plane."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from ..faults import size
from ..hubprocess import HubClient, HubProcess, profiles_in_form, wait_for
from ..kube import Namespace, namespace

pytestmark = pytest.mark.integration

A100 = "NVIDIA-A100-SXM4-80GB"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def ns(cluster: Any) -> Iterator[Namespace]:
    with namespace(cluster, "hub") as created:
        yield created


@pytest.fixture(scope="module")
def hub(ns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("kubehub"))
    users = {"alice": ["researchers"], "bob": ["researchers", "gpu"], "carol": ["gpu"]}
    # server pods no hub record knows are deleted after 20 s (spawns under way are never touched)
    process = HubProcess.kubernetes(workdir, ns, users, extra_env={"JHUB_EXT_ORPHAN_GRACE_SECONDS": "20"})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_bob_spawns_the_gpu_profile_onto_the_gpu_node(hub: HubProcess, ns: Namespace) -> None:
    bob = hub.client("bob")
    bob.login()
    page = bob.spawn_page().text
    assert profiles_in_form(page) == ["small", "large-memory", "gpu-a100"]
    assert f"4 of 4 {A100} GPUs free · starts now" in page
    response = bob.submit_spawn_form({"profile": "gpu-a100"})
    assert response.status_code == 200, response.text[-2000:]
    try:
        bob.wait_ready(timeout=180)
        pod = ns.admin.get("Pod", "jupyter-bob", ns.name)
        assert pod["spec"]["nodeName"] == "gpu-1"
        container = pod["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": A100}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
            "tolerations"
        ]
        assert pod["spec"]["automountServiceAccountToken"] is False
        # admitted by the API server in a namespace that enforces the restricted standard
        namespace_labels = ns.admin.get("Namespace", ns.name)["metadata"]["labels"]
        assert namespace_labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
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
    wait_for(lambda: ns.admin.find("Pod", "jupyter-bob", ns.name) is None, 30, "bob's pod to go")


def profile_line(html: str, slug: str) -> str:
    start = html.index(f'data-slug="{slug}"')
    return html[start : html.index("</div>", html.index("jhub-ext-availability", start))]


def test_a_profile_with_no_room_says_when_it_last_had_room(hub: HubProcess, ns: Namespace) -> None:
    alice = hub.client("alice")
    alice.login()
    shipped = hub.catalog.read_text()
    assert "Starts now" in profile_line(alice.spawn_page().text, "large-memory")
    try:  # more memory than the high-memory machine has (512Gi): no room now
        hub.catalog.write_text(
            shipped.replace("memory: {guarantee: 16Gi, limit: 32Gi}", "memory: {guarantee: 600Gi}")
        )
        line = wait_for(
            lambda: (
                "last had room" in (text := profile_line(alice.spawn_page().text, "large-memory")) and text
            ),
            10,
            "the menu to say when the profile last had room",
        )
        assert "Waits for a new machine · it last had room at " in line
    finally:
        hub.catalog.write_text(shipped)


def test_alice_cannot_forge_the_gpu_profile(hub: HubProcess, ns: Namespace) -> None:
    alice = hub.client("alice")
    alice.login()
    refused = alice.submit_spawn_form({"profile": "gpu-a100"})
    assert (
        refused.status_code == 400
        and "there is no profile &#39;gpu-a100&#39; that you can use" in refused.text
    )
    assert ns.admin.find("Pod", "jupyter-alice", ns.name) is None


def test_the_menu_makes_no_api_calls(hub: HubProcess, ns: Namespace) -> None:
    alice = hub.client("alice")
    alice.login()
    alice.spawn_page()  # caches are warm
    before = len(ns.requests())
    for _ in range(20):
        assert alice.spawn_page().status_code == 200
    calls = [(e["verb"], e["requestURI"]) for e in ns.requests()[before:] if e["verb"] != "watch"]
    assert calls == []


def test_catalog_edits_and_group_quotas_apply_to_the_next_spawn(hub: HubProcess, ns: Namespace) -> None:
    shipped = hub.catalog.read_text()
    edited = shipped.replace("cpu: {guarantee: 4, limit: 8}", "cpu: {guarantee: 4, limit: 6}")
    hub.catalog.write_text(edited.replace("gpu: {gpus: 2}", "gpu: {gpus: 1}"))
    bob, carol = hub.client("bob"), hub.client("carol")
    bob.login()
    carol.login()
    try:
        assert bob.submit_spawn_form({"profile": "gpu-a100"}).status_code == 200
        bob.wait_ready(timeout=180)
        pod = ns.admin.get("Pod", "jupyter-bob", ns.name)
        assert float(pod["spec"]["containers"][0]["resources"]["limits"]["cpu"]) == 6
        refused = carol.submit_spawn_form({"profile": "gpu-a100"})  # counted from bob's pod
        assert refused.status_code == 403
        assert "group &#39;gpu&#39; may use 1 GPU at once and uses 1; this needs 1 more" in refused.text
        assert ns.admin.find("Pod", "jupyter-carol", ns.name) is None
    finally:
        hub.catalog.write_text(shipped)
        bob.stop_server()


def test_a_spawn_that_waits_for_room_says_why_in_plain_words(hub: HubProcess, ns: Namespace) -> None:
    """The spawn's progress page says what the cluster's events mean, with none of its words: here a
    profile whose machines are all gone (its node selector matches none)."""
    shipped = hub.catalog.read_text()
    hub.catalog.write_text(shipped.replace("instance-type: highmem", "instance-type: nowhere"))
    alice = hub.client("alice")
    alice.login()
    events: list[dict[str, Any]] = []
    try:
        assert alice.api("POST", "/users/alice/server", json={"profile": "large-memory"}).status_code == 202
        with alice.api("GET", "/users/alice/server/progress", stream=True, timeout=90) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    events.append(json.loads(line.removeprefix("data:")))
                    if "waiting for room" in events[-1].get("message", ""):
                        break
        messages = [event.get("message", "") for event in events]
        assert any("waiting for room in the cluster: no machine can take it now" in m for m in messages), (
            messages
        )
        for jargon in ("node(s)", "affinity", "selector", "FailedScheduling", "preemption", "[Warning]"):
            assert not any(jargon in m for m in messages), (jargon, messages)
        assert not any("raw_event" in event for event in events)  # the cluster's own event: admins only
    finally:
        hub.catalog.write_text(shipped)
        alice.stop_server()


@pytest.mark.faults
def test_after_an_api_server_restart_the_caches_recover_and_the_menu_stays_right(
    hub: HubProcess, ns: Namespace
) -> None:
    """Every watch breaks when the API server restarts (and may come back 410 Gone): the hub's caches
    list again, and a node added afterwards shows in the menu."""
    carol = hub.client("carol")
    carol.login()
    assert f"4 of 4 {A100} GPUs free" in carol.spawn_page().text
    cluster = ns.cluster
    gpu_node = {
        "cpu": "32",
        "memory": "256Gi",
        "gpus": 4,
        "labels": {"nvidia.com/gpu.product": A100},
        "taints": [GPU_TAINT],
    }
    second = cluster.start_agent([{"name": "gpu-2", **gpu_node}])
    try:
        wait_for(lambda: f"8 of 8 {A100} GPUs free" in carol.spawn_page().text, 20, "the second node to show")
        assert cluster.control_plane is not None
        cluster.control_plane.restart_apiserver()
        wait_for(
            lambda: "listing again" in hub.log() or "Watching nodes failed" in hub.log(),
            60,
            "the caches to notice",
        )
        third = cluster.start_agent([{"name": "gpu-3", **gpu_node}])
        try:
            wait_for(
                lambda: f"12 of 12 {A100} GPUs free" in carol.spawn_page().text, 60, "the third node to show"
            )
        finally:
            cluster.remove_agent(third)
    finally:
        cluster.remove_agent(second)
    wait_for(lambda: f"4 of 4 {A100} GPUs free" in carol.spawn_page().text, 30, "the extra nodes to go")


def jobs_api(hub: HubProcess, client: HubClient) -> tuple[str, dict[str, str]]:
    """The jobs API's address and a token header for ``client``'s user, once the service answers."""
    token = client.api("POST", f"/users/{client.username}/tokens", json={"note": "tests"}).json()["token"]
    api, headers = f"{hub.url}/services/jobs/api", {"Authorization": f"token {token}"}

    def answers() -> bool:
        return requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code == 200

    wait_for(answers, 30, "the jobs service")
    return api, headers


def test_jobs_run_as_kubernetes_workloads_through_the_service(hub: HubProcess, ns: Namespace) -> None:
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
    [first] = ns.admin.list("Job", ns.name)  # it really was a Kubernetes Job
    assert "hi" in requests.get(f"{api}/jobs/exit-three/logs", headers=headers, timeout=10).text

    # a restart of the finished job runs it again, and following its logs at once waits for the output
    restarted = requests.post(f"{api}/jobs/exit-three/restart", headers=headers, timeout=60)
    assert restarted.status_code == 200, restarted.text
    followed = requests.get(f"{api}/jobs/exit-three/logs?follow=1", headers=headers, timeout=60)
    assert followed.content.decode("utf-8-sig") == "hi\n"  # a follow stream starts with a byte order mark
    job = wait_for(finished, 60, "the second run to end")
    assert job["status"] == "failed" and job["exit_code"] == 3
    [second] = ns.admin.list("Job", ns.name)
    assert second["metadata"]["uid"] != first["metadata"]["uid"]


def test_a_job_runs_in_the_notebooks_image_unless_it_names_a_profile(hub: HubProcess, ns: Namespace) -> None:
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
            for job in ns.admin.list("Job", ns.name)
        }
        assert images["same-image"] == "REGISTRY/jhub-ext-singleuser-r:TAG"  # alice's notebook
        assert images["profile-image"] == "REGISTRY/jhub-ext-singleuser:TAG"  # the profile's default
    finally:
        alice.stop_server()


def test_a_job_the_cluster_would_refuse_gets_a_400_and_leaves_nothing(hub: HubProcess, ns: Namespace) -> None:
    """An admin's profile beyond the namespace's LimitRange: the researcher is told at submit time,
    and neither a record nor a Kubernetes object is left behind."""
    shipped = hub.catalog.read_text()
    edited = shipped.replace("cpu: {guarantee: 500m, limit: 1}", "cpu: {guarantee: 1, limit: 24}")
    hub.catalog.write_text(edited.replace("cpu: 16,", "cpu: 100,"))  # the group's quota allows it
    try:
        client = hub.client("alice")
        client.login()
        api, headers = jobs_api(hub, client)
        body = {"name": "greedy", "kind": "batch", "command": ["python", "-c", "pass"], "profile": "small"}

        def edited_catalog_applies() -> bool:
            profiles = requests.get(f"{api}/profiles", headers=headers, timeout=10).json()["profiles"]
            return "24" in json.dumps(next(p for p in profiles if p["slug"] == "small"))

        wait_for(edited_catalog_applies, 30, "the service to read the edited catalog")
        answer = requests.post(f"{api}/jobs", headers=headers, json=body, timeout=30)
        assert answer.status_code == 400, answer.text
        assert "maximum cpu usage per Container is 16" in answer.json()["error"]
        listed = requests.get(f"{api}/jobs", headers=headers, timeout=10).json()
        assert all(job["name"] != "greedy" for job in listed["jobs"])
        name = "jhub-ext.io/name"  # other tests' jobs live in this namespace too
        leftovers = [
            c
            for c in ns.admin.list("ConfigMap", ns.name)
            if c["metadata"].get("annotations", {}).get(name) == "greedy"
        ]
        assert leftovers == []
    finally:
        hub.catalog.write_text(shipped)


def test_a_finished_gpu_job_gives_its_gpu_back_to_the_menu(hub: HubProcess, ns: Namespace) -> None:
    """The capacity cache watches unfinished pods only (a field selector): when a pod succeeds, the API
    server sends DELETED for it although the pod itself stays, and the GPU shows free again."""
    bob = hub.client("bob")
    bob.login()
    api, headers = jobs_api(hub, bob)
    assert f"4 of 4 {A100} GPUs free" in bob.spawn_page().text
    body = {
        "name": "train",
        "kind": "batch",
        "profile": "gpu-a100",
        "command": ["python", "-c", "import time; time.sleep(4)"],
    }
    assert requests.post(f"{api}/jobs", headers=headers, json=body, timeout=30).status_code == 201
    wait_for(lambda: f"3 of 4 {A100} GPUs free" in bob.spawn_page().text, 30, "the job to take a GPU")

    def succeeded() -> bool:
        return requests.get(f"{api}/jobs/train", headers=headers, timeout=10).json()["status"] == "succeeded"

    wait_for(succeeded, 60, "the job to succeed")
    [pod] = ns.pods("jhub-ext.io/profile=gpu-a100")
    assert pod["status"]["phase"] == "Succeeded"  # still there, finished
    wait_for(lambda: f"4 of 4 {A100} GPUs free" in bob.spawn_page().text, 30, "the GPU to show free again")


def test_spawns_and_submits_together_never_exceed_the_quota(hub: HubProcess, ns: Namespace) -> None:
    """Two servers and two scrapers of one CPU each, all at once, in a group that may use 2 CPUs:
    the hub and the service take the same per-group lock and count jobs the same way (from their
    records, whether their pods exist yet or not)."""
    shipped = hub.catalog.read_text()
    hub.catalog.write_text(shipped.replace("researchers: {cpu: 16,", "researchers: {cpu: 2,"))
    people = {name: hub.client(name) for name in ("alice", "bob")}
    for client in people.values():
        client.login()
    apis = {name: jobs_api(hub, client) for name, client in people.items()}
    try:
        api, headers = apis["alice"]
        wait_for(
            lambda: (
                requests.get(f"{api}/quota", headers=headers, timeout=10).json()["groups"][0]["limits"]["cpu"]
                == 2
            ),
            30,
            "the service to read the edited quota",
        )
        barrier = threading.Barrier(4)

        def spawn(name: str) -> int:
            barrier.wait()
            return people[name].api("POST", f"/users/{name}/server", json={"profile": "small"}).status_code

        def submit(name: str) -> int:
            api, headers = apis[name]
            body = {"name": "race", "kind": "scraper", "profile": "small", "command": ["sleep", "600"]}
            body["wait"] = False  # refused, not queued, when there is no room: a start or a 403
            barrier.wait()
            return requests.post(f"{api}/jobs", headers=headers, json=body, timeout=60).status_code

        with ThreadPoolExecutor(4) as pool:
            spawns = [pool.submit(spawn, name) for name in people]
            submits = [pool.submit(submit, name) for name in people]
            spawned = [f.result() for f in spawns]
            submitted = [f.result() for f in submits]
        started = sum(code in (201, 202) for code in spawned) + submitted.count(201)
        assert 1 <= started <= 2, (spawned, submitted)
        assert all(code in (201, 202, 403) for code in spawned) and set(submitted) <= {201, 403}
        usage = requests.get(f"{api}/quota", headers=headers, timeout=10).json()["groups"][0]["usage"]
        assert usage["cpu"] <= 2
    finally:
        hub.catalog.write_text(shipped)
        for name, client in people.items():
            if client.server() is not None:
                with contextlib.suppress(RuntimeError):
                    client.wait_ready(timeout=180)
                client.stop_server()
            api, headers = apis[name]
            requests.delete(f"{api}/jobs/race", headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"command": ["python", "-c", "print(1)\u0000"]}, "command"),
        ({"env": {"X": "\udc80"}}, "env.X"),
        ({"files": {"a": "x", "a/b": "y"}}, "files.a"),
        ({"kind": "scheduled", "schedule": "0 0 31 2 *"}, "schedule"),
        ({"kind": "scheduled", "schedule": "@daily", "timezone": "America"}, "timezone"),
        ({"kind": "scheduled", "schedule": "0 0 L * *"}, "schedule"),
    ],
)
def test_what_would_wedge_a_job_is_refused_before_anything_reaches_the_cluster(
    hub: HubProcess, ns: Namespace, changes: dict[str, Any], field: str
) -> None:
    client = hub.client("alice")
    client.login()
    api, headers = jobs_api(hub, client)
    body = {"name": "wedge", "kind": "batch", "command": ["true"], **changes}
    response = requests.post(
        f"{api}/jobs",
        headers={**headers, "Content-Type": "application/json"},
        data=json.dumps(body),
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["field"] == field, response.text
    assert "wedge" not in [
        j["name"] for j in requests.get(f"{api}/jobs", headers=headers, timeout=10).json()["jobs"]
    ]
    assert not [
        obj
        for kind in ("ConfigMap", "Job", "CronJob", "Deployment")
        for obj in ns.admin.list(kind, ns.name)
        if (obj["metadata"].get("annotations") or {}).get("jhub-ext.io/name") == "wedge"
    ]


def sleeper_pod(
    ns: Namespace,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A pod made by hand that sleeps ten minutes, fit for the namespace's restricted policy."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns.name,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "sleeper",
                    "image": "example.org/x:1",
                    "command": ["python", "-c", "import time; time.sleep(600)"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"limits": {"cpu": "100m", "memory": "64Mi", **(limits or {})}},
                }
            ],
        },
    }


@pytest.mark.faults
def test_a_server_pod_no_hub_record_knows_is_deleted_after_the_grace_period(
    hub: HubProcess, ns: Namespace
) -> None:
    """What a hub restart leaves of a spawn cut short: a pod for a server the hub has no record of."""
    orphan = sleeper_pod(
        ns,
        "jupyter-dave",
        labels={"component": "singleuser-server", "jhub-ext.io/kind": "server"},
        annotations={"hub.jupyter.org/username": "dave", "hub.jupyter.org/servername": ""},
    )
    ns.admin.create(orphan)
    alice = hub.client("alice")
    alice.login()
    assert alice.spawn_page().status_code == 200  # the hub's pod cache, and its reaper, are running
    wait_for(lambda: ns.admin.find("Pod", "jupyter-dave", ns.name) is None, 90, "the orphan pod to go")
    assert "Deleted server pod jupyter-dave: no hub record knows it" in hub.log()


@pytest.mark.faults
def test_while_the_api_server_is_paused_spawns_and_submits_get_503_and_everything_recovers(
    hub: HubProcess, ns: Namespace
) -> None:
    """The API server stopped (SIGSTOP: connections hang, nothing fails) then resumed: the menu says
    since when it is not answering, a spawn and a submit are refused with 503 and Retry-After within
    seconds instead of hanging, and afterwards everything works again without a restart, nothing
    created twice."""
    alice = hub.client("alice")
    alice.login()
    api, headers = jobs_api(hub, alice)
    alice.spawn_page()  # the hub's caches (and its probe of the API server) are running
    assert ns.cluster.control_plane is not None
    apiserver = ns.cluster.control_plane.components["kube-apiserver"]
    batch = {"name": "after", "kind": "batch", "command": ["python", "-c", "print('done')"], "retries": 0}
    apiserver.signal(signal.SIGSTOP)
    paused = time.monotonic()
    try:
        wait_for(lambda: "the cluster is not answering" in alice.spawn_page().text, 30, "the menu to say so")
        started = time.monotonic()
        spawn = alice.api("POST", "/users/alice/server", json={"profile": "small"})
        assert spawn.status_code == 503 and spawn.headers.get("Retry-After") == "30", spawn.text
        assert "has not answered since" in spawn.json()["message"]
        assert time.monotonic() - started < 10
        started = time.monotonic()
        during = requests.post(f"{api}/jobs", headers=headers, json={**batch, "name": "during"}, timeout=60)
        assert during.status_code == 503 and during.headers.get("Retry-After"), during.text
        assert time.monotonic() - started < 30
        # at full size the outage lasts a minute (the case); the hub must still say so then
        time.sleep(max(0.0, size(0, 60) - (time.monotonic() - paused)))
        assert "the cluster is not answering" in alice.spawn_page().text
    finally:
        apiserver.signal(signal.SIGCONT)
    wait_for(lambda: "the cluster is not answering" not in alice.spawn_page().text, 60, "the menu to recover")
    assert requests.get(f"{api}/jobs/during", headers=headers, timeout=10).status_code == 404  # nothing kept
    created = requests.post(f"{api}/jobs", headers=headers, json=batch, timeout=60)
    assert created.status_code == 201, created.text
    wait_for(
        lambda: (
            requests.get(f"{api}/jobs/after", headers=headers, timeout=10).json()["status"] == "succeeded"
        ),
        90,
        "the job submitted after the outage to run",
    )
    names = [job["metadata"]["annotations"].get("jhub-ext.io/name") for job in ns.admin.list("Job", ns.name)]
    assert names.count("after") == 1 and "during" not in names
    assert requests.delete(f"{api}/jobs/after", headers=headers, timeout=30).status_code == 204


@pytest.mark.faults
def test_a_fresh_hubs_first_spawn_during_an_outage_is_refused_at_once(
    kube_namespace: Namespace, tmp_path: Path
) -> None:
    """No server started before the outage (KubeSpawner's pod reflector never listed): the spawn
    still gets a quick 503, and the clean-up after it (JupyterHub polls and stops the refused server)
    does not wait a minute on a list that cannot be answered."""
    fresh = HubProcess.kubernetes(tmp_path, kube_namespace, {"alice": ["researchers"]})
    fresh.start()
    try:
        alice = fresh.client("alice")
        alice.login()
        assert kube_namespace.cluster.control_plane is not None
        apiserver = kube_namespace.cluster.control_plane.components["kube-apiserver"]
        apiserver.signal(signal.SIGSTOP)
        try:
            noticed = "the menu to say so"
            wait_for(lambda: "the cluster is not answering" in alice.spawn_page().text, 30, noticed)
            started = time.monotonic()
            spawn = alice.api("POST", "/users/alice/server", json={"profile": "small"})
            assert spawn.status_code == 503 and spawn.headers.get("Retry-After") == "30", spawn.text
            assert time.monotonic() - started < 15
            assert alice.server() is None
        finally:
            apiserver.signal(signal.SIGCONT)
        recovered = "the menu to recover"
        wait_for(lambda: "the cluster is not answering" not in alice.spawn_page().text, 60, recovered)
        assert alice.api("POST", "/users/alice/server", json={"profile": "small"}).status_code in (201, 202)
        alice.wait_ready(timeout=120)
        alice.stop_server()
    finally:
        fresh.stop()


def gpu_hog(ns: Namespace, name: str) -> dict[str, Any]:
    """A pod of someone else's that holds one of the GPU machine's GPUs (tolerating its taint)."""
    hog = sleeper_pod(ns, name, limits={"nvidia.com/gpu": "1"})
    hog["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return hog


def test_a_gpu_job_with_every_gpu_taken_waits_in_line_and_starts_when_one_frees(
    hub: HubProcess, ns: Namespace
) -> None:
    """Every GPU of the cluster is taken by others: a GPU job is accepted (202) and waits in line for
    a machine, saying how many GPUs are free, reserving nothing; it starts by itself once a GPU frees."""
    hogs = [f"gpu-hog-{i}" for i in range(4)]
    for name in hogs:
        ns.admin.create(gpu_hog(ns, name))
    carol = hub.client("carol")
    carol.login()
    api, headers = jobs_api(hub, carol)
    job = {
        "name": "train",
        "kind": "batch",
        "profile": "gpu-a100",
        "retries": 0,
        "command": ["python", "-c", "print('trained')"],
    }
    try:

        def hogging() -> bool:
            running = [p for p in ns.pods() if p["metadata"]["name"] in hogs]
            return len(running) == 4 and all(p["status"].get("phase") == "Running" for p in running)

        wait_for(hogging, 60, "the GPUs to be taken")
        refused = requests.post(f"{api}/jobs", headers=headers, json={**job, "wait": False}, timeout=30)
        assert refused.status_code == 403 and refused.json()["field"] == "wait", refused.text
        answer = requests.post(f"{api}/jobs", headers=headers, json=job, timeout=30)
        assert answer.status_code == 202, answer.text
        waiting = answer.json()
        assert (waiting["status"], waiting["reason"], waiting["queue_position"]) == (
            "pending",
            "waiting-for-capacity",
            1,
        )
        assert waiting["message"] == (
            "1st in line for a machine of profile 'gpu-a100': waiting for room in the cluster: 0 of 4"
            " NVIDIA-A100-SXM4-80GB GPUs are free, and it needs 1; it starts by itself as soon as a"
            " machine has room"
        )
        jobs = ns.admin.list("Job", ns.name)
        assert not [
            j for j in jobs if j["metadata"]["annotations"]["jhub-ext.io/user"] == "carol"
        ]  # none yet
        quota = requests.get(f"{api}/quota", headers=headers, timeout=10).json()
        gpu = next(q for q in quota["groups"] if q["group"] == "gpu")
        assert gpu["usage"]["gpus"] == 0 and gpu["waiting"]["gpus"] == 1  # waiting, not using
        ns.admin.delete("Pod", hogs[0], ns.name)  # a GPU frees
        done = wait_for(
            lambda: (
                (j := requests.get(f"{api}/jobs/train", headers=headers, timeout=10).json())["status"]
                in ("succeeded", "failed")
                and j
            ),
            90,
            "the job to run once a GPU freed",
        )
        assert done["status"] == "succeeded", done
    finally:
        for name in hogs:
            if ns.admin.find("Pod", name, ns.name) is not None:
                ns.admin.delete("Pod", name, ns.name)
        requests.delete(f"{api}/jobs/train", headers=headers, timeout=60)
