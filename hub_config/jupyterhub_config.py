"""JupyterHub configuration for jhub_ext.

Works out of the box in local mode (``make demo``): the hub on http://127.0.0.1:8000,
demo users alice (researchers), bob (researchers, gpu) and admin, whose password is
``$JHUB_EXT_DEMO_PASSWORD`` (``demo`` when unset), and the profile menu of
``hub_config/profiles.yaml``.

Environment variables (all optional):

- ``JHUB_EXT_MODE``: ``local`` (default) runs servers as local processes.
- ``JHUB_EXT_CATALOG``: the profile catalog (default: ``profiles.yaml`` beside this file).
- ``JHUB_EXT_STATE_DIR``: database, cookie secret and home directories (default: ``state/``
  in the repository).
- ``JHUB_EXT_PORT``, ``JHUB_EXT_PROXY_API_PORT``, ``JHUB_EXT_HUB_PORT``: the public port
  (8000), the proxy's API port (8001) and the hub's internal port (8081), all on 127.0.0.1.
- ``JHUB_EXT_DEMO_PASSWORD``: the demo users' password.
"""

import os
import shutil
import sys
from pathlib import Path

from jhub_ext.catalog import CatalogError
from jhub_ext.catalog.reload import CatalogSource

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

here = Path(__file__).resolve().parent
env = os.environ
mode = env.get("JHUB_EXT_MODE", "local")
catalog_path = os.path.abspath(env.get("JHUB_EXT_CATALOG", here / "profiles.yaml"))
state_dir = Path(env.get("JHUB_EXT_STATE_DIR", here.parent / "state")).resolve()
bin_dir = Path(sys.executable).parent

if mode != "local":
    sys.exit(f"jhub_ext: JHUB_EXT_MODE={mode!r} is not available in this release; use JHUB_EXT_MODE=local")

# A missing or invalid catalog stops the hub here with the reasons, not a traceback.
try:
    CatalogSource.shared(catalog_path)
except CatalogError as e:
    sys.exit(
        f"jhub_ext: the profile catalog cannot be used, so the hub will not start:\n{e}\n"
        f"Fix it (check with: jhub-ext validate-catalog {catalog_path}) and start the hub again."
    )

# --- network: loopback only -------------------------------------------------------------------
state_dir.mkdir(parents=True, exist_ok=True)
c.JupyterHub.bind_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PORT', '8000')}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env.get("JHUB_EXT_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('JHUB_EXT_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [
    shutil.which("configurable-http-proxy", path=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    or "configurable-http-proxy"
]
c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")

# --- state ------------------------------------------------------------------------------------
c.JupyterHub.db_url = env.get("JHUB_EXT_DB_URL", f"sqlite:///{state_dir / 'jupyterhub.sqlite'}")
c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")

# --- who may log in ---------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "jhub_ext.demo_auth.DemoAuthenticator"
c.DemoAuthenticator.password = env.get("JHUB_EXT_DEMO_PASSWORD") or "demo"
c.DemoAuthenticator.users = {"alice": ["researchers"], "bob": ["researchers", "gpu"]}
c.Authenticator.admin_users = {"admin"}

# --- servers: the profile menu ----------------------------------------------------------------
c.JupyterHub.spawner_class = "jhub_ext.spawner.LocalProfileSpawner"
c.LocalProfileSpawner.catalog_path = catalog_path
c.LocalProfileSpawner.home_dir_template = str(state_dir / "home" / "{username}")
c.Spawner.cmd = [str(bin_dir / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
