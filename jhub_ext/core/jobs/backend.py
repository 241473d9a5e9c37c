"""The interface every jobs backend implements (local processes, Kubernetes), owned by the jobs domain.

The jobs service talks only to this interface; backends (``jhub_ext.backends``) implement it,
and only the service's app module chooses one (import-linter contracts keep it so). A backend
runs a job's workload and reports what it observes through ``on_change``; the service records
it in the store. Backends are the source of truth for what is running now, and must survive a
restart of the service: ``start()`` re-adopts the work that is still running and settles what
ended meanwhile. The service calls ``submit``, ``stop`` and ``delete`` of one job one at a time
(the jobs domain's rule, :mod:`jhub_ext.core.jobs.oneatatime`), never two of the same job at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from traitlets.config import LoggingConfigurable

from jhub_ext.core.jobs.model import ROOMY, JobSpec, Limits, Observed, Placement, Room

ChangeCallback = Callable[[str, str, Observed], Awaitable[None] | None]


@dataclass(frozen=True)
class Held:
    """What a backend holds of one job: since when, and whether that includes what runs it (a
    workload, a supervised process) or only leftovers (its code)."""

    created: datetime
    runs: bool = True


class JobRejected(Exception):
    """What the backend (for Kubernetes: the API server) would refuse about a job, in plain words."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class JobBackend(LoggingConfigurable):
    """Runs jobs. Every method is keyed by (user, job name); names are unique per user."""

    on_change: ChangeCallback | None = None
    #: the admin's bounds on submissions, set by the service; saved jobs are checked against them
    limits: Limits = Limits()

    async def start(self) -> None:
        """Begin: re-adopt running work, settle work that ended while nobody watched."""
        raise NotImplementedError

    async def shutdown(self) -> None:
        """Stop watching. Running jobs keep running (scrapers survive service restarts)."""
        raise NotImplementedError

    async def validate(self, spec: JobSpec, placement: Placement) -> None:
        """Raise :class:`JobRejected` for a job that could not run, before anything is stored."""

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        """Start ``spec``. Idempotent: submitting a job that already runs changes nothing.
        Raises :class:`JobRejected`, leaving nothing behind, where it cannot be started."""
        raise NotImplementedError

    async def stop(self, user: str, name: str) -> None:
        """Stop the job's workload (SIGTERM, then SIGKILL after a grace period); it ends ``stopped``."""
        raise NotImplementedError

    async def delete(self, user: str, name: str) -> None:
        """Stop the job and remove everything the backend keeps for it."""
        raise NotImplementedError

    async def inventory(self) -> dict[tuple[str, str], Held]:
        """Every job the backend holds anything of (running or not), with what it holds: what the
        reconciler compares with the store."""
        raise NotImplementedError

    def observed(self, user: str, name: str) -> Observed | None:
        """What the backend sees now, from memory (no I/O); None if it knows no such job."""
        raise NotImplementedError

    def logs(
        self, user: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The job's output; with ``follow``, keep yielding until the job ends."""
        raise NotImplementedError

    async def last_output(self, user: str, name: str) -> datetime | None:
        """When the job's current run last printed a line (an aware UTC datetime), or None: it has
        printed nothing yet, or this backend cannot tell."""
        return None

    def room(self, placement: Placement) -> Room:
        """Whether the machines have room for a job of ``placement`` (its profile), from memory (no
        I/O). A backend whose jobs run on the service's own machine (local mode) has room: what the
        machine can hold is the catalog's quotas' business."""
        return ROOMY

    def health(self) -> Mapping[str, bool]:
        """What this backend follows to know what runs (a Kubernetes backend: its watches), by name,
        and whether each works now, from memory (no I/O); the service's metrics report it. A
        backend that follows nothing of the kind: empty."""
        return {}

    async def notify(self, user: str, name: str, observed: Observed) -> None:
        """Report what the backend now observes of a job to ``on_change``, if one is set."""
        if self.on_change is not None:
            result = self.on_change(user, name, observed)
            if result is not None:
                await result


# Observed and Placement are part of the interface; they are defined with the pure model, so that
# status code and the manifest builders can use them
__all__ = ["ROOMY", "ChangeCallback", "Held", "JobBackend", "JobRejected", "Observed", "Placement", "Room"]
