"""A job's admission: the one path that submit, restart and resume take before work starts.

1. **select**: the job's profile (the catalog's default when it names none), if the owner's groups
   may use it for this kind of job;
2. **bound**: the deadline it runs under (its own, else its profile's longest run);
3. **count**: what it reserves against quotas (each run of a schedule that may be alive at once);
4. **place**: where and as whom it runs;
5. **reserve**: count, check and record as one step (:mod:`jhub_ext.admission.reserve`).

Steps 1 to 4 are :meth:`Admission.plan` (pure); step 5 is :meth:`Admission.reserve`. A queue, a
budget or another policy plugs in here, for every way a job starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from jhub_ext.admission.lock import QuotaLock
from jhub_ext.admission.reserve import reserving
from jhub_ext.core.catalog.ledger import UsageLedger, UsageSource, job_reservation
from jhub_ext.core.catalog.model import Catalog
from jhub_ext.core.catalog.quota import QuotaExceeded, Usage, check_quota
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.catalog.selection import Selection, SelectionError, resolve_selection
from jhub_ext.core.jobs import lifecycle
from jhub_ext.core.jobs.errors import Invalid, NotAllowed
from jhub_ext.core.jobs.model import JobSpec, JobSpecError, Placement
from jhub_ext.core.jobs.reasons import Reason


class QuotaFull(NotAllowed):
    """The quotas of ``groups`` have no room for the job now (it would fit once some work ends):
    ``problems`` say what each uses, beside what the job needs."""

    def __init__(self, error: QuotaExceeded):
        super().__init__(str(error), "profile")
        self.groups = error.groups
        self.problems = error.problems

    @property
    def queue(self) -> str:
        """The group whose queue a job refused this way waits in: the first that is full."""
        return min(self.groups)


@dataclass(frozen=True)
class Admitted:
    """A job that passed selection: what it runs, where, and what it reserves."""

    catalog: Catalog
    selection: Selection
    runs: JobSpec  # the spec as it runs: under its deadline
    usage: Usage
    placement: Placement

    def running_in(self, image: str | None) -> Admitted:
        """The same job in ``image`` (the owner's notebook's), where it named no profile."""
        if not image:
            return self
        return dataclasses.replace(self, placement=dataclasses.replace(self.placement, image=image))


class Admission:
    """Plans and reserves the starts of jobs (see the module's docstring)."""

    def __init__(
        self,
        catalog: CatalogSource,
        lock: QuotaLock,
        recorded: Sequence[UsageSource],
        asked: Sequence[UsageSource] = (),
    ):
        self.catalog_source = catalog
        self.lock = lock
        self.recorded = tuple(recorded)  # read holding the quota locks
        self.asked = tuple(asked)  # read before taking them (network answers)

    @property
    def catalog(self) -> Catalog:
        """The catalog as it stands now (it may be reloaded)."""
        return self.catalog_source.current()

    def plan(self, owner: str, groups: frozenset[str], spec: JobSpec, profile: str | None) -> Admitted:
        """Select, bound, count and place ``spec`` for ``owner`` (in ``groups``) with ``profile``
        (the default one if None); :class:`NotAllowed` or :class:`Invalid` when it may not run."""
        catalog = self.catalog
        try:
            selection = resolve_selection(
                catalog, {"profile": profile} if profile else {}, groups, spec.kind.profile_kind
            )
        except SelectionError as e:
            raise NotAllowed(str(e), "profile") from None
        try:
            runs = lifecycle.bounded_deadline(spec, selection.profile.max_run_seconds, selection.profile.slug)
        except JobSpecError as e:
            raise Invalid(str(e), e.field) from None
        live_runs = spec.schedule.max_live_runs if spec.schedule is not None else 1
        usage = job_reservation(selection.profile, spec.kind.profile_kind, live_runs)
        placement = Placement(
            user=owner,
            groups=groups,
            profile=selection.profile,
            image=selection.image.image if selection.image else None,
        )
        return Admitted(catalog, selection, runs, usage, placement)

    @contextlib.asynccontextmanager
    async def reserve(self, admitted: Admitted) -> AsyncIterator[None]:
        """Hold the owner's quota locks while the body records the job, once the quotas have room
        (else :class:`QuotaFull`, or :class:`NotAllowed` with reason ``can-never-fit`` when no
        quota could ever hold it); see :func:`~jhub_ext.admission.reserve.reserving`."""
        groups = admitted.placement.groups
        try:
            async with reserving(
                self.lock,
                admitted.catalog,
                groups,
                admitted.usage,
                recorded=self.recorded,
                asked=self.asked,
                owner=admitted.placement.user,
            ):
                yield
        except QuotaExceeded as e:
            if e.never or not e.groups:
                raise NotAllowed(str(e), "profile", reason=Reason.CAN_NEVER_FIT.value) from None
            raise QuotaFull(e) from None

    async def full(self, admitted: Admitted) -> QuotaFull | None:
        """Why ``admitted`` would not fit its groups' quotas now, if it would not: for display (no
        lock; only :meth:`reserve` decides)."""
        groups = admitted.placement.groups
        try:
            check_quota(admitted.catalog, groups, admitted.usage, await self.usage(admitted.catalog, groups))
        except QuotaExceeded as e:
            return QuotaFull(e) if e.groups else None
        return None

    async def usage(self, catalog: Catalog, groups: frozenset[str]) -> dict[str, Usage]:
        """What the quota groups among ``groups`` use now, from every source (for display: no lock)."""
        return await UsageLedger(*self.asked, *self.recorded).usage(catalog, groups)
