"""A whole local cluster: the control plane, node agents, and namespaces set up as an admin would.

:class:`LocalCluster` is what ``make cluster`` runs (``python -m devcluster``) and what
the tests start once per session. A namespace for the hub is prepared from ``hub_config/k8s/``
(labelled for restricted Pod Security, the hub's ServiceAccount bound to exactly those Roles),
and the hub gets a kubeconfig with that ServiceAccount's token, so Kubernetes itself enforces
what the product may do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devcluster.controlplane import ROOT, ControlPlane, binaries_dir, free_port, write_kubeconfig
from devcluster.image import NodeImage, node_image
from devcluster.rest import KubeClient, poll

Json = dict[str, Any]
HUB_K8S = ROOT / "hub_config" / "k8s"
MANIFESTS = ("namespace.yaml", "hub-role.yaml", "rbac.yaml", "limits.yaml", "networkpolicy.yaml")
A100 = "NVIDIA-A100-SXM4-80GB"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}

# DESIGN.md section 7: a CPU pool, a high-memory node and a GPU node with 4 GPUs.
DEFAULT_NODES: list[Json] = [
    {"name": "cpu-1", "cpu": "16", "memory": "64Gi"},
    {"name": "cpu-2", "cpu": "16", "memory": "64Gi"},
    {
        "name": "highmem-1",
        "cpu": "16",
        "memory": "512Gi",
        "labels": {"node.kubernetes.io/instance-type": "highmem"},
    },
    {
        "name": "gpu-1",
        "cpu": "32",
        "memory": "256Gi",
        "gpus": 4,
        "labels": {"nvidia.com/gpu.product": A100, "nvidia.com/gpu.count": "4"},
        "taints": [GPU_TAINT],
    },
]
# Every image is the local Python environment; jupyter images start the single-user server
# (their real ENTRYPOINT, tini, only passes the command through). Pulls take no time, but for the
# images tests use to see a pull under way (registry.test/slow/*, 8 s; registry.test/slowish/*, 2 s)
# and those that cannot be pulled at all (registry.test/missing/*: not found). First match wins.
DEFAULT_IMAGES: list[Json] = [
    {"match": "quay.io/jupyter/*", "cmd": ["jupyterhub-singleuser"]},
    {"match": "registry.test/slow/*", "pull_seconds": 8},
    {"match": "registry.test/slowish/*", "pull_seconds": 2},
    {"match": "registry.test/missing/*", "missing": True},
    {"match": "*"},
]


@dataclass
class NodeAgentProcess:
    """A node agent running as a child process, with its config file and log."""

    config_path: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        """Start the agent and wait (up to ``timeout`` seconds) for it to print ``READY``."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", "devcluster.agent", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=out,
                start_new_session=True,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line.strip() == b"READY" or not line:
                break
        if line.strip() != b"READY":
            self.process.kill()
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node agent did not start; log {self.log}:\n{tail}")

    def stop(self) -> None:
        """Terminate the agent, killing it if it takes longer than 30 seconds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._close()

    def kill(self) -> None:
        """SIGKILL: the node is lost (its pods die with it)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self._close()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The agent frozen (SIGSTOP) for the block, then let go: the scheduler still binds pods to its
        nodes, but none starts until the block ends. Pods already running go on. Keep the block well
        under the node monitor's grace period (about 40 s), or its nodes turn NotReady meanwhile."""
        assert self.process is not None and self.process.poll() is None, "the agent is not running"
        os.kill(self.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.process.pid, signal.SIGCONT)

    def _close(self) -> None:
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


@dataclass
class LocalCluster:
    """The control plane and the node agents of a local cluster, and the admin's client for it."""

    directory: Path
    nodes: list[Json] = field(default_factory=lambda: [dict(n) for n in DEFAULT_NODES])
    restart_backoff: tuple[float, float] = (10.0, 300.0)
    control_plane: ControlPlane | None = None
    image: NodeImage | None = None
    agents: list[NodeAgentProcess] = field(default_factory=list)
    _admin: KubeClient | None = None

    @property
    def admin_kubeconfig(self) -> Path:
        """The cluster admin's kubeconfig, copied out of the control plane's directory."""
        return self.directory / "admin.kubeconfig"

    @property
    def admin(self) -> KubeClient:
        """A Kubernetes client acting as the cluster admin, made on first use."""
        if self._admin is None:
            self._admin = KubeClient(self.admin_kubeconfig)
        return self._admin

    def start(self) -> LocalCluster:
        """Start the control plane, add the default ``local`` storage class and the first node agent."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o755)  # pods may run as other users and need to reach their directories
        self.image = node_image(self.directory)
        self.control_plane = ControlPlane(self.directory / "control-plane", binaries_dir()).start()
        self.admin_kubeconfig.write_text(self.control_plane.admin_kubeconfig.read_text())
        self.admin_kubeconfig.chmod(0o600)
        self._wait_for_default_namespaces()
        self.admin.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": "local",
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "jhub-ext.io/local-dir",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            }
        )
        self.start_agent(self.nodes, provisioner=True)
        return self

    def _wait_for_default_namespaces(self) -> None:
        def created() -> bool:
            names = {n["metadata"]["name"] for n in self.admin.list("Namespace")}
            return {"default", "kube-system", "kube-node-lease"} <= names

        poll(created, 60, "the API server to create its default namespaces")

    def start_agent(self, nodes: list[Json], provisioner: bool = False) -> NodeAgentProcess:
        """Another node agent for ``nodes`` (each agent has its own port and pod addresses)."""
        assert self.control_plane is not None and self.image is not None
        index = len(self.agents)
        pki = self.control_plane.pki
        state = self.directory / f"agent-{index}"
        config = {
            "kubeconfig": str(self.control_plane.kubeconfig("node-agent")),
            "state_dir": str(state),
            "pv_root": str(self.directory / "volumes"),
            "port": free_port(),
            "pod_ip_prefix": f"127.{10 + index}",
            "nodes": nodes,
            "images": DEFAULT_IMAGES,
            "image_root": str(self.image.prefix),
            "image_env": self.image.env(),
            "restart_backoff": list(self.restart_backoff),
            "provisioner": provisioner,
            "tls": {
                "cert": str(pki.cert("kubelet")),
                "key": str(pki.key("kubelet")),
                "client_ca": str(pki.ca_cert),
            },
        }
        config_path = self.directory / f"agent-{index}.json"
        config_path.write_text(json.dumps(config, indent=2))
        agent = NodeAgentProcess(config_path, self.directory / f"agent-{index}.log")
        agent.start()
        self.agents.append(agent)
        for node in nodes:
            self.admin.wait_for("Node", node["name"], None, _ready, timeout=60)
        return agent

    @contextlib.contextmanager
    def pods_held(self) -> Iterator[None]:
        """No pod starts on any node during the block (every agent :meth:`~NodeAgentProcess.paused`);
        the ones bound meanwhile start after it."""
        with contextlib.ExitStack() as stack:
            for agent in self.agents:
                stack.enter_context(agent.paused())
            yield

    def remove_agent(self, agent: NodeAgentProcess) -> None:
        """Stop an agent and remove its nodes from the cluster (a node pool scaled down)."""
        agent.stop()
        self.agents.remove(agent)
        config = json.loads(agent.config_path.read_text())
        for node in config["nodes"]:
            self.admin.delete("Node", node["name"])

    def prepare_namespace(self, namespace: str = "jhub", kubeconfig: Path | None = None) -> Path:
        """Create ``namespace`` from hub_config/k8s/ and write the hub's kubeconfig for it."""
        assert self.control_plane is not None
        for manifest in MANIFESTS:
            for obj in self.admin.documents(HUB_K8S / manifest, namespace):
                self.admin.apply(obj)
        for account in ("hub", "default"):  # the controller manager creates "default" shortly after
            self.admin.wait_for("ServiceAccount", account, namespace, lambda _: True)
        token = self.token("hub", namespace)
        path = kubeconfig or self.directory / f"hub-{namespace}.kubeconfig"
        return write_kubeconfig(
            path,
            self.control_plane.server,
            self.control_plane.pki.ca_cert,
            token=token,
            namespace=namespace,
            user=f"system:serviceaccount:{namespace}:hub",
        )

    def token(self, account: str, namespace: str, seconds: int = 7 * 24 * 3600) -> str:
        """A token for the service account ``account`` in ``namespace``, valid for ``seconds``."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds},
        }
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        return str(self.admin.request("POST", path, request)["status"]["token"])

    def delete_namespace(self, namespace: str, wait: bool = False, timeout: float = 300) -> None:
        """Delete a namespace (and with it its pods and jobs); with ``wait``, until it is gone."""
        self.admin.delete("Namespace", namespace)
        if wait:

            def gone() -> bool:
                return self.admin.find("Namespace", namespace) is None

            poll(gone, timeout, f"namespace {namespace} to finish terminating", interval=0.5)

    def stop(self) -> None:
        """Stop the node agents, then the control plane, and close the admin client."""
        for agent in reversed(self.agents):
            agent.stop()
        if self.control_plane is not None:
            self.control_plane.stop()
        if self._admin is not None:
            self._admin.close()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ready(node: Json) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
