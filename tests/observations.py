"""What a jobs backend reports through ``on_change``, recorded so tests can wait for a state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from jhub_ext.core.jobs.backend import Observed


class Recorder:
    """Pass as a backend's ``on_change``; ``await until(predicate)`` returns the first report matching it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Observed]] = []
        self.changed = asyncio.Event()

    def __call__(self, user: str, name: str, observed: Observed) -> None:
        self.seen.append((user, name, observed))
        self.changed.set()

    async def until(self, predicate: Callable[[Observed], bool], timeout: float = 30) -> Observed:
        async def wait() -> Observed:
            while True:
                for _, _, observed in reversed(self.seen):
                    if predicate(observed):
                        return observed
                self.changed.clear()
                await self.changed.wait()

        return await asyncio.wait_for(wait(), timeout)
