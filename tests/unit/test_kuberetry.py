"""Transient API failures retried within the caller's time (jhub_ext.kubernetes.retry), over a
REST client that answers from a script."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.client.exceptions import ApiException

from jhub_ext.kubernetes.retry import RetryingREST, attempt_timeout, retrying


def refusal(status: int, retry_after: str | None = None) -> ApiException:
    error = ApiException(status=status, reason="injected")
    error.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return error


class Scripted:
    """A REST client answering each call with the next item of its script (an error is raised)."""

    def __init__(self, *script: Any):
        self.script = list(script)
        self.calls: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        self.calls.append({"method": method, **kwargs})
        answer = self.script.pop(0)
        if isinstance(answer, float):  # hang: until the attempt's timeout
            await asyncio.sleep(min(answer, kwargs.get("_request_timeout") or answer))
            raise TimeoutError
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def close(self) -> None:
        self.script.clear()


async def test_a_transient_failure_is_asked_again_and_the_answer_returned() -> None:
    inner = Scripted(refusal(500), aiohttp.ServerDisconnectedError(), refusal(503), "ok")
    rest = RetryingREST(inner)
    assert await rest.POST("https://api/x", body={}, _request_timeout=15) == "ok"
    assert [c["method"] for c in inner.calls] == ["POST"] * 4


async def test_a_throttled_call_waits_as_long_as_it_is_asked() -> None:
    inner = Scripted(refusal(429, retry_after="0.5"), "ok")
    started = time.monotonic()
    assert await RetryingREST(inner).GET("https://api/x", _request_timeout=15) == "ok"
    assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
async def test_an_answer_that_would_not_change_is_not_asked_again(status: int) -> None:
    inner = Scripted(refusal(status), "never")
    with pytest.raises(ApiException) as raised:
        await RetryingREST(inner).GET("https://api/x", _request_timeout=15)
    assert raised.value.status == status and len(inner.calls) == 1


async def test_a_server_that_does_not_answer_fails_within_the_callers_time() -> None:
    inner = Scripted(*[60.0] * 10)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await RetryingREST(inner).GET("https://api/x", _request_timeout=9)
    took = time.monotonic() - started
    assert 6 <= took <= 9.5  # more than one attempt, never more than the caller allowed
    assert all(c["_request_timeout"] <= 3 for c in inner.calls) and len(inner.calls) >= 2


async def test_one_slow_answer_leaves_time_to_ask_again() -> None:
    inner = Scripted(60.0, "ok")
    assert await RetryingREST(inner).GET("https://api/x", _request_timeout=9) == "ok"


async def test_a_throttle_longer_than_the_callers_time_is_handed_back() -> None:
    inner = Scripted(refusal(429, retry_after="30"), "ok")
    started = time.monotonic()
    with pytest.raises(ApiException) as raised:
        await RetryingREST(inner).GET("https://api/x", _request_timeout=5)
    assert raised.value.status == 429 and time.monotonic() - started < 1


async def test_streams_are_left_to_their_readers() -> None:
    inner = Scripted(refusal(500), "ok")
    with pytest.raises(ApiException):
        await RetryingREST(inner).GET("https://api/x?watch=true", _preload_content=False)
    assert len(inner.calls) == 1


def test_each_attempt_gets_a_share_of_the_callers_time_but_not_too_little() -> None:
    assert attempt_timeout(15) == 5
    assert attempt_timeout(60) == 20
    assert attempt_timeout(3) == 3
    assert attempt_timeout(1) == 1


async def test_a_client_is_made_to_retry_once() -> None:
    api = ApiClient(Configuration())
    try:
        assert retrying(retrying(api)) is api
        assert isinstance(api.rest_client, RetryingREST)
        assert not isinstance(api.rest_client.inner, RetryingREST)
    finally:
        await api.close()


async def test_the_environments_proxy_is_looked_up_once_for_the_api_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The session would look up the proxy variables (and ~/.netrc) in a thread on every request;
    the client made to retry has the proxy settled, and its session no longer asks the environment."""
    for variable in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example:3128")
    monkeypatch.setenv("https_proxy", "http://user:secret@proxy.example:3128")
    proxied, direct, named = (Configuration() for _ in range(3))
    proxied.host = "https://api.example:6443"
    direct.host = "https://kubernetes.default.svc"
    named.host = "https://api.example:6443"
    named.proxy = "http://chosen.example:8080"
    monkeypatch.setenv("NO_PROXY", ".svc")
    monkeypatch.setenv("no_proxy", ".svc")
    clients = [retrying(ApiClient(c)) for c in (proxied, direct, named)]
    try:
        rests = [c.rest_client.inner for c in clients]
        assert rests[0].proxy == "http://proxy.example:3128"
        assert rests[0].proxy_headers["Proxy-Authorization"].startswith("Basic ")
        assert rests[1].proxy is None  # NO_PROXY covers it
        assert rests[2].proxy == "http://chosen.example:8080"  # the client's own choice stands
        assert all(rest.pool_manager.trust_env is False for rest in rests)
    finally:
        for client in clients:
            await client.close()
