"""The node agent's asynchronous client: JSON requests and watches, with a kubeconfig's client certificate."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from devcluster.rest import Kubeconfig

Json = dict[str, Any]


class ApiError(Exception):
    """The API server answered with an error ``status``."""

    def __init__(self, status: int, body: str):
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


class Api:
    """Requests and watches to the API server, authenticated with a kubeconfig's client certificate."""

    def __init__(self, kubeconfig: Path):
        config = Kubeconfig(kubeconfig)
        self.server = config.server
        context = ssl.create_default_context(cafile=config.ca if isinstance(config.ca, str) else None)
        if config.cert:
            context.load_cert_chain(*config.cert)
        self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The HTTP session, made on first use, that trusts the cluster CA and presents our certificate."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl, limit=50))
        return self._session

    async def close(self) -> None:
        """Close the HTTP session, if one was opened."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        """Send one request and return the decoded JSON answer; :class:`ApiError` for an error status."""
        data = json.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if body is not None else {}
        timeout = aiohttp.ClientTimeout(total=30)
        async with self.session.request(
            method, self.server + path, data=data, headers=headers, params=params, timeout=timeout
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(response.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str, **params: str) -> Json:
        """The object (or list) at ``path``, with ``params`` as the query."""
        return await self.request("GET", path, params=params or None)

    async def merge_patch(self, path: str, patch: Json) -> Json:
        """Apply a JSON merge patch to the object at ``path``."""
        return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[str, Json]]:
        """List, then watch from the list's resourceVersion; yields ("ADDED"|"MODIFIED"|"DELETED", obj).

        Starts over with a fresh list after a 410 or a broken connection, so a consumer sees every
        object again (as ADDED), then ("SYNCED", the list): what the list lacks has gone.
        """
        while True:
            try:
                listed = await self.get(path, **params)
                version = listed["metadata"]["resourceVersion"]
                for item in listed["items"]:
                    yield "ADDED", item
                yield "SYNCED", listed
                while True:
                    query = {
                        **params,
                        "watch": "1",
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                    }
                    timeout = aiohttp.ClientTimeout(total=None, sock_read=360)
                    async with self.session.get(
                        self.server + path, params={**query, "timeoutSeconds": "300"}, timeout=timeout
                    ) as response:
                        if response.status >= 400:
                            raise ApiError(response.status, await response.text())
                        async for line in response.content:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            kind, obj = event["type"], event["object"]
                            if kind == "ERROR":
                                raise ApiError(int(obj.get("code", 500)), str(obj.get("message")))
                            version = obj["metadata"]["resourceVersion"]
                            if kind != "BOOKMARK":
                                yield kind, obj
            except (ApiError, aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                if isinstance(e, ApiError) and e.status not in (410, 500, 503, 504, 429):
                    await asyncio.sleep(1)
                await asyncio.sleep(0.5)
