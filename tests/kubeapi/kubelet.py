"""A simulated scheduler and kubelet: pods are placed on registered nodes and run as local processes.

Scheduling honours nodeSelector, required node affinity, NoSchedule/NoExecute taints and
tolerations, and allocatable resources (container requests, a lone limit counting as the
request) of the node's unfinished pods. A pod that fits nowhere stays Pending with an
Unschedulable condition and a FailedScheduling event, and is retried when nodes or pods change.

Each scheduled pod runs its first container's command as a local process in a process group
of its own, on a loopback address of its own (127.0.0.N, reported as the pod IP). A real
container has its own network namespace; ours do not, so the kubelet rewrites 0.0.0.0 in
``JUPYTERHUB_SERVICE_URL`` and ``--ip=`` to the pod IP. The process runs as the test's own
user; for ``jupyterhub-singleuser`` run as root, ``--allow-root`` is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jhub_ext.k8s.capacity import free_on_nodes, pod_requests

if TYPE_CHECKING:
    from .server import KubeEmulator

Json = dict[str, Any]
PODS = ("", "v1", "pods")
NODES = ("", "v1", "nodes")


def _tolerates(tolerations: list[Json], taint: Json) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _affinity_ok(pod: Json, labels: dict[str, str]) -> bool:
    required = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not required:
        return True
    for term in required.get("nodeSelectorTerms") or []:
        ok = True
        for e in term.get("matchExpressions") or []:
            key, op, values = e["key"], e["operator"], e.get("values") or []
            ok &= {
                "In": labels.get(key) in values,
                "NotIn": labels.get(key) not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels,
            }.get(op, False)
        if ok:
            return True
    return False


class Kubelet:
    def __init__(self, api: KubeEmulator):
        self.api = api
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.logs_dir = Path(tempfile.mkdtemp(prefix="kubelet-"))
        self.next_ip = 2
        self.commands: dict[str, list[str]] = {}  # image -> default command, for containers that name none
        api.listeners.append(self.on_change)

    def owns(self, pod: Json) -> bool:
        return True

    # --- scheduling -----------------------------------------------------------------------------------

    def on_change(self, gvp: tuple[str, str, str], kind: str, obj: Json) -> None:
        new_pod = gvp == PODS and kind == "ADDED" and not obj["spec"].get("nodeName")
        if new_pod or gvp == NODES or (gvp == PODS and kind == "DELETED"):
            asyncio.get_running_loop().call_soon(self.schedule_pending)

    def schedule_pending(self) -> None:
        for pod in list(self.api.objects[PODS].values()):
            if not pod["spec"].get("nodeName") and "deletionTimestamp" not in pod["metadata"]:
                self.schedule(pod)

    def schedule(self, pod: Json) -> None:
        nodes = list(self.api.objects[NODES].values())
        capacity = free_on_nodes(nodes, self.api.objects[PODS].values())
        wanted = pod_requests(pod)
        reasons: dict[str, int] = {}
        chosen = None
        for node in nodes:
            labels = node["metadata"].get("labels") or {}
            selector = pod["spec"].get("nodeSelector") or {}
            taints = [
                t for t in node["spec"].get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")
            ]
            if any(labels.get(k) != v for k, v in selector.items()) or not _affinity_ok(pod, labels):
                reasons["node(s) didn't match Pod's node affinity/selector"] = (
                    reasons.get("node(s) didn't match Pod's node affinity/selector", 0) + 1
                )
                continue
            untolerated = [t for t in taints if not _tolerates(pod["spec"].get("tolerations") or [], t)]
            if untolerated:
                taint = untolerated[0]
                text = f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
                reasons[text] = reasons.get(text, 0) + 1
                continue
            free = capacity[node["metadata"]["name"]][1]
            short = [r for r, amount in wanted.items() if free.get(r, 0.0) < amount]
            if short:
                text = f"Insufficient {short[0]}"
                reasons[text] = reasons.get(text, 0) + 1
                continue
            chosen = node
            break
        if chosen is None:
            message = (
                f"0/{len(nodes)} nodes are available: "
                + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
                + "."
            )
            conditions = pod["status"].get("conditions") or []
            if not any(c.get("message") == message for c in conditions):
                pod["status"]["conditions"] = [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                ]
                self.api.touch(PODS, pod)
                self.api.record_event(pod, "FailedScheduling", message)
            return
        pod["spec"]["nodeName"] = chosen["metadata"]["name"]
        pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        pod["status"]["hostIP"] = "127.0.0.1"
        self.api.touch(PODS, pod)
        self.api.record_event(
            pod,
            "Scheduled",
            f"Successfully assigned {pod['metadata']['namespace']}/{pod['metadata']['name']} "
            f"to {chosen['metadata']['name']}",
            "Normal",
        )
        asyncio.get_running_loop().create_task(self.run(pod))

    # --- running ----------------------------------------------------------------------------------------

    def _env(self, pod: Json, container: Json, ip: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("LANG", "HOME", "VIRTUAL_ENV", "PYTHONPATH")}
        # the "image" is this test environment: its executables come first
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif ref := (item.get("valueFrom") or {}).get("fieldRef"):
                path = ref.get("fieldPath")
                env[item["name"]] = {
                    "metadata.name": pod["metadata"]["name"],
                    "metadata.namespace": pod["metadata"]["namespace"],
                    "status.podIP": ip,
                }.get(path, "")
        if "JUPYTERHUB_SERVICE_URL" in env:
            env["JUPYTERHUB_SERVICE_URL"] = env["JUPYTERHUB_SERVICE_URL"].replace("0.0.0.0", ip)  # noqa: S104 - rewritten, not bound
        return env

    def _command(self, container: Json, ip: str) -> list[str]:
        command = [
            *(container.get("command") or self.commands.get(container["image"], [])),
            *(container.get("args") or []),
        ]
        command = [f"--ip={ip}" if part == "--ip=0.0.0.0" else part for part in command]
        if command and os.geteuid() == 0 and Path(command[0]).name in ("jupyterhub-singleuser", "jupyter"):
            command.append("--allow-root")
        return command

    @staticmethod
    async def _spawn(
        command: list[str], env: dict[str, str], workdir: Path, log_path: Path
    ) -> asyncio.subprocess.Process:
        """Start a container's process in its own process group, its output appended to the pod's log."""
        with log_path.open("ab") as log:
            return await asyncio.create_subprocess_exec(
                *command,
                env=env,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )

    async def run(self, pod: Json) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        ip = f"127.0.0.{self.next_ip}"
        self.next_ip += 1
        container = pod["spec"]["containers"][0]
        log_path = self.logs_dir / f"{meta['namespace']}_{meta['name']}.log"
        workdir = Path(tempfile.mkdtemp(prefix="pod-"))
        command = self._command(container, ip)
        started = False
        try:
            if not command:
                raise FileNotFoundError("no command")
            proc = await self._spawn(command, self._env(pod, container, ip), workdir, log_path)
            started = True
        except OSError as e:
            log_path.write_text(f"failed to start container: {e}\n")
        stored = self.api.objects[PODS].get((meta["namespace"], meta["name"]))
        if stored is None:
            return
        if not started:
            self._finish(stored, 128, "StartError")
            return
        self.processes[key] = proc
        stored["status"].update(
            phase="Running",
            podIP=ip,
            podIPs=[{"ip": ip}],
            startTime=stored["metadata"]["creationTimestamp"],
            conditions=[
                {"type": t, "status": "True"}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            containerStatuses=[self._container_status(container, True, {"running": {}})],
        )
        self.api.touch(PODS, stored)
        restarts = 0
        while True:
            code = await proc.wait()
            code = 128 - code if code < 0 else code
            stored = self.api.objects[PODS].get((meta["namespace"], meta["name"]))
            if stored is None or "deletionTimestamp" in stored["metadata"]:
                break
            policy = stored["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self._finish(stored, code, "Completed" if code == 0 else "Error")
                break
            # restart the container in place, with the kubelet's (shortened) backoff
            restarts += 1
            status = stored["status"]["containerStatuses"][0]
            status.update(
                restartCount=restarts,
                ready=False,
                lastState={"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}},
                state={"waiting": {"reason": "CrashLoopBackOff"}},
            )
            self.api.touch(PODS, stored)
            await asyncio.sleep(min(0.2 * 2 ** (restarts - 1), 2.0))
            proc = await self._spawn(command, self._env(stored, container, ip), workdir, log_path)
            self.processes[key] = proc
            status.update(ready=True, state={"running": {}})
            self.api.touch(PODS, stored)
        self.processes.pop(key, None)
        shutil.rmtree(workdir, ignore_errors=True)

    @staticmethod
    def _container_status(container: Json, ready: bool, state: Json) -> Json:
        return {
            "name": container["name"],
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "image": container["image"],
            "imageID": f"emulator://{container['image']}",
            "containerID": f"emulator://{container['name']}",
            "state": state,
        }

    def _finish(self, pod: Json, code: int, reason: str) -> None:
        pod["status"]["phase"] = "Succeeded" if code == 0 else "Failed"
        container = pod["spec"]["containers"][0]
        state = {"terminated": {"exitCode": code, "reason": reason}}
        pod["status"]["containerStatuses"] = [self._container_status(container, False, state)]
        pod["status"]["conditions"] = [
            c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"
        ]
        self.api.touch(PODS, pod)

    async def terminate(self, pod: Json) -> None:
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        proc = self.processes.get(key)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 3)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if (meta["namespace"], meta["name"]) in self.api.objects[PODS]:
            self.api.remove(PODS, meta["namespace"], meta["name"])

    async def logs(self, pod: Json, follow: bool, tail: int | None) -> AsyncIterator[str]:
        meta = pod["metadata"]
        path = self.logs_dir / f"{meta['namespace']}_{meta['name']}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        position = len(text.encode())
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail else ""
        yield text
        while follow:
            current = self.api.objects[PODS].get((meta["namespace"], meta["name"]))
            if path.exists():
                with path.open("rb") as f:
                    f.seek(position)
                    chunk = f.read()
                position += len(chunk)
                if chunk:
                    yield chunk.decode(errors="replace")
                    continue
            if current is None or current["status"]["phase"] in ("Succeeded", "Failed"):
                return
            await asyncio.sleep(0.1)

    async def shutdown(self) -> None:
        for proc in list(self.processes.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        self.processes.clear()
        shutil.rmtree(self.logs_dir, ignore_errors=True)
