"""Transient Kubernetes API failures retried below every caller, within the caller's own time.

A busy or restarting API server answers 429 (with ``Retry-After``), 500, 502, 503 or 504, drops a
connection, or is slow to answer one request; asked again a moment later, it answers. Nobody
should see such a moment: not a researcher (a 5xx for a submit), not a spawn. :func:`retrying`
wraps a ``kubernetes_asyncio`` ``ApiClient``'s REST client so that every ordinary call is retried
with jittered exponential back-off (or after ``Retry-After``) while the caller's
``_request_timeout`` lasts: each attempt gets a share of it, so one slow answer does not use it
all, and an API server that is really down still fails within it (the callers answer 503 then).

Streams (watches, followed logs: ``_preload_content=False``) are not retried here; their callers
reconnect. A create whose answer was lost may have happened: retried, it meets 409 AlreadyExists,
which the callers already take as "it is there" (KubeSpawner for pods, the jobs backend's claim).

:func:`retrying` also looks up the environment's proxy for the API server once, when the client is
made. ``kubernetes_asyncio``'s session trusts the environment, so aiohttp would otherwise look up
the proxy variables and ``~/.netrc`` in a worker thread on every single request: under many
submits, a quarter of the jobs service's CPU.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import aiohttp
import yarl
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_before_delay
from tenacity.wait import wait_random_exponential

log = logging.getLogger("jhub_ext.kuberetry")

#: what an API server answers when asking again later may work
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 6
#: the time a call may take in all when its caller sets none (calls without a timeout could hang)
DEFAULT_BUDGET = 30.0
#: no attempt gets less than this (or all the caller's time, if that is shorter)
MIN_ATTEMPT_SECONDS = 3.0
_backoff = wait_random_exponential(multiplier=0.1, max=2.0)


def transient(error: BaseException) -> bool:
    """Whether ``error`` is a failure the same request may not meet again a moment later."""
    if isinstance(error, ApiException):
        return error.status in TRANSIENT_STATUSES
    return isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError))


def retry_after(error: BaseException | None) -> float | None:
    """The seconds an answer asks to wait before trying again (its ``Retry-After``), if it asks."""
    headers = getattr(error, "headers", None) if isinstance(error, ApiException) else None
    try:
        return max(float(headers["Retry-After"]), 0.0) if headers and "Retry-After" in headers else None
    except ValueError:
        return None


def _wait(state: RetryCallState) -> float:
    error = state.outcome.exception() if state.outcome else None
    asked = retry_after(error)
    return asked if asked is not None else _backoff(state)


def _note(method: str, path: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ApiException):
        what = f"{error.status} {error.reason}"
    else:
        what = f"{type(error).__name__} {error or ''}".strip()
    log.info("Kubernetes API %s %s: %s; trying again", method, path, what)


def attempt_timeout(total: float) -> float:
    """How long one attempt of a call with ``total`` seconds may take: a third of them, but at least
    :data:`MIN_ATTEMPT_SECONDS` (a list of many objects takes its time)."""
    return min(total, max(total / 3, MIN_ATTEMPT_SECONDS))


def _total_seconds(timeout: Any) -> float | None:
    """The total seconds a ``_request_timeout`` allows (None: it bounds only parts of a call)."""
    if isinstance(timeout, (int, float)) and timeout > 0:
        return float(timeout)
    return None


class RetryingREST:
    """A ``kubernetes_asyncio`` REST client that retries transient failures (see the module)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name in ("GET", "HEAD", "OPTIONS", "DELETE", "POST", "PUT", "PATCH"):
            return functools.partial(self.request, name)
        return getattr(self.inner, name)

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send the request, again after a transient failure, while the caller's timeout lasts."""
        if not kwargs.get("_preload_content", True):
            return await self.inner.request(method, url, **kwargs)  # a stream: its reader reconnects
        total = _total_seconds(kwargs.get("_request_timeout"))
        if total is None and kwargs.get("_request_timeout") is not None:
            return await self.inner.request(method, url, **kwargs)  # bounded per part: leave it be
        budget = total if total is not None else DEFAULT_BUDGET
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        retrying = AsyncRetrying(
            retry=retry_if_exception(transient),
            wait=_wait,
            stop=stop_after_attempt(ATTEMPTS) | stop_before_delay(budget),
            reraise=True,
            before_sleep=functools.partial(_note, method, url.split("?")[0]),
        )
        async for attempt in retrying:
            with attempt:
                left = deadline - loop.time()
                if total is not None:
                    kwargs["_request_timeout"] = max(min(attempt_timeout(total), left), 0.1)
                return await self.inner.request(method, url, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover


def retrying(api_client: Any) -> Any:
    """Make ``api_client`` (a ``kubernetes_asyncio.client.ApiClient``) retry transient failures,
    with the environment's proxy looked up once (see the module); the same client, for chaining.
    Doing it twice changes nothing."""
    if not isinstance(api_client.rest_client, RetryingREST):
        _settle_proxy(api_client.rest_client, api_client.configuration.host)
        api_client.rest_client = RetryingREST(api_client.rest_client)
    return api_client


def _settle_proxy(rest: Any, host: str) -> None:
    """Give ``rest`` (a ``RESTClientObject``) the proxy the environment names for ``host`` (where
    the client names none itself), and stop its session looking the environment up per request."""
    if not rest.proxy:
        try:
            proxy, auth = get_env_proxy_for_url(yarl.URL(host))
        except LookupError:  # no proxy, or NO_PROXY covers the API server
            pass
        else:
            rest.proxy = str(proxy)
            if auth is not None:
                rest.proxy_headers = {**(rest.proxy_headers or {}), "Proxy-Authorization": auth.encode()}
    # the session's own switch has no setter; without it aiohttp looks the environment up each time
    rest.pool_manager._trust_env = False
