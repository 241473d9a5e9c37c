"""Watch-fed caches of Kubernetes objects: list once, then follow a watch.

Reads (the spawn page's capacity figures, quota counts) answer from memory and never call
the API. One :class:`WatchCache` per (resource, namespace), shared by everything in the
process that needs it.

Unlike KubeSpawner's reflector this handles cluster-scoped resources (nodes), keeps raw JSON
(no model deserialisation), follows bookmarks, relists on 410 Gone, and never gives up:
after an error it retries with capped exponential backoff and reports itself stale
(``stale_since``) so callers can say the figures may be out of date (KubeSpawner's
reflector stops after ~30 s of errors and its cache then freezes silently).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger("jhub_ext.watch")

Json = dict[str, Any]
ListMethod = Callable[..., Awaitable[Any]]


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def _key(obj: Json) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


LIST_CONNECT_TIMEOUT = 10
LIST_READ_TIMEOUT = 60


async def _answered(response: Any) -> None:
    """Raise the API server's refusal as the client does for a read it parses itself: a raw
    response (``_preload_content=False``) is handed back whatever its status."""
    if not 200 <= response.status <= 299:
        body = (await response.read()).decode(errors="replace")
        if response.status == 410:
            raise _Gone()
        raise ApiException(status=response.status, reason=body.strip()[:200] or response.reason)


class WatchCache:
    """An up-to-date in-memory copy of the objects ``list_method`` returns.

    ``list_method`` is a bound list method of a ``kubernetes_asyncio`` API class, with the
    namespace already bound where needed, e.g. ``CoreV1Api(client).list_node`` or
    ``functools.partial(core.list_namespaced_pod, "jhub")``.
    """

    def __init__(
        self,
        list_method: ListMethod,
        *,
        resource: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int = 300,
        max_backoff: float = 30.0,
        logger: logging.Logger | None = None,
        on_change: Callable[[str, Json], None] | None = None,
    ):
        self.list_method = list_method
        self.resource = resource
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.timeout_seconds = timeout_seconds
        self.max_backoff = max_backoff
        self.log = logger or log
        self.objects: dict[str, Json] = {}
        self.resource_version = ""
        self.stale_since: float | None = None
        self.last_error: str | None = None
        self.changes = 0  # bumped on every change, so callers can cache derived figures
        self.on_change = on_change  # called with (event type, object) after each change
        self._task: asyncio.Task[None] | None = None
        self._first_load: asyncio.Future[None] | None = None

    # --- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """List, then follow the watch in the background; returns once the first list is in."""
        if self._task is None:
            self._first_load = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._run(), name=f"watch {self.resource}")
        assert self._first_load is not None
        await asyncio.shield(self._first_load)

    async def stop(self) -> None:
        """Stop following the watch; the objects already cached stay readable."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def ready(self) -> bool:
        """Whether the first list has come in (and did not fail)."""
        return self._first_load is not None and self._first_load.done() and not self._first_load.exception()

    def values(self) -> list[Json]:
        """Every cached object, as a list."""
        return list(self.objects.values())

    # --- the loop ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.5
        needs_list = True
        while True:
            try:
                if needs_list:
                    await self._list()
                    needs_list = False
                await self._watch()
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except _Gone:
                self.log.info("Watch of %s expired (410 Gone); listing again", self.resource)
                needs_list = True
            except Exception as e:
                needs_list = True
                self.last_error = f"{type(e).__name__}: {e}"
                if self.stale_since is None:
                    self.stale_since = time.time()
                if self._first_load is not None and not self._first_load.done():
                    self._first_load.set_exception(e)
                    self._first_load.exception()  # retrieved: start() re-raises it
                self.log.warning(
                    "Watching %s failed (%s); retrying in %.1fs", self.resource, self.last_error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)

    def selectors(self) -> dict[str, str]:
        """The label and field selectors of the list and watch, as the client's keyword arguments."""
        selectors = {}
        if self.label_selector:
            selectors["label_selector"] = self.label_selector
        if self.field_selector:
            selectors["field_selector"] = self.field_selector
        return selectors

    async def _list(self) -> None:
        # a list may be large (thousands of pods), but a server that does not answer must not hold it
        bound = (LIST_CONNECT_TIMEOUT, LIST_READ_TIMEOUT)
        response = await self.list_method(**self.selectors(), _preload_content=False, _request_timeout=bound)
        try:
            await _answered(response)
            body = json.loads(await response.read())
        finally:
            response.release()
        self.objects = {_key(item): item for item in body.get("items", [])}
        self.resource_version = body["metadata"]["resourceVersion"]
        self.changes += 1
        if self.on_change is not None:
            self.on_change("RELISTED", {})
        self.stale_since = None
        self.last_error = None
        if self._first_load is not None and not self._first_load.done():
            self._first_load.set_result(None)

    async def _watch(self) -> None:
        try:
            response = await self.list_method(
                **self.selectors(),
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=self.resource_version,
                timeout_seconds=self.timeout_seconds,
                _request_timeout=self.timeout_seconds + 30,
                _preload_content=False,
            )
        except ApiException as e:
            if e.status == 410:
                raise _Gone() from None
            raise
        try:
            await _answered(response)
            while line := await response.content.readline():
                self._apply(json.loads(line))
        finally:
            response.release()

    def _apply(self, event: Json) -> None:
        happened, obj = event.get("type"), event.get("object") or {}
        if happened == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiException(status=obj.get("code"), reason=f"{obj.get('reason')}: {obj.get('message')}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self.resource_version = version
        if happened == "BOOKMARK":
            return
        if happened == "DELETED":
            self.objects.pop(_key(obj), None)
        else:
            self.objects[_key(obj)] = obj
        self.changes += 1
        if self.on_change is not None:
            self.on_change(str(happened), obj)
