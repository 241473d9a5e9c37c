"""The catalog as immutable data: what ``profiles.yaml`` means once it has been validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from jhub_ext.core.catalog.quantities import format_cpu, format_memory

DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"


class Kind(StrEnum):
    """What a profile may run."""

    SERVER = "server"
    JOB = "job"
    SCRAPER = "scraper"


def freeze(value: Any) -> Any:
    """Deep-freeze parsed YAML: mappings become read-only, lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze`, for building manifests and JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class Resources:
    """CPU in cores, memory in bytes; ``None`` where the profile sets nothing."""

    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: int | None = None
    mem_limit: int | None = None
    gpu_count: int = 0
    gpu_type: str | None = None
    gpu_resource: str = DEFAULT_GPU_RESOURCE

    @property
    def cpu(self) -> float:
        """Cores counted against quotas: the limit, or the guarantee if there is no limit."""
        return self.cpu_limit or self.cpu_guarantee or 0.0

    @property
    def memory(self) -> int:
        """Bytes counted against quotas: the limit, or the guarantee if there is no limit."""
        return self.mem_limit or self.mem_guarantee or 0

    def summary(self) -> str:
        """One line for people: ``"2 CPUs · 4 GiB · 1 × NVIDIA-A100 GPU"``."""
        parts = []
        if self.cpu:
            cores = format_cpu(self.cpu)
            parts.append(f"{cores} CPU" if self.cpu == 1 else f"{cores} CPUs")
        if self.memory:
            parts.append(format_memory(self.memory))
        if self.gpu_count:
            kind = f"{self.gpu_type} " if self.gpu_type else ""
            parts.append(f"{self.gpu_count} × {kind}GPU")
        return " · ".join(parts) or "shared resources"

    def to_json(self) -> dict[str, Any]:
        """The resources as the API and the form show them, with a one-line summary."""
        return {
            "cpu": {"guarantee": self.cpu_guarantee, "limit": self.cpu_limit},
            "memory": {"guarantee": self.mem_guarantee, "limit": self.mem_limit},
            "gpu": {"count": self.gpu_count, "type": self.gpu_type, "resource": self.gpu_resource},
            "summary": self.summary(),
        }


@dataclass(frozen=True)
class ImageChoice:
    """One image a profile offers, by slug; ``default`` marks the one preselected."""

    slug: str
    display_name: str
    image: str
    default: bool = False


#: a profile's max_run_seconds where the catalog gives none: a day
DEFAULT_MAX_RUN_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Profile:
    """One entry of the menu: resources, images, placement, who may use it and what it costs."""

    slug: str
    display_name: str
    description: str = ""
    resources: Resources = field(default_factory=Resources)
    images: tuple[ImageChoice, ...] = ()
    node_selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    groups: frozenset[str] | None = None
    default: bool = False
    cost_per_hour: float = 0.0
    kinds: frozenset[Kind] = frozenset(Kind)
    #: the longest a batch job or one run of a scheduled job may run (users may ask for less)
    max_run_seconds: int = DEFAULT_MAX_RUN_SECONDS
    #: local mode: processes a server or job run may have at once (None: the site's default)
    max_processes: int | None = None
    #: the Kueue LocalQueue this profile's servers and jobs wait in (None: their group's, if any)
    kueue_queue: str | None = None
    #: the catalog's ``kueue.queues`` (group, LocalQueue), in its order: for :meth:`kueue_queue_for`
    group_kueue_queues: tuple[tuple[str, str], ...] = ()

    def allows(self, groups: frozenset[str] | set[str]) -> bool:
        """Whether a member of ``groups`` may use this profile (no ``groups`` means everyone)."""
        return self.groups is None or bool(self.groups & set(groups))

    @property
    def default_image(self) -> ImageChoice | None:
        """The image marked default, else the first one; ``None`` if the profile offers none."""
        for choice in self.images:
            if choice.default:
                return choice
        return self.images[0] if self.images else None

    def image(self, slug: str) -> ImageChoice | None:
        """The profile's image with ``slug``, or ``None``."""
        return next((choice for choice in self.images if choice.slug == slug), None)

    def kueue_queue_for(self, groups: frozenset[str] | set[str]) -> str | None:
        """The Kueue LocalQueue a server or job of this profile run by a member of ``groups`` waits
        in: the profile's own, else that of the first group in the catalog's ``kueue.queues`` the
        member is in; None where the catalog names none (the workload is not labelled for Kueue)."""
        if self.kueue_queue is not None:
            return self.kueue_queue
        return next((queue for group, queue in self.group_kueue_queues if group in groups), None)

    def to_json(self) -> dict[str, Any]:
        """The shape shared by the spawn form, ``GET profiles``, the CLI and the magics."""
        return {
            "slug": self.slug,
            "display_name": self.display_name,
            "description": self.description,
            "resources": self.resources.to_json(),
            "images": [
                {"slug": c.slug, "display_name": c.display_name, "image": c.image} for c in self.images
            ],
            "default_image": self.default_image.slug if self.default_image else None,
            "cost_per_hour": self.cost_per_hour,
            "kinds": sorted(kind.value for kind in self.kinds),
            "max_run_seconds": self.max_run_seconds,
            "max_processes": self.max_processes,
            "default": self.default,
        }


@dataclass(frozen=True)
class Quota:
    """Most a group's members may run at once; ``None`` means no limit on that resource."""

    cpu: float | None = None
    memory: int | None = None
    gpus: int | None = None
    servers: int | None = None
    jobs: int | None = None


class BudgetAction(StrEnum):
    """What happens to a group's new work once its monthly budget is spent, mildest first."""

    WARN = "warn"  # nothing: its members are told, and work keeps starting
    QUEUE = "queue"  # new jobs wait in the jobs queue until the budget renews (servers are refused)
    REFUSE = "refuse"  # new servers and jobs are refused until the budget renews

    @property
    def strictness(self) -> int:
        """0 for ``warn``, 1 for ``queue``, 2 for ``refuse``: of several budgets spent, the
        strictest action applies."""
        return list(BudgetAction).index(self)


#: a budget's ``warn_at`` where the catalog gives none
DEFAULT_WARN_AT = 0.8


@dataclass(frozen=True)
class Budget:
    """What a group may spend in a calendar month (UTC), in the catalog's currency, and what
    happens as it is spent: its members are warned at ``warn_at`` (a fraction of ``monthly``); at
    the whole of it, ``action`` applies to new work, and running work is stopped only if
    ``stop_running``."""

    monthly: float
    warn_at: float = DEFAULT_WARN_AT
    action: BudgetAction = BudgetAction.WARN
    stop_running: bool = False


@dataclass(frozen=True)
class Catalog:
    """The whole validated catalog: profiles in menu order, known groups, per-group quotas and
    per-group monthly budgets."""

    profiles: tuple[Profile, ...]
    groups: frozenset[str] = frozenset()
    quotas: Mapping[str, Quota] = field(default_factory=lambda: MappingProxyType({}))
    budgets: Mapping[str, Budget] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 1
    currency: str = "$"
    source: str = "profiles.yaml"
    #: ``kueue.queues``: the Kueue LocalQueue of each group's work where its profile names none, in
    #: the catalog's order (a member of several groups gets the first one's)
    kueue_queues: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def profile(self, slug: str) -> Profile | None:
        """The profile with ``slug``, or ``None``."""
        return next((p for p in self.profiles if p.slug == slug), None)

    def visible_to(self, groups: frozenset[str] | set[str], kind: Kind = Kind.SERVER) -> tuple[Profile, ...]:
        """The menu for a member of ``groups``: allowed profiles that can run ``kind``, in order."""
        return tuple(p for p in self.profiles if p.allows(groups) and kind in p.kinds)

    def default_for(self, groups: frozenset[str] | set[str], kind: Kind = Kind.SERVER) -> Profile | None:
        """The catalog's default if this user may use it, else the first profile they may use."""
        visible = self.visible_to(groups, kind)
        return next((p for p in visible if p.default), visible[0] if visible else None)
