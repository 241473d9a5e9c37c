"""What a pod's containers see, made local: volumes as directories, and the environment.

ConfigMap, Secret, projected (service-account token, ConfigMap, Secret, downward API), downward
API, emptyDir and PersistentVolumeClaim volumes are supported; a PersistentVolumeClaim resolves
through its bound PersistentVolume to the directory the agent's provisioner made for it.
"""

from __future__ import annotations

import base64
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devcluster.agent.api import Api, ApiError
from devcluster.agent.runtime import Identity, Mounts, expand, give, rewrite_value
from jhub_ext.kubernetes.quantities import parse_cpu_quantity, parse_memory_quantity

Json = dict[str, Any]


class NotReady(Exception):
    """A referenced object does not exist (yet): the kubelet retries, and so do we."""


def _field(pod: Json, path: str, pod_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.hostIP": "127.0.0.1",
        "status.podIPs": pod_ip,
        "status.hostIPs": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        values = meta.get(source) or {}
        if path == prefix:
            return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str(values.get(path[len(prefix) + 2 : -2], ""))
    return ""


def _resource(container: Json, ref: Json) -> str:
    kind, _, name = ref["resource"].partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    if value is None:
        return "0"
    divisor = ref.get("divisor") or "1"
    if name == "cpu":
        return str(math.ceil(parse_cpu_quantity(value) / parse_cpu_quantity(divisor)))
    return str(-(-parse_memory_quantity(value) // parse_memory_quantity(divisor)))


class PodFiles:
    """Materialises one pod's volumes and containers' environments under ``directory``."""

    def __init__(self, api: Api, pod: Json, directory: Path, pv_root: Path, pod_ip: str):
        self.api = api
        self.pod = pod
        self.directory = directory
        self.pv_root = pv_root
        self.pod_ip = pod_ip
        self.volumes: dict[str, Path] = {}
        self.namespace = pod["metadata"]["namespace"]

    # --- objects -----------------------------------------------------------------------------------------

    async def _data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            obj = await self.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except ApiError as e:
            if e.status == 404 and optional:
                return None
            if e.status == 404:
                raise NotReady(f'{kind.lower()} "{name}" not found') from None
            raise
        if kind == "ConfigMap":
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            return data
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    @staticmethod
    def _write(target: Path, relative: str, content: bytes, mode: int) -> None:
        path = target / relative
        if ".." in Path(relative).parts or Path(relative).is_absolute():
            raise NotReady(f"invalid volume item path {relative!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)

    async def _keyed(self, target: Path, source: Json, kind: str, name_key: str, default_mode: int) -> None:
        data = await self._data(kind, source[name_key], bool(source.get("optional")))
        if data is None:
            return
        items = source.get("items")
        if items:
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    raise NotReady(f'key "{item["key"]}" not in {kind.lower()} "{source[name_key]}"')
                self._write(target, item["path"], data[item["key"]], int(item.get("mode", default_mode)))
        else:
            for key, content in data.items():
                self._write(target, key, content, default_mode)

    async def _token(self, target: Path, source: Json) -> None:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod["metadata"]["name"],
                    "uid": self.pod["metadata"]["uid"],
                },
            },
        }
        answer = await self.api.request(
            "POST", f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", request
        )
        self._write(target, source["path"], answer["status"]["token"].encode(), 0o644)

    def _downward(self, target: Path, items: list[Json], containers: list[Json], mode: int) -> None:
        for item in items:
            if "fieldRef" in item:
                value = _field(self.pod, item["fieldRef"]["fieldPath"], self.pod_ip)
            else:
                ref = item["resourceFieldRef"]
                container = next((c for c in containers if c["name"] == ref.get("containerName")), {})
                value = _resource(container, ref)
            self._write(target, item["path"], value.encode(), int(item.get("mode", mode)))

    async def _claim(self, claim: str) -> Path:
        try:
            pvc = await self.api.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        except ApiError as e:
            if e.status == 404:
                raise NotReady(f'persistentvolumeclaim "{claim}" not found') from None
            raise
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise NotReady(f'persistentvolumeclaim "{claim}" is not bound')
        pv = await self.api.get(f"/api/v1/persistentvolumes/{volume}")
        path = Path(((pv.get("spec") or {}).get("hostPath") or {}).get("path") or self.pv_root / volume)
        return path

    async def materialise(self, who: Identity) -> None:
        """Make every volume of the pod a directory (once; ConfigMaps and Secrets are snapshots)."""
        containers = self.pod["spec"]["containers"] + (self.pod["spec"].get("initContainers") or [])
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            if name in self.volumes:
                continue
            target = self.directory / "volumes" / name
            if "persistentVolumeClaim" in volume:
                target = await self._claim(volume["persistentVolumeClaim"]["claimName"])
                give(target, who, 0o2775)
            elif "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
            elif "configMap" in volume or "secret" in volume:
                kind, key = ("ConfigMap", "configMap") if "configMap" in volume else ("Secret", "secret")
                source = volume[key]
                give(target, who, 0o755)
                name_key = "name" if kind == "ConfigMap" else "secretName"
                await self._keyed(target, source, kind, name_key, int(source.get("defaultMode", 0o644)))
            elif "projected" in volume:
                give(target, who, 0o755)
                mode = int(volume["projected"].get("defaultMode", 0o644))
                for source in volume["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        await self._token(target, source["serviceAccountToken"])
                    elif "configMap" in source:
                        await self._keyed(target, source["configMap"], "ConfigMap", "name", mode)
                    elif "secret" in source:
                        await self._keyed(target, source["secret"], "Secret", "name", mode)
                    elif "downwardAPI" in source:
                        self._downward(target, source["downwardAPI"].get("items") or [], containers, mode)
            elif "downwardAPI" in volume:
                give(target, who, 0o755)
                mode = int(volume["downwardAPI"].get("defaultMode", 0o644))
                self._downward(target, volume["downwardAPI"].get("items") or [], containers, mode)
            else:
                raise NotReady(f"volume {name!r}: this node agent supports no {sorted(volume)[-1]} volumes")
            self.volumes[name] = target

    def mounts(self, container: Json, who: Identity) -> Mounts:
        """The container's volume mounts (``subPath`` included) as container paths to local directories."""
        mounts = Mounts()
        for mount in container.get("volumeMounts") or []:
            local = self.volumes[mount["name"]]
            if sub := mount.get("subPath"):
                if ".." in Path(sub).parts or Path(sub).is_absolute():
                    raise NotReady(f"subPath {sub!r} must be a relative path inside the volume")
                local = local / sub
                if not local.exists():
                    give(local, who, 0o2775)
            mounts.add(mount["mountPath"], local)
        return mounts

    # --- environment -------------------------------------------------------------------------------------

    async def environment(self, container: Json, base: Mapping[str, str], mounts: Mounts) -> dict[str, str]:
        """The container's environment: base, then envFrom, then env, with $(VAR) expansion."""
        env = dict(base)
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key, name_key in (
                ("ConfigMap", "configMapRef", "name"),
                ("Secret", "secretRef", "name"),
            ):
                if key in source:
                    data = await self._data(kind, source[key][name_key], bool(source[key].get("optional")))
                    for k, v in (data or {}).items():
                        env[prefix + k] = v.decode(errors="replace")
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                env[name] = expand(str(item["value"]), env)
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                env[name] = _field(self.pod, source["fieldRef"]["fieldPath"], self.pod_ip)
            elif "resourceFieldRef" in source:
                env[name] = _resource(container, source["resourceFieldRef"])
            else:
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key in source:
                        ref = source[key]
                        data = await self._data(kind, ref["name"], bool(ref.get("optional")))
                        if data is not None and ref["key"] in data:
                            env[name] = data[ref["key"]].decode(errors="replace")
                        elif not ref.get("optional"):
                            raise NotReady(
                                f"couldn't find key {ref['key']} in {kind} {self.namespace}/{ref['name']}"
                            )
        return {k: rewrite_value(v, mounts, self.pod_ip) for k, v in env.items()}

    def cleanup(self) -> None:
        """Remove everything made for the pod under its directory."""
        shutil.rmtree(self.directory, ignore_errors=True)


def reachable_by_others(path: Path) -> bool:
    """Whether a process of another user can reach ``path`` (every ancestor searchable by others)."""
    current = path.resolve()
    for part in [current, *current.parents]:
        try:
            if not os.stat(part).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True
