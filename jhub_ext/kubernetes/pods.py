"""The one translation of a profile into a pod: resources, GPUs, scheduling, labels, security.

:func:`pod_plan` is used for servers (the spawner maps it onto KubeSpawner's traits) and for
jobs (``kubernetes/workloads.py`` writes it into their pod templates), so a profile asks the same of the
cluster whichever runs it.

Every server and job pod runs under the Kubernetes "restricted" Pod Security Standard:
non-root (as ``DEFAULT_UID``/``DEFAULT_GID`` unless the admin says otherwise), no privilege
escalation, every capability dropped, the RuntimeDefault seccomp profile, and no
service-account token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jhub_ext.core.catalog.model import Kind, Profile, Resources, thaw
from jhub_ext.core.names import label_value
from jhub_ext.kubernetes.quantities import cpu_quantity, memory_quantity

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
LABEL_PREFIX = "jhub-ext.io"
MANAGED_BY = "jhub-ext"
#: who a pod's processes run as, unless the admin configures otherwise (the Jupyter images' user)
DEFAULT_UID = 1000
DEFAULT_GID = 100
#: the variable that tells a workload which profile it runs with
PROFILE_ENV = "JHUB_EXT_PROFILE"

RESTRICTED_POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """``resources:`` of a container: guarantees are requests, limits are limits."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu_guarantee:
        requests["cpu"] = cpu_quantity(resources.cpu_guarantee)
    if resources.cpu_limit:
        limits["cpu"] = cpu_quantity(resources.cpu_limit)
    if resources.mem_guarantee:
        requests["memory"] = memory_quantity(resources.mem_guarantee)
    if resources.mem_limit:
        limits["memory"] = memory_quantity(resources.mem_limit)
    if resources.gpu_count:
        # extended resources cannot be overcommitted: request and limit must be equal
        requests[resources.gpu_resource] = limits[resources.gpu_resource] = str(resources.gpu_count)
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def node_selector(profile: Profile) -> dict[str, str]:
    """The profile's node selector, plus the GPU product label when the profile names a GPU type."""
    selector = dict(profile.node_selector)
    if profile.resources.gpu_count and profile.resources.gpu_type:
        selector.setdefault(GPU_PRODUCT_LABEL, profile.resources.gpu_type)
    return selector


def tolerations(profile: Profile) -> list[dict[str, Any]]:
    """The profile's tolerations as plain dicts for the pod spec."""
    return [dict(t) for t in profile.tolerations]


def affinity(profile: Profile) -> dict[str, Any]:
    """The profile's affinity as a plain dict for the pod spec."""
    return thaw(profile.affinity)  # type: ignore[no-any-return]


def group_label(group: str) -> str:
    """One label per group a workload is charged to, so quotas can select by group."""
    return f"group.{LABEL_PREFIX}/{label_value(group)}"


def workload_labels(
    user: str, profile: Profile, kind: Kind, groups: frozenset[str] | set[str]
) -> dict[str, str]:
    """Labels that attribute a pod to its user, kind, profile and groups."""
    labels = {
        "app.kubernetes.io/managed-by": MANAGED_BY,
        f"{LABEL_PREFIX}/user": label_value(user),
        f"{LABEL_PREFIX}/kind": kind.value,
        f"{LABEL_PREFIX}/profile": profile.slug,
    }
    labels.update({group_label(group): "true" for group in sorted(groups)})
    return labels


def pod_security_context(uid: int, gid: int) -> dict[str, Any]:
    """The restricted pod security context, running as ``uid``:``gid`` with ``gid`` owning volumes."""
    return {**RESTRICTED_POD_SECURITY_CONTEXT, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid}


@dataclass(frozen=True)
class PodPlan:
    """What a pod of one profile gets, whether it runs a server or a job."""

    resources: dict[str, dict[str, str]]
    node_selector: dict[str, str]
    tolerations: list[dict[str, Any]]
    affinity: dict[str, Any]
    labels: dict[str, str]
    env: dict[str, str]


def pod_plan(
    profile: Profile,
    *,
    user: str,
    kind: Kind,
    groups: frozenset[str] | set[str],
    env: Mapping[str, str] | None = None,
) -> PodPlan:
    """Translate ``profile`` into what a pod of ``kind`` for ``user`` (charged to ``groups``) gets."""
    return PodPlan(
        resources=resource_requirements(profile.resources),
        node_selector=node_selector(profile),
        tolerations=tolerations(profile),
        affinity=affinity(profile),
        labels=workload_labels(user, profile, kind, groups),
        env={**(env or {}), PROFILE_ENV: profile.slug},
    )
