"""Image pulls on the node agent's nodes, as a kubelet makes them: events, waiting reasons, back-off.

Nothing is downloaded; the images of ``DEFAULT_IMAGES`` in ``devcluster.cluster`` say how a pull
goes: ``registry.test/slowish/*`` takes 2 s, ``registry.test/missing/*`` is not found. Each test
names its images after its namespace, so no node has them yet.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from devcluster.agent.images import ImageStore, PullError, go_duration, pull_policy
from devcluster.rest import poll

from ..kube import Namespace
from .test_node_agent import RESTRICTED_CONTAINER, RESTRICTED_POD, pod

ON_CPU_1 = {"kubernetes.io/hostname": "cpu-1"}


def container(name: str, image: str, code: str = "print('ran')", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "command": ["python", "-c", code],
        "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": RESTRICTED_CONTAINER,
        **extra,
    }


def events(ns: Namespace, name: str) -> list[dict[str, Any]]:
    """The node agent's events about pod ``name``, in the order they were posted."""
    found = ns.admin.list("Event", ns.name, fields=f"involvedObject.name={name},source=kubelet")
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


def reasons(ns: Namespace, name: str) -> list[str]:
    return [e["reason"] for e in events(ns, name)]


def waiting(pod_: dict[str, Any], init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    statuses = (pod_.get("status") or {}).get(key) or [{}]
    return (statuses[0].get("state") or {}).get("waiting") or {}


def gone(ns: Namespace, name: str, within: float) -> float:
    """Delete pod ``name`` and wait for it to leave the API; how long that took."""
    ns.admin.delete("Pod", name, ns.name)
    started = time.monotonic()
    poll(lambda: ns.admin.find("Pod", name, ns.name) is None, within, f"pod {name} to be gone", interval=0.1)
    return time.monotonic() - started


# --- without a cluster -----------------------------------------------------------------------------


def test_pull_policy_defaults_as_the_api_server_does() -> None:
    assert pull_policy({"image": "registry.test/a/b"}) == "Always"
    assert pull_policy({"image": "registry.test/a/b:latest"}) == "Always"
    assert pull_policy({"image": "registry.test:5000/a/b"}) == "Always"  # a port is no tag
    assert pull_policy({"image": "registry.test:5000/a/b:1.2"}) == "IfNotPresent"
    assert pull_policy({"image": "python@sha256:" + "0" * 64}) == "IfNotPresent"
    assert pull_policy({"image": "python:3", "imagePullPolicy": "Never"}) == "Never"
    assert pull_policy({"image": "python:3", "imagePullPolicy": "Always"}) == "Always"


def test_durations_read_as_the_kubelet_writes_them() -> None:
    assert [go_duration(s) for s in (0, 0.0004, 0.512, 2, 2.5, 8.0019, 62.05, 3603)] == [
        "0s",
        "0s",
        "512ms",
        "2s",
        "2.5s",
        "8.001s",
        "1m2.05s",
        "1h0m3s",
    ]


async def test_a_node_keeps_its_images_across_a_restart_of_the_agent(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images.json")
    first, again = store.pull("n1", "a:1", 0.05, False), store.pull("n1", "a:1", 0.05, False)
    assert first is again  # one pull of an image onto a node at a time
    assert await first >= 0.05
    with pytest.raises(PullError, match=r'"b:1": b:1: not found$'):
        await store.pull("n1", "b:1", 0, True)
    restarted = ImageStore(tmp_path / "images.json")
    assert restarted.present("n1", "a:1")
    assert not restarted.present("n2", "a:1") and not restarted.present("n1", "b:1")


# --- on the cluster --------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_pull_takes_its_time_then_the_image_is_present_on_the_node(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    image = f"registry.test/slowish/{ns.name}:1"
    pod(
        ns,
        "first",
        [container("main", image)],
        initContainers=[container("setup", image)],
        nodeSelector=ON_CPU_1,
    )
    pulling = ns.admin.wait_for("Pod", "first", ns.name, lambda _: "Pulling" in reasons(ns, "first"), 30)
    assert pulling["status"]["phase"] == "Pending"
    assert waiting(pulling, init=True) == {"reason": "ContainerCreating"}
    done = ns.admin.wait_for(
        "Pod", "first", ns.name, lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), 30
    )
    assert done["status"]["phase"] == "Succeeded"
    assert ns.admin.pod_log("first", ns.name, "main") == "ran\n"

    posted = events(ns, "first")
    pulls = [e for e in posted if e["reason"] in ("Pulling", "Pulled")]
    assert [(e["reason"], e["involvedObject"]["fieldPath"]) for e in pulls] == [
        ("Pulling", "spec.initContainers{setup}"),
        ("Pulled", "spec.initContainers{setup}"),
        ("Pulled", "spec.containers{main}"),  # the init container pulled it onto this node already
    ]
    assert pulls[0]["message"] == f'Pulling image "{image}"'
    took = re.fullmatch(
        rf'Successfully pulled image "{re.escape(image)}" in (2(?:\.\d+)?s) \((2(?:\.\d+)?s) including'
        r" waiting\)\. Image size: 0 bytes\.",
        pulls[1]["message"],
    )
    assert took, pulls[1]["message"]
    assert pulls[2]["message"] == f'Container image "{image}" already present on machine'
    for event in pulls:
        assert event["type"] == "Normal"
        assert event["source"] == {"component": "kubelet", "host": "cpu-1"}
        involved = event["involvedObject"]
        assert {k: involved[k] for k in ("kind", "name", "namespace", "uid", "apiVersion")} == {
            "kind": "Pod",
            "name": "first",
            "namespace": ns.name,
            "uid": done["metadata"]["uid"],
            "apiVersion": "v1",
        }

    # another pod on the same node finds the image there: no pull
    pod(ns, "second", [container("main", image)], nodeSelector=ON_CPU_1)
    second = ns.admin.wait_for(
        "Pod", "second", ns.name, lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), 30
    )
    assert second["status"]["phase"] == "Succeeded"
    posted = events(ns, "second")
    assert "Pulling" not in [e["reason"] for e in posted]
    assert [e["message"] for e in posted if e["reason"] == "Pulled"] == [
        f'Container image "{image}" already present on machine'
    ]


@pytest.mark.integration
def test_an_image_that_cannot_be_pulled_backs_off_and_its_pod_still_leaves(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    image = f"registry.test/missing/{ns.name}:1"
    pod(ns, "nowhere", [container("main", image)])
    seen: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + 20
    while (
        not {"ErrImagePull", "ImagePullBackOff"} <= set(seen) or reasons(ns, "nowhere").count("Pulling") < 2
    ):
        assert time.monotonic() < deadline, (seen, reasons(ns, "nowhere"))
        current = ns.admin.get("Pod", "nowhere", ns.name)
        assert current["status"].get("phase") == "Pending"  # never fails by itself
        state = waiting(current)
        if state.get("reason"):
            seen[state["reason"]] = state
        time.sleep(0.1)
    assert seen["ErrImagePull"]["message"].endswith(f"{image}: not found")
    assert seen["ImagePullBackOff"]["message"] == f'Back-off pulling image "{image}"'

    posted = events(ns, "nowhere")
    first_round = [(e["reason"], e["type"], e["message"]) for e in posted][:6]
    assert first_round[0] == ("Pulling", "Normal", f'Pulling image "{image}"')
    assert first_round[1][:2] == ("Failed", "Warning")
    assert first_round[1][2].startswith(f'Failed to pull image "{image}": ')
    assert first_round[1][2].endswith("not found")
    assert first_round[2] == ("Failed", "Warning", "Error: ErrImagePull")
    assert first_round[3] == ("BackOff", "Normal", f'Back-off pulling image "{image}"')
    assert first_round[4] == ("Failed", "Warning", "Error: ImagePullBackOff")
    assert first_round[5] == ("Pulling", "Normal", f'Pulling image "{image}"')  # retried
    assert {e["involvedObject"]["fieldPath"] for e in posted} == {"spec.containers{main}"}

    assert gone(ns, "nowhere", 10) < 5


@pytest.mark.integration
def test_a_pod_deleted_during_its_pull_never_starts(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    marks = Path(tempfile.mkdtemp(prefix="jhub-ext-pull-"))
    try:
        marks.chmod(0o777)  # the container may run as the pod's user
        code = f"open({str(marks / 'ran')!r}, 'w').close()"
        pod(ns, "cut-short", [container("main", f"registry.test/slowish/{ns.name}:1", code)])
        ns.admin.wait_for("Pod", "cut-short", ns.name, lambda _: "Pulling" in reasons(ns, "cut-short"), 30)
        assert gone(ns, "cut-short", 10) < 1.5  # no grace period to wait for: nothing runs yet
        time.sleep(2.5)  # past the end of the pull, which goes on without it
        assert not (marks / "ran").exists()
    finally:
        shutil.rmtree(marks, ignore_errors=True)


@pytest.mark.integration
def test_pull_policy_never_for_an_absent_image(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    image = f"registry.test/slowish/{ns.name}:1"
    pod(ns, "never", [container("main", image, imagePullPolicy="Never")])
    held = ns.admin.wait_for(
        "Pod", "never", ns.name, lambda p: waiting(p).get("reason") == "ErrImageNeverPull"
    )
    assert held["status"]["phase"] == "Pending"
    message = f'Container image "{image}" is not present with pull policy of Never'
    assert waiting(held)["message"] == message

    def both_events() -> list[dict[str, Any]] | None:
        found = events(ns, "never")
        return found if len(found) >= 2 else None

    posted = poll(both_events, 10, "the pod's events")
    assert [(e["reason"], e["type"], e["message"]) for e in posted][:2] == [
        ("ErrImageNeverPull", "Warning", message),
        ("Failed", "Warning", "Error: ErrImageNeverPull"),
    ]
    assert posted[0]["involvedObject"]["fieldPath"] == "spec.containers{main}"
    assert "Pulling" not in reasons(ns, "never")
    assert gone(ns, "never", 10) < 5


@pytest.mark.integration
def test_a_job_whose_image_cannot_be_pulled_ends_at_its_deadline(kube_namespace: Namespace) -> None:
    """Its pod never fails by itself (ImagePullBackOff is no failure); the Job's deadline ends it."""
    ns = kube_namespace
    ns.admin.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "stuck", "namespace": ns.name},
            "spec": {
                "backoffLimit": 0,
                "activeDeadlineSeconds": 4,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "automountServiceAccountToken": False,
                        "securityContext": RESTRICTED_POD,
                        "containers": [container("main", f"registry.test/missing/{ns.name}:1")],
                    }
                },
            },
        }
    )

    def condition(job: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] == "Failed"), None
        )

    pods = poll(lambda: ns.pods("job-name=stuck"), 30, "the job's pod")
    ns.admin.wait_for("Pod", pods[0]["metadata"]["name"], ns.name, lambda p: waiting(p).get("reason"))
    time.sleep(1)
    assert condition(ns.admin.get("Job", "stuck", ns.name)) is None
    assert [p["status"].get("phase") for p in ns.pods("job-name=stuck")] == ["Pending"]
    failed = ns.admin.wait_for("Job", "stuck", ns.name, condition, 30)
    assert condition(failed)["reason"] == "DeadlineExceeded"  # type: ignore[index]
    poll(lambda: not ns.pods("job-name=stuck"), 30, "the job's pod to be deleted")
