"""Resource limits for local processes (servers and jobs in local mode).

A CPU limit becomes a CPU affinity mask and a memory limit an address-space limit
(``RLIMIT_AS``): as close to a profile's resources as an unprivileged process gets.
"""

from __future__ import annotations

import math
import os
import resource
import zlib
from collections.abc import Callable


def cpu_set(cpu_limit: float | None, available: set[int], spread: str = "") -> set[int] | None:
    """The cores a process with ``cpu_limit`` may use: whole cores, at least one, at most all.

    Which cores depends on ``spread`` (the user's name), so that different users' servers
    and jobs with small limits land on different cores instead of all sharing the first.
    """
    if not cpu_limit:
        return None
    cores = sorted(available)
    count = min(len(cores), max(1, math.ceil(cpu_limit)))
    start = zlib.crc32(spread.encode()) % len(cores)
    return {cores[(start + i) % len(cores)] for i in range(count)}


def limiter(cpu_limit: float | None, mem_limit: int | None, spread: str = "") -> Callable[[], None]:
    """A ``preexec_fn`` that applies the limits in the child before it runs the command."""
    cores = cpu_set(cpu_limit, os.sched_getaffinity(0), spread)
    memory = int(mem_limit) if mem_limit else None

    def apply() -> None:
        if cores:
            os.sched_setaffinity(0, cores)
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply
