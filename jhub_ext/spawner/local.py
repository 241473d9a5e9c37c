"""LocalProfileSpawner: the profile menu for servers that run as local processes.

The embedded default for a laptop, Binder and tests. A profile's CPU limit becomes a CPU
affinity mask (rounded up to whole cores, capped to the cores this machine has) and its
memory limit a per-process address-space limit (``RLIMIT_AS``). ``CPU_LIMIT`` and
``MEM_LIMIT`` (and the guarantees) are set in the server's environment as KubeSpawner
sets them. Every server runs as the hub's own OS user, in a home directory of its own:
it is not an isolation boundary between users, as Kubernetes mode is.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode

from ..backends.limits import limiter
from ..catalog import Catalog
from ..catalog.quota import Usage, Workload
from ..catalog.selection import Selection
from ..jobs.store import JobStore
from .profiles import ProfileMenuMixin


@functools.cache
def _job_store(url: str) -> JobStore:
    return JobStore(url)


class LocalProfileSpawner(ProfileMenuMixin, SimpleLocalProcessSpawner):
    """Spawn local single-user servers with the resources of a catalog profile."""

    jobs_db_url = Unicode(
        "",
        config=True,
        help="""
        The jobs service's database, so that group quotas count running jobs as well as servers
        (in Kubernetes mode the pods are counted instead). Empty: count servers only.

        Example::

            c.LocalProfileSpawner.jobs_db_url = "sqlite:////srv/jhub/jobs/jobs.sqlite"
        """,
    )

    image: str = ""
    profile_slug: str = ""

    def running_workloads(self, catalog: Catalog, groups: frozenset[str]) -> list[Workload]:
        workloads = super().running_workloads(catalog, groups)
        if self.jobs_db_url:
            workloads += [
                Workload(frozenset(job.groups), Usage(**job.usage))
                for job in _job_store(self.jobs_db_url).active_jobs()
                if job.usage and groups & set(job.groups)
            ]
        return workloads

    def apply_selection(self, selection: Selection) -> None:
        resources = selection.profile.resources
        self.cpu_limit = resources.cpu_limit
        self.cpu_guarantee = resources.cpu_guarantee
        self.mem_limit = resources.mem_limit
        self.mem_guarantee = resources.mem_guarantee
        self.image = selection.image.image if selection.image else ""
        self.profile_slug = selection.profile.slug

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        if self.profile_slug:
            env["JHUB_EXT_PROFILE"] = self.profile_slug
        if self.image:
            # what KubeSpawner sets, so jobs can run "in the same image as the notebook"
            env["JUPYTER_IMAGE"] = env["JUPYTER_IMAGE_SPEC"] = self.image
        return env

    def get_args(self) -> list[str]:
        args: list[str] = super().get_args()
        if os.geteuid() == 0 and "--allow-root" not in args:
            args.append("--allow-root")  # local mode runs servers as the hub's user
        return args

    def make_preexec_fn(self, name: str) -> Callable[[], Any]:
        prepare_home = super().make_preexec_fn(name)
        apply_limits = limiter(self.cpu_limit, self.mem_limit, spread=self.user.name)

        def preexec() -> None:
            apply_limits()
            prepare_home()

        return preexec
