"""Kueue, the Kubernetes batch queue, run against a local cluster: for the tests of clusters that run it.

The binary and its CustomResourceDefinitions come from ``scripts/build-kueue.sh`` (built from the
``sigs.k8s.io/kueue`` Go module, cached outside the repository); its admission webhooks are the
module's own (``config/components/webhook/manifests.yaml``), read from the Go module cache, each
pointed at the local process instead of an in-cluster Service. :meth:`Kueue.start` installs the
CRDs, starts the controller manager on loopback and registers the webhooks; :meth:`Kueue.stop`
removes the webhooks again before it stops the process. Kueue's pod webhook sees every pod created in
the cluster (and refuses them all while it does not answer): give Kueue a cluster of its own.

Kueue reads its metrics certificate from ``/etc/kueue/metrics/certs`` whenever it does not manage its
certificates itself, a path no flag or configuration field moves (``cmd/kueue/main.go``). Nothing is
written into /etc for it: the process runs in a mount namespace of its own, in which a read-only
overlay adds ``kueue/metrics/certs`` to the host's /etc (``unshare``; with ``--map-root-user`` when not
root). Its webhooks serve a certificate for 127.0.0.1 that the cluster's CA signs.

Only the frameworks the product uses are enabled: ``batch/job`` (batch and scheduled jobs), ``pod``
(servers) and ``deployment`` (scrapers); only workloads labelled ``kueue.x-k8s.io/queue-name`` are
managed (``manageJobsWithoutQueueName: false``).
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.cluster import LocalCluster
from devcluster.controlplane import ROOT, Component, free_port
from devcluster.rest import KubeClient, KubeError, poll

Json = dict[str, Any]
KUEUE_VERSION = "v0.17.0"  # scripts/build-kueue.sh builds this one
BUILD_SCRIPT = ROOT / "scripts" / "build-kueue.sh"
NAMESPACE = "kueue-system"
#: the label that puts a workload in a LocalQueue of its namespace
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
API = "/apis/kueue.x-k8s.io/v1beta2"
#: the frameworks the product's workloads need: Jobs (and a CronJob's), server pods, scrapers' Deployments
FRAMEWORKS = ("batch/job", "pod", "deployment")
#: (API group, resource) of what the kept webhooks see: Kueue's own kinds, and those of FRAMEWORKS
_WATCHED = {("batch", "jobs"), ("", "pods"), ("apps", "deployments")}
#: the webhooks of pods and Deployments leave Kueue's and the system's namespaces alone, as the
#: module's kustomization (config/components/webhook/kustomization.yaml) makes them
_SYSTEM_NAMESPACES = {
    "matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}
    ]
}
_WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}
_WEBHOOK_API = "/apis/admissionregistration.k8s.io/v1"
_CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
_FIELD_MANAGER = "jhub-ext-devcluster"


class KueueUnavailable(RuntimeError):
    """Kueue cannot run here (not built, or its Go module not in the cache): the reason, and the fix."""


def kueue_dir(build: bool = False) -> Path:
    """The directory of the built ``kueue`` and its ``crds/`` (scripts/build-kueue.sh); with ``build``,
    built first (minutes, once). :class:`KueueUnavailable` if it is not there."""
    arguments = [] if build else ["--dir"]
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *arguments], check=True, stdout=subprocess.PIPE, text=True
    )
    directory = Path(result.stdout.strip().splitlines()[-1])
    if not (directory / "kueue").is_file() or not list((directory / "crds").glob("*.yaml")):
        raise KueueUnavailable(f"Kueue {KUEUE_VERSION} is not built in {directory}: run `make kueue` first")
    return directory


def module_dir() -> Path:
    """Where the Go module cache holds ``sigs.k8s.io/kueue`` (its webhook manifests are read from there)."""
    go = shutil.which("go") or next(
        (c for c in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(c, os.X_OK)), None
    )
    cache = os.environ.get("GOMODCACHE")
    if not cache and go is not None:
        cache = subprocess.run([go, "env", "GOMODCACHE"], check=True, capture_output=True, text=True).stdout
    directory = Path((cache or "").strip()) / "sigs.k8s.io" / f"kueue@{KUEUE_VERSION}"
    if not (directory / "config" / "components" / "webhook" / "manifests.yaml").is_file():
        raise KueueUnavailable(
            f"the Go module sigs.k8s.io/kueue@{KUEUE_VERSION} is not in the Go module cache "
            f"({directory}): run `make kueue`, which downloads it"
        )
    return directory


# --- pure parts: configuration, webhooks, queues ----------------------------------------------------


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> Json:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for one process on loopback: no leader
    election, certificates of our own, no metrics, only FRAMEWORKS, only labelled workloads."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }


def webhook_configurations(manifests: list[Json], url: str, ca_bundle: bytes) -> list[Json]:
    """The module's webhook configurations for Kueue's kinds and FRAMEWORKS, each webhook called at
    ``url`` + its path with ``ca_bundle`` (PEM) instead of through an in-cluster Service."""
    configurations = []
    for manifest in manifests:
        if manifest.get("kind") not in _WEBHOOK_KINDS:
            continue
        config = copy.deepcopy(manifest)
        config["metadata"] = {"name": f"kueue-{manifest['metadata']['name']}"}
        config["webhooks"] = []
        for webhook in manifest.get("webhooks") or []:
            if any(g != "kueue.x-k8s.io" and (g, r) not in _WATCHED for g, r in _pairs(webhook)):
                continue  # a framework not enabled: Ray, Kubeflow, JobSet, StatefulSet...
            kept = copy.deepcopy(webhook)
            path = kept["clientConfig"]["service"]["path"]
            kept["clientConfig"] = {"url": f"{url}{path}", "caBundle": base64.b64encode(ca_bundle).decode()}
            if {("", "pods"), ("apps", "deployments")} & set(_pairs(kept)):
                kept["namespaceSelector"] = copy.deepcopy(_SYSTEM_NAMESPACES)
            config["webhooks"].append(kept)
        configurations.append(config)
    return configurations


def _pairs(webhook: Json) -> Iterator[tuple[str, str]]:
    """(API group, resource) of each kind a webhook's rules match."""
    for rule in webhook.get("rules") or []:
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                yield group, resource


def resource_flavor(name: str = "default-flavor") -> Json:
    """A ResourceFlavor with no node labels: every node is of it."""
    return {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": name}}


def cluster_queue(name: str, quota: Mapping[str, str], flavor: str = "default-flavor") -> Json:
    """A ClusterQueue for every namespace, with ``quota`` (resource -> nominal quota) of ``flavor``."""
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {},
            "resourceGroups": [
                {
                    "coveredResources": sorted(quota),
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [
                                {"name": resource, "nominalQuota": amount}
                                for resource, amount in sorted(quota.items())
                            ],
                        }
                    ],
                }
            ],
        },
    }


def local_queue(namespace: str, name: str, cluster_queue_name: str) -> Json:
    """A LocalQueue ``name`` in ``namespace``: where its workloads so labelled queue, for a ClusterQueue."""
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue_name},
    }


def serving_certificate(ca_cert: Path, ca_key: Path, directory: Path) -> tuple[Path, Path]:
    """``tls.crt`` and ``tls.key`` in ``directory`` for 127.0.0.1, signed by the CA of ``ca_cert``."""
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    signer = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jhub-ext-kueue-webhook")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(signer, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def in_private_etc(extra_etc: Path, command: list[str]) -> list[str]:
    """``command`` run in a mount namespace of its own, where ``extra_etc``'s files are added to /etc
    (a read-only overlay of the two): nothing is written into the host's /etc."""
    mapping = [] if os.geteuid() == 0 else ["--map-root-user"]
    script = 'mount -t overlay overlay -o "lowerdir=$1:/etc" /etc && shift && exec "$@"'
    unshare = [shutil.which("unshare") or "unshare", *mapping, "--mount", "--propagation", "private"]
    return [*unshare, "--", "sh", "-c", script, "sh", str(extra_etc), *command]


# --- the running controller ---------------------------------------------------------------------------


@dataclass
class Kueue:
    """Kueue's controller manager running against ``cluster``, with its webhooks registered."""

    cluster: LocalCluster
    directory: Path
    binaries: Path | None = None
    component: Component | None = None
    webhooks: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) registered

    @property
    def admin(self) -> KubeClient:
        """The cluster admin's client."""
        return self.cluster.admin

    @property
    def log(self) -> Path:
        """Kueue's own log."""
        return self.directory / "kueue.log"

    def start(self, timeout: float = 120) -> Kueue:
        """Install the CRDs, start Kueue and register its webhooks; return once its webhooks answer."""
        binaries = self.binaries or kueue_dir()
        manifests = list(yaml.safe_load_all(self._webhook_manifests().read_text()))
        assert self.cluster.control_plane is not None
        pki = self.cluster.control_plane.pki
        self.directory.mkdir(parents=True, exist_ok=True)
        self.install_crds(binaries / "crds", timeout)
        if self.admin.find("Namespace", NAMESPACE) is None:
            self.admin.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})

        certs = self.directory / "certs"
        serving_certificate(pki.ca_cert, pki.ca_key, certs)
        # the same pair as its (unused) metrics certificate, where Kueue insists on finding one
        extra_etc = self.directory / "etc"
        metrics = extra_etc / "kueue" / "metrics" / "certs"
        metrics.mkdir(parents=True, exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            shutil.copy2(certs / name, metrics / name)
        webhook_port, health_port = free_port(), free_port()
        config = self.directory / "config.yaml"
        config.write_text(yaml.safe_dump(configuration(webhook_port, health_port, certs)))
        command = [
            str(binaries / "kueue"),
            f"--config={config}",
            f"--kubeconfig={self.cluster.control_plane.admin_kubeconfig}",
            "--feature-gates=VisibilityOnDemand=false",  # no aggregated API server of its own here
            "--zap-log-level=info",
        ]
        self.component = Component("kueue", in_private_etc(extra_etc, command), self.log)
        self.component.start()
        try:
            self._wait_ready(health_port, timeout)
            url = f"https://127.0.0.1:{webhook_port}"
            for webhook in webhook_configurations(manifests, url, pki.ca_cert.read_bytes()):
                kind, name = webhook["kind"], webhook["metadata"]["name"]
                self._delete_webhook(kind, name)  # one an earlier run left
                self.admin.request("POST", f"{_WEBHOOK_API}/{_WEBHOOK_KINDS[kind]}", webhook)
                self.webhooks.append((kind, name))
            # the webhooks answer (a ResourceFlavor passes through Kueue's own): Kueue is in charge
            poll(self._webhooks_answer, timeout, "Kueue's webhooks to answer", interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _webhook_manifests(self) -> Path:
        return module_dir() / "config" / "components" / "webhook" / "manifests.yaml"

    def _delete_webhook(self, kind: str, name: str) -> None:
        try:
            self.admin.request("DELETE", f"{_WEBHOOK_API}/{_WEBHOOK_KINDS[kind]}/{name}")
        except KubeError as e:
            if e.status != 404:
                raise

    def install_crds(self, crds: Path, timeout: float = 60) -> None:
        """Apply Kueue's CRDs server-side (they are too big for a last-applied annotation) and wait
        until the API server serves them."""
        names = []
        for path in sorted(crds.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if not crd:
                    continue
                name = crd["metadata"]["name"]
                self.admin.request(
                    "PATCH",
                    f"{_CRD_API}/{name}",
                    crd,
                    headers={"Content-Type": "application/apply-patch+yaml"},
                    params={"fieldManager": _FIELD_MANAGER, "force": "true"},
                )
                names.append(name)

        def established() -> bool:
            for name in names:
                conditions = (
                    self.admin.request("GET", f"{_CRD_API}/{name}").get("status", {}).get("conditions")
                )
                if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions or []):
                    return False
            return True

        poll(established, timeout, "Kueue's CRDs to be established", interval=0.3)

    def _wait_ready(self, health_port: int, timeout: float) -> None:
        assert self.component is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.component.check()
            try:
                url = f"http://127.0.0.1:{health_port}/readyz"
                with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        raise TimeoutError(f"Kueue not ready after {timeout} s; log: {self.log}")

    def _webhooks_answer(self) -> bool:
        assert self.component is not None
        self.component.check()
        try:
            self.apply(resource_flavor("jhub-ext-probe"), dry_run=True)
            return True
        except KubeError as e:
            if "failed calling webhook" in e.message or e.status >= 500:
                return False
            raise

    def stop(self) -> None:
        """Unregister the webhooks (else every pod is refused while nobody answers), then stop Kueue."""
        for kind, name in reversed(self.webhooks):
            self._delete_webhook(kind, name)
        self.webhooks.clear()
        if self.component is not None:
            self.component.stop()

    def __enter__(self) -> Kueue:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- Kueue's objects, as an admin would make them ------------------------------------------------

    @staticmethod
    def path(kind: str, name: str | None = None, namespace: str | None = None) -> str:
        """The REST path of a Kueue kind's collection (or of one object)."""
        plural = {
            "ResourceFlavor": "resourceflavors",
            "ClusterQueue": "clusterqueues",
            "LocalQueue": "localqueues",
            "Workload": "workloads",
        }[kind]
        base = f"{API}/namespaces/{namespace}/{plural}" if namespace else f"{API}/{plural}"
        return f"{base}/{name}" if name else base

    def apply(self, obj: Json, dry_run: bool = False) -> Json:
        """Create or update one of Kueue's objects (server-side apply)."""
        meta = obj["metadata"]
        params = {"fieldManager": _FIELD_MANAGER, "force": "true", **({"dryRun": "All"} if dry_run else {})}
        return self.admin.request(  # type: ignore[no-any-return]
            "PATCH",
            self.path(obj["kind"], meta["name"], meta.get("namespace")),
            obj,
            headers={"Content-Type": "application/apply-patch+yaml"},
            params=params,
        )

    def get(self, kind: str, name: str, namespace: str | None = None) -> Json:
        """One of Kueue's objects."""
        return self.admin.request("GET", self.path(kind, name, namespace))  # type: ignore[no-any-return]

    def list(self, kind: str, namespace: str | None = None) -> list[Json]:
        """Kueue's objects of ``kind`` (in ``namespace``, or everywhere)."""
        return list(self.admin.request("GET", self.path(kind, namespace=namespace))["items"])

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        """Delete one of Kueue's objects; one that does not exist is no error."""
        try:
            self.admin.request("DELETE", self.path(kind, name, namespace))
        except KubeError as e:
            if e.status != 404:
                raise

    def queues(self, namespace: str, local: str, cluster: str, quota: Mapping[str, str]) -> None:
        """The default flavour, a ClusterQueue ``cluster`` with ``quota`` and a LocalQueue ``local`` for
        it in ``namespace``: what an admin sets up for a namespace Kueue manages. Returns once Kueue
        says the LocalQueue is active."""
        self.apply(resource_flavor())
        self.apply(cluster_queue(cluster, quota))
        self.apply(local_queue(namespace, local, cluster))

        def active() -> bool:
            status = self.get("LocalQueue", local, namespace).get("status") or {}
            return any(
                c["type"] == "Active" and c["status"] == "True" for c in status.get("conditions") or []
            )

        poll(active, 30, f"LocalQueue {namespace}/{local} to be active", interval=0.3)

    def set_quota(self, cluster: str, quota: Mapping[str, str]) -> None:
        """Give ClusterQueue ``cluster`` another quota (room frees, or is taken away)."""
        self.apply(cluster_queue(cluster, quota))
