"""What a profile can get right now, from nodes and pods as the API returns them (plain dicts).

Mirrors the scheduler's arithmetic closely enough to tell a researcher whether a server
starts now or waits for the cluster autoscaler: a pod fits a node when the node matches
the profile's node selector and required node affinity, every NoSchedule/NoExecute taint
is tolerated, and the node's allocatable resources minus the requests of the pods already
on it cover the profile's requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jhub_ext.core.catalog.model import Kind, Profile
from jhub_ext.core.catalog.quantities import format_cpu, format_memory
from jhub_ext.core.catalog.quota import Usage, Workload, server_words
from jhub_ext.core.jobs.model import ROOMY, Room
from jhub_ext.kubernetes.pods import LABEL_PREFIX, group_label, node_selector
from jhub_ext.kubernetes.quantities import parse_cpu_quantity, parse_memory_quantity, parse_quantity
from jhub_ext.kubernetes.workloads import NAME_ANNOTATION, USER_ANNOTATION

Json = Mapping[str, Any]
Amounts = dict[str, float]

_PARSERS = {"cpu": parse_cpu_quantity, "memory": parse_memory_quantity}
_FINISHED = ("Succeeded", "Failed")


def _parse(resource: str, value: Any) -> float:
    """Any resource a node or pod names (ephemeral-storage, hugepages-2Mi, vendor devices...)."""
    return float(_PARSERS.get(resource, parse_quantity)(value))


def _container_amounts(container: Json, prefer: str) -> Amounts:
    """A container's resources, ``prefer`` ("requests" or "limits") winning over the other."""
    resources = container.get("resources") or {}
    other = "limits" if prefer == "requests" else "requests"
    merged = {**(resources.get(other) or {}), **(resources.get(prefer) or {})}
    return {name: _parse(name, value) for name, value in merged.items()}


def _pod_amounts(pod: Json, prefer: str) -> Amounts:
    spec = pod.get("spec", {})
    total: Amounts = {}
    for container in spec.get("containers", []):
        for name, amount in _container_amounts(container, prefer).items():
            total[name] = total.get(name, 0.0) + amount
    for container in spec.get("initContainers", []):  # init containers run one at a time
        for name, amount in _container_amounts(container, prefer).items():
            total[name] = max(total.get(name, 0.0), amount)
    return total


def pod_requests(pod: Json) -> Amounts:
    """What the scheduler reserves for ``pod``: container requests (a lone limit counts as the request)."""
    return _pod_amounts(pod, "requests")


def pod_limits(pod: Json) -> Amounts:
    """The most ``pod`` may use: container limits (a lone request counts where there is no limit)."""
    return _pod_amounts(pod, "limits")


def pod_workload(pod: Json, quota_groups: Iterable[str], gpu_resources: Iterable[str]) -> Workload | None:
    """What one of our pods counts against the quotas of ``quota_groups`` (None: not ours, or no such group).

    Like :meth:`Usage.of`, a pod counts its limits, or its requests where it has no limit.
    """
    labels = pod.get("metadata", {}).get("labels") or {}
    if f"{LABEL_PREFIX}/kind" not in labels:  # KubeSpawner sets its own managed-by label on servers
        return None
    member_of = frozenset(g for g in quota_groups if labels.get(group_label(g)) == "true")
    if not member_of:
        return None
    amounts = pod_limits(pod)
    is_server = labels.get(f"{LABEL_PREFIX}/kind") == Kind.SERVER.value
    annotations = pod.get("metadata", {}).get("annotations") or {}
    what: str | None
    if is_server:  # KubeSpawner's annotations
        owner = annotations.get("hub.jupyter.org/username")
        what = server_words(annotations.get("hub.jupyter.org/servername", ""))
    else:  # the job's own
        owner, name = annotations.get(USER_ANNOTATION), annotations.get(NAME_ANNOTATION)
        what = f"job '{name}'" if name else None
    usage = Usage(
        cpu=amounts.get("cpu", 0.0),
        memory=int(amounts.get("memory", 0)),
        gpus=int(sum(amounts.get(resource, 0) for resource in set(gpu_resources))),
        servers=1 if is_server else 0,
        jobs=0 if is_server else 1,
    )
    return Workload(member_of, usage, owner, what)


def profile_requests(profile: Profile) -> Amounts:
    """What a pod of ``profile`` requests of the scheduler: guarantees, or limits where none is set."""
    r = profile.resources
    amounts: Amounts = {}
    if cpu := (r.cpu_guarantee or r.cpu_limit):
        amounts["cpu"] = cpu
    if memory := (r.mem_guarantee or r.mem_limit):
        amounts["memory"] = float(memory)
    if r.gpu_count:
        amounts[r.gpu_resource] = float(r.gpu_count)
    return amounts


def _ready(node: Json) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _tolerates(tolerations: Iterable[Json], taint: Json) -> bool:
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _expression_matches(expression: Json, labels: Mapping[str, str]) -> bool:
    key: str = expression.get("key", "")
    operator, values = expression.get("operator"), expression.get("values") or []
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt") and key in labels and values:
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if operator == "Gt" else have < want
    return False


def _affinity_allows(affinity: Json, labels: Mapping[str, str]) -> bool:
    required = (affinity.get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if not required:
        return True
    return any(
        all(_expression_matches(e, labels) for e in term.get("matchExpressions") or [])
        for term in required.get("nodeSelectorTerms") or []
    )


def node_matches(profile: Profile, node: Json) -> bool:
    """Could a pod of ``profile`` ever run on ``node`` (ignoring what is already running there)?"""
    labels = node.get("metadata", {}).get("labels") or {}
    if node.get("spec", {}).get("unschedulable") or not _ready(node):
        return False
    if any(labels.get(key) != value for key, value in node_selector(profile).items()):
        return False
    if not _affinity_allows(profile.affinity, labels):
        return False
    taints = [
        t for t in node.get("spec", {}).get("taints") or [] if t.get("effect") in ("NoSchedule", "NoExecute")
    ]
    return all(_tolerates(profile.tolerations, taint) for taint in taints)


def free_on_nodes(nodes: Iterable[Json], pods: Iterable[Json]) -> dict[str, tuple[Amounts, Amounts]]:
    """For each node name: (allocatable, free) after the requests of its unfinished pods."""
    result: dict[str, tuple[Amounts, Amounts]] = {}
    for node in nodes:
        allocatable = {k: _parse(k, v) for k, v in (node.get("status", {}).get("allocatable") or {}).items()}
        result[node["metadata"]["name"]] = (allocatable, dict(allocatable))
    for pod in pods:
        node_name = pod.get("spec", {}).get("nodeName")
        if node_name not in result or pod.get("status", {}).get("phase") in _FINISHED:
            continue
        free = result[node_name][1]
        for name, amount in pod_requests(pod).items():
            free[name] = free.get(name, 0.0) - amount
    return result


@dataclass(frozen=True)
class Availability:
    """Whether a profile can start now, and the GPU figures researchers ask about."""

    matching_nodes: int
    fits_now: bool
    gpus_free: int = 0
    gpus_total: int = 0

    def describe(self, profile: Profile) -> str:
        """One line for the menu: whether a server starts now, and GPUs free for GPU profiles."""
        if not self.matching_nodes:
            return "No machine of this kind is running now; starting waits for the cluster to add one"
        start = "starts now" if self.fits_now else "waits for a new machine"
        if profile.resources.gpu_count:
            model = f"{profile.resources.gpu_type} " if profile.resources.gpu_type else ""
            return f"{self.gpus_free} of {self.gpus_total} {model}GPUs free · {start}"
        return start[0].upper() + start[1:]

    def to_json(self, profile: Profile) -> dict[str, Any]:
        """The figures and their one-line description, for the API."""
        return {
            "matching_nodes": self.matching_nodes,
            "fits_now": self.fits_now,
            "gpus_free": self.gpus_free,
            "gpus_total": self.gpus_total,
            "summary": self.describe(profile),
        }


def availability(profile: Profile, nodes: Iterable[Json], pods: Iterable[Json]) -> Availability:
    """Whether ``profile`` fits on a matching node now, with its GPUs free and in all."""
    nodes = list(nodes)
    capacity = free_on_nodes(nodes, pods)
    wanted = profile_requests(profile)
    gpu = profile.resources.gpu_resource
    matching = [n["metadata"]["name"] for n in nodes if node_matches(profile, n)]
    fits = any(
        all(capacity[name][1].get(resource, 0.0) >= amount for resource, amount in wanted.items())
        for name in matching
    )
    gpus_total = sum(int(capacity[name][0].get(gpu, 0)) for name in matching)
    gpus_free = sum(max(0, int(capacity[name][1].get(gpu, 0))) for name in matching)
    return Availability(len(matching), fits, gpus_free, gpus_total)


def room_for(profile: Profile, nodes: Iterable[Json], pods: Iterable[Json]) -> Room:
    """Whether a job's pod of ``profile`` has room on a machine it may run on: now, and ever (a
    matching machine that could hold it empty); what is short, in plain words. With no matching
    machine at all it waits (a cluster autoscaler may add one): it is never refused for that."""
    nodes = list(nodes)
    capacity = free_on_nodes(nodes, pods)
    wanted = profile_requests(profile)
    matching = [n["metadata"]["name"] for n in nodes if node_matches(profile, n)]

    def holds(amounts: Amounts) -> bool:
        return all(amounts.get(resource, 0.0) >= amount for resource, amount in wanted.items())

    if any(holds(capacity[name][1]) for name in matching):
        return ROOMY
    r = profile.resources
    if not matching:
        return Room(now=False, short="no machine of its kind is running now")
    if not any(holds(capacity[name][0]) for name in matching):
        biggest = max(matching, key=lambda name: tuple(capacity[name][0].get(k, 0.0) for k in wanted))
        return Room(
            now=False,
            ever=False,
            short=f"no machine of its kind is that large ({_sizes(capacity[biggest][0])})",
        )
    gpu = r.gpu_resource
    if r.gpu_count and not any(capacity[name][1].get(gpu, 0.0) >= r.gpu_count for name in matching):
        free = sum(max(0, int(capacity[name][1].get(gpu, 0))) for name in matching)
        total = sum(int(capacity[name][0].get(gpu, 0)) for name in matching)
        model = f"{r.gpu_type} " if r.gpu_type else ""
        return Room(now=False, short=f"{free} of {total} {model}GPUs are free, and it needs {r.gpu_count}")
    return Room(now=False, short=f"no machine of its kind has {_sizes(wanted)} free now")


def _sizes(amounts: Amounts) -> str:
    """CPUs and memory in words: "32 CPUs and 256 GiB of memory"."""
    words = []
    if "cpu" in amounts:
        words.append(f"{format_cpu(amounts['cpu'])} CPUs")
    if "memory" in amounts:
        words.append(f"{format_memory(int(amounts['memory']))} of memory")
    return " and ".join(words) or "room"


def created_at(obj: Json) -> datetime:
    """When the API server created ``obj`` (its ``creationTimestamp``), as an aware datetime."""
    return datetime.fromisoformat(str((obj.get("metadata") or {}).get("creationTimestamp")))


def orphan_server_pods(
    pods: Iterable[Json],
    namespace: str,
    known: set[tuple[str, str]],
    grace_seconds: float,
    now: datetime | None = None,
) -> list[Json]:
    """Server pods of ``namespace`` made by our spawner for a (user, server name) not in ``known``,
    older than ``grace_seconds`` and not being deleted already."""
    now = now or datetime.now(UTC)
    found = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
        if meta.get("namespace") != namespace or meta.get("deletionTimestamp"):
            continue
        if (
            labels.get("component") != "singleuser-server"
            or labels.get(f"{LABEL_PREFIX}/kind") != Kind.SERVER.value
        ):
            continue
        key = (annotations.get("hub.jupyter.org/username"), annotations.get("hub.jupyter.org/servername", ""))
        if key not in known and (now - created_at(pod)).total_seconds() >= grace_seconds:
            found.append(pod)
    return found
