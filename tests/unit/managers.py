"""What the jobs service's unit tests share: a small catalog, callers, submissions, and stand-ins for
the platform (a recording backend) and the hub (the real client answered with literal models)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from jhub_ext.core.jobs.backend import Held, JobBackend, JobRejected, Observed, Placement
from jhub_ext.core.jobs.model import ROOMY, JobSpec, JobStatus, Room
from jhub_ext.service.hubapi import HubClient
from jhub_ext.service.manager import Caller, JobManager

CATALOG = """\
version: 1
groups: [researchers, physics, gpu]
profiles:
  - slug: small
    display_name: Small
    default: true
    cpu: {limit: 2}
    memory: {limit: 4Gi}
    images:
      - {slug: base, display_name: Base, image: example.org/base:1}
      - {slug: sci, display_name: Sci, image: example.org/sci:2}
  - {slug: gpu, display_name: GPU, groups: [gpu], cpu: {limit: 4}, memory: {limit: 8Gi}, gpu: {count: 1}}
  - {slug: desk, display_name: Desk, kinds: [server], cpu: {limit: 1}}
quotas:
  researchers: {cpu: 6, memory: 64Gi, jobs: 10}
  physics: {cpu: 2}
"""
GIB = 2**30
SMALL_JOB = {"cpu": 2.0, "memory": 4 * GIB, "gpus": 0, "servers": 0, "jobs": 1}
ALICE = Caller("alice", frozenset({"researchers"}), admin=False)
BOB = Caller("bob", frozenset({"physics"}), admin=False)
ADMIN = Caller("root", frozenset(), admin=True)
Make = Callable[..., JobManager]  # builds a manager, with other settings or a hub


RUN = {"command": ["python", "run.py"], "files": {"run.py": "1\n"}}


def batch(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "batch", **RUN, **extra}


def scheduled(name: str, **extra: Any) -> dict[str, Any]:
    return batch(name, kind="scheduled", schedule="@hourly", **extra)


class FakeBackend(JobBackend):
    """Records what it is asked, answers from memory, and fails where a test tells it to."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, str]] = []
        self.submitted: list[tuple[JobSpec, Placement]] = []
        self.seen: dict[tuple[str, str], Observed] = {}
        self.output = "first line\nlast line\n"
        self.submit_error: Exception | None = None
        self.validate_error: JobRejected | None = None
        self.output_goes_on_stop = False  # as on Kubernetes, where a stop deletes the pods
        self.held: dict[tuple[str, str], Held] = {}  # what inventory() reports
        self.rooms: dict[str, Room] = {}  # what room() says, by profile: room, where not set

    def room(self, placement: Placement) -> Room:
        return self.rooms.get(placement.profile.slug, ROOMY)

    async def validate(self, spec: JobSpec, placement: Placement) -> None:
        self.calls.append(("validate", placement.user, spec.name))
        await asyncio.sleep(0)  # let concurrent submits interleave, as real I/O would
        if self.validate_error is not None:
            raise self.validate_error

    async def submit(self, spec: JobSpec, placement: Placement) -> None:
        self.calls.append(("submit", placement.user, spec.name))
        await asyncio.sleep(0)
        if self.submit_error is not None:
            raise self.submit_error
        self.submitted.append((spec, placement))
        self.seen[placement.user, spec.name] = Observed(JobStatus.PENDING)

    async def stop(self, user: str, name: str) -> None:
        self.calls.append(("stop", user, name))
        if self.output_goes_on_stop:
            self.output = ""
            await self.report(user, name, JobStatus.STOPPED, message="stopped")

    async def delete(self, user: str, name: str) -> None:
        self.calls.append(("delete", user, name))
        self.seen.pop((user, name), None)

    def observed(self, user: str, name: str) -> Observed | None:
        return self.seen.get((user, name))

    async def inventory(self) -> dict[tuple[str, str], Held]:
        return dict(self.held)

    async def logs(
        self, user: str, name: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        yield self.output

    async def report(self, user: str, name: str, status: JobStatus, **details: Any) -> None:
        """What a watch would do: remember the observation and notify the service."""
        self.seen[user, name] = Observed(status, **details)
        await self.notify(user, name, self.seen[user, name])

    def actions(self, kind: str) -> list[tuple[str, str]]:
        return [(user, name) for what, user, name in self.calls if what == kind]


class FakeHub(HubClient):
    """The real HubClient, answered with literal models of the hub's REST API instead of HTTP."""

    def __init__(
        self,
        options: dict[str, Any] | None = None,
        servers: list[Any] | None = None,
        groups: frozenset[str] = ALICE.groups,
    ):
        super().__init__("http://hub.invalid/hub/api", "unused")
        self.options, self.servers, self.user_groups = options, servers or [], groups

    async def _get(self, path: str) -> Any:
        await asyncio.sleep(0)  # an HTTP call: other submits run meanwhile
        if path.startswith("/users?"):
            return [
                {"name": user, "groups": sorted(groups), "servers": {"": {"user_options": options}}}
                for user, groups, options in self.servers
            ]
        servers = {"": {"user_options": self.options}} if self.options is not None else {}
        return {"name": "alice", "groups": sorted(self.user_groups), "servers": servers}
