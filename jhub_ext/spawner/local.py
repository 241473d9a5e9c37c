"""LocalProfileSpawner: the profile menu for servers that run as local processes.

The embedded default for a laptop, Binder and tests. A profile's CPU limit becomes a CPU
affinity mask (rounded up to whole cores, capped to the cores this machine has) and its
memory limit a per-process address-space limit (``RLIMIT_AS``). ``CPU_LIMIT`` and
``MEM_LIMIT`` (and the guarantees) are set in the server's environment as KubeSpawner
sets them.

When the hub runs as root (``system_users``), every hub user's server runs as a system account
of their own (``jupyter-alice``, see :mod:`jhub_ext.runtime.accounts`) in a 0700 home: users
cannot read each other's files or processes' environments. Otherwise every server runs as the
hub's own OS user, which is no isolation between users; the log and the admins' spawn page say so.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Bool, Dict, Unicode, default

from ..catalog.selection import Selection
from ..runtime.accounts import Account, Accounts, drop_to
from ..runtime.limits import limiter
from .profiles import ProfileMenuMixin


@functools.cache
def _accounts(homes: str) -> Accounts:
    return Accounts(Path(homes))


class LocalProfileSpawner(ProfileMenuMixin, SimpleLocalProcessSpawner):
    """Spawn local single-user servers with the resources of a catalog profile."""

    system_users = Bool(
        config=True,
        help="""
        Run each user's server as a system account of their own (``jupyter-<user>``, created on
        first use, home ``<homes_dir>/jupyter-<user>`` with mode 0700). Needs the hub to run as
        root; the default is on exactly then.

        Example::

            c.LocalProfileSpawner.system_users = True
        """,
    )

    @default("system_users")
    def _default_system_users(self) -> bool:
        return os.geteuid() == 0

    homes_dir = Unicode(
        "",
        config=True,
        help="""
        Where the system accounts' homes are (with ``system_users``). Empty: the directory of
        ``home_dir_template``.

        Example::

            c.LocalProfileSpawner.homes_dir = "/srv/jhub/home"
        """,
    )
    account_env = Dict(
        config=True,
        help="""
        Environment variables (such as ``PATH`` and ``PYTHONPATH``) that make the software the
        servers run reachable for the system accounts (with ``system_users``).

        Example::

            c.LocalProfileSpawner.account_env = {"PATH": "/opt/jhub/user/bin:/usr/bin:/bin"}
        """,
    )

    image: str = ""
    profile_slug: str = ""
    account: Account | None = None

    def isolation_note(self) -> str | None:
        """Without system accounts, a warning for admins that users are not kept apart."""
        if self.system_users:
            return None
        return (
            "Servers and jobs run as the hub's own OS user: users can read each other's files and "
            "processes. Run the hub as root to give each user a system account of their own."
        )

    async def start(self) -> Any:
        """Start the server, first creating the user's system account (with ``system_users``)."""
        if self.system_users:
            homes = self.homes_dir or os.path.dirname(self.home_dir_template.format(username="x"))
            self.account = await asyncio.to_thread(_accounts(homes).ensure, self.user.name)
            self.home_dir = str(self.account.home)
        return await super().start()

    def apply_selection(self, selection: Selection) -> None:
        """Take the chosen profile's CPU and memory limits, image and slug for this server."""
        resources = selection.profile.resources
        self.cpu_limit = resources.cpu_limit
        self.cpu_guarantee = resources.cpu_guarantee
        self.mem_limit = resources.mem_limit
        self.mem_guarantee = resources.mem_guarantee
        self.image = selection.image.image if selection.image else ""
        self.profile_slug = selection.profile.slug

    def get_env(self) -> dict[str, str]:
        """The server's environment, plus the chosen profile and (named as KubeSpawner names it) image."""
        env: dict[str, str] = super().get_env()
        if self.profile_slug:
            env["JHUB_EXT_PROFILE"] = self.profile_slug
        if self.image:
            # what KubeSpawner sets, so jobs can run "in the same image as the notebook"
            env["JUPYTER_IMAGE"] = env["JUPYTER_IMAGE_SPEC"] = self.image
        return env

    def get_args(self) -> list[str]:
        """The server's arguments; ``--allow-root`` when it must run as the hub's root user."""
        args: list[str] = super().get_args()
        if os.geteuid() == 0 and self.account is None and "--allow-root" not in args:
            args.append("--allow-root")  # local mode runs servers as the hub's user
        return args

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        """The user's environment, as their system account (its ``account_env`` and ``USER``) if any."""
        env = super().user_env(env)
        if self.account is not None:
            env.update(self.account_env)
            env["USER"] = self.account.name
        return env

    def make_preexec_fn(self, name: str) -> Callable[[], Any]:
        """What the child runs before the server: apply the profile's limits, then become the user.

        With a system account it drops to that account in its home; otherwise it prepares the home
        as JupyterHub would.
        """
        prepare_home = super().make_preexec_fn(name)
        apply_limits = limiter(self.cpu_limit, self.mem_limit, spread=self.user.name)
        account = self.account

        def preexec() -> None:
            apply_limits()
            if account is not None:
                drop_to(account)
                os.chdir(account.home)
            else:
                prepare_home()

        return preexec
