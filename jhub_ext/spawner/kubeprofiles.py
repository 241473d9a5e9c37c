"""Catalog profiles as KubeSpawner ``profile_list`` entries (pure: no kubespawner import).

Each profile becomes one entry whose ``kubespawner_override`` sets the pod's resources,
scheduling, image and labels; a profile with several images gets an ``image`` option with
one choice per image, so the ``user_options`` are ``{"profile": slug, "image": choice}``
in Kubernetes mode exactly as in local mode.
"""

from __future__ import annotations

from typing import Any

from ..catalog.model import Kind, Profile
from ..k8s.pods import affinity, node_selector, tolerations, workload_labels

_AFFINITY_TRAITS = {
    ("nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "node_affinity_required",
    ("nodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "node_affinity_preferred",
    ("podAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "pod_affinity_required",
    ("podAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "pod_affinity_preferred",
    ("podAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution"): "pod_anti_affinity_required",
    ("podAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution"): "pod_anti_affinity_preferred",
}


def kubespawner_override(profile: Profile, user: str, groups: frozenset[str]) -> dict[str, Any]:
    """KubeSpawner trait values for a server of ``profile``."""
    r = profile.resources
    override: dict[str, Any] = {
        "cpu_guarantee": r.cpu_guarantee,
        "cpu_limit": r.cpu_limit,
        "mem_guarantee": r.mem_guarantee,
        "mem_limit": r.mem_limit,
        "node_selector": node_selector(profile),
        "tolerations": tolerations(profile),
        "extra_labels": workload_labels(user, profile, Kind.SERVER, groups),
        "environment": {"JHUB_EXT_PROFILE": profile.slug},
    }
    if r.gpu_count:
        override["extra_resource_guarantees"] = {r.gpu_resource: str(r.gpu_count)}
        override["extra_resource_limits"] = {r.gpu_resource: str(r.gpu_count)}
    for (section, field), trait in _AFFINITY_TRAITS.items():
        value = affinity(profile).get(section, {}).get(field)
        if value is not None:
            # KubeSpawner takes node affinity terms as a list of NodeSelectorTerms
            override[trait] = value.get("nodeSelectorTerms", []) if isinstance(value, dict) else value
    return override


def kubespawner_profile(profile: Profile, user: str, groups: frozenset[str], default: bool) -> dict[str, Any]:
    """One KubeSpawner ``profile_list`` entry."""
    entry: dict[str, Any] = {
        "slug": profile.slug,
        "display_name": profile.display_name,
        "description": profile.description,
        "default": default,
        "kubespawner_override": kubespawner_override(profile, user, groups),
    }
    if len(profile.images) == 1:
        entry["kubespawner_override"]["image"] = profile.images[0].image
    elif profile.images:
        default_image = profile.default_image
        entry["profile_options"] = {
            "image": {
                "display_name": "Image",
                "choices": {
                    choice.slug: {
                        "display_name": choice.display_name,
                        "default": default_image is not None and choice.slug == default_image.slug,
                        "kubespawner_override": {"image": choice.image},
                    }
                    for choice in profile.images
                },
            }
        }
    return entry
