"""A job's output on Kubernetes, followed from one container to the next.

A job's output is the log of the ``job`` container of its pods. A Job retries in new pods and a
scraper's container restarts in its pod, so following a job reads the latest container that has
started to its end, then waits (for a change in the watch caches) for the next one, until the
job has ended. When a container last printed is the time the kubelet stamped on its last line.
Which pods are the job's own is the backend's to say (:mod:`jhub_ext.kubernetes.backend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta, timezone

from jhub_ext.kubernetes.api import Json, KubeObjects

#: a container of a pod: (pod name, pod uid, restart count)
Target = tuple[str, str, int]
#: the RFC 3339 time before a log line read with ``timestamps`` (the kubelet writes nine fraction
#: digits and ``Z``; any number of digits, lower case and an offset are RFC 3339 too), and its space
_LINE_TIME = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))(?: |\n|$)"
)
#: enough of a line's start to hold its time
_TIME_BYTES = 64


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


def line_time(line: bytes) -> datetime | None:
    """The time at the start of a log line read with ``timestamps``, as an aware UTC datetime (to the
    microsecond: Python's datetime keeps no more); None where the line starts with none."""
    match = _LINE_TIME.match(line)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.groups()[:6])
    fraction, sign, zone_hours, zone_minutes = match.groups()[6:]
    micro = int((fraction or b"")[:6].ljust(6, b"0"))
    zone = UTC
    if sign is not None:
        offset = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        zone = timezone(-offset if sign == b"-" else offset)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=zone).astimezone(UTC)
    except ValueError:  # no such day or time
        return None


async def last_line_time(objects: KubeObjects, pod: str) -> datetime | None:
    """When the ``job`` container of ``pod`` (the running one, else the last that ended) wrote its
    last line, as the kubelet stamped it; None where it has written nothing, or has not started."""
    response = await objects.open_log(pod, False, 1, timestamps=True)
    if response is None:
        return None
    start = b""
    try:  # only the line's start is read: the line may be long
        while len(start) < _TIME_BYTES and b" " not in start:
            if not (chunk := await response.content.read(_TIME_BYTES - len(start))):
                break
            start += chunk
    finally:
        response.release()
    return line_time(start)


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
