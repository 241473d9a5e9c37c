"""One step for "count what a group runs, check its quota, record the new workload".

Without it, two starts that each see room for one more both go ahead (20 concurrent submits
were seen to take a group to 27 of its 16 CPUs). The hub (spawns) and the jobs service (submits)
both hold the lock of every quota group of the user while they check and record, so the
second of two racing starts counts the first.

Within one process an :class:`asyncio.Lock` per group does it. Across processes on one machine
(local mode: the hub and the service) an exclusive ``flock`` on a file per group in a directory
both share. Groups are always taken in sorted order, so two holders never wait for each other.

Each group also counts the holders that recorded something (:meth:`Held.recorded`): its
*generation*. What is read before taking the locks (the hub's answer about its servers, a network
call no holder should wait for) is still current if the generation has not changed by the time
they are held: no start was recorded in between.
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


class Held:
    """The locks of some groups, held: what a holder recorded is counted when it lets them go."""

    def __init__(self, lock: QuotaLock, groups: list[str]):
        self._lock = lock
        self._groups = groups
        self._recorded = False

    def recorded(self) -> None:
        """Say that this holder recorded a start: the groups' generation moves on at release."""
        self._recorded = True

    def generation(self) -> tuple[int, ...]:
        """The groups' generation, read while held."""
        return self._lock.generation(self._groups)

    def _release(self) -> None:
        if self._recorded:
            for group in self._groups:
                self._lock._bump(group)


class QuotaLock:
    """Per-group locks, shared with the other processes that use the same ``directory`` (if any)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None, timeout: float = 30.0):
        self.directory = Path(directory) if directory else None
        self.timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}
        self._generations: dict[str, int] = {}  # without a directory: this process's own count

    @contextlib.asynccontextmanager
    async def hold(self, groups: Iterable[str]) -> AsyncIterator[Held]:
        """Hold the locks of ``groups`` (in sorted order) for the body of the ``async with``."""
        deadline = time.monotonic() + self.timeout
        ordered = sorted(set(groups))
        held = Held(self, ordered)
        async with contextlib.AsyncExitStack() as stack:
            for group in ordered:
                lock = self._locks.setdefault(group, asyncio.Lock())
                try:
                    await asyncio.wait_for(lock.acquire(), max(deadline - time.monotonic(), 0.001))
                except TimeoutError:
                    raise QuotaLockTimeout(f"the quota of group '{group}' is busy; try again") from None
                stack.callback(lock.release)
                if self.directory is not None:
                    stack.callback(os.close, await self._flock(group, deadline))
            stack.callback(held._release)  # first of the callbacks to run: while still held
            yield held

    def generation(self, groups: Iterable[str]) -> tuple[int, ...]:
        """How many holders of each of ``groups`` (sorted) recorded a start, as far as one can
        tell without holding them (a value read during a change reads as another one)."""
        return tuple(self._read(group) for group in sorted(set(groups)))

    def _path(self, group: str, suffix: str = "lock") -> Path:
        assert self.directory is not None
        digest = hashlib.sha256(group.encode()).hexdigest()[:32]  # any group name makes a file name
        return self.directory / f"quota-{digest}.{suffix}"

    def _read(self, group: str) -> int:
        if self.directory is None:
            return self._generations.get(group, 0)
        try:  # replaced whole (below), so never read half-written
            return int(self._path(group, "generation").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _bump(self, group: str) -> None:
        if self.directory is None:
            self._generations[group] = self._generations.get(group, 0) + 1
            return
        new = self._path(group, "generation.new")  # only the holder of the group's lock writes it
        new.write_text(str(self._read(group) + 1))
        os.replace(new, self._path(group, "generation"))

    async def _flock(self, group: str, deadline: float) -> int:
        assert self.directory is not None
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path(group), os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fd is closed
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise QuotaLockTimeout(f"the quota of group '{group}' is busy; try again") from None
                await asyncio.sleep(0.01)
