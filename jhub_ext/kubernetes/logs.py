"""A job's output on Kubernetes, followed from one container to the next.

A job's output is the log of the ``job`` container of its pods. A Job retries in new pods and a
scraper's container restarts in its pod, so following a job reads the latest container that has
started to its end, then waits (for a change in the watch caches) for the next one, until the
job has ended. Which pods are the job's own is the backend's to say
(:mod:`jhub_ext.kubernetes.backend`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable

from jhub_ext.kubernetes.api import Json, KubeObjects

#: a container of a pod: (pod name, pod uid, restart count)
Target = tuple[str, str, int]


def log_target(pods: list[Json]) -> Target | None:
    """The latest ``job`` container that has started (is running or has ended) among ``pods``
    (oldest first): (pod name, pod uid, restart count)."""
    for pod in reversed(pods):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            state = status.get("state") or {}
            if status.get("name") == "job" and ("running" in state or "terminated" in state):
                meta = pod["metadata"]
                return meta["name"], meta["uid"], int(status.get("restartCount", 0))
    return None


async def follow_logs(
    objects: KubeObjects,
    target: Callable[[], Target | None],
    finished: Callable[[], bool],
    changed: asyncio.Event,
    *,
    follow: bool,
    tail: int | None,
) -> AsyncGenerator[str, None]:
    """The output of the container ``target()`` names (its last ``tail`` lines); with ``follow``, of
    every container it names from now until ``finished()``, waiting for the first one. ``changed``
    is set on every change in the watch caches (cleared here while waiting)."""
    streamed: set[tuple[str, int]] = set()  # (pod uid, restart count) already followed to its end
    while True:
        current = target()
        if current is not None and current[1:] not in streamed:
            response = await objects.open_log(current[0], follow, tail)
            if response is not None:
                try:
                    while chunk := await response.content.read(8192):
                        yield chunk.decode("utf-8", errors="replace")
                finally:
                    response.release()
                if not follow:
                    return
                streamed.add(current[1:])
                tail = None  # later containers: everything they print
        elif not follow:
            return
        if finished():
            return
        changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), 5)
