"""The kubelet's log endpoint, ``/containerLogs/{namespace}/{pod}/{container}``, over the CRI log files.

The API server's ``pods/log`` proxies here with its kubelet client certificate, which is checked
against the cluster CA. Parameters as the kubelet takes them: ``follow``, ``previous``,
``tailLines``, ``sinceSeconds``, ``sinceTime``, ``timestamps``, ``limitBytes``. ``tailLines``
reads the file backwards from its end, so a tail of a large log does not load it.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from jhub_ext.local.logfile import BLOCK, tail_offset

if TYPE_CHECKING:
    from devcluster.agent.agent import NodeAgent
    from devcluster.agent.pods import ContainerState, PodWorker


def _parse(line: bytes) -> tuple[str, bytes, bool] | None:
    """A CRI log line -> (timestamp, content, ends a line)."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    content = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), content, parts[2] == b"F"


def _since(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def render(chunk: bytes, timestamps: bool, since: datetime.datetime | None) -> Iterator[bytes]:
    """The log lines of a CRI log chunk as a reader sees them: content only, or with ``timestamps``.

    Lines written before ``since`` are left out.
    """
    for raw in chunk.splitlines(keepends=True):
        parsed = _parse(raw)
        if parsed is None:
            continue
        stamp, content, full = parsed
        if since is not None and _since(stamp[:26] + "Z" if len(stamp) > 27 else stamp) < since:
            continue
        prefix = stamp.encode() + b" " if timestamps else b""
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
                        for piece in render(complete + b"\n", timestamps, since):
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
