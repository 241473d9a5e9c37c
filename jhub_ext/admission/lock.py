"""One step for "count what a group runs, check its quota, record the new workload".

Without it, two starts that each see room for one more both go ahead (20 concurrent submits
were seen to take a group to 27 of its 16 CPUs). The hub (spawns) and the jobs service (submits)
both hold the lock of every quota group of the user while they check and record, so the
second of two racing starts counts the first.

Within one process an :class:`asyncio.Lock` per group does it. Across processes on one machine
(local mode: the hub and the service) an exclusive ``flock`` on a file per group in a directory
both share. Groups are always taken in sorted order, so two holders never wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path


class QuotaLockTimeout(TimeoutError):
    """The lock stayed taken for too long (another start is stuck); try again shortly."""


class QuotaLock:
    """Per-group locks, shared with the other processes that use the same ``directory`` (if any)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, timeout: float = 30.0):
        self.directory = Path(directory) if directory else None
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, groups: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of ``groups`` (in sorted order) for the body of the ``async with``."""
        deadline = time.monotonic() + self.timeout
        async with contextlib.AsyncExitStack() as held:
            for group in sorted(set(groups)):
                lock = self._locks.setdefault(group, asyncio.Lock())
                try:
                    await asyncio.wait_for(lock.acquire(), max(deadline - time.monotonic(), 0.001))
                except TimeoutError:
                    raise QuotaLockTimeout(f"the quota of group '{group}' is busy; try again") from None
                held.callback(lock.release)
                if self.directory is not None:
                    held.callback(os.close, await self._flock(group, deadline))
            yield

    async def _flock(self, group: str, deadline: float) -> int:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256(group.encode()).hexdigest()[:32]  # any group name makes a file name
        fd = os.open(self.directory / f"quota-{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fd is closed
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise QuotaLockTimeout(f"the quota of group '{group}' is busy; try again") from None
                await asyncio.sleep(0.01)
