"""Count, check and record a start as one step, with no network call while the locks are held.

Every start (a server's spawn in the hub, a job's submit or restart in the service) reserves what it
will use the same way: it takes the quota locks of the owner's groups, counts what those groups
use now, checks the catalog's quotas, and records itself before it lets the locks go.

The usage sources are of two sorts:

- ``recorded``: records that only lock holders change (the hub's server rows, the service's job
  rows). They are read while the locks are held, so a racing start is always counted.
- ``asked``: another process's answer over the network (the hub's list of running servers, which
  the service asks for). It is read *before* the locks are taken, so a slow hub delays only this
  start, never the others of the group. It is still current if the groups' generation has not
  moved by the time the locks are held (no start was recorded in between); else it is asked again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from jhub_ext.admission.lock import QuotaLock, QuotaLockTimeout
from jhub_ext.core.catalog.ledger import UsageSource
from jhub_ext.core.catalog.model import Catalog
from jhub_ext.core.catalog.quota import QuotaExceeded, Usage, Workload, check_quota, usage_by_group


@contextlib.asynccontextmanager
async def reserving(
    lock: QuotaLock,
    catalog: Catalog,
    groups: frozenset[str],
    usage: Usage,
    *,
    recorded: Sequence[UsageSource],
    asked: Sequence[UsageSource] = (),
    owner: str | None = None,
) -> AsyncIterator[None]:
    """Hold the quota locks of ``groups`` while the body records a start of ``usage``, once the
    groups' quotas have room for it (else :class:`~jhub_ext.core.catalog.quota.QuotaExceeded`).

    A body that returns has recorded the start; one that raises has not (nothing is counted).
    Gives up with :class:`QuotaLockTimeout` after the lock's timeout. A refusal names ``owner``'s
    own servers and jobs that count in the full groups.
    """
    quota_groups = groups & catalog.quotas.keys()
    check_quota(catalog, groups, usage, {})  # one that can never fit: refused before any lock or count
    deadline = time.monotonic() + lock.timeout
    while True:
        before = lock.generation(quota_groups)
        outside = await _workloads(asked, catalog, quota_groups)
        async with lock.hold(quota_groups) as held:
            if held.generation() != before:  # a start was recorded since: ask again
                if time.monotonic() > deadline:
                    raise QuotaLockTimeout("the quotas of your groups are busy; try again")
                continue
            inside = await _workloads(recorded, catalog, quota_groups)
            in_use = usage_by_group(outside + inside, quota_groups) if quota_groups else {}
            try:
                check_quota(catalog, groups, usage, in_use)
            except QuotaExceeded as e:
                raise e.naming(owner, outside + inside) if owner else e from None
            yield
            held.recorded()
            return


async def _workloads(
    sources: Sequence[UsageSource], catalog: Catalog, groups: frozenset[str]
) -> list[Workload]:
    if not groups:
        return []
    found: list[Workload] = []
    for source in sources:
        found.extend(await source.workloads(catalog, groups))
    return found
