"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes on 127.0.0.1.

The binaries come from ``scripts/build-control-plane.sh`` (built from their Go modules, cached
outside the repository). Everything the processes need (certificates, kubeconfigs, etcd's data,
logs) lives under one directory. RBAC (``--authorization-mode=Node,RBAC``) and admission
(PodSecurity, NamespaceLifecycle, LimitRanger, ResourceQuota, ServiceAccount...) are the API
server's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from devcluster.pki import Pki, ensure_pki

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-control-plane.sh"
HELM_BUILD_SCRIPT = ROOT / "scripts" / "build-helm.sh"
ADMISSION = "NamespaceLifecycle,LimitRanger,ServiceAccount,PodSecurity,ResourceQuota,NodeRestriction"
SERVICE_CIDR = "10.96.0.0/16"
#: A lost node is noticed after this long without a Lease renewal (agents renew every 10 s; the
#: upstream default is 50 s), and its pods are evicted NODE_LOSS_TOLERATION seconds later (the
#: upstream default is 300 s): a lost node shows within a test's minute, an API server paused for
#: half a minute does not make every node look lost.
NODE_MONITOR_GRACE = "40s"
NODE_LOSS_TOLERATION = 20


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free just now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def binaries_dir(build: bool = True) -> Path:
    """The directory of the pinned binaries; builds them first (minutes, once) unless ``build`` is false.

    ``$JHUB_EXT_CONTROL_PLANE_BIN`` names a directory of ready binaries instead.
    """
    if override := os.environ.get("JHUB_EXT_CONTROL_PLANE_BIN"):
        return Path(override)
    return _built_dir(BUILD_SCRIPT, build)


def kubectl_path(build: bool = True) -> Path:
    """The pinned ``kubectl``, built with the control plane (see :func:`binaries_dir`)."""
    return binaries_dir(build) / "kubectl"


def helm_path(build: bool = True) -> Path:
    """The pinned ``helm`` (scripts/build-helm.sh), built first if ``build`` (minutes, once)."""
    return _built_dir(HELM_BUILD_SCRIPT, build) / "helm"


def _built_dir(script: Path, build: bool) -> Path:
    """The directory a build script prints last on stdout; with ``--dir`` unless ``build``."""
    argument = [] if build else ["--dir"]
    result = subprocess.run(["bash", str(script), *argument], check=True, stdout=subprocess.PIPE, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def write_kubeconfig(
    path: Path,
    server: str,
    ca: Path,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str = "default",
    user: str = "user",
) -> Path:
    """A kubeconfig with one context; certificate paths are absolute."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials["token"] = token
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}
                ],
                "users": [{"name": user, "user": credentials}],
                "contexts": [
                    {"name": user, "context": {"cluster": "local", "user": user, "namespace": namespace}}
                ],
                "current-context": user,
            }
        )
    )
    path.chmod(0o600)
    return path


@dataclass
class Component:
    """One control-plane process: its command line, its log file, and the process once started."""

    name: str
    command: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start the process in its own session, appending its output to its log."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def check(self) -> None:
        """Raise, with the end of its log, if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"{self.name} exited with code {self.process.returncode}; log {self.log}:\n{tail}"
            )

    def stop(self, grace: float = 10) -> None:
        """Terminate the process group (resuming it first if paused), killing it after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def signal(self, signum: int) -> None:
        """Send a signal (SIGSTOP/SIGCONT to pause and resume, in fault tests)."""
        assert self.process is not None
        os.killpg(self.process.pid, signum)


@dataclass
class ControlPlane:
    """A started control plane. ``admin_kubeconfig`` is the cluster admin's."""

    directory: Path
    binaries: Path
    fast_etcd: bool = True  # skip fsync: tests and demos, not data that matters
    components: dict[str, Component] = field(default_factory=dict)
    api_port: int = 0
    server: str = ""

    @property
    def pki(self) -> Pki:
        """The cluster's certificates and keys."""
        return Pki(self.directory / "pki")

    @property
    def admin_kubeconfig(self) -> Path:
        """The kubeconfig of the cluster admin."""
        return self.directory / "admin.kubeconfig"

    def kubeconfig(self, stem: str) -> Path:
        """Where the kubeconfig of the client ``stem`` (``admin``, ``scheduler``, ...) is written."""
        return self.directory / f"{stem}.kubeconfig"

    # --- life cycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> ControlPlane:
        """Start etcd, kube-apiserver, kube-controller-manager and kube-scheduler on free ports.

        Certificates are made once and reused while valid; a kubeconfig is written for each client.
        Waits until etcd and the API server are ready (up to ``timeout`` seconds each) and returns
        the started control plane.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        pki = ensure_pki(self.directory / "pki")
        logs = self.directory / "logs"
        etcd_port, peer_port = free_port(), free_port()
        self.api_port = free_port()
        self.server = f"https://127.0.0.1:{self.api_port}"
        for stem in ("admin", "controller-manager", "scheduler", "node-agent"):
            write_kubeconfig(
                self.kubeconfig(stem),
                self.server,
                pki.ca_cert,
                cert=pki.cert(stem),
                key=pki.key(stem),
                user=stem,
            )
        bin_ = self.binaries
        etcd_url = f"https://127.0.0.1:{etcd_port}"
        self.components["etcd"] = Component(
            "etcd",
            [
                str(bin_ / "etcd"),
                "--name=local",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=local=http://127.0.0.1:{peer_port}",
                f"--cert-file={pki.cert('etcd')}",
                f"--key-file={pki.key('etcd')}",
                f"--trusted-ca-file={pki.ca_cert}",
                "--client-cert-auth",
                "--listen-metrics-urls=",
                "--log-level=warn",
                *(["--unsafe-no-fsync"] if self.fast_etcd else []),
            ],
            logs / "etcd.log",
        )
        self.components["etcd"].start()
        self._wait_ready(
            "etcd",
            f"{etcd_url}/health",
            pki.cert("etcd-client"),
            pki.key("etcd-client"),
            timeout=timeout,
            ok=b'"true"',
        )
        self.components["kube-apiserver"] = Component(
            "kube-apiserver",
            [
                str(bin_ / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--etcd-cafile={pki.ca_cert}",
                f"--etcd-certfile={pki.cert('etcd-client')}",
                f"--etcd-keyfile={pki.key('etcd-client')}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.api_port}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--client-ca-file={pki.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={ADMISSION}",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--allow-privileged=false",
                "--profiling=false",
                "--endpoint-reconciler-type=none",
                f"--default-not-ready-toleration-seconds={NODE_LOSS_TOLERATION}",
                f"--default-unreachable-toleration-seconds={NODE_LOSS_TOLERATION}",
                f"--audit-policy-file={self._audit_policy()}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-maxsize=200",
                "--v=1",
            ],
            logs / "kube-apiserver.log",
        )
        self.components["kube-apiserver"].start()
        self._wait_ready(
            "kube-apiserver",
            f"{self.server}/readyz",
            pki.cert("admin"),
            pki.key("admin"),
            timeout=timeout,
            ok=b"ok",
        )
        controller_flags = [
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--controllers=*",
            f"--node-monitor-grace-period={NODE_MONITOR_GRACE}",
        ]
        for name, stem, own_flags in (
            ("kube-controller-manager", "controller-manager", controller_flags),
            ("kube-scheduler", "scheduler", []),
        ):
            kubeconfig = self.kubeconfig(stem)
            self.components[name] = Component(
                name,
                [
                    str(bin_ / name),
                    # a client of the API server, authenticating the callers of its own endpoint by it
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                    "--profiling=false",
                    "--v=1",
                    *own_flags,
                ],
                logs / f"{name}.log",
            )
        self.components["kube-controller-manager"].start()
        self.components["kube-scheduler"].start()
        return self

    @property
    def audit_log(self) -> Path:
        """One JSON line per request, two for a long-running one (a watch or a log read: when it
        starts and when it ends), saying who, verb, resource and namespace: tests read what was asked."""
        return self.directory / "logs" / "audit.log"

    def _audit_policy(self) -> Path:
        path = self.directory / "audit-policy.yaml"
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],  # watches are logged when they start
            # the components' own traffic is noise; everyone else's requests are kept, without bodies
            "rules": [
                {
                    "level": "None",
                    "users": [
                        "system:kube-scheduler",
                        "system:kube-controller-manager",
                        "system:apiserver",
                        "jhub-ext-node-agent",
                    ],
                },
                {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
                {"level": "None", "nonResourceURLs": ["/healthz*", "/readyz*", "/livez*", "/version"]},
                {"level": "Metadata"},
            ],
        }
        path.write_text(yaml.safe_dump(policy))
        return path

    def _wait_ready(self, name: str, url: str, cert: Path, key: Path, *, timeout: float, ok: bytes) -> None:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(cert), str(key))
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.components[name].check()
            try:
                with urllib.request.urlopen(url, context=context, timeout=5) as response:  # noqa: S310
                    body = response.read()
                    if ok in body:
                        return
                    last = body.decode(errors="replace")
            except (urllib.error.URLError, OSError) as e:
                last = str(e)
            time.sleep(0.3)
        raise TimeoutError(f"{name} not ready after {timeout} s ({last}); log: {self.components[name].log}")

    def restart_apiserver(self, timeout: float = 60) -> None:
        """Stop kube-apiserver and start it again on the same port: every watch breaks."""
        component = self.components["kube-apiserver"]
        component.stop()
        component.start()
        pki = self.pki
        self._wait_ready(
            "kube-apiserver",
            f"{self.server}/readyz",
            pki.cert("admin"),
            pki.key("admin"),
            timeout=timeout,
            ok=b"ok",
        )

    def check(self) -> None:
        """Raise if a component has exited."""
        for component in self.components.values():
            component.check()

    def stop(self) -> None:
        """Stop the components in the reverse order of starting them."""
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            if name in self.components:
                self.components[name].stop()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
