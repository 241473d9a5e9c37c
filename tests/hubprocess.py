"""A real JupyterHub, started from hub_config/ as a subprocess, and a logged-in HTTP client.

Each hub gets its own ports, state directory and copy of the catalog, so tests can
edit the catalog under a running hub without touching the repository's file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import requests
from devcluster.rest import poll as wait_for

from .conftest import HUB_CONFIG, SHIPPED_CATALOG, free_port

PASSWORD = "test-password"


def jobs_service_keeper() -> int:
    """The pid of the jobs service the hub started (the only hub running): the keeper of its
    socket, whose child serves on it."""
    services: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if b"jhub_ext.service.app" in command and b"jhub_ext.local.tied" not in command:
                services[int(entry.name)] = parent
    keepers = [pid for pid, parent in services.items() if parent not in services]
    assert len(keepers) == 1, services
    return keepers[0]


class HubProcess:
    """``jupyterhub -f hub_config/jupyterhub_config.py`` on free loopback ports."""

    def __init__(
        self,
        workdir: Path,
        catalog_text: str | None = None,
        extra_env: dict[str, str] | None = None,
        extra_config: str | None = None,
        jobs_config: str | None = None,
    ):
        self.workdir = workdir
        if jobs_config is not None:  # the jobs service's configuration file, instead of the shipped one
            (workdir / "jobs_config.py").write_text(jobs_config)
            extra_env = {"JHUB_EXT_JOBS_CONFIG": str(workdir / "jobs_config.py"), **(extra_env or {})}
        # the shipped configuration file, run as JupyterHub runs it, then the test's own lines
        self.config_file = HUB_CONFIG / "jupyterhub_config.py"
        if extra_config is not None:
            self.config_file = workdir / "jupyterhub_config.py"
            shipped = HUB_CONFIG / "jupyterhub_config.py"
            self.config_file.write_text(
                f"__file__ = {str(shipped)!r}\n"
                f"exec(compile(open(__file__).read(), __file__, 'exec'))\n" + extra_config
            )
        # As root, servers and jobs run as accounts of their own, which must reach their homes in
        # the state directory: it lives where others may pass (pytest's own directory is 0700).
        self.state_dir = (
            Path(tempfile.mkdtemp(prefix="jhub-ext-state-")) if os.geteuid() == 0 else workdir / "state"
        )
        self.state_dir.chmod(0o711)
        self.catalog = workdir / "profiles.yaml"
        self.initial_catalog = catalog_text if catalog_text is not None else SHIPPED_CATALOG.read_text()
        self.catalog.write_text(self.initial_catalog)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "hub.log"
        bin_dir = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "JHUB_EXT_MODE": "local",
            "JHUB_EXT_CATALOG": str(self.catalog),
            "JHUB_EXT_STATE_DIR": str(self.state_dir),
            "JHUB_EXT_PORT": str(self.port),
            "JHUB_EXT_PROXY_API_PORT": str(free_port()),
            "JHUB_EXT_HUB_PORT": str(free_port()),
            "JHUB_EXT_JOBS_PORT": str(free_port()),
            "JHUB_EXT_DEMO_PASSWORD": PASSWORD,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.clients: list[HubClient] = []  # closed with the hub, so no socket outlives it

    @classmethod
    def kubernetes(
        cls,
        workdir: Path,
        namespace: Any,
        users: dict[str, list[str]],
        extra_env: dict[str, str] | None = None,
        catalog_text: str | None = None,
        extra_config: str | None = None,
        jobs_config: str | None = None,
    ) -> HubProcess:
        """A hub in kubernetes mode in ``namespace`` (a tests.kube.Namespace), with these demo users
        (and ``catalog_text`` instead of the shipped catalog, ``extra_config`` after the shipped
        configuration file, ``jobs_config`` as the jobs service's configuration file, if given)."""
        env = {
            "JHUB_EXT_MODE": "kubernetes",
            "KUBECONFIG": str(namespace.kubeconfig),
            "JHUB_EXT_NAMESPACE": namespace.name,
            "JHUB_EXT_DEMO_USERS": json.dumps(users),
            **(extra_env or {}),
        }
        process = cls(
            workdir, catalog_text, extra_env=env, extra_config=extra_config, jobs_config=jobs_config
        )
        # the node agent's pods run on this machine: they reach the hub on loopback
        process.env["JHUB_EXT_HUB_CONNECT_URL"] = f"http://127.0.0.1:{process.env['JHUB_EXT_HUB_PORT']}"
        return process

    def command(self) -> list[str]:
        return [
            str(Path(sys.executable).parent / "jupyterhub"),
            "-f",
            str(self.config_file),
        ]

    def run(self, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run the hub expecting it to exit by itself (a start-up error)."""
        return subprocess.run(
            self.command(), env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
        )

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> HubProcess:
        with self.log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                self.command(), env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT
            )

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.process.returncode}:\n{self.log()}")
            try:
                return requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(up, timeout, "the hub to answer")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for client in self.clients:
            client.session.close()
        self.clients.clear()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def client(self, username: str, password: str = PASSWORD) -> HubClient:
        client = HubClient(self, username, password)
        self.clients.append(client)
        return client


class HubClient:
    """A browser-like HTTP session for one user: cookies, XSRF tokens, redirects."""

    def __init__(self, hub: HubProcess, username: str, password: str = PASSWORD):
        self.hub = hub
        self.username = username
        self.session = requests.Session()
        self.session.hooks["response"].append(_utf8)
        self.password = password

    def url(self, path: str) -> str:
        return f"{self.hub.url}{path}"

    def login(self) -> requests.Response:
        page = self.session.get(self.url("/hub/login"))
        page.raise_for_status()
        return self.session.post(
            self.url("/hub/login"),
            data={"username": self.username, "password": self.password, "_xsrf": xsrf_of(page.text)},
        )

    def spawn_page(self) -> requests.Response:
        return self.session.get(self.url("/hub/spawn"))

    def submit_spawn_form(self, fields: dict[str, str]) -> requests.Response:
        page = self.spawn_page()
        page.raise_for_status()
        return self.session.post(self.url("/hub/spawn"), data={**fields, "_xsrf": xsrf_of(page.text)})

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Call the hub's REST API with this session's cookie, as the hub's own pages do."""
        page = self.session.get(self.url("/hub/home"))
        headers = {"X-XSRFToken": xsrf_of(page.text), **kwargs.pop("headers", {})}
        return self.session.request(method, self.url(f"/hub/api{path}"), headers=headers, **kwargs)

    def server(self) -> dict[str, Any] | None:
        model = self.api("GET", f"/users/{self.username}").json()
        return model.get("servers", {}).get("")

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            server = self.server()
            if server is None:
                raise RuntimeError(f"{self.username}'s server is gone:\n{self.hub.log()[-4000:]}")
            return server if server.get("ready") else None

        return wait_for(ready, timeout, f"{self.username}'s server", interval=0.5)  # type: ignore[no-any-return]

    def stop_server(self) -> None:
        self.api("DELETE", f"/users/{self.username}/server")
        wait_for(lambda: self.server() is None, 60, f"{self.username}'s server to stop", interval=0.5)


def _utf8(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """JupyterHub's pages are UTF-8 (they say so in a meta tag, not in the Content-Type header)."""
    response.encoding = "utf-8"


def xsrf_of(html: str) -> str:
    """The XSRF token JupyterHub puts in its pages (a hidden field or the form action's query)."""
    match = (
        re.search(r'name="_xsrf"\s+value="([^"]+)"', html)
        or re.search(r"_xsrf=([^&\"']+)", html)
        or re.search(r'xsrf_token:\s*"([^"]+)"', html)
    )
    if match is None:
        raise AssertionError("no _xsrf token in the page")
    return match.group(1)


def profiles_in_form(html: str) -> list[str]:
    return re.findall(r'name="profile" value="([^"]+)"', html)


def checked_profile(html: str) -> str | None:
    match = re.search(r'name="profile" value="([^"]+)"\s+id="[^"]+"\s+checked', html)
    return match.group(1) if match else None
