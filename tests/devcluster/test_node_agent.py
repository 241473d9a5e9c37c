"""The node agent, the one stand-in of the local cluster: pods run as a kubelet would run them.

Pods are created as an admin would create them; the real API server, scheduler and controllers do
the rest, and the agent runs what is bound to its nodes.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from devcluster.rest import KubeError

from ..kube import Namespace

pytestmark = pytest.mark.integration
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "runAsGroup": 100,
    "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "example.org/python:3",
        "command": ["python", "-c", code],
        "resources": {"limits": {"cpu": "1", "memory": extra.pop("memory", "256Mi")}},
        "securityContext": RESTRICTED_CONTAINER,
        **extra,
    }


def pod(ns: Namespace, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns.name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": RESTRICTED_POD,
            "containers": containers,
            **spec,
        },
    }
    return ns.admin.create(manifest)


def finished(ns: Namespace, name: str, timeout: float = 60) -> dict[str, Any]:
    return ns.admin.wait_for(
        "Pod", name, ns.name, lambda p: p["status"].get("phase") in ("Succeeded", "Failed"), timeout
    )


def terminated(pod_: dict[str, Any], name: str) -> dict[str, Any]:
    statuses = pod_["status"].get("initContainerStatuses", []) + pod_["status"]["containerStatuses"]
    return next(s for s in statuses if s["name"] == name)["state"]["terminated"]  # type: ignore[no-any-return]


def test_init_containers_volumes_env_and_working_dir(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    ns.admin.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "code", "namespace": ns.name},
            "data": {"main.py": "print('from the configmap')", "GREETING": "hello"},
        }
    )
    volumes = [
        {"name": "code", "configMap": {"name": "code", "items": [{"key": "main.py", "path": "src/main.py"}]}},
        {"name": "work", "emptyDir": {}},
    ]
    copy = container(
        "copy",
        "import shutil; shutil.copytree('/code/src', '/work/app')",
        volumeMounts=[{"name": "code", "mountPath": "/code"}, {"name": "work", "mountPath": "/work"}],
    )
    main = container(
        "main",
        "import os, runpy; runpy.run_path('main.py');"
        " print(os.getcwd().endswith('app'), os.environ['GREETING'], os.environ['POD'], os.environ['SAY'],"
        " os.getuid(), os.getgid())",
        workingDir="/work/app",
        volumeMounts=[{"name": "work", "mountPath": "/work"}],
        envFrom=[{"configMapRef": {"name": "code"}}],
        env=[
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "SAY", "value": "$(GREETING) world"},
        ],
    )
    pod(ns, "layered", [main], initContainers=[copy], volumes=volumes)
    done = finished(ns, "layered")
    assert done["status"]["phase"] == "Succeeded", ns.admin.pod_log("layered", ns.name, "main")
    expected_ids = "1000 100" if os.geteuid() == 0 else f"{os.getuid()} {os.getgid()}"
    assert ns.admin.pod_log("layered", ns.name, "main") == (
        f"from the configmap\nTrue hello layered hello world {expected_ids}\n"
    )
    assert terminated(done, "copy")["exitCode"] == 0


def test_a_failing_init_container_fails_a_never_restarting_pod(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    pod(
        ns,
        "broken-init",
        [container("main", "print('never')")],
        initContainers=[container("init", "exit(4)")],
    )
    done = finished(ns, "broken-init")
    assert done["status"]["phase"] == "Failed" and terminated(done, "init")["exitCode"] == 4
    assert "running" not in done["status"]["containerStatuses"][0]["state"]


def test_restart_policy_backoff_and_previous_logs(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    code = "import os, time; print('run', flush=True); time.sleep(0.2); exit(2)"
    pod(ns, "crashy", [container("main", code)], restartPolicy="Always")
    crashing = ns.admin.wait_for(
        "Pod",
        "crashy",
        ns.name,
        lambda p: (p["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0) >= 2,
        60,
    )
    status = crashing["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 2
    assert ns.admin.pod_log("crashy", ns.name, "main", previous="true") == "run\n"


def test_memory_over_the_limit_is_an_oom_kill(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    hog = "import time; blob = b'x' * (300 * 2**20); time.sleep(30)"
    pod(ns, "hog", [container("main", hog, memory="100Mi")])
    done = finished(ns, "hog")
    assert terminated(done, "main")["reason"] == "OOMKilled" and terminated(done, "main")["exitCode"] == 137


def test_deletion_sends_sigterm_and_waits_the_grace_period(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n    print('got SIGTERM', flush=True); time.sleep(0.5); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\ntime.sleep(120)\n"
    )
    pod(ns, "polite", [container("main", code)], terminationGracePeriodSeconds=10)
    ns.admin.wait_for("Pod", "polite", ns.name, lambda p: p["status"].get("phase") == "Running")
    time.sleep(0.5)
    ns.admin.delete("Pod", "polite", ns.name)
    started = time.monotonic()
    while ns.admin.find("Pod", "polite", ns.name) is not None:
        assert time.monotonic() - started < 15, "the pod outlived its grace period"
        time.sleep(0.1)
    assert time.monotonic() - started >= 0.4  # it had its half second to say goodbye


def test_a_pod_deleted_while_its_volume_is_missing_still_leaves(kube_namespace: Namespace) -> None:
    """A job deleted right after its submit: its pod waits for a ConfigMap that is gone already."""
    ns = kube_namespace
    volume = {"name": "code", "configMap": {"name": "never-made"}}
    mount = {"name": "code", "mountPath": "/code"}
    pod(ns, "stranded", [container("main", "print('never')", volumeMounts=[mount])], volumes=[volume])

    def mounting(p: dict[str, Any]) -> bool:
        statuses = p["status"].get("containerStatuses", [])
        waiting = [(s.get("state") or {}).get("waiting") or {} for s in statuses]
        return any("MountVolume" in (w.get("message") or "") for w in waiting)

    ns.admin.wait_for("Pod", "stranded", ns.name, mounting)
    ns.admin.delete("Pod", "stranded", ns.name)
    started = time.monotonic()
    while ns.admin.find("Pod", "stranded", ns.name) is not None:
        assert time.monotonic() - started < 15, "the pod was never let go of"
        time.sleep(0.1)


def test_logs_tail_timestamps_and_a_waiting_container(kube_namespace: Namespace) -> None:
    ns = kube_namespace
    pod(ns, "talker", [container("main", "for i in range(5): print('line', i)")])
    finished(ns, "talker")
    assert ns.admin.pod_log("talker", ns.name, "main", tailLines="2") == "line 3\nline 4\n"
    stamped = ns.admin.pod_log("talker", ns.name, "main", timestamps="true").splitlines()
    assert len(stamped) == 5 and all(line.split(" ", 1)[0].endswith("Z") for line in stamped)
    with pytest.raises(KubeError) as error:
        ns.admin.pod_log("talker", ns.name, "main", previous="true")
    assert error.value.status == 400 and "previous terminated container" in error.value.message


def test_pods_are_scheduled_by_the_real_scheduler(kube_namespace: Namespace) -> None:
    """GPU requests land on the GPU node only with the toleration; too much fits nowhere."""
    ns = kube_namespace
    gpu = container("main", "print('gpu')")
    gpu["resources"] = {"limits": {"cpu": "1", "memory": "256Mi", "nvidia.com/gpu": "1"}}
    pod(ns, "untolerated", [gpu])
    pod(
        ns,
        "tolerated",
        [gpu],
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    assert finished(ns, "tolerated")["spec"]["nodeName"] == "gpu-1"
    waiting = ns.admin.wait_for(
        "Pod",
        "untolerated",
        ns.name,
        lambda p: any(c.get("reason") == "Unschedulable" for c in p["status"].get("conditions", [])),
    )
    message = next(c["message"] for c in waiting["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "untolerated taint" in message and "Insufficient nvidia.com/gpu" in message
