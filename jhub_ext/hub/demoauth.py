"""DemoAuthenticator: fixed demo users, their groups, one shared password.

For the local-mode demo, Binder and tests only: the hub binds to 127.0.0.1 there.
JupyterHub's own SharedPasswordAuthenticator needs long passwords and cannot assign
groups per user, which the demo needs to show the profile menu changing by group.
"""

from __future__ import annotations

from secrets import compare_digest
from typing import Any

from jupyterhub.auth import Authenticator
from traitlets import Dict, List, Unicode, default


class DemoAuthenticator(Authenticator):
    """Log in the users of :attr:`users` with :attr:`password`; groups come from :attr:`users`."""

    password = Unicode(
        "demo",
        config=True,
        help="""
        The one password of every demo user.

        Example::

            c.DemoAuthenticator.password = os.environ.get("JHUB_EXT_DEMO_PASSWORD", "demo")
        """,
    )

    users = Dict(
        value_trait=List(Unicode()),
        key_trait=Unicode(),
        config=True,
        help="""
        Demo users and the JupyterHub groups each belongs to. Only these users can log in.

        Example::

            c.DemoAuthenticator.users = {"alice": ["researchers"], "bob": ["researchers", "gpu"]}
        """,
    )

    @default("manage_groups")
    def _default_manage_groups(self) -> bool:
        return True  # groups come from here, as they come from the identity provider in production

    @default("allowed_users")
    def _default_allowed_users(self) -> set[str]:
        return set(self.users) | set(self.admin_users)

    async def authenticate(self, handler: Any, data: dict[str, str]) -> dict[str, Any] | None:
        """Let in a configured demo user who gives the shared password, with their groups and admin flag."""
        name = self.normalize_username(data.get("username", ""))
        if name not in self.allowed_users:
            return None
        if not compare_digest(data.get("password", "").encode(), self.password.encode()):
            return None
        return {"name": name, "admin": name in self.admin_users, "groups": self.users.get(name, [])}
