"""Servers as the hub records them: the hub's source of servers for group quotas.

A server counts from its hub record, which JupyterHub writes before the spawn begins, so a start
that is counted after another one always sees it (see :mod:`jhub_ext.admission.reserve`). What a
record counts is what its server reserved when it was admitted, else what its options ask under
the catalog now (:func:`~jhub_ext.core.catalog.ledger.server_reservation`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jupyterhub import orm

from jhub_ext.core.catalog import Catalog
from jhub_ext.core.catalog.ledger import server_reservation
from jhub_ext.core.catalog.quota import Workload, server_words

#: where a server's spawner state keeps what it reserved, so that it survives a hub restart
STATE_KEY = "jhub_ext_usage"


@dataclass(frozen=True)
class ServerRecord:
    """A server the hub records as running or starting, and what it counts."""

    user: str
    server: str  # "" for the user's default server
    workload: Workload


#: how a platform counts the recorded servers (by their records, or by the pods that run them)
Counting = Callable[[list[ServerRecord], Catalog, frozenset[str]], list[Workload]]


class HubServers:
    """The servers of members of some groups that the hub records as running or starting now,
    but the one being started (``own``, its spawner's row): a usage source of the quota check."""

    def __init__(self, db: Any, own: Any, counting: Counting):
        self.db = db
        self.own = own
        self.counting = counting

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """The workloads of the recorded servers charged to any of ``groups``, as the platform
        counts them."""
        return self.counting(self.records(catalog, groups), catalog, groups)

    def records(self, catalog: Catalog, groups: frozenset[str]) -> list[ServerRecord]:
        """The hub's records of servers running or starting now of members of ``groups``."""
        running = (
            self.db.query(orm.Spawner)
            .join(orm.User)
            .filter(orm.Spawner.server_id.isnot(None))
            .filter(orm.User.groups.any(orm.Group.name.in_(groups)))
        )
        records = []
        for row in running:
            if row is self.own:
                continue
            owner_groups = frozenset(g.name for g in row.user.groups)
            recorded = (row.state or {}).get(STATE_KEY)
            usage = server_reservation(catalog, recorded, row.user_options, owner_groups)
            workload = Workload(owner_groups, usage, row.user.name, server_words(row.name))
            records.append(ServerRecord(row.user.name, row.name, workload))
        return records
