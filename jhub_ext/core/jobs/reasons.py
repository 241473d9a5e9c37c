"""Why a job waits or ended: a stable code for programs, plain words for people.

Every waiting and ended state of a job carries a :class:`Reason` (its ``reason`` in the API) with a
``message`` in plain words that says what to do. Both backends say the same things the same way:
the local one from its processes, the Kubernetes one from the cluster's objects, where no
Kubernetes word (OOMKilled, FailedScheduling, taints, CrashLoopBackOff...) reaches a researcher;
admins see the cluster's own words as the job's ``detail``.

The codes are part of the API (``openapi.yaml``): a code is never renamed or given another meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from jhub_ext.core.catalog.model import Catalog, Kind
from jhub_ext.core.catalog.quantities import format_memory


class Reason(StrEnum):
    """Why a job is waiting, or why it ended."""

    # waiting
    QUEUED = "queued"  # its groups' quota is full: it starts by itself, in its turn, when room frees
    STARTING = "starting"  # its process or pod is being started
    PULLING_IMAGE = "pulling-image"  # its image is being downloaded onto a node
    WAITING_FOR_CAPACITY = "waiting-for-capacity"  # no node has room for it now
    HELD_BY_CLUSTER_QUEUE = "held-by-cluster-queue"  # the cluster's own queue holds it
    RESTARTING = "restarting"  # its last run ended; it runs again after a pause
    NEXT_RUN = "next-run"  # a scheduled job, waiting for its next time
    CRASH_LOOP = "crash-loop"  # it keeps ending soon after it starts (and is started again)
    NODE_LOST = "node-lost"  # its machine was lost or drained (it runs again elsewhere)
    # ended (some of these also explain a wait, such as an image that cannot be found)
    COMPLETED = "completed"
    EXIT_CODE = "exit-code"  # its program ended with an error code
    OUT_OF_MEMORY = "out-of-memory"  # it used more memory than its profile has
    DEADLINE_EXCEEDED = "deadline-exceeded"  # it ran longer than its deadline
    EVICTED = "evicted"  # its machine ran short and put it out
    IMAGE_NOT_FOUND = "image-not-found"  # its image cannot be downloaded
    CANNOT_START = "cannot-start"  # its program cannot be started as configured
    STOPPED_BY_USER = "stopped-by-user"
    STOPPED_BY_ADMIN = "stopped-by-admin"
    FAILED = "failed"  # it failed for a reason the platform did not say
    # refused at once (a refusal's ``reason``, never a job's)
    CAN_NEVER_FIT = "can-never-fit"  # larger than any quota of its groups allows at all


@dataclass(frozen=True)
class Why:
    """A reason and its words: why one run ended, or why a job waits or ended."""

    reason: Reason
    text: str


def parse_reason(text: str | None) -> Reason | None:
    """The reason a stored code names; None for none, or for a code this release does not know."""
    try:
        return Reason(text) if text else None
    except ValueError:
        return None


#: a job recorded and not yet running, with nothing known to hold it up
STARTING = Why(Reason.STARTING, "starting: it runs in a moment")


def more_memory_hint(catalog: Catalog, slug: str | None, groups: frozenset[str], kind: Kind) -> str:
    """What to do about a run that ran out of memory on profile ``slug``: the profile with the
    least memory above it among those ``groups`` may use for ``kind``, named with how to use it."""
    current = catalog.profile(slug) if slug else None
    if current is None:
        return "choose a profile with more memory"
    have = current.resources.memory
    bigger = min(
        (p for p in catalog.visible_to(groups, kind) if p.resources.memory > have),
        key=lambda p: p.resources.memory,
        default=None,
    )
    if bigger is None:
        return f"{current.display_name} has {format_memory(have)}, the most you may use: ask an admin"
    return (
        f"{current.display_name} has {format_memory(have)}; {bigger.display_name} has "
        f"{format_memory(bigger.resources.memory)}: submit it again with --profile {bigger.slug}"
    )


#: the reasons whose message ends with the last lines the job printed, which often say why
TOLD_BY_ITS_LOG = frozenset({Reason.EXIT_CODE, Reason.FAILED})
LAST_LINES = 3
_LINE_CHARACTERS = 160


def with_last_lines(message: str, log: str) -> str:
    """``message`` followed by the last :data:`LAST_LINES` lines ``log`` has (each clipped)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()][-LAST_LINES:]
    if not lines:
        return message
    clipped = [
        line if len(line) <= _LINE_CHARACTERS else line[: _LINE_CHARACTERS - 1] + "…" for line in lines
    ]
    return f"{message}; it last printed: " + " | ".join(clipped)
