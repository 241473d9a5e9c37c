"""The hub's configuration for jhub_ext, in both modes: :func:`configure`.

``hub_config/jupyterhub_config.py`` calls it with JupyterHub's config object; with the Zero to
JupyterHub chart, ``hub.extraConfig`` calls it with the chart's own (``configure(c)``), after the
chart's configuration has run. It works on that very object, so it *adds to* what is there (see
:mod:`jhub_ext.hub.chart`): the chart's idle culler and its role, the admin's ``hub.config``,
``hub.services``, ``hub.loadRoles`` and ``singleuser.extraEnv`` stay as they are. (A file loaded
with ``load_subconfig`` gets a fresh config that replaces lists on merge: that lost the culler.)

Local mode (``make demo``; the default outside a cluster): the hub on http://127.0.0.1:8000,
servers as local processes, demo users alice (group researchers), bob (researchers, gpu) and admin
(a hub admin), whose password is ``$JHUB_EXT_DEMO_PASSWORD`` (``demo`` when unset).

Kubernetes mode (``JHUB_EXT_MODE=kubernetes``; the default inside a cluster): servers are pods made
by ProfileKubeSpawner in namespace ``$JHUB_EXT_NAMESPACE`` (default: the hub's own,
``$POD_NAMESPACE``, else ``jhub``), reached by their pod IPs. In a cluster the service account is
used; outside one, the current kubeconfig (``$KUBECONFIG``), with the hub still on 127.0.0.1:8000.
In a cluster the hub refuses to start with the demo users unless ``JHUB_EXT_ALLOW_DEMO_USERS=1``.

Environment variables (all optional):

- ``JHUB_EXT_MODE``: ``local`` or ``kubernetes``.
- ``JHUB_EXT_CATALOG``: the profile catalog (default: ``profiles.yaml`` in the config directory).
- ``JHUB_EXT_STATE_DIR``: database, cookie secret and local home directories (default: ``state/``
  beside the config directory; with the chart, the hub's working directory, its volume).
  ``JHUB_EXT_DB_URL`` overrides the database URL.
- ``JHUB_EXT_PORT``, ``JHUB_EXT_PROXY_API_PORT``, ``JHUB_EXT_HUB_PORT``: the public port (8000), the
  proxy's API port (8001) and the hub's internal port (8081), on 127.0.0.1.
- ``JHUB_EXT_DEMO_PASSWORD``: the demo users' password; ``JHUB_EXT_DEMO_USERS`` (JSON, user ->
  groups) replaces the demo users alice and bob.
- ``JHUB_EXT_ALLOW_DEMO_USERS=1``: allow the demo users in a cluster (a trial only: known passwords).
- ``JHUB_EXT_JOBS_PORT``: the jobs service's port (default 8082); ``JHUB_EXT_JOBS_DB_URL`` its
  database (default SQLite in the state directory); ``JHUB_EXT_JOBS_CONFIG`` its settings file
  (default ``jobs_config.py`` in the config directory); ``JHUB_EXT_JOBS_HOST`` the address the proxy
  reaches it at (default: 127.0.0.1, in a cluster the pod's own, ``$POD_IP``).
- ``JHUB_EXT_NAMESPACE``: the namespace for server pods and jobs (kubernetes mode).
- ``JHUB_EXT_SINGLEUSER_IMAGE``: the image of profiles that offer no image choice (default: the
  chart's ``singleuser.image``).
- ``JHUB_EXT_JOBS_IMAGE_PULL_SECRETS``: pull secrets for job pods (comma-separated; default: the
  servers' own, ``KubeSpawner.image_pull_secrets``).
- ``JHUB_EXT_PUBLIC_URL``: how servers reach the proxy, for ``$JHUB_EXT_JOBS_URL`` (default: the
  chart's ``proxy-public`` Service, else http://127.0.0.1:$JHUB_EXT_PORT).
- ``JHUB_EXT_HUB_CONNECT_URL``: how pods reach the hub's API when the hub runs outside the cluster
  (default ``http://127.0.0.1:$JHUB_EXT_HUB_PORT``).
- ``JHUB_EXT_OAUTH_CLIENT_ID``, ``JHUB_EXT_OAUTH_CLIENT_SECRET``, ``JHUB_EXT_OAUTH_AUTHORIZE_URL``,
  ``JHUB_EXT_OAUTH_TOKEN_URL``, ``JHUB_EXT_OAUTH_USERDATA_URL``, ``JHUB_EXT_OAUTH_CALLBACK_URL``: an
  OAuth2/OIDC provider; ``JHUB_EXT_OAUTH_USERNAME_CLAIM`` (default ``preferred_username``),
  ``JHUB_EXT_OAUTH_GROUPS_CLAIM`` (default ``groups``), ``JHUB_EXT_OAUTH_ADMIN_GROUPS`` and
  ``JHUB_EXT_OAUTH_ALLOWED_GROUPS`` (comma-separated) decide who may log in and who is admin. With the
  chart, configure the provider the chart's way instead (``hub.config.GenericOAuthenticator``).
- ``JUPYTERHUB_CRYPT_KEY`` (with such a provider): its tokens are kept, encrypted, and refreshed, so
  that users' groups follow the provider within ``JHUB_EXT_OAUTH_REFRESH_AGE`` seconds (default 300)
  and before every spawn, without a new login.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from traitlets.config import Config

from jhub_ext.core.catalog import CatalogError
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.hub import chart, login
from jhub_ext.local.userenv import user_environment

#: where the chart's hub image keeps its configuration (images/hub/Dockerfile puts ours there too)
CHART_CONFIG_DIR = "/usr/local/etc/jupyterhub"
DEFAULT_IMAGE = "quay.io/jupyter/scipy-notebook:2024-12-09"
#: what a server's own token may do: its activity, its server, and the jobs service as its user
SERVER_TOKEN_SCOPES = (
    "users:activity!user",
    "access:servers!server",
    "access:services!service=jobs",
    "custom:jobs:use",
    "read:users:groups!user",
)
#: what the jobs service's own token may do (its role, ``jobs-service``): read users, their groups
#: and their servers (quotas count servers, the usage ledger charges them), and stop servers
#: (``delete:servers``, which ``DELETE /hub/api/users/{name}/server`` and ``.../servers/{name}``
#: need) when a spent budget says ``stop_running``. Not ``servers``: it would let the service start
#: servers too; not ``admin:servers``: their state besides.
JOBS_SERVICE_SCOPES = ("list:users", "read:users:groups", "read:servers", "delete:servers")


@dataclass
class Site:
    """Where this hub runs, read once from the environment."""

    env: Mapping[str, str]
    config_dir: Path
    z2jh: ModuleType | None  # the chart's helpers, when the chart's configuration ran first
    mode: str
    namespace: str
    catalog: str
    state_dir: Path
    hub_port: int
    in_cluster: bool  # in the chart's pod, or any pod
    system_users: bool = False
    account_env: dict[str, str] | None = None

    @property
    def in_chart(self) -> bool:
        """Whether the Zero to JupyterHub chart's configuration runs this hub."""
        return self.z2jh is not None

    def chart_value(self, key: str) -> Any:
        """A value of the chart's values (``hub.config.JupyterHub.authenticator_class``), else None."""
        return self.z2jh.get_config(key) if self.z2jh is not None else None


def configure(c: Config, config_dir: str | Path | None = None, env: Mapping[str, str] = os.environ) -> None:
    """Configure the hub, servers, log-in and the jobs service on ``c``, joining what is there.

    ``config_dir`` holds ``profiles.yaml`` and ``jobs_config.py`` (default: the chart's config
    directory with the chart, else ``hub_config/`` of this repository). Exits with a message that
    names the fix when the setup cannot work (an invalid catalog, no log-in in a cluster).
    """
    site = _site(env, config_dir)
    _stop_promptly_while_starting()
    _check_catalog(site.catalog)
    _isolation(site)
    if not site.in_cluster:
        _network(c, site)
    admins = login.configure_login(c, site.env, site.in_cluster, site.chart_value)
    _jobs_service(c, site, admins)
    _servers(c, site)


def _stop_promptly_while_starting() -> None:
    """Until JupyterHub installs its own SIGINT and SIGTERM handlers (at the very end of its start-up),
    either signal ends the hub at once, as SIGTERM's default action does.

    Without this, SIGINT raises KeyboardInterrupt wherever the start-up happens to be, and one raised
    inside a finalizer is printed and dropped: the hub then finished starting and served on, though
    asked to stop (#21). A handler of the event loop runs in the loop, so no signal is lost; the proxy
    and the jobs service end with the hub (local/tied.py). JupyterHub's own handlers replace these.
    """
    try:
        loop = asyncio.get_running_loop()  # the config is loaded inside JupyterHub's start-up
    except RuntimeError:
        return  # read by a tool, not a starting hub
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _exit_at_once, sig)


def _exit_at_once(sig: signal.Signals) -> None:
    print(f"jhub_ext: {sig.name} during the hub's start-up: stopping now", file=sys.stderr, flush=True)
    logging.shutdown()
    os._exit(128 + sig)


def _site(env: Mapping[str, str], config_dir: str | Path | None) -> Site:
    z2jh = sys.modules.get("z2jh")
    in_cluster = z2jh is not None or bool(env.get("KUBERNETES_SERVICE_HOST"))
    if config_dir is None:
        config_dir = (
            CHART_CONFIG_DIR if z2jh is not None else Path(__file__).resolve().parents[2] / "hub_config"
        )
    directory = Path(config_dir)
    mode = env.get("JHUB_EXT_MODE") or ("kubernetes" if in_cluster else "local")
    if mode not in ("local", "kubernetes"):
        sys.exit(f"jhub_ext: JHUB_EXT_MODE={mode!r} is not a mode; use JHUB_EXT_MODE=local or kubernetes")
    # the chart's hub runs in its volume (/srv/jupyterhub), where its own database lives too
    state = env.get("JHUB_EXT_STATE_DIR") or (Path.cwd() if z2jh is not None else directory.parent / "state")
    return Site(
        env=env,
        config_dir=directory,
        z2jh=z2jh,
        mode=mode,
        namespace=env.get("JHUB_EXT_NAMESPACE") or env.get("POD_NAMESPACE") or "jhub",
        catalog=os.path.abspath(env.get("JHUB_EXT_CATALOG", directory / "profiles.yaml")),
        state_dir=Path(state).resolve(),
        hub_port=int(env.get("JHUB_EXT_HUB_PORT", "8081")),
        in_cluster=in_cluster,
    )


def _check_catalog(path: str) -> None:
    """A missing or invalid catalog stops the hub here with the reasons, not a traceback."""
    try:
        CatalogSource.shared(path)
    except CatalogError as e:
        sys.exit(
            f"jhub_ext: the profile catalog cannot be used, so the hub will not start:\n{e}\n"
            f"Fix it (check with: jhub-ext validate-catalog {path}) and start the hub again."
        )


def _isolation(site: Site) -> None:
    """Local mode's isolation: a system account per user when the hub runs as root.

    (JHUB_EXT_SYSTEM_USERS=0 turns it off.) Everything the hub and the service write is then private
    to root (umask 077): the database, the cookie secret, job state and logs; homes are 0700.
    """
    env, state_dir = site.env, site.state_dir
    site.system_users = (
        site.mode == "local"
        and not site.in_cluster
        and os.geteuid() == 0
        and env.get("JHUB_EXT_SYSTEM_USERS", "1") != "0"
    )
    closed = [p for p in state_dir.parents if not os.stat(p).st_mode & 0o001]  # accounts could not pass
    if site.system_users and closed:
        print(
            f"jhub_ext: WARNING: users' accounts could not reach their homes in {state_dir}, because "
            f"{closed[0]} may not be entered by other users; running everyone as root instead, without "
            "isolation. Set JHUB_EXT_STATE_DIR to a directory under one others may enter (such as "
            f"/srv/jhub), or allow it: chmod o+x {closed[0]}",
            file=sys.stderr,
        )
        site.system_users = False
    site.account_env = {}
    if site.system_users:
        os.umask(0o077)
        state_dir.mkdir(parents=True, exist_ok=True)
        for item in (state_dir, *state_dir.glob("*"), *state_dir.glob("jobs/*")):
            if item.is_symlink() or item.name == "user-env":
                continue
            if item.is_dir():  # accounts pass through to their own homes and job files, list nothing
                item.chmod(0o700 if item.name == "locks" else 0o711)
            else:  # the databases, the cookie secret, the proxy's pid: root's alone
                item.chmod(0o600)
        site.account_env = user_environment(state_dir / "user-env").env()
    elif site.mode == "local":
        print(
            "jhub_ext: WARNING: users are not isolated: every user's servers and jobs run as the hub's "
            "own OS user and can read each other's files (accounts of their own need the hub to run as "
            "root); see docs/explanation/security.md.",
            file=sys.stderr,
        )


def _network(c: Config, site: Site) -> None:
    """Ports, the proxy and state on this machine (a cluster deployment, the chart, provides its own)."""
    env, state_dir = site.env, site.state_dir
    bin_dir = Path(sys.executable).parent
    state_dir.mkdir(parents=True, exist_ok=True)
    c.JupyterHub.bind_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PORT', '8000')}"
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = site.hub_port
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PROXY_API_PORT', '8001')}"
    # tied to the hub: it ends when the hub does, even a hub stopped during its start-up or killed
    path = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    proxy, node = shutil.which("configurable-http-proxy", path=path), shutil.which("node", path=path)
    # API clients of a jobs service that is down get a JSON 503 with Retry-After (see proxy.mjs)
    script = str(Path(__file__).with_name("proxy.mjs"))
    run = (
        [node, script, proxy, "/services/jobs/api/"]
        if proxy and node
        else [proxy or "configurable-http-proxy"]
    )
    c.ConfigurableHTTPProxy.command = [sys.executable, "-m", "jhub_ext.local.tied", str(os.getpid()), *run]
    c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")
    c.JupyterHub.db_url = env.get("JHUB_EXT_DB_URL", f"sqlite:///{state_dir / 'jupyterhub.sqlite'}")
    c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")


def _jobs_service(c: Config, site: Site, admins: tuple[set[str], set[str]]) -> None:
    """The jobs service, its scopes and roles, and how servers find it: added to what is there."""
    env, state_dir = site.env, site.state_dir
    jobs_port = int(env.get("JHUB_EXT_JOBS_PORT", "8082"))
    jobs_dir = state_dir / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    if site.system_users:
        jobs_dir.chmod(0o711)  # the accounts pass through to their jobs' files
    if env.get("JHUB_EXT_JOBS_HOST"):
        jobs_host = env["JHUB_EXT_JOBS_HOST"]
    elif site.in_cluster:
        # The pod's own address: the proxy (another pod) and the hub (this one, at start-up) both reach
        # it directly, with no hairpin through the hub's own Service, which network plugins may drop.
        jobs_host = env.get("POD_IP") or socket.gethostbyname(socket.gethostname())
    else:
        jobs_host = "127.0.0.1"
    kubernetes = {
        "JHUB_EXT_JOBS_BACKEND": "kubernetes",
        "JHUB_EXT_NAMESPACE": site.namespace,
        "JHUB_EXT_SINGLEUSER_IMAGE": _singleuser_image(c, env),
        "JHUB_EXT_JOBS_IMAGE_PULL_SECRETS": env.get("JHUB_EXT_JOBS_IMAGE_PULL_SECRETS")
        or ",".join(chart.pull_secret_names(chart.configured(c.KubeSpawner, "image_pull_secrets", ()))),
        **{
            k: env[k]
            for k in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
            if k in env
        },
    }
    service = {
        "name": "jobs",
        "url": f"http://{jobs_host}:{jobs_port}",
        "command": [sys.executable, "-m", "jhub_ext.service.app"],
        "cwd": str(jobs_dir),
        "environment": {
            "JHUB_EXT_CATALOG": site.catalog,
            "JHUB_EXT_JOBS_DB_URL": _jobs_db_url(site),
            # The hub and the service (its subprocess, so on the same file system in both modes) take
            # the same per-group locks while they count, check and record quota use
            "JHUB_EXT_QUOTA_LOCK_DIR": str(state_dir / "locks"),
            "JHUB_EXT_JOBS_CONFIG": env.get("JHUB_EXT_JOBS_CONFIG", str(site.config_dir / "jobs_config.py")),
            "JHUB_EXT_SYSTEM_USERS": "1" if site.system_users else "0",
            "JHUB_EXT_HOMES_DIR": str(state_dir / "home"),
            "JHUB_EXT_ACCOUNT_ENV": json.dumps(site.account_env or {}),
            "JHUB_EXT_JOBS_DIR": str(jobs_dir / "run"),
            "JHUB_EXT_JOBS_OUTPUT_DIR": env.get("JHUB_EXT_JOBS_OUTPUT_DIR", str(state_dir / "outputs")),
            "JHUB_EXT_JOBS_OUTPUT_CLAIM": env.get("JHUB_EXT_JOBS_OUTPUT_CLAIM", ""),
            "JHUB_EXT_HUB_PID": str(os.getpid()),  # the service ends when the hub does (local/tied.py)
            "PATH": env.get("PATH", ""),
            **{k: env[k] for k in ("JHUB_EXT_CONFINE", "JHUB_EXT_MAX_PROCESSES") if env.get(k)},
            "JHUB_EXT_JOBS_BIND_IP": "0.0.0.0" if site.in_cluster else "127.0.0.1",  # noqa: S104 - the pod's own address
            **_notification_env(site),
            **(kubernetes if site.mode == "kubernetes" else {}),
        },
        "oauth_no_confirm": True,
        # the dashboard's OAuth login may act on jobs as the user could with a token
        "oauth_client_allowed_scopes": ["custom:jobs:use", "custom:jobs:admin", "read:users:groups!user"],
        "display": True,
    }
    try:
        c.JupyterHub.services = chart.with_service(chart.configured(c.JupyterHub, "services", []), service)
    except chart.ConfigConflict as e:
        sys.exit(f"jhub_ext: {e}")
    c.JupyterHub.custom_scopes = {
        **chart.configured(c.JupyterHub, "custom_scopes", {}),
        "custom:jobs:use": {"description": "Run jobs in the jobs service and manage your own jobs."},
        "custom:jobs:admin": {"description": "See and manage every user's jobs in the jobs service."},
    }
    admin_users, admin_groups = admins
    c.JupyterHub.load_roles = chart.with_roles(
        chart.configured(c.JupyterHub, "load_roles", []),
        [
            # every user may use the jobs service for their own jobs
            {"name": "user", "scopes": ["self", "access:services!service=jobs", "custom:jobs:use"]},
            # hub admins manage everyone's jobs
            {
                "name": "jobs-admin",
                "scopes": ["custom:jobs:admin", "custom:jobs:use", "access:services!service=jobs"],
                "users": sorted(admin_users),
                "groups": sorted(admin_groups),
            },
            # the service itself reads users' groups and their running servers, for quotas and the
            # usage ledger, and stops servers whose spent budget says stop_running; nothing more
            {"name": "jobs-service", "scopes": list(JOBS_SERVICE_SCOPES), "services": ["jobs"]},
        ],
    )
    # Servers find the service through the proxy; their own token ($JUPYTERHUB_API_TOKEN) may use it.
    # The chart sets KubeSpawner.environment (singleuser.extraEnv), which would win over Spawner's:
    # join them all on the class in use, the admin's variables first.
    spawner_class = _spawner_class(site)
    environment = chart.merged_environment(c, ("Spawner", "KubeSpawner", spawner_class))
    environment.setdefault("JHUB_EXT_JOBS_URL", f"{_public_url(site).rstrip('/')}/services/jobs/")
    c[spawner_class].environment = environment
    c.Spawner.server_token_scopes = sorted(
        {*chart.configured(c.Spawner, "server_token_scopes", ()), *SERVER_TOKEN_SCOPES}
    )


def _notification_env(site: Site) -> dict[str, str]:
    """Where notifications may link and post: the admin's ($JHUB_EXT_PUBLIC_URL,
    $JHUB_EXT_WEBHOOK_PREFIXES); in local mode (the demo, on this machine only) the hub's own address
    and webhooks to any port of 127.0.0.1."""
    env, local = site.env, site.mode != "kubernetes"
    found = {
        "JHUB_EXT_PUBLIC_URL": env.get("JHUB_EXT_PUBLIC_URL") or (_public_url(site) if local else ""),
        "JHUB_EXT_WEBHOOK_PREFIXES": env.get(
            "JHUB_EXT_WEBHOOK_PREFIXES", "http://127.0.0.1:*" if local else ""
        ),
    }
    return {key: value for key, value in found.items() if value}


def _jobs_db_url(site: Site) -> str:
    return site.env.get("JHUB_EXT_JOBS_DB_URL", f"sqlite:///{site.state_dir / 'jobs' / 'jobs.sqlite'}")


def _singleuser_image(c: Config, env: Mapping[str, str]) -> str:
    """The servers' image: the chart's ``singleuser.image`` where it set one."""
    return str(
        chart.configured(c.KubeSpawner, "image", env.get("JHUB_EXT_SINGLEUSER_IMAGE") or DEFAULT_IMAGE)
    )


def _spawner_class(site: Site) -> str:
    return "ProfileKubeSpawner" if site.mode == "kubernetes" else "LocalProfileSpawner"


def _public_url(site: Site) -> str:
    """How servers reach the proxy: the chart's proxy by its Service in the namespace (whose policies
    let servers reach it), else this machine's."""
    if site.env.get("JHUB_EXT_PUBLIC_URL"):
        return site.env["JHUB_EXT_PUBLIC_URL"]
    if site.z2jh is not None:
        https = (
            site.chart_value("proxy.https.enabled") and site.chart_value("proxy.https.type") == "letsencrypt"
        )
        proxy = f"{site.z2jh.get_name('proxy-http')}:8000" if https else site.z2jh.get_name("proxy-public")
        return f"http://{proxy}"
    return f"http://127.0.0.1:{site.env.get('JHUB_EXT_PORT', '8000')}"


def _servers(c: Config, site: Site) -> None:
    """The profile menu's spawner; the chart's and the admin's settings win where they set one."""
    env, state_dir = site.env, site.state_dir
    chart.set_default(c.Spawner, "default_url", "/lab")
    chart.set_default(c.Spawner, "start_timeout", 300 if site.mode == "kubernetes" else 120)
    chart.set_default(c.Spawner, "http_timeout", 120)
    chosen = site.chart_value("hub.config.JupyterHub.spawner_class")
    if chosen and "ProfileKubeSpawner" not in str(chosen):
        sys.exit(
            f"jhub_ext: hub.config.JupyterHub.spawner_class is {chosen!r}, but jhub_ext's profile menu "
            "needs its own spawner; remove that setting from the chart's values"
        )
    quota_lock_dir = str(state_dir / "locks")
    if site.mode == "local":
        c.JupyterHub.spawner_class = "jhub_ext.local.spawner.LocalProfileSpawner"
        c.LocalProfileSpawner.catalog_path = site.catalog
        c.LocalProfileSpawner.home_dir_template = str(state_dir / "home" / "{username}")
        c.LocalProfileSpawner.jobs_db_url = _jobs_db_url(site)  # quotas count jobs as well as servers
        c.LocalProfileSpawner.quota_lock_dir = quota_lock_dir
        c.LocalProfileSpawner.system_users = site.system_users
        if "JHUB_EXT_CONFINE" in env:  # else: confined exactly when the hub runs as root
            c.LocalProfileSpawner.confine_servers = env["JHUB_EXT_CONFINE"] == "1"
        if env.get("JHUB_EXT_MAX_PROCESSES"):
            c.LocalProfileSpawner.max_processes = int(env["JHUB_EXT_MAX_PROCESSES"])
        if site.system_users:  # each user's own account, in the users' Python environment
            c.LocalProfileSpawner.homes_dir = str(state_dir / "home")
            c.LocalProfileSpawner.account_env = site.account_env
            c.Spawner.cmd = ["jupyterhub-singleuser"]
        else:
            c.Spawner.cmd = [str(Path(sys.executable).parent / "jupyterhub-singleuser")]
        return
    c.JupyterHub.spawner_class = "jhub_ext.kubernetes.spawner.ProfileKubeSpawner"
    c.ProfileKubeSpawner.catalog_path = site.catalog
    c.ProfileKubeSpawner.jobs_db_url = _jobs_db_url(site)
    if env.get("JHUB_EXT_ORPHAN_GRACE_SECONDS"):  # server pods no hub record knows go after this long
        c.ProfileKubeSpawner.orphan_grace_seconds = int(env["JHUB_EXT_ORPHAN_GRACE_SECONDS"])
    c.ProfileKubeSpawner.quota_lock_dir = quota_lock_dir
    if env.get("JHUB_EXT_NAMESPACE"):  # the admin's explicit choice wins over the chart's own namespace
        c.KubeSpawner.namespace = site.namespace
    chart.set_default(c.KubeSpawner, "namespace", site.namespace)
    chart.set_default(c.KubeSpawner, "image", _singleuser_image(c, env))
    chart.set_default(c.Spawner, "cmd", ["jupyterhub-singleuser"])
    if privileged := chart.privileged_init_containers(chart.configured(c.KubeSpawner, "init_containers", [])):
        print(
            f"jhub_ext: WARNING: servers get the privileged init container(s) {', '.join(privileged)}; "
            + chart.RESTRICTED_HINT,
            file=sys.stderr,
        )
    if not site.in_cluster:
        # Outside the cluster: pods must reach the hub's API at an address they can route to.
        c.JupyterHub.hub_connect_url = env.get(
            "JHUB_EXT_HUB_CONNECT_URL", f"http://127.0.0.1:{site.hub_port}"
        )
