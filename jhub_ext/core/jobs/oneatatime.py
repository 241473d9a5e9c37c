"""One operation at a time per job: the jobs service's rule for submit, restart, stop and delete.

Every operation that changes a job (a user's submit, restart, stop or delete, and each correction
the reconciler makes) runs holding that job's turn, keyed by (user, job name). Operations on the
same job wait for each other, in the order they came; operations on different jobs never wait.
So a job's record and its work (a process, a Kubernetes workload) are only ever changed by one
operation at a time, and each operation sees what the one before it left: a stop after a delete
finds no job (404), a submit after a submit finds the name taken (409), and no operation writes
into a job another one is removing. The reconciler never waits: it leaves a job that is in turn
(or waited for) alone until its next pass.

It lives in the jobs domain, above every backend, so both backends get the same guarantee and
need no lock of their own for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

Key = tuple[str, str]


class OneAtATime:
    """Turns per job: at most one holder per key; the others wait in order (asyncio, one loop)."""

    def __init__(self) -> None:
        self._locks: dict[Key, asyncio.Lock] = {}
        self._wanted: dict[Key, int] = {}  # holders and waiters, per key

    def __contains__(self, key: object) -> bool:
        """Whether an operation holds or waits for the job's turn."""
        return key in self._wanted

    def __len__(self) -> int:
        return len(self._wanted)

    @contextlib.asynccontextmanager
    async def turn(self, key: Key) -> AsyncIterator[None]:
        """Wait for the job's turn and hold it for the block's length."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._wanted[key] = self._wanted.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._wanted[key] -= 1
            if not self._wanted[key]:  # nobody holds or waits: forget the key (names come and go)
                del self._wanted[key]
                del self._locks[key]

    @contextlib.asynccontextmanager
    async def turn_if_free(self, key: Key) -> AsyncIterator[bool]:
        """Hold the job's turn for the block if nobody holds or waits for it (yields True); else
        yield False at once, holding nothing."""
        if key in self._wanted:
            yield False
            return
        async with self.turn(key):
            yield True
