"""A fault-injecting HTTP proxy for tests, to put between the product and a real Kubernetes API server.

``FaultProxy(upstream, ca_file).start()`` listens on ``http://127.0.0.1:<free port>`` and forwards every
request to ``upstream``, streaming the answers back (watches and followed logs arrive event by event).
With probability ``rate`` a request gets one fault instead, chosen uniformly among those that apply:

- ``error``: 500 with a Kubernetes Status body, not forwarded;
- ``throttle``: 429 with ``Retry-After``, not forwarded;
- ``lost``: forwarded and answered upstream (the change happened), then the client connection is dropped;
- ``stall``: not forwarded; held for ``stall_seconds``, then dropped;
- ``cut`` (watches only): forwarded, relayed for a while (``cut_after`` seconds), then dropped mid-stream.

Watches and followed logs never get ``lost`` or ``stall``. The proxy runs its own event loop in a daemon
thread, so it serves synchronous and asynchronous tests alike.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import ssl
import threading
from pathlib import Path
from types import TracebackType

import aiohttp
from aiohttp import web

# not forwarded either way: they describe one connection, or aiohttp sets them itself (the client session
# decompresses what it relays, so Content-Encoding goes too)
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te"}
    | {"trailer", "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}
)
TRUE = ("true", "1")


def status_body(code: int, reason: str, message: str) -> str:
    """A Kubernetes ``Status`` object as JSON text."""
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


class FaultProxy:
    """A plain-HTTP proxy on 127.0.0.1 that relays to ``upstream`` and injects faults at ``rate``."""

    cut_after: tuple[float, float] = (0.2, 3.0)  # seconds a "cut" watch is relayed before the drop

    def __init__(
        self,
        upstream: str,
        ca_file: str | Path | None,
        rate: float = 0.1,
        seed: int = 0,
        stall_seconds: float = 20.0,
        retry_after: int = 1,
        watch_rate: float | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.ca_file = ca_file
        self.rate = rate  # may be changed while running; 0 turns faults off
        #: the rate for watches, if not ``rate``: they are few and long, so a short test may want more
        self.watch_rate = watch_rate
        self.stall_seconds = stall_seconds
        self.retry_after = retry_after
        self.counts: collections.Counter[str] = collections.Counter()
        #: cut the watches that start while faults are on until one has been cut: a short run starts
        #: few watches, and chance alone then meets no cut at all in about one run of three
        self.cut_a_watch_first = False
        self._cutting = False  # a forced cut is under way
        self._random = random.Random(seed)  # noqa: S311 (not for secrets); used on the proxy loop only
        self._lock = threading.Lock()  # guards counts against readers in other threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._handlers: set[asyncio.Task[object]] = set()  # requests in progress, cancelled by stop()
        self._port = 0

    @property
    def url(self) -> str:
        """The proxy's own address, ``http://127.0.0.1:PORT``."""
        if not self._port:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self._port}"

    def counts_snapshot(self) -> dict[str, int]:
        """A copy of the counters: ``forwarded``, ``bad_gateway`` and one per fault name."""
        with self._lock:
            return dict(self.counts)

    def start(self) -> FaultProxy:
        """Start the loop thread and listen; return once the port is open."""
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run, args=(loop,), name="faultproxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._startup(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        """Close the listener, the open connections and the client session; end the loop thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=30)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)
            self._loop = self._thread = None
            self._port = 0

    def __enter__(self) -> FaultProxy:
        """Start the proxy."""
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the proxy."""
        self.stop()

    # --- on the proxy's loop ---

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            left = asyncio.all_tasks(loop)  # handlers still running: cancel them, so none is destroyed
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _startup(self) -> None:
        ssl_context: ssl.SSLContext | bool = False
        if self.upstream.startswith("https:"):
            ssl_context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context, resolver=aiohttp.ThreadedResolver()),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            auto_decompress=True,
        )
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that goes away ends its stalled request or relayed watch
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        # end open watches and stalls now rather than after aiohttp's graceful wait; their clients see a drop
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _choose_fault(self, request: web.Request) -> str | None:
        watch = request.query.get("watch", "").lower() in TRUE
        follow = request.query.get("follow", "").lower() in TRUE
        rate = self.watch_rate if watch and self.watch_rate is not None and self.rate > 0 else self.rate
        if (
            watch
            and self.rate > 0
            and self.cut_a_watch_first
            and not self.counts["cut"]
            and not self._cutting
        ):
            self._cutting = True
            return "cut"
        if rate <= 0 or self._random.random() >= rate:
            return None
        if watch:
            return self._random.choice(["error", "throttle", "cut"])
        if follow:
            return self._random.choice(["error", "throttle"])
        return self._random.choice(["error", "throttle", "lost", "stall"])

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        """Close the client connection without an answer; the returned response is never written.

        aiohttp fails to write it to the closed transport, takes that for a client that went away and
        says nothing (an exception raised here instead would be logged and answered with a 500).
        """
        if request.transport is not None:
            request.transport.abort()
        return web.Response()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._answer(request)
        finally:
            self._handlers.discard(task)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        fault = self._choose_fault(request)
        if fault == "error":
            self._count(fault)
            return web.json_response(text=status_body(500, "InternalError", "injected fault"), status=500)
        if fault == "throttle":
            self._count(fault)
            return web.json_response(
                text=status_body(429, "TooManyRequests", "injected fault"),
                status=429,
                headers={"Retry-After": str(self.retry_after)},
            )
        if fault == "stall":
            self._count(fault)
            await asyncio.sleep(self.stall_seconds)
            return self._drop(request)
        return await self._forward(request, fault)

    async def _forward(self, request: web.Request, fault: str | None) -> web.StreamResponse:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        body = await request.read()
        response: web.StreamResponse | None = None
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as upstream:
                self._count("forwarded")
                if fault == "lost":
                    await upstream.read()  # the server has done it all; the client never hears of it
                    self._count(fault)
                    return self._drop(request)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        response.headers.add(key, value)
                await response.prepare(request)
                if fault == "cut":
                    try:
                        async with asyncio.timeout(self._random.uniform(*self.cut_after)):
                            await self._relay(upstream, response)
                    except TimeoutError:
                        self._count(fault)
                        return self._drop(request)
                    finally:
                        self._cutting = False  # cut, or ended before its time: the next may be cut
                else:
                    await self._relay(upstream, response)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            if request.transport is None or request.transport.is_closing():
                return web.Response()  # the client went away: aiohttp lets that pass quietly
            if response is not None:  # already streaming: the upstream broke off, so do we
                return self._drop(request)
            self._count("bad_gateway")
            text = status_body(502, "BadGateway", f"fault proxy: upstream failed: {error!r}")
            return web.json_response(text=text, status=502)

    @staticmethod
    async def _relay(upstream: aiohttp.ClientResponse, response: web.StreamResponse) -> None:
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
