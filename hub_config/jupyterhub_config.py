"""JupyterHub configuration for jhub_ext, for both modes.

Local mode (``make demo``; the default outside a cluster): the hub on
http://127.0.0.1:8000, servers as local processes, demo users alice (group
researchers), bob (researchers, gpu) and admin (a hub admin), whose password is
``$JHUB_EXT_DEMO_PASSWORD`` (``demo`` when unset).

Kubernetes mode (``JHUB_EXT_MODE=kubernetes``; the default inside a cluster): servers are
pods made by ProfileKubeSpawner in namespace ``$JHUB_EXT_NAMESPACE`` (default ``jhub``),
reached by their pod IPs. In a cluster the service account is used; outside one, the
current kubeconfig (``$KUBECONFIG``), with the hub still on 127.0.0.1:8000.

Both modes serve the profile menu of ``profiles.yaml`` beside this file. Log-in is the
demo users unless an OAuth/OIDC provider is configured (``JHUB_EXT_OAUTH_*`` below), in
which case the provider's groups claim becomes the users' JupyterHub groups.

Environment variables (all optional):

- ``JHUB_EXT_MODE``: ``local`` or ``kubernetes``.
- ``JHUB_EXT_CATALOG``: the profile catalog (default: ``profiles.yaml`` beside this file).
- ``JHUB_EXT_STATE_DIR``: database, cookie secret and local home directories (default:
  ``state/`` in the repository). ``JHUB_EXT_DB_URL`` overrides the database URL.
- ``JHUB_EXT_PORT``, ``JHUB_EXT_PROXY_API_PORT``, ``JHUB_EXT_HUB_PORT``: the public port
  (8000), the proxy's API port (8001) and the hub's internal port (8081), on 127.0.0.1.
- ``JHUB_EXT_DEMO_PASSWORD``: the demo users' password; ``JHUB_EXT_DEMO_USERS`` (JSON, user -> groups)
  replaces the demo users alice and bob.
- ``JHUB_EXT_JOBS_PORT``: the jobs service's port on 127.0.0.1 (default 8082);
  ``JHUB_EXT_JOBS_DB_URL`` its database (default SQLite in the state directory).
- ``JHUB_EXT_NAMESPACE``: the namespace for server pods (kubernetes mode).
- ``JHUB_EXT_SINGLEUSER_IMAGE``: the image of profiles that offer no image choice.
- ``JHUB_EXT_HUB_CONNECT_URL``: how pods reach the hub's API when the hub runs outside
  the cluster (default ``http://127.0.0.1:$JHUB_EXT_HUB_PORT``).
- ``JHUB_EXT_OAUTH_CLIENT_ID``, ``JHUB_EXT_OAUTH_CLIENT_SECRET``,
  ``JHUB_EXT_OAUTH_AUTHORIZE_URL``, ``JHUB_EXT_OAUTH_TOKEN_URL``,
  ``JHUB_EXT_OAUTH_USERDATA_URL``, ``JHUB_EXT_OAUTH_CALLBACK_URL``: an OAuth2/OIDC provider;
  ``JHUB_EXT_OAUTH_USERNAME_CLAIM`` (default ``preferred_username``),
  ``JHUB_EXT_OAUTH_GROUPS_CLAIM`` (default ``groups``), ``JHUB_EXT_OAUTH_ADMIN_GROUPS`` and
  ``JHUB_EXT_OAUTH_ALLOWED_GROUPS`` (comma-separated) decide who may log in and who is admin.
"""

import json
import os
import shutil
import sys
from pathlib import Path

from jhub_ext.catalog import CatalogError
from jhub_ext.catalog.reload import CatalogSource
from jhub_ext.runtime.userenv import user_environment

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

here = Path(__file__).resolve().parent
env = os.environ
in_cluster = bool(env.get("KUBERNETES_SERVICE_HOST"))
mode = env.get("JHUB_EXT_MODE") or ("kubernetes" if in_cluster else "local")
catalog_path = os.path.abspath(env.get("JHUB_EXT_CATALOG", here / "profiles.yaml"))
state_dir = Path(env.get("JHUB_EXT_STATE_DIR", here.parent / "state")).resolve()
bin_dir = Path(sys.executable).parent
hub_port = int(env.get("JHUB_EXT_HUB_PORT", "8081"))

if mode not in ("local", "kubernetes"):
    sys.exit(f"jhub_ext: JHUB_EXT_MODE={mode!r} is not a mode; use JHUB_EXT_MODE=local or kubernetes")

# A missing or invalid catalog stops the hub here with the reasons, not a traceback.
try:
    CatalogSource.shared(catalog_path)
except CatalogError as e:
    sys.exit(
        f"jhub_ext: the profile catalog cannot be used, so the hub will not start:\n{e}\n"
        f"Fix it (check with: jhub-ext validate-catalog {catalog_path}) and start the hub again."
    )

# --- local mode's isolation: a system account per user when the hub runs as root -------------------
# (JHUB_EXT_SYSTEM_USERS=0 turns it off.) Everything the hub and the service write is then private
# to root (umask 077): the database, the cookie secret, job state and logs; homes are 0700.
system_users = (
    mode == "local" and not in_cluster and os.geteuid() == 0 and env.get("JHUB_EXT_SYSTEM_USERS", "1") != "0"
)
closed = [p for p in state_dir.parents if not os.stat(p).st_mode & 0o001]  # accounts could not pass
if system_users and closed:
    print(
        f"jhub_ext: WARNING: users' accounts could not reach their homes in {state_dir}, because "
        f"{closed[0]} may not be entered by other users; running everyone as root instead, without "
        "isolation. Set JHUB_EXT_STATE_DIR to a directory under one others may enter (such as "
        f"/srv/jhub), or allow it: chmod o+x {closed[0]}",
        file=sys.stderr,
    )
    system_users = False
account_env: dict[str, str] = {}
if system_users:
    os.umask(0o077)
    state_dir.mkdir(parents=True, exist_ok=True)
    for item in (state_dir, *state_dir.glob("*"), *state_dir.glob("jobs/*")):
        if item.is_symlink() or item.name == "user-env":
            continue
        if item.is_dir():  # accounts pass through to their own homes and job files, list nothing
            item.chmod(0o700 if item.name == "locks" else 0o711)
        else:  # the databases, the cookie secret, the proxy's pid: root's alone
            item.chmod(0o600)
    account_env = user_environment(state_dir / "user-env").env()
elif mode == "local":
    print(
        "jhub_ext: WARNING: users are not isolated: every user's servers and jobs run as the hub's "
        "own OS user and can read each other's files (accounts of their own need the hub to run as "
        "root); see the README's security section.",
        file=sys.stderr,
    )

# --- network and state, unless a cluster deployment (the z2jh chart) provides them -----------------
if not in_cluster:
    state_dir.mkdir(parents=True, exist_ok=True)
    c.JupyterHub.bind_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PORT', '8000')}"
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = hub_port
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PROXY_API_PORT', '8001')}"
    # tied to the hub: it ends when the hub does, even a hub stopped during its start-up or killed
    c.ConfigurableHTTPProxy.command = [
        sys.executable,
        "-m",
        "jhub_ext.runtime.tied",
        str(os.getpid()),
        shutil.which("configurable-http-proxy", path=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
        or "configurable-http-proxy",
    ]
    c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")
    c.JupyterHub.db_url = env.get("JHUB_EXT_DB_URL", f"sqlite:///{state_dir / 'jupyterhub.sqlite'}")
    c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")

# --- who may log in ---------------------------------------------------------------------------------
admin_groups = {g for g in env.get("JHUB_EXT_OAUTH_ADMIN_GROUPS", "").split(",") if g}
admin_users = set()
oauth_urls = ("JHUB_EXT_OAUTH_AUTHORIZE_URL", "JHUB_EXT_OAUTH_TOKEN_URL", "JHUB_EXT_OAUTH_USERDATA_URL")
if env.get("JHUB_EXT_OAUTH_CLIENT_ID") and not all(env.get(name) for name in oauth_urls):
    missing = ", ".join(name for name in oauth_urls if not env.get(name))
    sys.exit(
        f"jhub_ext: JHUB_EXT_OAUTH_CLIENT_ID is set but {missing} is not; set it to your provider's endpoint"
    )
if env.get("JHUB_EXT_OAUTH_CLIENT_ID"):
    # Production: any OAuth2/OIDC provider. Its groups claim becomes the user's JupyterHub
    # groups at every login, so the provider's groups decide which profiles a user sees.
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = env["JHUB_EXT_OAUTH_CLIENT_ID"]
    c.GenericOAuthenticator.client_secret = env.get("JHUB_EXT_OAUTH_CLIENT_SECRET", "")
    c.GenericOAuthenticator.authorize_url = env["JHUB_EXT_OAUTH_AUTHORIZE_URL"]
    c.GenericOAuthenticator.token_url = env["JHUB_EXT_OAUTH_TOKEN_URL"]
    c.GenericOAuthenticator.userdata_url = env["JHUB_EXT_OAUTH_USERDATA_URL"]
    if env.get("JHUB_EXT_OAUTH_CALLBACK_URL"):
        c.GenericOAuthenticator.oauth_callback_url = env["JHUB_EXT_OAUTH_CALLBACK_URL"]
    c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups"]
    c.GenericOAuthenticator.username_claim = env.get("JHUB_EXT_OAUTH_USERNAME_CLAIM", "preferred_username")
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = (
        f"oauth_user.{env.get('JHUB_EXT_OAUTH_GROUPS_CLAIM', 'groups')}"
    )
    allowed_groups = {g for g in env.get("JHUB_EXT_OAUTH_ALLOWED_GROUPS", "").split(",") if g}
    c.GenericOAuthenticator.admin_groups = admin_groups
    if allowed_groups:
        c.GenericOAuthenticator.allowed_groups = allowed_groups | admin_groups
    else:
        c.GenericOAuthenticator.allow_all = True
else:
    c.JupyterHub.authenticator_class = "jhub_ext.demo_auth.DemoAuthenticator"
    c.DemoAuthenticator.password = env.get("JHUB_EXT_DEMO_PASSWORD") or "demo"
    demo_users = {"alice": ["researchers"], "bob": ["researchers", "gpu"]}
    c.DemoAuthenticator.users = (
        json.loads(env["JHUB_EXT_DEMO_USERS"]) if env.get("JHUB_EXT_DEMO_USERS") else demo_users
    )
    admin_users = {"admin"}
    c.Authenticator.admin_users = admin_users

# --- the jobs service and who may use it --------------------------------------------------------------
jobs_port = int(env.get("JHUB_EXT_JOBS_PORT", "8082"))
jobs_dir = state_dir / "jobs"
jobs_dir.mkdir(parents=True, exist_ok=True)
if system_users:
    jobs_dir.chmod(0o711)  # the accounts pass through to their jobs' files
jobs_db_url = env.get("JHUB_EXT_JOBS_DB_URL", f"sqlite:///{jobs_dir / 'jobs.sqlite'}")
# The hub and the service (its subprocess, so on the same file system in both modes) take the same
# per-group locks while they count, check and record quota use, and count jobs the same way: from
# the jobs database.
quota_lock_dir = str(state_dir / "locks")
c.JupyterHub.services = [
    {
        "name": "jobs",
        # in a cluster the proxy reaches the service through the hub's Service (JHUB_EXT_JOBS_HOST=hub)
        "url": f"http://{env.get('JHUB_EXT_JOBS_HOST', '127.0.0.1')}:{jobs_port}",
        "command": [sys.executable, "-m", "jhub_ext.jobs.app"],
        "cwd": str(jobs_dir),
        "environment": {
            "JHUB_EXT_CATALOG": catalog_path,
            "JHUB_EXT_JOBS_DB_URL": jobs_db_url,
            "JHUB_EXT_QUOTA_LOCK_DIR": quota_lock_dir,
            "JHUB_EXT_JOBS_CONFIG": env.get("JHUB_EXT_JOBS_CONFIG", str(here / "jobs_config.py")),
            "JHUB_EXT_SYSTEM_USERS": "1" if system_users else "0",
            "JHUB_EXT_HOMES_DIR": str(state_dir / "home"),
            "JHUB_EXT_ACCOUNT_ENV": json.dumps(account_env),
            "JHUB_EXT_JOBS_DIR": str(jobs_dir / "run"),
            "JHUB_EXT_JOBS_OUTPUT_DIR": env.get("JHUB_EXT_JOBS_OUTPUT_DIR", str(state_dir / "outputs")),
            "JHUB_EXT_JOBS_OUTPUT_CLAIM": env.get("JHUB_EXT_JOBS_OUTPUT_CLAIM", ""),
            "JHUB_EXT_HUB_PID": str(os.getpid()),  # the service ends when the hub does (runtime/tied.py)
            "PATH": env.get("PATH", ""),
            "JHUB_EXT_JOBS_BIND_IP": "0.0.0.0" if in_cluster else "127.0.0.1",  # noqa: S104 - the pod's own address
            **(
                {
                    "JHUB_EXT_JOBS_BACKEND": "kubernetes",
                    "JHUB_EXT_NAMESPACE": env.get("JHUB_EXT_NAMESPACE", "jhub"),
                    "JHUB_EXT_SINGLEUSER_IMAGE": env.get(
                        "JHUB_EXT_SINGLEUSER_IMAGE", "quay.io/jupyter/scipy-notebook:2024-12-09"
                    ),
                    **{
                        k: env[k]
                        for k in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")
                        if k in env
                    },
                }
                if mode == "kubernetes"
                else {}
            ),
        },
        "oauth_no_confirm": True,
        # the dashboard's OAuth login may act on jobs as the user could with a token
        "oauth_client_allowed_scopes": ["custom:jobs:use", "custom:jobs:admin", "read:users:groups!user"],
        "display": True,
    }
]
c.JupyterHub.custom_scopes = {
    "custom:jobs:use": {"description": "Run jobs in the jobs service and manage your own jobs."},
    "custom:jobs:admin": {"description": "See and manage every user's jobs in the jobs service."},
}
c.JupyterHub.load_roles = [
    # every user may use the jobs service for their own jobs
    {"name": "user", "scopes": ["self", "access:services!service=jobs", "custom:jobs:use"]},
    # hub admins manage everyone's jobs
    {
        "name": "jobs-admin",
        "scopes": ["custom:jobs:admin", "custom:jobs:use", "access:services!service=jobs"],
        "users": sorted(admin_users),
        "groups": sorted(admin_groups),
    },
    # the service itself reads users' groups and their running servers, for quotas; nothing more
    {
        "name": "jobs-service",
        "scopes": ["list:users", "read:users:groups", "read:servers"],
        "services": ["jobs"],
    },
]
# Servers find the service through the proxy; their own token ($JUPYTERHUB_API_TOKEN) may use it.
public_url = env.get("JHUB_EXT_PUBLIC_URL", f"http://127.0.0.1:{env.get('JHUB_EXT_PORT', '8000')}")
c.Spawner.environment = {"JHUB_EXT_JOBS_URL": f"{public_url.rstrip('/')}/services/jobs/"}
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=jobs",
    "custom:jobs:use",
    "read:users:groups!user",
]

# --- servers: the profile menu ----------------------------------------------------------------------
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 300 if mode == "kubernetes" else 120
c.Spawner.http_timeout = 120

if mode == "local":
    c.JupyterHub.spawner_class = "jhub_ext.spawner.LocalProfileSpawner"
    c.LocalProfileSpawner.catalog_path = catalog_path
    c.LocalProfileSpawner.home_dir_template = str(state_dir / "home" / "{username}")
    c.LocalProfileSpawner.jobs_db_url = jobs_db_url  # quotas count jobs as well as servers
    c.LocalProfileSpawner.quota_lock_dir = quota_lock_dir
    c.LocalProfileSpawner.system_users = system_users
    if system_users:  # each user's own account, in the users' Python environment
        c.LocalProfileSpawner.homes_dir = str(state_dir / "home")
        c.LocalProfileSpawner.account_env = account_env
        c.Spawner.cmd = ["jupyterhub-singleuser"]
    else:
        c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
else:
    c.JupyterHub.spawner_class = "jhub_ext.spawner.kube.ProfileKubeSpawner"
    c.ProfileKubeSpawner.catalog_path = catalog_path
    c.ProfileKubeSpawner.jobs_db_url = jobs_db_url
    if env.get("JHUB_EXT_ORPHAN_GRACE_SECONDS"):  # server pods no hub record knows go after this long
        c.ProfileKubeSpawner.orphan_grace_seconds = int(env["JHUB_EXT_ORPHAN_GRACE_SECONDS"])
    c.ProfileKubeSpawner.quota_lock_dir = quota_lock_dir
    c.KubeSpawner.namespace = env.get("JHUB_EXT_NAMESPACE", "jhub")
    c.KubeSpawner.image = env.get("JHUB_EXT_SINGLEUSER_IMAGE", "quay.io/jupyter/scipy-notebook:2024-12-09")
    c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
    if not in_cluster:
        # Outside the cluster: pods must reach the hub's API at an address they can route to.
        c.JupyterHub.hub_connect_url = env.get("JHUB_EXT_HUB_CONNECT_URL", f"http://127.0.0.1:{hub_port}")
