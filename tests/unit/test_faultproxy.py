"""The fault proxy (tests/faultproxy.py) against a tiny local upstream: relaying, streaming, each fault."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from ..conftest import free_port
from ..faultproxy import FaultProxy

WATCH = "/api/v1/pods?watch=true"
PODS = "/api/v1/namespaces/x/pods?labelSelector=app%3Dhub&limit=5"
CONFIGMAPS = "/api/v1/namespaces/x/configmaps"


class Upstream:
    """A stand-in API server on its own loop thread; records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.url = ""

    def start(self) -> Upstream:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=10)
        return self

    def stop(self) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def ids(self) -> set[str]:
        return {entry["headers"].get("X-Test-Id", "") for entry in self.seen}

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/x/pods", self.pods)
        app.router.add_post("/api/v1/namespaces/x/configmaps", self.configmaps)
        app.router.add_get("/api/v1/pods", self.watch)
        self.runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.2)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def _record(self, request: web.Request) -> bytes:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        return body

    async def pods(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response({"kind": "PodList", "items": [{"metadata": {"name": "p"}}]})

    async def configmaps(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        return web.json_response({"kind": "ConfigMap", **json.loads(body)}, status=201)

    async def watch(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        assert request.query.get("watch") == "true"
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for n in range(100):  # 10 s of events
            await response.write(json.dumps({"type": "ADDED", "object": {"n": n}}).encode() + b"\n")
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream().start()
    try:
        yield server
    finally:
        server.stop()


def read_watch(
    url: str, lines: int | None = None
) -> tuple[list[dict[str, Any]], list[float], Exception | None]:
    """Read events (up to ``lines``) from a watch; return them, their arrival times and what ended it."""
    events: list[dict[str, Any]] = []
    times: list[float] = []
    with requests.get(url, stream=True, timeout=5) as response:
        assert response.status_code == 200
        try:
            for line in response.iter_lines(chunk_size=None):
                events.append(json.loads(line))
                times.append(time.monotonic())
                if lines is not None and len(events) >= lines:
                    break
        except requests.RequestException as error:
            return events, times, error
    return events, times, None


def test_rate_zero_relays_everything_unchanged(upstream: Upstream) -> None:
    with FaultProxy(upstream.url, None, rate=0) as proxy:
        got = requests.get(
            proxy.url + PODS, headers={"Authorization": "Bearer t0ken", "User-Agent": "ua/1"}, timeout=5
        )
        assert got.status_code == 200
        assert got.headers["Content-Type"].startswith("application/json")
        assert got.json() == {"kind": "PodList", "items": [{"metadata": {"name": "p"}}]}
        seen = upstream.seen[-1]
        assert (seen["method"], seen["path"]) == ("GET", PODS)
        assert seen["headers"]["Authorization"] == "Bearer t0ken"
        assert seen["headers"]["User-Agent"] == "ua/1"

        body = {"metadata": {"name": "c"}, "data": {"k": "v"}}
        posted = requests.post(proxy.url + CONFIGMAPS, json=body, timeout=5)
        assert posted.status_code == 201
        assert posted.json() == {"kind": "ConfigMap", **body}
        assert json.loads(upstream.seen[-1]["body"]) == body
        assert upstream.seen[-1]["headers"]["Content-Type"] == "application/json"

        start = time.monotonic()
        events, times, error = read_watch(proxy.url + WATCH, lines=5)
        assert error is None
        assert [event["object"]["n"] for event in events] == [0, 1, 2, 3, 4]
        assert times[-1] - times[0] >= 0.3  # event by event, not buffered
        assert times[-1] - start < 3
        assert proxy.counts_snapshot() == {"forwarded": 3}


def test_unreachable_upstream_is_a_bad_gateway() -> None:
    with FaultProxy(f"http://127.0.0.1:{free_port()}", None, rate=0) as proxy:
        got = requests.get(proxy.url + PODS, timeout=5)
        assert got.status_code == 502
        assert got.json()["reason"] == "BadGateway"
        assert proxy.counts_snapshot() == {"bad_gateway": 1}


def classify(proxy: FaultProxy, upstream: Upstream, kind: str, test_id: str) -> str:
    """Send one request of ``kind`` and say, from the client's side, which fault it met."""
    headers = {"X-Test-Id": test_id}
    if kind == "watch":
        start = time.monotonic()
        try:
            with requests.get(proxy.url + WATCH, headers=headers, stream=True, timeout=5) as response:
                if response.status_code != 200:
                    return status_fault(response)
                for _ in response.iter_lines(chunk_size=None):
                    pass
        except requests.exceptions.ChunkedEncodingError:
            assert time.monotonic() - start < 2  # long before the 10 s watch ends
            return "cut"
        raise AssertionError("the watch was not cut")
    try:
        if kind == "get":
            response = requests.get(proxy.url + PODS, headers=headers, timeout=5)
        else:
            response = requests.post(proxy.url + CONFIGMAPS, headers=headers, json={"id": test_id}, timeout=5)
    except requests.exceptions.ConnectionError:
        return "lost" if test_id in upstream.ids() else "stall"
    return status_fault(response)


def status_fault(response: requests.Response) -> str:
    status = response.json()
    assert status["kind"] == "Status" and status["message"] == "injected fault"
    assert response.headers["Content-Type"].startswith("application/json")
    if response.status_code == 500:
        assert (status["reason"], status["code"]) == ("InternalError", 500)
        return "error"
    assert response.status_code == 429
    assert (status["reason"], status["code"]) == ("TooManyRequests", 429)
    assert response.headers["Retry-After"] == "1"
    return "throttle"


def test_every_fault_at_rate_one(upstream: Upstream) -> None:
    with FaultProxy(upstream.url, None, rate=1.0, seed=7, stall_seconds=0.05) as proxy:
        proxy.cut_after = (0.05, 0.2)
        met: collections.Counter[str] = collections.Counter()
        for n in range(60):
            met[classify(proxy, upstream, ["get", "post", "watch"][n % 3], f"r{n}")] += 1
        counts = proxy.counts_snapshot()
    assert set(met) == {"error", "throttle", "lost", "stall", "cut"}
    assert counts == {**met, "forwarded": met["lost"] + met["cut"]}
    assert len(upstream.seen) == counts["forwarded"]


def test_a_stall_outlasts_a_short_client_timeout(upstream: Upstream) -> None:
    with FaultProxy(upstream.url, None, rate=1.0, seed=3, stall_seconds=1.0) as proxy:
        for n in range(30):
            start = time.monotonic()
            try:
                requests.get(proxy.url + PODS, headers={"X-Test-Id": f"s{n}"}, timeout=0.5)
            except requests.exceptions.ReadTimeout:
                assert 0.4 < time.monotonic() - start < 0.9
                break
            except requests.exceptions.ConnectionError:  # lost
                pass
        else:
            raise AssertionError("no stall in 30 requests")
        assert proxy.counts_snapshot()["stall"] == 1
        assert f"s{n}" not in upstream.ids()


async def test_aiohttp_client_sees_a_disconnect_not_a_status(upstream: Upstream) -> None:
    with FaultProxy(upstream.url, None, rate=1.0, seed=5, stall_seconds=0.05) as proxy:
        dropped: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for n in range(20):
                try:
                    async with session.post(proxy.url + CONFIGMAPS, json={"id": n}) as response:
                        assert response.status in (500, 429)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    dropped.append(
                        "lost" if {"id": n} in [json.loads(s["body"]) for s in upstream.seen] else "stall"
                    )
        counts = proxy.counts_snapshot()
    assert dropped.count("lost") == counts["lost"] > 0
    assert dropped.count("stall") == counts["stall"] > 0


def test_stop_ends_a_live_watch_at_once(upstream: Upstream) -> None:
    proxy = FaultProxy(upstream.url, None, rate=0).start()
    with requests.get(proxy.url + WATCH, stream=True, timeout=5) as response:
        lines = response.iter_lines(chunk_size=None)
        assert json.loads(next(lines))["object"]["n"] == 0
        start = time.monotonic()
        proxy.stop()
        assert time.monotonic() - start < 0.5
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for _ in lines:
                pass
