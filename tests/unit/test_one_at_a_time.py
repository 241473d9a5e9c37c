"""One operation at a time per job: the rule itself, and the manager's operations under it."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from jhub_ext.core.jobs.errors import Conflict, NoSuchJob
from jhub_ext.core.jobs.model import JobSpec, Placement
from jhub_ext.core.jobs.oneatatime import OneAtATime
from jhub_ext.service.store import JobStore

from .managers import ALICE, FakeBackend, Make, batch


async def test_operations_on_one_job_take_turns_in_order_and_other_jobs_do_not_wait() -> None:
    turns = OneAtATime()
    order: list[str] = []

    async def operation(key: tuple[str, str], label: str) -> None:
        async with turns.turn(key):
            order.append(f"{label} begins")
            await asyncio.sleep(0.01)
            order.append(f"{label} ends")

    first = asyncio.create_task(operation(("alice", "a"), "first"))
    await asyncio.sleep(0)
    assert ("alice", "a") in turns
    await asyncio.gather(operation(("alice", "a"), "second"), operation(("alice", "b"), "other"), first)
    assert order.index("first ends") < order.index("second begins")  # one at a time, in order
    assert order.index("other begins") < order.index("first ends")  # another job does not wait
    assert not turns  # keys are forgotten once nobody holds or waits for them


async def test_the_reconcilers_turn_is_taken_only_if_free() -> None:
    turns = OneAtATime()
    async with turns.turn(("alice", "a")):
        async with turns.turn_if_free(("alice", "a")) as free:
            assert not free
        async with turns.turn_if_free(("alice", "b")) as free:
            assert free and ("alice", "b") in turns
    assert not turns


class SlowBackend(FakeBackend):
    """Takes a few turns of the loop over each operation, and notes any overlap on one job."""

    def __init__(self) -> None:
        super().__init__()
        self.inside: set[tuple[str, str]] = set()
        self.overlaps = 0

    async def _slowly(self, key: tuple[str, str]) -> None:
        if key in self.inside:
            self.overlaps += 1
        self.inside.add(key)
        for _ in range(random.randint(1, 4)):  # noqa: S311 (not a secret)
            await asyncio.sleep(0)
        self.inside.discard(key)

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        await self._slowly((placement.user, spec.name))
        await super().submit(spec, placement)

    async def stop(self, user: str, name: str) -> None:
        await self._slowly((user, name))
        await super().stop(user, name)

    async def delete(self, user: str, name: str) -> None:
        await self._slowly((user, name))
        await super().delete(user, name)


@pytest.fixture
def backend() -> SlowBackend:
    return SlowBackend()


async def test_racing_operations_on_one_job_never_overlap_nor_fail(
    make: Make, store: JobStore, backend: SlowBackend
) -> None:
    manager = make(submits_per_minute=10**6, actions_per_minute=10**6)
    rng = random.Random(21)  # noqa: S311 (a repeatable mix of races, not a secret)

    async def act(operation: str) -> Any:
        try:
            if operation == "submit":
                return await manager.submit(ALICE, batch("racy"))
            return await getattr(manager, operation)(ALICE, "alice", "racy")
        except (NoSuchJob, Conflict):
            return None  # 404 and 409: the job was gone, or its name taken

    for _ in range(100):
        ops = [rng.choice(["submit", "restart", "stop", "delete"]) for _ in range(rng.randint(2, 5))]
        await asyncio.gather(*(act(op) for op in ops))
        assert (store.get("alice", "racy") is not None) == (("alice", "racy") in backend.seen), ops
    assert backend.overlaps == 0 and not manager.busy
