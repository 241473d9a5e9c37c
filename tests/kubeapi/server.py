"""A Kubernetes API emulator served over HTTP on 127.0.0.1, for tests and benchmarks.

Real HTTP, reached by the product's real ``kubernetes_asyncio`` client through a kubeconfig.
It stores objects (generic over group, version and plural), serves get/list/watch with a
global resourceVersion, label and field selectors, ``timeoutSeconds``, bookmarks and 410
Gone for an expired resourceVersion; create/replace/merge-patch/delete with the API
server's error bodies (404, 409, 422 with causes, 403); validates every object against the
official schema (``kubernetes-validate``, strict); enforces the "restricted" Pod Security
Standard in namespaces labelled for it; and records every request. A simulated kubelet
(:mod:`.kubelet`) schedules pods onto registered nodes and runs them as local processes.

Why not kmock: kmock 0.8's KubernetesEmulator ignores selectors, serves a constant
resourceVersion, never ends a watch and has no validation, admission, status or log
subresources; those are exactly what the product relies on, so the emulator is our own.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from tornado import httpserver, iostream, web
from tornado.netutil import bind_sockets

from .pss import restricted_violations
from .selectors import field_selector, label_selector

Json = dict[str, Any]
GVP = tuple[str, str, str]  # group, version, plural

KINDS: dict[GVP, tuple[str, bool]] = {
    ("", "v1", "namespaces"): ("Namespace", False),
    ("", "v1", "nodes"): ("Node", False),
    ("", "v1", "pods"): ("Pod", True),
    ("", "v1", "events"): ("Event", True),
    ("", "v1", "configmaps"): ("ConfigMap", True),
    ("", "v1", "secrets"): ("Secret", True),
    ("", "v1", "services"): ("Service", True),
    ("", "v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("", "v1", "serviceaccounts"): ("ServiceAccount", True),
    ("batch", "v1", "jobs"): ("Job", True),
    ("batch", "v1", "cronjobs"): ("CronJob", True),
    ("apps", "v1", "deployments"): ("Deployment", True),
    ("apps", "v1", "replicasets"): ("ReplicaSet", True),
    ("networking.k8s.io", "v1", "networkpolicies"): ("NetworkPolicy", True),
}
CORE = re.compile(
    r"^/api/v1(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)
GROUPED = re.compile(
    r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)"
    r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[a-z]+))?)?$"
)
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Json | None = None):
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}
        super().__init__(message)

    def status(self) -> Json:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass(eq=False)
class Watcher:
    gvp: GVP
    namespace: str | None
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[Json], bool]
    queue: asyncio.Queue[tuple[str, Json] | None] = field(default_factory=asyncio.Queue)

    def wants(self, gvp: GVP, obj: Json) -> bool:
        meta = obj["metadata"]
        return (
            gvp == self.gvp
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and self.labels(meta.get("labels") or {})
            and self.fields(obj)
        )


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    verb: str
    resource: str
    namespace: str | None
    user_agent: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KubeEmulator:
    """The API server. Start it, point a kubeconfig at it, register nodes, and go."""

    def __init__(self, kubernetes_version: str = "1.37.0", history: int = 10000, kubelet: bool = True):
        self.kubernetes_version = kubernetes_version
        self.objects: dict[GVP, dict[tuple[str | None, str], Json]] = {gvp: {} for gvp in KINDS}
        self.resource_version = 100
        self.history: deque[tuple[int, GVP, str, Json]] = deque(maxlen=history)
        self.oldest_rv = self.resource_version
        self.watchers: set[Watcher] = set()
        self.requests: list[Request] = []
        self.listeners: list[Callable[[GVP, str, Json], None]] = []
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: httpserver.HTTPServer | None = None
        self._started = threading.Event()
        self.kubelet = None
        if kubelet:
            from .controllers import Controllers
            from .kubelet import Kubelet

            self.kubelet = Kubelet(self)
            self.controllers = Controllers(self)

    # --- life cycle ---------------------------------------------------------------------------------

    def start(self) -> str:
        sockets = bind_sockets(0, "127.0.0.1")
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            self._server = httpserver.HTTPServer(web.Application([(r"/.*", ApiHandler, {"api": self})]))
            self._server.add_sockets(sockets)
            self._started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
        self._thread.start()
        self._started.wait(10)
        return self.url

    def stop(self) -> None:
        if self.loop is None:
            return
        if self.kubelet is not None:
            self.call(self.kubelet.shutdown())
        if self._server is not None:
            self.loop.call_soon_threadsafe(self._server.stop)
        for watcher in list(self.watchers):
            self.loop.call_soon_threadsafe(watcher.queue.put_nowait, None)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.loop = None

    def __enter__(self) -> KubeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the emulator's loop from the test's thread."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "emulator-token"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {"cluster": "emulator", "user": "tester", "namespace": namespace},
                        }
                    ],
                    "current-context": "emulator",
                }
            )
        )
        return path

    # --- test helpers (thread-safe) ---------------------------------------------------------------------

    def create(self, obj: Json) -> Json:
        gvp = gvp_of(obj)
        return self.call(self._async(lambda: self.create_object(gvp, obj["metadata"].get("namespace"), obj)))  # type: ignore[no-any-return]

    def get(
        self, plural: str, namespace: str | None, name: str, group: str = "", version: str = "v1"
    ) -> Json | None:
        found = self.objects[(group, version, plural)].get((namespace, name))
        return copy.deepcopy(found) if found else None

    def list(
        self, plural: str, namespace: str | None = None, group: str = "", version: str = "v1"
    ) -> list[Json]:
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in list(self.objects[(group, version, plural)].items())
            if namespace is None or ns == namespace
        ]

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> Json:
        return self.create(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        )

    def add_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        taints: list[Json] | None = None,
        **allocatable: str,
    ) -> Json:
        """Register a Ready node with ``allocatable`` quantities, e.g. cpu="8", memory="32Gi"."""
        resources = {"cpu": "8", "memory": "32Gi", "pods": "110", **allocatable}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or []},
        }
        created = self.create(node)

        def ready() -> Json:
            stored = self.objects[("", "v1", "nodes")][(None, name)]
            stored["status"] = {
                "capacity": dict(resources),
                "allocatable": dict(resources),
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            }
            return self.touch(("", "v1", "nodes"), stored)

        self.call(self._async(ready))
        return created

    def compact(self) -> None:
        """Forget the watch history: a watch from an older resourceVersion now gets 410 Gone."""

        def forget() -> None:
            self.history.clear()
            self.oldest_rv = self.resource_version

        self.call(self._async(forget))

    def expire_watches(self) -> None:
        """End every open watch and forget all history, as when etcd compacts past every client's
        resourceVersion while the API server restarts: clients that watch again get 410 Gone."""

        def expire() -> None:
            self.history.clear()
            self.resource_version += 1
            self.oldest_rv = self.resource_version
            for watcher in list(self.watchers):
                watcher.queue.put_nowait(None)

        self.call(self._async(expire))

    def advance_clock(self, to: datetime) -> None:
        """Move the CronJob clock (see controllers.Controllers.advance)."""
        self.call(self._async(lambda: self.controllers.advance(to)))

    def reset_requests(self) -> None:
        self.requests.clear()

    @staticmethod
    async def _async(func: Callable[[], Any]) -> Any:
        return func()

    # --- the store ------------------------------------------------------------------------------------

    def next_rv(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def emit(self, gvp: GVP, kind: str, obj: Json) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self.history.append((rv, gvp, kind, snapshot))
        for watcher in list(self.watchers):
            if watcher.wants(gvp, snapshot):
                watcher.queue.put_nowait((kind, snapshot))
        for listener in self.listeners:
            listener(gvp, kind, snapshot)

    def touch(self, gvp: GVP, obj: Json) -> Json:
        """Record a change made in place (by a controller): new resourceVersion and a MODIFIED event."""
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.emit(gvp, "MODIFIED", obj)
        return obj

    def validate(self, gvp: GVP, obj: Json) -> None:
        kind = KINDS[gvp][0]
        name = obj.get("metadata", {}).get("name", "")
        if name and not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                "a lowercase RFC 1123 subdomain "
                "must consist of lower case alphanumeric characters, '-' or '.'",
                {
                    "name": name,
                    "kind": kind,
                    "causes": [{"reason": "FieldValueInvalid", "field": "metadata.name"}],
                },
            )
        body = {k: v for k, v in obj.items() if k != "status"}
        try:
            kubernetes_validate.validate(body, self.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.absolute_path) or "<root>"
            reason = "FieldValueRequired" if error.validator == "required" else "FieldValueInvalid"
            if error.validator == "additionalProperties":
                reason = "FieldValueNotSupported"
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: {path}: {error.message}',
                {
                    "name": name,
                    "kind": kind,
                    "causes": [{"reason": reason, "message": error.message, "field": path}],
                },
            ) from None

    def admit(self, gvp: GVP, namespace: str | None, obj: Json) -> None:
        if gvp != ("", "v1", "pods") or namespace is None:
            return
        ns = self.objects[("", "v1", "namespaces")].get((None, namespace)) or {}
        level = (ns.get("metadata", {}).get("labels") or {}).get("pod-security.kubernetes.io/enforce")
        if level == "restricted":
            problems = restricted_violations(obj.get("spec") or {})
            if problems:
                name = obj["metadata"].get("name", "")
                raise ApiError(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": '
                    + ", ".join(problems),
                    {"name": name, "kind": "pods"},
                )

    def create_object(self, gvp: GVP, namespace: str | None, obj: Json) -> Json:
        kind, namespaced = KINDS[gvp]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = f"{gvp[0]}/{gvp[1]}" if gvp[0] else gvp[1]
        obj["kind"] = kind
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        if namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if (None, namespace) not in self.objects[("", "v1", "namespaces")]:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"},
                )
            meta["namespace"] = namespace
        else:
            namespace = None
        self.validate(gvp, obj)
        self.admit(gvp, namespace, obj)
        key = (namespace, meta["name"])
        if key in self.objects[gvp]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{gvp[2]} "{meta["name"]}" already exists',
                {"name": meta["name"], "kind": gvp[2]},
            )
        meta.update(
            uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1, resourceVersion=self.next_rv()
        )
        obj["apiVersion"] = f"{gvp[0]}/{gvp[1]}" if gvp[0] else gvp[1]
        obj["kind"] = kind
        if gvp == ("", "v1", "pods"):
            obj["status"] = {"phase": "Pending", "conditions": [], "podIP": None, "containerStatuses": []}
        self.objects[gvp][key] = obj
        self.emit(gvp, "ADDED", obj)
        return obj

    def lookup(self, gvp: GVP, namespace: str | None, name: str) -> Json:
        found = self.objects[gvp].get((namespace, name))
        if found is None:
            raise ApiError(404, "NotFound", f'{gvp[2]} "{name}" not found', {"name": name, "kind": gvp[2]})
        return found

    def replace_object(
        self, gvp: GVP, namespace: str | None, name: str, obj: Json, status: bool = False
    ) -> Json:
        current = self.lookup(gvp, namespace, name)
        sent_rv = (obj.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {gvp[2]} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "kind": gvp[2]},
            )
        if status:
            updated = copy.deepcopy(current)
            updated["status"] = obj.get("status", {})
        else:
            updated = copy.deepcopy(obj)
            updated["apiVersion"], updated["kind"] = current["apiVersion"], current["kind"]
            updated["metadata"] = {**current["metadata"], **(obj.get("metadata") or {})}
            if "status" in current:
                updated["status"] = current["status"]
            self.validate(gvp, updated)
            self.admit(gvp, namespace, updated)
            updated["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        updated["apiVersion"], updated["kind"] = current["apiVersion"], current["kind"]
        updated["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[gvp][(namespace, name)] = updated
        self.emit(gvp, "MODIFIED", updated)
        return updated

    def patch_object(
        self, gvp: GVP, namespace: str | None, name: str, patch: Any, content_type: str, status: bool
    ) -> Json:
        current = self.lookup(gvp, namespace, name)
        if "json-patch" in content_type:
            import jsonpatch

            patched = jsonpatch.apply_patch(current, patch)
        else:
            patched = merge_patch(current, patch)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.replace_object(gvp, namespace, name, patched, status=status)

    def delete_object(self, gvp: GVP, namespace: str | None, name: str) -> Json:
        current = self.lookup(gvp, namespace, name)
        if gvp == ("", "v1", "pods") and self.kubelet is not None and self.kubelet.owns(current):
            if "deletionTimestamp" not in current["metadata"]:
                current["metadata"]["deletionTimestamp"] = now()
                self.touch(gvp, current)
                asyncio.get_running_loop().create_task(self.kubelet.terminate(current))
            return copy.deepcopy(current)
        return self.remove(gvp, namespace, name)

    def remove(self, gvp: GVP, namespace: str | None, name: str) -> Json:
        obj = self.objects[gvp].pop((namespace, name))
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.emit(gvp, "DELETED", obj)
        return obj

    def record_event(self, involved: Json, reason: str, message: str, kind: str = "Warning") -> None:
        meta = involved["metadata"]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:8]}",
                "namespace": meta.get("namespace", "default"),
            },
            "involvedObject": {
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
            "source": {"component": "emulator"},
        }
        with contextlib.suppress(ApiError):
            self.create_object(("", "v1", "events"), event["metadata"]["namespace"], event)


def gvp_of(obj: Json) -> GVP:
    api_version = obj["apiVersion"]
    group, _, version = api_version.rpartition("/")
    for gvp, (kind, _) in KINDS.items():
        if gvp[0] == group and gvp[1] == version and kind == obj["kind"]:
            return gvp
    raise KeyError(f"{api_version} {obj['kind']} is not emulated")


class ApiHandler(web.RequestHandler):
    def initialize(self, api: KubeEmulator) -> None:
        self.api = api

    def route(self) -> tuple[GVP, str | None, str | None, str | None]:
        path = self.request.path
        match = CORE.match(path)
        if match:
            gvp: GVP = ("", "v1", match["plural"])
        else:
            match = GROUPED.match(path)
            if not match:
                raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            gvp = (match["group"], match["version"], match["plural"])
        if gvp not in KINDS:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
        return gvp, match["ns"], match["name"], match["sub"]

    def record(self, verb: str, gvp: GVP | None, namespace: str | None, sub: str | None) -> None:
        resource = "" if gvp is None else (gvp[2] + (f"/{sub}" if sub else ""))
        group = "" if gvp is None else gvp[0]
        self.api.requests.append(
            Request(
                self.request.method or "",
                self.request.path,
                self.request.query,
                verb,
                f"{group}/{resource}" if group else resource,
                namespace,
                self.request.headers.get("User-Agent", ""),
            )
        )

    def send(self, body: Json, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def fail(self, error: ApiError) -> None:
        self.send(error.status(), error.code)

    def body(self) -> Any:
        try:
            return json.loads(self.request.body or b"{}")
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON") from None

    async def get(self) -> None:
        path = self.request.path
        if path in ("/api", "/apis", "/version"):
            self.record("discovery", None, None, None)
            self.send(
                {
                    "major": "1",
                    "minor": self.api.kubernetes_version.split(".")[1],
                    "gitVersion": f"v{self.api.kubernetes_version}",
                }
                if path == "/version"
                else {"kind": "APIVersions", "versions": ["v1"]}
                if path == "/api"
                else {"kind": "APIGroupList", "groups": []}
            )
            return
        try:
            gvp, namespace, name, sub = self.route()
            if name is None:
                watching = self.get_argument("watch", "").lower() in ("1", "true")
                self.record("watch" if watching else "list", gvp, namespace, sub)
                if watching:
                    await self.watch(gvp, namespace)
                else:
                    self.list_objects(gvp, namespace)
                return
            self.record("get", gvp, namespace, sub)
            obj = self.api.lookup(gvp, namespace, name)
            if sub == "log":
                await self.logs(obj)
                return
            self.send(obj)
        except ApiError as e:
            self.fail(e)

    def selectors(self) -> tuple[Callable[[dict[str, str]], bool], Callable[[Json], bool]]:
        try:
            return label_selector(self.get_argument("labelSelector", "")), field_selector(
                self.get_argument("fieldSelector", "")
            )
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from None

    def list_objects(self, gvp: GVP, namespace: str | None) -> None:
        labels, fields = self.selectors()
        items = [
            obj
            for (ns, _), obj in self.api.objects[gvp].items()
            if (namespace is None or ns == namespace)
            and labels(obj["metadata"].get("labels") or {})
            and fields(obj)
        ]
        kind = KINDS[gvp][0]
        self.send(
            {
                "kind": f"{kind}List",
                "apiVersion": f"{gvp[0]}/{gvp[1]}" if gvp[0] else gvp[1],
                "metadata": {"resourceVersion": str(self.api.resource_version)},
                "items": items,
            }
        )

    async def watch(self, gvp: GVP, namespace: str | None) -> None:
        labels, fields = self.selectors()
        since = self.get_argument("resourceVersion", "")
        timeout = float(self.get_argument("timeoutSeconds", "1800"))
        bookmarks = self.get_argument("allowWatchBookmarks", "").lower() in ("1", "true")
        watcher = Watcher(gvp, namespace, labels, fields)
        self.set_header("Content-Type", "application/json")
        if since not in ("", "0") and int(since) < self.api.oldest_rv:
            expired = ApiError(410, "Expired", f"too old resource version: {since} ({self.api.oldest_rv})")
            self.write(json.dumps({"type": "ERROR", "object": expired.status()}) + "\n")
            self.finish()
            return
        if since in ("", "0"):
            backlog = [
                ("ADDED", obj) for (ns, _), obj in self.api.objects[gvp].items() if watcher.wants(gvp, obj)
            ]
        else:
            backlog = [(k, o) for rv, g, k, o in self.api.history if rv > int(since) and watcher.wants(g, o)]
        self.api.watchers.add(watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for kind, obj in backlog:
                self.write(json.dumps({"type": kind, "object": obj}) + "\n")
            await self.flush()
            while (remaining := deadline - loop.time()) > 0:
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), min(remaining, 1.0))
                except TimeoutError:
                    if bookmarks:
                        bookmark = {
                            "kind": KINDS[gvp][0],
                            "apiVersion": gvp[1],
                            "metadata": {"resourceVersion": str(self.api.resource_version)},
                        }
                        self.write(json.dumps({"type": "BOOKMARK", "object": bookmark}) + "\n")
                        await self.flush()
                    continue
                if item is None:
                    break
                self.write(json.dumps({"type": item[0], "object": item[1]}) + "\n")
                await self.flush()
        except (iostream.StreamClosedError, asyncio.CancelledError):
            pass  # the client went away
        finally:
            self.api.watchers.discard(watcher)
        if not self._finished:
            self.finish()

    async def logs(self, pod: Json) -> None:
        self.set_header("Content-Type", "text/plain")
        kubelet = self.api.kubelet
        if kubelet is None:
            self.finish("")
            return
        follow = self.get_argument("follow", "").lower() in ("1", "true")
        tail = self.get_argument("tailLines", None)
        async for chunk in kubelet.logs(pod, follow=follow, tail=int(tail) if tail else None):
            self.write(chunk)
            await self.flush()
        self.finish()

    async def post(self) -> None:
        try:
            gvp, namespace, name, sub = self.route()
            self.record("create", gvp, namespace, sub)
            self.send(self.api.create_object(gvp, namespace, self.body()), 201)
        except ApiError as e:
            self.fail(e)

    async def put(self) -> None:
        try:
            gvp, namespace, name, sub = self.route()
            self.record("update", gvp, namespace, sub)
            assert name is not None
            self.send(self.api.replace_object(gvp, namespace, name, self.body(), status=sub == "status"))
        except ApiError as e:
            self.fail(e)

    async def patch(self) -> None:
        try:
            gvp, namespace, name, sub = self.route()
            self.record("patch", gvp, namespace, sub)
            assert name is not None
            content_type = self.request.headers.get("Content-Type", "application/merge-patch+json")
            self.send(self.api.patch_object(gvp, namespace, name, self.body(), content_type, sub == "status"))
        except ApiError as e:
            self.fail(e)

    async def delete(self) -> None:
        try:
            gvp, namespace, name, sub = self.route()
            if name is None:
                self.record("deletecollection", gvp, namespace, sub)
                labels, fields = self.selectors()
                doomed = [
                    obj["metadata"]["name"]
                    for (ns, _), obj in list(self.api.objects[gvp].items())
                    if (namespace is None or ns == namespace)
                    and labels(obj["metadata"].get("labels") or {})
                    and fields(obj)
                ]
                for doomed_name in doomed:
                    self.api.delete_object(gvp, namespace, doomed_name)
                self.send({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
                return
            self.record("delete", gvp, namespace, sub)
            self.send(self.api.delete_object(gvp, namespace, name))
        except ApiError as e:
            self.fail(e)
