"""What the jobs service asks the hub: a user's groups and the servers running now.

Uses the service's own token (``$JUPYTERHUB_API_TOKEN``), whose role grants only
``list:users``, ``read:users:groups`` and ``read:servers``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from jhub_ext.core.catalog.ledger import server_reservation
from jhub_ext.core.catalog.model import Catalog
from jhub_ext.core.catalog.quota import Workload, server_words


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

    async def groups(self, user: str) -> frozenset[str]:
        """The names of the groups ``user`` belongs to."""
        model = await self._get(f"/users/{quote(user, safe='')}")
        return frozenset(model.get("groups") or [])

    async def server_options(self, user: str) -> dict[str, Any] | None:
        """The options of the user's default server while it runs (or starts); None otherwise."""
        model = await self._get(f"/users/{quote(user, safe='')}")
        server = (model.get("servers") or {}).get("")
        return dict(server.get("user_options") or {}) if server else None

    async def active_servers(self) -> list[tuple[str, str, frozenset[str], dict[str, Any]]]:
        """(user, server name, groups, user_options) of every server that is running or starting."""
        users = await self._get("/users?state=active&limit=10000")
        if isinstance(users, dict):  # paginated answer
            users = users.get("items", [])
        result = []
        for user in users:
            for name, server in (user.get("servers") or {}).items():
                groups = frozenset(user.get("groups") or [])
                result.append((user["name"], name, groups, server.get("user_options") or {}))
        return result

    async def workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        """Servers of members of ``groups`` that run or start now: the ledger's source of servers on
        the service's side. The hub does not share its servers' recorded reservations with the
        service (that needs ``admin:server_state``), so each counts what its options ask now."""
        return [
            Workload(
                owner_groups,
                server_reservation(catalog, None, options, owner_groups),
                user,
                server_words(name),
            )
            for user, name, owner_groups, options in await self.active_servers()
            if owner_groups & groups
        ]
