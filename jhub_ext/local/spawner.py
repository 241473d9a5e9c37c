"""LocalProfileSpawner: the profile menu for servers that run as local processes.

The embedded default for a laptop, Binder and tests. A profile's CPU limit becomes a CPU
affinity mask (rounded up to whole cores, capped to the cores this machine has) and its
memory limit a per-process address-space limit (``RLIMIT_AS``). ``CPU_LIMIT`` and
``MEM_LIMIT`` (and the guarantees) are set in the server's environment as KubeSpawner
sets them.

When the hub runs as root (``system_users``), every hub user's server runs as a system account
of their own (``jupyter-alice``, see :mod:`jhub_ext.local.accounts`) in a 0700 home: users
cannot read each other's files or processes' environments. Otherwise every server runs as the
hub's own OS user, which is no isolation between users; the log and the admins' spawn page say so.

As root, a server also runs confined (``confine_servers``, see :mod:`jhub_ext.local.confine`): a
control group with its profile's memory and CPUs for the whole server and its kernels, a PID
namespace of its own, and a network namespace from which it reaches only the hub's API and the
public proxy; the proxy reaches it through its port on this machine's loopback, forwarded in.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from jupyterhub.utils import random_port
from traitlets import Bool, Dict, Integer, Unicode, default

from jhub_ext.core.catalog.selection import Selection
from jhub_ext.core.names import server_confinement
from jhub_ext.local import confine
from jhub_ext.local.accounts import Account, Accounts, drop_to
from jhub_ext.local.cgroups import Limits
from jhub_ext.local.limits import limiter
from jhub_ext.local.netns import loopback_ports
from jhub_ext.spawner.profiles import ProfileMenuMixin


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

    confine_servers = Bool(
        config=True,
        help="""
        Run each server confined (needs root): a control group with its profile's memory and CPUs
        and at most ``max_processes`` processes, a PID namespace and a network namespace of its own
        that reaches only the hub's API and the public proxy. The default is on exactly when the
        hub runs as root; what this machine cannot give is said in the admins' note.

        Example::

            c.LocalProfileSpawner.confine_servers = True
        """,
    )

    @default("confine_servers")
    def _default_confine_servers(self) -> bool:
        return os.geteuid() == 0

    max_processes = Integer(
        confine.DEFAULT_MAX_PROCESSES,
        config=True,
        help="""
        The most processes (and threads) a confined server may have at once, its kernels included,
        where its profile sets no ``max_processes``.

        Example::

            c.LocalProfileSpawner.max_processes = 4096
        """,
    )

    image: str = ""
    profile_slug: str = ""
    profile_max_processes: int | None = None
    account: Account | None = None
    confinement: confine.Confinement | None = None

    def isolation_note(self) -> str | None:
        """What admins should know of how users are kept apart here, or None when all is in place."""
        notes = []
        if not self.system_users:
            notes.append(
                "Servers and jobs run as the hub's own OS user: users can read each other's files and "
                "processes. Run the hub as root to give each user a system account of their own."
            )
        if self.confine_servers:
            notes.append(confine.support().note() or "")
        elif os.geteuid() == 0:
            notes.append("Servers are not confined (confine_servers is off).")
        return " ".join(n for n in notes if n) or None

    @property
    def confinement_name(self) -> str:
        """The name of this server's control group and network namespace."""
        return server_confinement(self.user.name, self.name)

    async def start(self) -> Any:
        """Start the server, first creating the user's system account (with ``system_users``), and
        confined (with ``confine_servers``, where this machine allows it)."""
        if self.system_users:
            homes = self.homes_dir or os.path.dirname(self.home_dir_template.format(username="x"))
            self.account = await asyncio.to_thread(_accounts(homes).ensure, self.user.name)
            self.home_dir = str(self.account.home)
        self.confinement = None
        if self.confine_servers:
            support = await asyncio.to_thread(confine.support)
            if support.active:
                await asyncio.to_thread(confine.end, self.confinement_name)  # what a killed one left
                if not self.port:  # type: ignore[has-type]  # a trait of JupyterHub's Spawner
                    self.port = int(random_port())
                self.confinement = confine.Confinement(
                    self.confinement_name,
                    Limits(self.mem_limit, self.cpu_limit, self.profile_max_processes or self.max_processes),
                    network=support.network,
                    forward_in=(self.port,),
                    forward_out=tuple(loopback_ports(self.get_env())),
                )
        if self.confinement is None:
            return await super().start()
        command: list[str] = list(self.cmd)  # type: ignore[has-type]  # a trait of JupyterHub's Spawner
        self.cmd = [*self._confine_command(), *command]
        try:
            return await super().start()
        finally:
            self.cmd = command

    def _confine_command(self) -> list[str]:
        assert self.confinement is not None
        identity = []
        if self.account is not None:
            identity = [
                f"--user={self.account.uid}",
                f"--group={self.account.gid}",
                f"--cwd={self.account.home}",
            ]
        return [
            sys.executable,
            "-I",
            "-m",
            "jhub_ext.local.confine",
            *self.confinement.args(),
            *identity,
            "--",
        ]

    async def stop(self, now: bool = False) -> None:
        """Stop the server; then end whatever is left in its confinement."""
        await super().stop(now=now)
        if self.confine_servers and (await asyncio.to_thread(confine.support)).active:
            await asyncio.to_thread(confine.end, self.confinement_name)

    def apply_selection(self, selection: Selection) -> None:
        """Take the chosen profile's CPU and memory limits, image and slug for this server."""
        resources = selection.profile.resources
        self.cpu_limit = resources.cpu_limit
        self.cpu_guarantee = resources.cpu_guarantee
        self.mem_limit = resources.mem_limit
        self.mem_guarantee = resources.mem_guarantee
        self.image = selection.image.image if selection.image else ""
        self.profile_slug = selection.profile.slug
        self.profile_max_processes = selection.profile.max_processes

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

        With a system account it drops to that account in its home (confined, the confinement does);
        otherwise it prepares the home as JupyterHub would.
        """
        prepare_home = super().make_preexec_fn(name)
        confined = self.confinement is not None  # its group holds the memory; it drops to the account
        apply_limits = limiter(self.cpu_limit, None if confined else self.mem_limit, spread=self.user.name)
        account = self.account

        def preexec() -> None:
            apply_limits()
            if account is None:
                prepare_home()
            elif not confined:
                drop_to(account)
                os.chdir(account.home)

        return preexec
