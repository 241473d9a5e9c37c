"""The usage ledger: what counts against group quotas, by one rule, for the hub and the service alike.

The rule: a workload counts what was reserved for it when it was admitted (its profile's limits,
or guarantees where the profile sets no limit, and its GPUs; a scheduled job times the runs it may
have alive at once) from the moment it is recorded (the hub's server record, the service's job
record) until it ends. A server whose reservation is not recorded yet (still starting) counts what
its options ask under the catalog as it is now; options that no longer resolve count as one server
of no resources.

A :class:`UsageLedger` sums :class:`UsageSource` objects, each of which knows some of the
workloads. The sources, and who uses them:

============================  ==========================================  =====================
source                        counts                                      used by
============================  ==========================================  =====================
``spawner.servers``           servers, from the hub's records; in         the hub
                              Kubernetes mode a server with a pod counts
                              its pod's limits, from the pod cache
                              (``ProfileKubeSpawner.count_servers``)
``admission.reservations``    jobs, from the jobs service's records       the hub and the service
``service.hubapi``            servers, from the hub's REST API            the service
============================  ==========================================  =====================

This module is pure: the sources do the reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from jhub_ext.core.catalog.model import Catalog, Kind, Profile
from jhub_ext.core.catalog.quota import Usage, Workload, usage_by_group
from jhub_ext.core.catalog.selection import SelectionError, resolve_selection


class UsageSource(Protocol):
    """Something that knows some of the workloads running now."""

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """The workloads charged to any of ``groups``, each with what it reserved (``catalog``: the
        catalog now, for workloads whose reservation is not recorded yet)."""
        ...


class UsageLedger:
    """What the members of each quota group run now, summed over the sources that know it."""

    def __init__(self, *sources: UsageSource):
        self.sources = sources

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """Every source's workloads charged to any of ``groups``."""
        found: list[Workload] = []
        for source in self.sources:
            found.extend(await source.workloads(catalog, groups))
        return found

    async def usage(self, catalog: Catalog, groups: frozenset[str]) -> dict[str, Usage]:
        """Usage per quota group among ``groups`` (groups without a quota are not counted)."""
        groups = groups & catalog.quotas.keys()
        if not groups:
            return {}
        return usage_by_group(await self.workloads(catalog, groups), groups)


def job_reservation(profile: Profile, kind: Kind, live_runs: int = 1) -> Usage:
    """What a job reserves: its profile once for each run that may be alive at once."""
    one = Usage.of(profile, kind)
    return Usage(cpu=one.cpu * live_runs, memory=one.memory * live_runs, gpus=one.gpus * live_runs, jobs=1)


def server_reservation(
    catalog: Catalog, recorded: Any, options: Any, owner_groups: frozenset[str] | set[str]
) -> Usage:
    """What a server counts: its recorded reservation, else what its options ask now."""
    if isinstance(recorded, Mapping):
        try:
            return Usage(**recorded)
        except TypeError:
            pass  # written by another release: fall back on the options
    try:
        selection = resolve_selection(catalog, options or {}, owner_groups, Kind.SERVER)
    except SelectionError:
        return Usage(servers=1)
    return Usage.of(selection.profile, Kind.SERVER)
