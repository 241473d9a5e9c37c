"""What the jobs service asks the hub: a user's groups and the servers running now; and, for a spent
budget that says ``stop_running``, to stop a server.

Uses the service's own token (``$JUPYTERHUB_API_TOKEN``), whose role (``jobs-service``, set in
``jhub_ext/hub/config.py``) grants only ``list:users``, ``read:users:groups``, ``read:servers`` and
``delete:servers`` (stop a server: not start one, nor read or change its state).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jhub_ext.core.catalog.ledger import server_reservation
from jhub_ext.core.catalog.model import Catalog
from jhub_ext.core.catalog.quota import Workload, server_words


class ActiveServer(NamedTuple):
    """A server the hub runs or starts now."""

    user: str
    name: str  # "" for the user's default server
    groups: frozenset[str]  # its owner's
    options: dict[str, Any]  # the user_options it was started with
    started: datetime | None  # when the hub started it
    stopping: bool = False  # the hub is stopping it already (its ``pending`` is ``stop``)


def _moment(text: Any) -> datetime | None:
    """A time the hub's REST API gives (ISO 8601, "Z" for UTC), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class HubClient:
    """Reads the hub's REST API with the service's own token."""

    def __init__(self, api_url: str, token: str):
        self.api_url = api_url.rstrip("/")
        self.token = token

    async def _get(self, path: str) -> Any:
        request = HTTPRequest(
            f"{self.api_url}{path}", headers={"Authorization": f"token {self.token}"}, request_timeout=30
        )
        response = await AsyncHTTPClient().fetch(request)
        return json.loads(response.body)

    async def _delete(self, path: str) -> int:
        """DELETE ``path``: the hub's answer's status, 404 included; any other error is raised."""
        request = HTTPRequest(
            f"{self.api_url}{path}",
            method="DELETE",
            headers={"Authorization": f"token {self.token}"},
            request_timeout=30,
        )
        response = await AsyncHTTPClient().fetch(request, raise_error=False)
        if response.code >= 400 and response.code != 404:
            response.rethrow()
        return response.code

    async def groups(self, user: str) -> frozenset[str]:
        """The names of the groups ``user`` belongs to."""
        model = await self._get(f"/users/{quote(user, safe='')}")
        return frozenset(model.get("groups") or [])

    async def server_options(self, user: str) -> dict[str, Any] | None:
        """The options of the user's default server while it runs (or starts); None otherwise."""
        model = await self._get(f"/users/{quote(user, safe='')}")
        server = (model.get("servers") or {}).get("")
        return dict(server.get("user_options") or {}) if server else None

    async def active_servers(self) -> list[ActiveServer]:
        """Every server that is running or starting: whose, its name, its owner's groups, its options
        and when it was started."""
        users = await self._get("/users?state=active&limit=10000")
        if isinstance(users, dict):  # paginated answer
            users = users.get("items", [])
        return [
            ActiveServer(
                user["name"],
                name,
                frozenset(user.get("groups") or []),
                server.get("user_options") or {},
                _moment(server.get("started")),
                server.get("pending") == "stop",
            )
            for user in users
            for name, server in (user.get("servers") or {}).items()
        ]

    async def stop_server(self, user: str, name: str = "") -> bool:
        """Ask the hub to stop ``user``'s server ``name`` ("" for the default one), as an admin's stop
        does: True if the hub stops it (202, stopping; 204, stopped; or stopping already), False if it
        has no such server (404: it is gone already)."""
        where = f"servers/{quote(name, safe='')}" if name else "server"
        return await self._delete(f"/users/{quote(user, safe='')}/{where}") != 404

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """Servers of members of ``groups`` that run or start now: the ledger's source of servers on
        the service's side. The hub does not share its servers' recorded reservations with the
        service (that needs ``admin:server_state``), so each counts what its options ask now."""
        return [
            Workload(
                server.groups,
                server_reservation(catalog, None, server.options, server.groups),
                server.user,
                server_words(server.name),
            )
            for server in await self.active_servers()
            if server.groups & groups
        ]
