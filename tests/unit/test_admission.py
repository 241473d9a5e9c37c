"""One admission path: a job's start is planned once, and reserved with no network call while the
group's quota locks are held (a slow hub delays only the start that asked it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.admission.lock import QuotaLock
from jhub_ext.core.jobs.errors import NotAllowed
from jhub_ext.service.manager import Caller, JobManager

from .managers import ALICE, FakeHub, Make, batch

CAROL = Caller("carol", frozenset({"researchers"}), admin=False)
RESEARCHERS = frozenset({"researchers"})


class SlowHub(FakeHub):
    """A hub whose first answer about running servers arrives only when the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()  # the first question arrived
        self.answer = asyncio.Event()  # the test lets the first answer go
        self.questions = 0

    async def _get(self, path: str) -> Any:
        answer = await super()._get(path)  # as things stand when asked
        if path.startswith("/users?"):
            self.questions += 1
            if self.questions == 1:
                self.asked.set()
                await self.answer.wait()
        return answer


@pytest.fixture
def lock(tmp_path: Path) -> QuotaLock:
    return QuotaLock(tmp_path / "locks")


@pytest.fixture
def manager(make: Make, lock: QuotaLock) -> JobManager:
    return make(SlowHub(), quota_lock=lock)


async def test_a_submit_waiting_for_the_hub_holds_no_quota_lock(manager: JobManager) -> None:
    hub = manager.hub
    assert isinstance(hub, SlowHub)
    slow = asyncio.create_task(manager.submit(ALICE, batch("slow")))
    await hub.asked.wait()
    # another member of the group submits, and is done, while the hub has not answered the first
    quick = await asyncio.wait_for(manager.submit(CAROL, batch("quick")), 5)
    assert quick.status == "pending" and not slow.done()
    hub.answer.set()
    assert (await slow).status == "pending"
    assert hub.questions == 3  # asked again: a start (carol's) was recorded meanwhile


async def test_a_server_recorded_while_the_hub_was_asked_is_counted(
    manager: JobManager, lock: QuotaLock
) -> None:
    hub = manager.hub
    assert isinstance(hub, SlowHub)
    hub.answer.set()
    await manager.submit(ALICE, batch("one"))  # 2 of the group's 6 CPUs
    await manager.submit(ALICE, batch("two"))  # 4 of 6
    hub.questions = 0
    hub.asked.clear()
    hub.answer.clear()
    late = asyncio.create_task(manager.submit(ALICE, batch("late", wait=False)))
    await hub.asked.wait()
    # meanwhile a spawn (2 CPUs) is admitted in the hub, as its spawner does: under the lock
    hub.servers = [("dave", RESEARCHERS, {"profile": "small"})]
    async with lock.hold(RESEARCHERS) as held:
        held.recorded()
    hub.answer.set()
    with pytest.raises(NotAllowed) as refused:  # the first answer (no server) is out of date
        await late
    assert refused.value.field == "profile" and "6" in str(refused.value)


async def test_the_generation_moves_only_when_a_holder_recorded_and_is_seen_by_other_processes(
    tmp_path: Path,
) -> None:
    hub_side, service_side = QuotaLock(tmp_path / "locks"), QuotaLock(tmp_path / "locks")
    groups = ["researchers", "gpu"]
    start = service_side.generation(groups)
    async with hub_side.hold(groups):
        pass  # a check that refused: nothing recorded
    assert service_side.generation(groups) == start
    async with hub_side.hold(["gpu"]) as held:
        held.recorded()
    assert service_side.generation(groups) == (start[0] + 1, start[1])  # sorted: gpu first
    in_memory = QuotaLock()
    async with in_memory.hold(groups) as held:
        held.recorded()
    assert in_memory.generation(groups) == (1, 1)
