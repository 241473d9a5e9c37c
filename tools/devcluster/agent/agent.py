"""The node agent: stands in for the kubelets of one or more nodes (no container runtime exists here).

It registers its nodes (capacity, GPUs as ``nvidia.com/gpu``, labels, taints), keeps them Ready by
renewing their Leases in ``kube-node-lease`` and their status, runs the pods the scheduler binds
to them as local processes (:mod:`.pods`), keeps the images each node has pulled (:mod:`.images`),
serves their logs on the nodes' kubelet port (:mod:`.logs`), and provisions PersistentVolumes for
claims of the ``local`` StorageClass as directories. Run it as ``python -m devcluster.agent CONFIG.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import json
import logging
import os
import shutil
import signal
import ssl
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from devcluster.agent.api import Api, ApiError
from devcluster.agent.images import ImageStore
from devcluster.agent.logs import LogServer
from devcluster.agent.podfiles import reachable_by_others
from devcluster.agent.pods import PodWorker
from devcluster.agent.runtime import now_rfc3339, python_environment

Json = dict[str, Any]
log = logging.getLogger("jhub_ext.nodeagent")
KUBERNETES_VERSION = "v1.37.2"
PROVISIONER = "jhub-ext.io/local-dir"


@dataclass(frozen=True)
class Image:
    """What an image brings, as Docker's ENTRYPOINT, CMD and ENV, and how pulling it goes: it takes
    ``pull_seconds``, or fails as an image the registry does not have (``missing``)."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    pull_seconds: float = 0.0
    missing: bool = False

    def command(self, container: Json) -> list[str]:
        """Kubernetes' rule: ``command`` replaces the entrypoint, ``args`` the image's CMD."""
        if container.get("command"):
            return [*container["command"], *(container.get("args") or [])]
        return [*self.entrypoint, *(container.get("args") or self.cmd)]


@dataclass
class NodeSpec:
    """One node the agent stands in for: its capacity, GPUs, labels and taints, from the config."""

    name: str
    cpu: str = "8"
    memory: str = "32Gi"
    gpus: int = 0
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[Json] = field(default_factory=list)
    unschedulable: bool = False  # cordoned from the start


class NodeAgent:
    """The kubelet of every configured node: registers them, keeps them Ready and runs their pods.

    Optionally also provisions and reclaims local persistent volumes.
    """

    def __init__(self, config: Json):
        self.config = config
        self.api = Api(Path(config["kubeconfig"]))
        self.state_dir = Path(config["state_dir"])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        self.pv_root = Path(config.get("pv_root") or self.state_dir / "volumes")
        self.port = int(config["port"])
        self.nodes = [NodeSpec(**n) for n in config["nodes"]]
        self.node_names = {n.name for n in self.nodes}
        initial, ceiling = config.get("restart_backoff", (10.0, 300.0))
        self.restart_backoff = (float(initial), float(ceiling))
        self.provisioner = bool(config.get("provisioner", False))
        self.workers: dict[str, PodWorker] = {}
        self.images = ImageStore(self.state_dir / "images.json")  # what each node has pulled
        self.is_root = os.geteuid() == 0
        self.image_root = Path(config.get("image_root") or python_environment())
        # Running as the pod's user needs the environment and our directories reachable by it.
        self.switch_users = self.is_root and all(
            reachable_by_others(p) for p in (self.image_root / "bin" / "python", self.state_dir)
        )
        if self.is_root and not self.switch_users:
            log.warning(
                "containers run as root: %s or %s is not reachable by other users",
                self.image_root,
                self.state_dir,
            )
        self.base_env = {
            "PATH": f"{self.image_root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            **(config.get("image_env") or {}),
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": self.api.server.rsplit(":", 1)[1],
        }
        prefix = config.get("pod_ip_prefix", "127.1")
        self._ips = (f"{prefix}.{i // 256}.{i % 256}" for i in itertools.count(2) if i % 256 not in (0, 255))
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopped = asyncio.Event()

    # --- configuration ----------------------------------------------------------------------------------

    def image(self, name: str) -> Image:
        """What an image means here: its entrypoint, command, env and pull, from the config's ``images``
        (the first entry whose ``match`` pattern fits the name)."""
        for entry in self.config.get("images") or []:
            if fnmatch.fnmatchcase(name, entry.get("match", "*")):
                return Image(
                    list(entry.get("entrypoint") or []),
                    list(entry.get("cmd") or []),
                    dict(entry.get("env") or {}),
                    float(entry.get("pull_seconds") or 0),
                    bool(entry.get("missing", False)),
                )
        return Image([], [], {})

    # --- nodes -----------------------------------------------------------------------------------------

    def _node_status(self, node: NodeSpec) -> Json:
        resources = {
            "cpu": node.cpu,
            "memory": node.memory,
            "pods": str(node.pods),
            "ephemeral-storage": "100Gi",
        }
        if node.gpus:
            resources["nvidia.com/gpu"] = str(node.gpus)
        stamp = now_rfc3339()

        def condition(kind: str, status: str, reason: str, message: str) -> Json:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": stamp,
                "lastTransitionTime": stamp,
            }

        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition(
                    "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"
                ),
                condition(
                    "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
                ),
                condition(
                    "PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"
                ),
                condition("Ready", "True", "KubeletReady", "jhub_ext node agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "machineID": node.name,
                "systemUUID": node.name,
                "bootID": str(os.getpid()),
                "kernelVersion": os.uname().release,
                "osImage": "jhub_ext node agent (local processes)",
                "containerRuntimeVersion": "local://1",
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": KUBERNETES_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def register(self, node: NodeSpec) -> None:
        """Create the Node object (an existing one keeps its spec) and post its status."""
        labels = {
            "kubernetes.io/hostname": node.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **node.labels,
        }
        manifest = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": labels},
            "spec": {
                **({"taints": node.taints} if node.taints else {}),
                **({"unschedulable": True} if node.unschedulable else {}),
            },
        }
        try:
            await self.api.request("POST", "/api/v1/nodes", manifest)
        except ApiError as e:
            if e.status != 409:  # a node that exists keeps its spec (an admin may have cordoned it)
                raise
        await self.api.merge_patch(f"/api/v1/nodes/{node.name}/status", {"status": self._node_status(node)})

    async def heartbeat(self, node: NodeSpec) -> None:
        """Renew the node's Lease every 10 s and its Ready status every minute, as a kubelet does."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node.name}"
        beats = 0
        while True:
            try:
                renew = {
                    "spec": {
                        "holderIdentity": node.name,
                        "renewTime": now_rfc3339(precise=True),
                        "leaseDurationSeconds": 40,
                    }
                }
                try:
                    await self.api.merge_patch(path, renew)
                except ApiError as e:
                    if e.status != 404:
                        raise
                    lease = {
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": node.name, "namespace": "kube-node-lease"},
                        **renew,
                    }
                    await self.api.request("POST", path.rsplit("/", 1)[0], lease)
                if beats % 6 == 5:
                    await self.api.merge_patch(
                        f"/api/v1/nodes/{node.name}/status", {"status": self._node_status(node)}
                    )
                beats += 1
            except Exception as e:
                log.warning("node %s: heartbeat failed: %s", node.name, e)
            await asyncio.sleep(10)

    # --- pods ------------------------------------------------------------------------------------------

    async def follow_pods(self) -> None:
        """Watch the pods bound to our nodes and hand each to its :class:`PodWorker`, starting one as needed.

        A pod that disappears, or is replaced by one of a new uid, has its worker told it is gone.
        """
        async for kind, pod in self.api.watch("/api/v1/pods", {"fieldSelector": "spec.nodeName!="}):
            if kind == "SYNCED":
                present = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pod["items"]}
                for key, known in list(self.workers.items()):
                    if key not in present:
                        known.gone()
                continue
            if pod["spec"].get("nodeName") not in self.node_names:
                continue
            meta = pod["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            worker: PodWorker | None = self.workers.get(key)
            if worker is not None and worker.uid != meta["uid"]:
                worker.gone()
                worker = None
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                continue
            if worker is None:
                phase = (pod.get("status") or {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    continue  # finished before this agent started: nothing to run
                if meta.get("deletionTimestamp"):
                    await self.remove_pod(meta["namespace"], meta["name"], meta["uid"])
                    continue
                worker = PodWorker(self, pod, next(self._ips))
                self.workers[key] = worker
            worker.update(pod)

    async def remove_pod(self, namespace: str, name: str, uid: str) -> None:
        """The kubelet's last word on a pod it has stopped: delete it now, if it is still that pod."""
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid},
        }
        with contextlib.suppress(ApiError):
            await self.api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    def forget(self, worker: PodWorker) -> None:
        """Drop a finished worker and clean up the files it set up for its pod."""
        if self.workers.get(worker.key) is worker:
            del self.workers[worker.key]
        worker.files.cleanup()

    async def event(
        self, pod: Json, reason: str, message: str, kind: str = "Normal", field_path: str | None = None
    ) -> None:
        """Post a Kubernetes Event about ``pod`` as its kubelet would; failing to post is ignored.

        ``field_path`` names the container it is about, as the kubelet's container events do
        (``spec.containers{main}``, ``spec.initContainers{setup}``).
        """
        meta = pod["metadata"]
        stamp = now_rfc3339()
        involved = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
        }
        if field_path:
            involved["fieldPath"] = field_path
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        with contextlib.suppress(Exception):
            await self.api.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)

    # --- volumes ---------------------------------------------------------------------------------------

    async def provision(self) -> None:
        """PersistentVolumes for claims of our StorageClass, as directories; deleted when released."""
        self.pv_root.mkdir(parents=True, exist_ok=True)
        self.pv_root.chmod(0o755)
        async for kind, pvc in self.api.watch("/api/v1/persistentvolumeclaims", {}):
            if kind in ("SYNCED", "DELETED") or (pvc.get("status") or {}).get("phase") != "Pending":
                continue
            spec = pvc["spec"]
            annotations = pvc["metadata"].get("annotations") or {}
            if (
                spec.get("volumeName")
                or annotations.get("volume.kubernetes.io/storage-provisioner") != PROVISIONER
            ):
                continue
            name = f"pvc-{pvc['metadata']['uid']}"
            directory = self.pv_root / name
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName") or "",
                    "hostPath": {"path": str(directory), "type": "Directory"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": pvc["metadata"]["namespace"],
                        "name": pvc["metadata"]["name"],
                        "uid": pvc["metadata"]["uid"],
                    },
                },
            }
            try:
                await self.api.request("POST", "/api/v1/persistentvolumes", pv)
            except ApiError as e:
                if e.status != 409:
                    log.warning("provisioning %s failed: %s", name, e)

    async def reclaim(self) -> None:
        """Delete persistent volumes we provisioned once they are Released, and their directories."""
        async for kind, pv in self.api.watch("/api/v1/persistentvolumes", {}):
            if kind in ("SYNCED", "DELETED"):
                continue
            annotations = pv["metadata"].get("annotations") or {}
            if annotations.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                continue
            if (pv.get("status") or {}).get("phase") == "Released":
                with contextlib.suppress(ApiError):
                    await self.api.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                shutil.rmtree(self.pv_root / pv["metadata"]["name"], ignore_errors=True)

    # --- life cycle ------------------------------------------------------------------------------------

    def _tls(self) -> ssl.SSLContext:
        tls = self.config["tls"]
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tls["client_ca"])
        context.load_cert_chain(tls["cert"], tls["key"])
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    async def run(self) -> None:
        """Serve logs, register and heartbeat the nodes, run pods (and volumes), until :meth:`stop`.

        Prints ``READY`` once the nodes are registered; on stopping, kills every container it runs.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        runner = web.AppRunner(LogServer(self).app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._tls()).start()
        for node in self.nodes:
            await self.register(node)
        self._tasks = [asyncio.create_task(self.heartbeat(n)) for n in self.nodes]
        self._tasks.append(asyncio.create_task(self.follow_pods()))
        if self.provisioner:
            self._tasks += [asyncio.create_task(self.provision()), asyncio.create_task(self.reclaim())]
        log.info("node agent ready: %s on port %d", ", ".join(sorted(self.node_names)), self.port)
        print("READY", flush=True)
        await self._stopped.wait()
        for task in self._tasks:
            task.cancel()
        for worker in list(self.workers.values()):
            await worker._kill_all(0)
        await runner.cleanup()
        await self.api.close()

    def stop(self) -> None:
        """Ask :meth:`run` to shut the agent down."""
        self._stopped.set()


def main(argv: list[str] | None = None) -> None:
    """Run the node agent with the JSON config named on the command line, until SIGTERM or SIGINT."""
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        sys.exit("usage: python -m devcluster.agent CONFIG.json")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = NodeAgent(json.loads(Path(args[0]).read_text()))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, agent.stop)
        await agent.run()

    asyncio.run(run())
