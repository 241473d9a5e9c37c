"""A small synchronous client for the local control plane's REST API, from a kubeconfig.

Used to bootstrap the cluster (namespaces, RBAC, tokens), by ``make cluster`` and by tests that
look at or change the cluster as an admin would with kubectl. The product itself talks to
Kubernetes only through ``kubernetes_asyncio``.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

Json = dict[str, Any]

# kind -> (API prefix, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "Node": ("/api/v1", "nodes", False),
    "Pod": ("/api/v1", "pods", True),
    "Event": ("/api/v1", "events", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "Service": ("/api/v1", "services", True),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "LimitRange": ("/api/v1", "limitranges", True),
    "ResourceQuota": ("/api/v1", "resourcequotas", True),
    "Job": ("/apis/batch/v1", "jobs", True),
    "CronJob": ("/apis/batch/v1", "cronjobs", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "ReplicaSet": ("/apis/apps/v1", "replicasets", True),
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "StorageClass": ("/apis/storage.k8s.io/v1", "storageclasses", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
}


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``predicate`` until it returns something true, and return that; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class KubeError(Exception):
    """An error answer of the API server, with its status code and reason."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def resource_path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a kind's collection (or of one object), e.g. ``/api/v1/namespaces/x/pods/p``."""
    prefix, plural, namespaced = RESOURCES[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}" if namespaced and namespace else f"{prefix}/{plural}"
    return f"{path}/{name}" if name else path


class Kubeconfig:
    """The cluster URL and credentials of a kubeconfig's current context, as ``requests`` wants them."""

    def __init__(self, path: Path):
        self.path = path
        doc = yaml.safe_load(path.read_text())
        context_name = doc["current-context"]
        context = next(c["context"] for c in doc["contexts"] if c["name"] == context_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])
        self.server: str = cluster["server"]
        self.namespace: str = context.get("namespace", "default")
        self.token: str | None = user.get("token")
        files: list[Path] = []

        def material(entry: Json, key: str, name: str) -> str | None:
            if key in entry:
                return str((path.parent / entry[key]).resolve())
            if f"{key}-data" in entry:  # inline: requests and ssl want a file
                if not files:
                    files.append(Path(tempfile.mkdtemp(prefix="kubeconfig-")))
                    weakref.finalize(self, shutil.rmtree, files[0], True)
                target = files[0] / name
                target.write_bytes(base64.b64decode(entry[f"{key}-data"]))
                return str(target)
            return None

        self.ca = material(cluster, "certificate-authority", "ca.crt") or True
        certificate = material(user, "client-certificate", "client.crt")
        key = material(user, "client-key", "client.key")
        self.cert = (certificate, key) if certificate and key else None


class KubeClient:
    """JSON over HTTPS to the API server, authenticated as the kubeconfig's user."""

    def __init__(self, kubeconfig: Path, timeout: float = 30):
        self.config = Kubeconfig(kubeconfig)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = self.config.ca
        if self.config.cert:
            self.session.cert = self.config.cert
        if self.config.token:
            self.session.headers["Authorization"] = f"Bearer {self.config.token}"

    def close(self) -> None:
        """Close the HTTP session and its connections."""
        self.session.close()

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        """Send one request to the API server; the decoded JSON answer, or the text of a non-JSON one.

        An error status raises :class:`KubeError` with the API server's reason and message.
        """
        headers = kwargs.pop("headers", {})
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        response = self.session.request(
            method,
            self.config.server + path,
            json=body,
            headers=headers,
            verify=self.config.ca,  # explicitly: $REQUESTS_CA_BUNDLE would win over the session's
            timeout=kwargs.pop("timeout", self.timeout),
            **kwargs,
        )
        if response.status_code >= 400:
            try:
                status = response.json()
                raise KubeError(response.status_code, status.get("reason", ""), status.get("message", ""))
            except ValueError:
                raise KubeError(response.status_code, "", response.text) from None
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.json()
        return response.text

    # --- objects ---------------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Json:
        """The object of ``kind`` named ``name``; :class:`KubeError` (404) if there is none."""
        return self.request("GET", resource_path(kind, namespace, name))  # type: ignore[no-any-return]

    def find(self, kind: str, name: str, namespace: str | None = None) -> Json | None:
        """The object, or None where it does not exist."""
        try:
            return self.get(kind, name, namespace)
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str | None = None, *, labels: str = "", fields: str = ""
    ) -> list[Json]:
        """The objects of ``kind`` in ``namespace`` (or everywhere), filtered by label and field selectors."""
        params = {k: v for k, v in (("labelSelector", labels), ("fieldSelector", fields)) if v}
        answer = self.request("GET", resource_path(kind, namespace), params=params)
        return list(answer["items"])

    def create(self, obj: Json) -> Json:
        """Create ``obj`` (in its metadata's namespace) and return it as the API server stored it."""
        namespace = obj["metadata"].get("namespace")
        return self.request("POST", resource_path(obj["kind"], namespace), obj)  # type: ignore[no-any-return]

    def apply(self, obj: Json) -> Json:
        """Create the object, or replace the one of the same name (keeping its resourceVersion)."""
        meta = obj["metadata"]
        existing = self.find(obj["kind"], meta["name"], meta.get("namespace"))
        if existing is None:
            return self.create(obj)
        replacement = {
            **obj,
            "metadata": {**meta, "resourceVersion": existing["metadata"]["resourceVersion"]},
        }
        path = resource_path(obj["kind"], meta.get("namespace"), meta["name"])
        return self.request("PUT", path, replacement)  # type: ignore[no-any-return]

    def merge_patch(self, kind: str, name: str, namespace: str | None, patch: Json) -> Json:
        """Merge ``patch`` into the object (a JSON merge patch, as ``kubectl patch --type merge``)."""
        path = resource_path(kind, namespace, name)
        headers = {"Content-Type": "application/merge-patch+json"}
        return self.request("PATCH", path, patch, headers=headers)  # type: ignore[no-any-return]

    def delete(self, kind: str, name: str, namespace: str | None = None, **options: Any) -> None:
        """Delete the object, with ``options`` as DeleteOptions; one that does not exist is no error."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", **options} if options else None
        try:
            self.request("DELETE", resource_path(kind, namespace, name), body)
        except KubeError as e:
            if e.status != 404:
                raise

    def wait_for(
        self, kind: str, name: str, namespace: str | None, predicate: Any, timeout: float = 60
    ) -> Json:
        """Poll until ``predicate(obj)`` is true (for tests and bootstrap; the product watches)."""

        def met() -> Json | None:
            obj = self.find(kind, name, namespace)
            return obj if obj is not None and predicate(obj) else None

        return poll(met, timeout, f"{kind} {namespace or ''}/{name}")  # type: ignore[no-any-return]

    def pod_log(self, name: str, namespace: str, container: str | None = None, **params: Any) -> str:
        """A container's log (the pod's only one if ``container`` is not given), as text."""
        query = {"container": container, **params} if container else params
        return str(self.request("GET", resource_path("Pod", namespace, name) + "/log", params=query))

    def documents(self, path: Path, namespace: str | None = None) -> Iterator[Json]:
        """The objects of a YAML file, moved into ``namespace`` where given."""
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            if namespace is not None:
                retarget(doc, namespace)
            yield doc


def retarget(obj: Json, namespace: str) -> None:
    """Move a manifest written for namespace ``jhub`` into ``namespace`` (names of cluster-scoped
    bindings get the namespace as suffix so that several namespaces can coexist)."""
    kind, meta = obj["kind"], obj["metadata"]
    if kind == "Namespace":
        meta["name"] = namespace
        return
    if RESOURCES[kind][2]:
        meta["namespace"] = namespace
    elif kind == "ClusterRoleBinding":  # named for its namespace: "...-jhub" becomes "...-<namespace>"
        meta["name"] = f"{meta['name'].removesuffix('-jhub')}-{namespace}"
    for subject in obj.get("subjects") or []:
        if subject.get("kind") == "ServiceAccount":
            subject["namespace"] = namespace
