"""Quota arithmetic: what a group's members run at once, against the group's limits.

Servers and jobs count together. A user in several groups must fit within every one of
their groups that has a quota. Each workload counts its limit where the profile sets
one, and its guarantee otherwise (see :attr:`.model.Resources.cpu`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from jhub_ext.core.catalog.model import Catalog, Kind, Profile, Quota
from jhub_ext.core.catalog.quantities import format_cpu, format_memory


@dataclass(frozen=True)
class Usage:
    """What workloads count against a quota: cores, bytes of memory, GPUs, servers and jobs."""

    cpu: float = 0.0
    memory: int = 0
    gpus: int = 0
    servers: int = 0
    jobs: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @classmethod
    def of(cls, profile: Profile, kind: Kind = Kind.SERVER) -> Usage:
        """What one running workload of ``profile`` counts against quotas."""
        resources = profile.resources
        return cls(
            cpu=resources.cpu,
            memory=resources.memory,
            gpus=resources.gpu_count,
            servers=1 if kind is Kind.SERVER else 0,
            jobs=0 if kind is Kind.SERVER else 1,
        )

    def to_json(self) -> dict[str, float | int]:
        """The usage as a plain mapping of resource to amount."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Workload:
    """Something running (or starting) that counts against its owner's groups: whose, and what it
    is in words ("server 'lab'", "job 'news'"), where its source knows."""

    groups: frozenset[str]
    usage: Usage
    owner: str | None = None
    what: str | None = None


def server_words(name: str) -> str:
    """A server as its owner calls it: "default server", or "server 'lab'"."""
    return f"server '{name}'" if name else "default server"


def usage_by_group(workloads: Iterable[Workload], groups: Iterable[str]) -> dict[str, Usage]:
    """Sum the usage of ``workloads`` for each of ``groups``."""
    totals = {group: Usage() for group in groups}
    for workload in workloads:
        for group in workload.groups & totals.keys():
            totals[group] = totals[group] + workload.usage
    return totals


_LABELS: dict[str, tuple[str, str, Callable[[Any], str]]] = {
    "cpu": ("CPU", "CPUs", format_cpu),
    "memory": ("memory", "memory", format_memory),
    "gpus": ("GPU", "GPUs", str),
    "servers": ("server", "servers", str),
    "jobs": ("job", "jobs", str),
}


class QuotaExceeded(ValueError):
    """Starting this workload would take a group over its quota; the message shows usage and limit.

    ``never``: it asks more than a quota allows at all, so it can never start as it is (whatever
    stops); the message names the largest profile that would fit, where there is one. ``groups``:
    those whose quota it would pass; ``yours``: the owner's own servers and jobs counted there.
    """

    def __init__(
        self,
        problems: list[str],
        never: bool = False,
        largest: Profile | None = None,
        groups: frozenset[str] = frozenset(),
        yours: tuple[str, ...] = (),
    ):
        self.problems = problems
        self.never = never
        self.groups = groups
        said = "; ".join(problems) + ". "
        if yours:
            said += f"Yours that count there: {', '.join(yours)}. "
            said += "Stop one you no longer need, or choose a smaller profile."
        elif not never:
            said += "Stop a server or job you no longer need, or choose a smaller profile."
        elif largest is not None:
            said += f"It can never start as it is: choose a smaller profile, such as '{largest.slug}'."
        else:
            said += "It can never start as it is: no profile you may use fits; ask an admin."
        super().__init__(said)

    def naming(self, owner: str, running: list[Workload]) -> QuotaExceeded:
        """The same refusal, naming which of ``owner``'s own servers and jobs count in the groups
        that are full: the first things to stop, if one is no longer needed."""
        yours = tuple(
            sorted({w.what for w in running if w.owner == owner and w.what and w.groups & self.groups})
        )
        if self.never or not yours:
            return self
        return QuotaExceeded(self.problems, groups=self.groups, yours=yours)


def quota_problems(quota: Quota, group: str, in_use: Usage, request: Usage) -> list[str]:
    """Every resource for which ``in_use + request`` goes over ``quota``, as a sentence."""
    problems = []
    for name, (one, many, fmt) in _LABELS.items():
        limit = getattr(quota, name)
        label = one if limit == 1 else many
        asked = getattr(request, name)
        if limit is None or not asked:
            continue
        used = getattr(in_use, name)
        if asked > limit:
            problems.append(
                f"group '{group}' may use {fmt(limit)} {label} at once; this needs {fmt(asked)}, "
                "more than it may ever use"
            )
        elif used + asked > limit:
            problems.append(
                f"group '{group}' may use {fmt(limit)} {label} at once and uses {fmt(used)}; "
                f"this needs {fmt(asked)} more"
            )
    return problems


def _problems(
    catalog: Catalog, groups: frozenset[str] | set[str], request: Usage, in_use: Mapping[str, Usage]
) -> dict[str, list[str]]:
    """Every way ``request`` goes over a quota of ``groups`` beside ``in_use``, as sentences, by the
    group whose quota it would pass (only those)."""
    found = {
        group: quota_problems(catalog.quotas[group], group, in_use.get(group, Usage()), request)
        for group in sorted(set(groups) & catalog.quotas.keys())
    }
    return {group: problems for group, problems in found.items() if problems}


def check_quota(
    catalog: Catalog,
    groups: frozenset[str] | set[str],
    request: Usage,
    in_use: Mapping[str, Usage],
) -> None:
    """Raise :class:`QuotaExceeded` unless ``request`` fits every quota of the user's ``groups``
    (one that can never fit, whatever else runs, says so, and what would)."""
    never = _problems(catalog, groups, request, {})
    if never:
        kind = Kind.SERVER if request.servers else Kind.JOB
        fitting = [
            p
            for p in catalog.visible_to(groups, kind)
            if not _problems(catalog, groups, Usage.of(p, kind), {})
        ]
        largest = max(
            fitting, key=lambda p: (p.resources.gpu_count, p.resources.cpu, p.resources.memory), default=None
        )
        raise QuotaExceeded(
            [problem for said in never.values() for problem in said], never=True, largest=largest
        )
    if full := _problems(catalog, groups, request, in_use):
        raise QuotaExceeded([problem for said in full.values() for problem in said], groups=frozenset(full))
