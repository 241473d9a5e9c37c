"""The kubelet's log endpoint, ``/containerLogs/{namespace}/{pod}/{container}``, over the CRI log files.

The API server's ``pods/log`` proxies here with its kubelet client certificate, which is checked
against the cluster CA. Parameters as the kubelet takes them: ``follow``, ``previous``,
``tailLines``, ``sinceSeconds``, ``sinceTime``, ``timestamps``, ``limitBytes``. ``tailLines``
reads the file backwards from its end, so a tail of a large log does not load it. With
``timestamps`` each line starts with the time it was written, as the kubelet writes it out: RFC 3339
with nine fraction digits (``2006-01-02T15:04:05.000000000Z``), then a space; a line the runtime
stored in pieces gets it once, before its first piece.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from jhub_ext.local.logfile import BLOCK, tail_offset

if TYPE_CHECKING:
    from devcluster.agent.agent import NodeAgent
    from devcluster.agent.pods import ContainerState, PodWorker


#: an RFC 3339 time as CRI runtimes write them in log files (any number of fraction digits)
_STAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


def _parse(line: bytes) -> tuple[str, bytes, bool] | None:
    """A CRI log line -> (timestamp, content, ends a line)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3 or _STAMP.fullmatch(parts[0].decode(errors="replace")) is None:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), content, parts[2] == b"F"


def _since(value: str) -> datetime.datetime:
    """An RFC 3339 time (a log line's, or ``sinceTime``) to the microsecond."""
    match = _STAMP.fullmatch(value)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    whole, fraction, zone = match.groups()
    moment = f"{whole}.{(fraction or '')[:6].ljust(6, '0')}{zone.replace('Z', '+00:00')}"
    return datetime.datetime.fromisoformat(moment)


def stamp_out(stamp: str) -> str:
    """A log line's time as the kubelet writes it out (Go's ``RFC3339NanoFixed``): nine fraction
    digits, and ``Z`` for UTC."""
    match = _STAMP.fullmatch(stamp)
    if match is None:
        return stamp
    whole, fraction, zone = match.groups()
    zone = "Z" if zone in ("+00:00", "-00:00") else zone
    return f"{whole}.{(fraction or '')[:9].ljust(9, '0')}{zone}"


class Renderer:
    """Turns CRI log file lines into the log a reader sees: content only, or with ``timestamps``;
    lines written before ``since`` are left out. One per response: a line stored in pieces
    (partial entries) may span the chunks it is given."""

    def __init__(self, timestamps: bool, since: datetime.datetime | None):
        self.timestamps = timestamps
        self.since = since
        self.line_start = True  # the next entry starts a line (the kubelet assumes so at first)

    def __call__(self, chunk: bytes) -> Iterator[bytes]:
        """The lines of ``chunk`` (whole CRI entries) as a reader sees them."""
        for raw in chunk.split(b"\n"):  # entries end at a newline only: content may hold a \r
            parsed = _parse(raw)
            if parsed is None:
                continue
            stamp, content, full = parsed
            starts, self.line_start = self.line_start, full or not content
            if self.since is not None and _since(stamp) < self.since:
                continue
            prefix = stamp_out(stamp).encode() + b" " if self.timestamps and starts else b""
            yield prefix + content + (b"\n" if full else b"")


class LogServer:
    """The agent's kubelet-style HTTP endpoints: container logs and a health check."""

    def __init__(self, agent: NodeAgent):
        self.agent = agent

    def app(self) -> web.Application:
        """The aiohttp application serving ``/containerLogs/...`` and ``/healthz``."""
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.logs)
        app.router.add_get("/healthz", self.healthz)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        """Answer ``ok`` while the agent runs."""
        return web.Response(text="ok")

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """Stream one container's log (this run's, or the ``previous`` one's), as the kubelet does.

        Takes the kubelet's ``follow``, ``tailLines``, ``sinceSeconds``, ``sinceTime``, ``timestamps``
        and ``limitBytes`` parameters.
        """
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        worker = self.agent.workers.get(f"{ns}/{name}")
        if worker is None:
            raise web.HTTPNotFound(text=f'pod "{name}" in namespace "{ns}" is not on this node\n')
        state = next((c for c in (*worker.init, *worker.main) if c.spec["name"] == container), None)
        if state is None:
            raise web.HTTPNotFound(text=f'container "{container}" not found in pod "{name}"\n')
        query = request.query
        previous = query.get("previous") in ("true", "1")
        restart = self._log_instance(name, container, state, previous)
        path = worker.directory / "logs" / container / f"{restart}.log"
        if not path.exists():
            raise web.HTTPBadRequest(
                text=f'container "{container}" in pod "{name}" is waiting to start - no logs yet\n'
            )
        since: datetime.datetime | None = None
        if "sinceSeconds" in query:
            since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(
                seconds=int(query["sinceSeconds"])
            )
        elif "sinceTime" in query:
            since = _since(query["sinceTime"])
        timestamps = query.get("timestamps") in ("true", "1")
        rendered = Renderer(timestamps, since)
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        follow = query.get("follow") in ("true", "1") and not previous
        tail = int(query["tailLines"]) if "tailLines" in query else None

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = 0
        with path.open("rb") as f:
            f.seek(0 if tail is None else tail_offset(f, tail))
            pending = b""
            while True:
                data = f.read(BLOCK)
                if data:
                    pending += data
                    complete, _, pending = pending.rpartition(b"\n")
                    if complete:
                        for piece in rendered(complete + b"\n"):
                            if limit is not None:
                                piece = piece[: max(limit - sent, 0)]
                            if piece:
                                await response.write(piece)
                                sent += len(piece)
                            if limit is not None and sent >= limit:
                                return response
                    continue
                if not follow or not self._still_writing(worker, state, restart):
                    break
                await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    @staticmethod
    def _log_instance(pod: str, container: str, state: ContainerState, previous: bool) -> int:
        """Which run of the container to read, by the rules a kubelet applies (400 where none fits):
        the previous one if asked, else the running one, else the last that ended."""
        # Run n of a container logs to n.log; between runs (CrashLoopBackOff) the count still names
        # the run that ended last.
        waiting, running, terminated = (state.state.get(k) for k in ("waiting", "running", "terminated"))
        current = running is not None or terminated is not None
        if previous:
            if not state.last_state.get("terminated"):
                raise web.HTTPBadRequest(
                    text=f'previous terminated container "{container}" in pod "{pod}" not found\n'
                )
            return int(state.restarts) - 1 if current else int(state.restarts)
        if current or state.last_state.get("terminated"):
            return int(state.restarts)
        reason = (waiting or {}).get("reason", "")
        raise web.HTTPBadRequest(
            text=f'container "{container}" in pod "{pod}" is waiting to start: {reason}\n'
        )

    @staticmethod
    def _still_writing(worker: PodWorker, state: ContainerState, restart: int) -> bool:
        if worker.agent.workers.get(worker.key) is not worker:
            return False
        return state.restarts == restart and state.running is not None
