"""The production install: the Zero to JupyterHub chart with our values, as the install guide
(docs/how-to/install-on-kubernetes.md) says.

- :func:`chart_package` finds the published chart as an admin's machine would ($JHUB_EXT_Z2JH_CHART,
  else ``../shared/charts/``, else the chart repository).
- :func:`guide_commands` reads the commands of the install guide that the tests run, unchanged.
- :class:`HubPod` lays out what the chart's hub pod loads (the chart's own ``jupyterhub_config.py``
  and ``z2jh.py``, the installed ConfigMap and Secret, our files where ``images/hub/Dockerfile`` puts
  them, the catalog ConfigMap where the values mount it) under a directory of this machine, with
  every absolute path of the pod mapped into it: the node agent runs pods as local processes and has
  no mount namespaces, so the hub runs beside the cluster, as the hub's ServiceAccount.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml
from devcluster.controlplane import helm_path, kubectl_path, write_kubeconfig
from devcluster.rest import poll

from .conftest import ROOT, free_port

Json = dict[str, Any]
CHART_VERSIONS = ("4.3.3", "4.4.0")
SHARED_CHARTS = ROOT.parent / "shared" / "charts"
CHART_REPOSITORY = "https://hub.jupyter.org/helm-chart/"
GUIDE = ROOT / "docs" / "how-to" / "install-on-kubernetes.md"
HUB_DOCKERFILE = ROOT / "images" / "hub" / "Dockerfile"
PROXY_DOCKERFILE = ROOT / "images" / "proxy" / "Dockerfile"
#: the configurable-http-proxy of the proxy image's base, the chart's (make system installs it here)
CHART_PROXY = ROOT / ".venv" / "chart-proxy" / "node_modules" / "configurable-http-proxy"
#: where that base image keeps it
POD_CHP_DIR = "/srv/configurable-http-proxy"
#: where the chart's hub pod keeps its configuration, and its working directory (the hub's volume)
POD_CONFIG_DIR = "/usr/local/etc/jupyterhub"
POD_WORKDIR = "/srv/jupyterhub"


def chart_versions() -> list[str]:
    """The chart versions to test: the one of $JHUB_EXT_Z2JH_CHART when set, else every supported one."""
    override = os.environ.get("JHUB_EXT_Z2JH_CHART")
    return [chart_version(Path(override))] if override else list(CHART_VERSIONS)


def chart_version(package: Path) -> str:
    """The ``version`` in a packaged chart's Chart.yaml."""
    with tarfile.open(package) as tar:
        member = next(
            m for m in tar.getmembers() if m.name.endswith("/Chart.yaml") and m.name.count("/") == 1
        )
        data = tar.extractfile(member)
        assert data is not None
        return str(yaml.safe_load(data.read())["version"])


def chart_package(version: str, workdir: Path) -> Path:
    """The published chart ``version``: $JHUB_EXT_Z2JH_CHART, else ``../shared/charts/``, else pulled
    from the chart repository (what an admin's machine reaches)."""
    if override := os.environ.get("JHUB_EXT_Z2JH_CHART"):
        return Path(override)
    local = SHARED_CHARTS / f"jupyterhub-{version}.tgz"
    if local.exists():
        return local
    helm("pull", "jupyterhub", "--repo", CHART_REPOSITORY, "--version", version, "-d", str(workdir))
    return workdir / f"jupyterhub-{version}.tgz"


def helm(*args: str, env: Mapping[str, str] | None = None) -> str:
    """Run the pinned Helm; its standard output (a failure raises with Helm's own message)."""
    result = subprocess.run(
        [str(helm_path()), *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def render(package: Path, namespace: str, values: list[Path], release: str = "jhub") -> list[Json]:
    """``helm template`` of the chart with these values files: the objects an install would create."""
    files = [arg for path in values for arg in ("-f", str(path))]
    text = helm("template", release, str(package), "-n", namespace, "--include-crds", *files)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def guide_block(block: str) -> str:
    """The text of the install guide's code block marked ``<!-- tested: BLOCK -->``, as written."""
    text = GUIDE.read_text()
    match = re.search(rf"<!-- tested: {re.escape(block)} -->\s*```\w*\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError(
            f"docs/how-to/install-on-kubernetes.md has no block marked <!-- tested: {block} -->"
        )
    return match.group(1)


def run_guide(block: str, cwd: Path, variables: Mapping[str, str], kubeconfig: Path) -> str:
    """Run one block of the guide in bash (``set -e``), with kubectl and helm on the PATH; what it
    printed (standard output, then standard error: the API server's warnings)."""
    tools = f"{kubectl_path().parent}{os.pathsep}{helm_path().parent}"
    env = {
        **os.environ,
        **variables,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
        "HELM_CACHE_HOME": str(cwd / ".helm-cache"),
        "HELM_CONFIG_HOME": str(cwd / ".helm-config"),
        "HELM_DATA_HOME": str(cwd / ".helm-data"),
    }
    script = f"set -euo pipefail\n{guide_block(block)}"
    result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"the guide's '{block}' commands failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def dockerfile_copies(dockerfile: Path = HUB_DOCKERFILE) -> dict[Path, str]:
    """Where the image puts files of the repository: ``COPY src... dest`` lines (sources relative
    to the repository root, the build context), as {source path: destination in the image}."""
    copies: dict[Path, str] = {}
    for line in dockerfile.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY":
            continue
        sources, dest = [p for p in parts[1:-1] if not p.startswith("--")], parts[-1]
        for source in sources:
            copies[ROOT / source] = dest if not dest.endswith("/") else dest + Path(source).name
    return copies


def map_paths(text: str, mounts: Mapping[str, Path]) -> str:
    """Every absolute path of a pod in ``text`` (a key of ``mounts``), as it is on this machine."""
    for pod_path in sorted(mounts, key=len, reverse=True):  # the longest first
        text = re.sub(rf"(?<![\w/]){re.escape(pod_path)}", str(mounts[pod_path]), text)
    return text


def _decoded(secret: Json) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


class HubPod:
    """The chart's hub pod, laid out under ``root`` and run as a local process beside the cluster.

    The pod's paths are mapped to ``root`` + path; its environment is the Deployment's (with the
    values Kubernetes would inject: the namespace, the pod's IP, the Secret's keys, the Services'
    variables); its network names are mapped to the processes that stand for them here: the hub
    listens on a free loopback port, and a real configurable-http-proxy stands for the chart's proxy
    pod (a file in ``jupyterhub_config.d``, which the chart's configuration loads before ours, says so).
    """

    def __init__(
        self, root: Path, namespace: str, admin: Any, kubeconfig: Path, proxy_port: int | None = None
    ):
        self.root = root
        self.namespace = namespace
        self.admin = admin  # the cluster admin's KubeClient: reads what the install created
        self.kubeconfig = kubeconfig  # the hub's ServiceAccount
        self.hub_port = free_port()
        self.proxy_port = proxy_port or free_port()
        self.proxy_api_port = free_port()
        self.url = f"http://127.0.0.1:{self.proxy_port}"
        self.log_path = root / "hub.log"
        self.proxy_log = root / "proxy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.secret: dict[str, str] = {}
        self.deployment: Json = {}
        self.mounts: dict[str, Path] = {}

    # --- the pod's files ---------------------------------------------------------------------------------

    def path(self, pod_path: str) -> Path:
        """Where a path of the pod is on this machine."""
        return self.root / pod_path.lstrip("/")

    def _map(self, text: str) -> str:
        """Every absolute path of the hub pod in ``text``, as it is on this machine."""
        return map_paths(text, self.mounts)

    def lay_out(self, network: bool = True) -> HubPod:
        """Write the hub pod's volumes and our image's files, every pod path mapped; with ``network``,
        also the loopback addresses of the processes that stand for the pod's network here."""
        self.deployment = self.admin.get("Deployment", "hub", self.namespace)
        pod = self.deployment["spec"]["template"]["spec"]
        container = self.container
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        self.mounts = {POD_CONFIG_DIR: self.path(POD_CONFIG_DIR), POD_WORKDIR: self.path(POD_WORKDIR)}
        for mount in container.get("volumeMounts", []):
            self.mounts.setdefault(mount["mountPath"].rstrip("/"), self.path(mount["mountPath"]))
        files: dict[Path, str] = {}  # on this machine -> text (unmapped)
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                data = self.admin.get("ConfigMap", volume["configMap"]["name"], self.namespace).get(
                    "data", {}
                )
            elif "secret" in volume:
                data = _decoded(self.admin.get("Secret", volume["secret"]["secretName"], self.namespace))
                self.secret.update(data)
            else:  # the hub's own volume (sqlite-pvc): a directory of its own here
                self.path(mount["mountPath"]).mkdir(parents=True, exist_ok=True)
                continue
            target = self.path(mount["mountPath"])
            if "subPath" in mount:
                files[target] = data[mount["subPath"]]
            else:
                for key, value in data.items():
                    files[target / key] = value
        for source, dest in dockerfile_copies().items():
            if source.is_file():
                files[self.path(dest)] = source.read_text()
        for target, text in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(self._map(text))
        self.path(POD_WORKDIR).mkdir(parents=True, exist_ok=True)
        if not network:
            return self
        # the network of this machine in place of the cluster's Services (see the class's docstring)
        network = self.path(POD_CONFIG_DIR) / "jupyterhub_config.d" / "00-test-network.py"
        network.parent.mkdir(parents=True, exist_ok=True)
        network.write_text(
            "# run by the chart's configuration, whose c this is (its get_config is z2jh's)\n"
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api_port}'\n"
            f"c.JupyterHub.hub_bind_url = 'http://127.0.0.1:{self.hub_port}'\n"
            f"c.JupyterHub.hub_connect_url = 'http://127.0.0.1:{self.hub_port}'\n"
            "# the chart's managed services (its culler) reach the hub on the pod's localhost:8081\n"
            "for service in c.JupyterHub.services:\n"
            "    service['command'] = [arg.replace('http://localhost:8081', "
            f"'http://127.0.0.1:{self.hub_port}') for arg in service.get('command', [])]\n"
        )
        return self

    # --- the pod's environment ---------------------------------------------------------------------------

    @property
    def container(self) -> Json:
        """The hub container of the chart's hub Deployment (read by :meth:`lay_out`)."""
        pod = self.deployment["spec"]["template"]["spec"]
        return next(c for c in pod["containers"] if c["name"] == "hub")  # type: ignore[no-any-return]

    def environment(self) -> dict[str, str]:
        """The hub container's environment as Kubernetes would set it, plus this machine's PATH."""
        bin_dir = Path(sys.executable).parent
        return {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.path(POD_WORKDIR)),
            "LANG": "C.UTF-8",
            **self._container_env(self.container),
            "KUBECONFIG": str(self.kubeconfig),  # the ServiceAccount's token, as mounted in the pod
        }

    def _container_env(self, container: Json) -> dict[str, str]:
        """A container's environment as Kubernetes would set it (its values' pod paths mapped)."""
        env: dict[str, str] = {}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = self._map(str(item["value"]))
                continue
            source = item["valueFrom"]
            if "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.namespace": self.namespace, "status.podIP": "127.0.0.1"}[field]
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                secret = _decoded(self.admin.get("Secret", ref["name"], self.namespace))
                env[item["name"]] = secret[ref["key"]]
            else:
                raise AssertionError(
                    f"the hub's env {item['name']} comes from {source}, which this test cannot map"
                )
        # the variables Kubernetes gives every pod for the Services of its namespace
        for service in self.admin.list("Service", self.namespace):
            prefix = service["metadata"]["name"].upper().replace("-", "_")
            ports = service["spec"].get("ports", [])
            env[f"{prefix}_SERVICE_HOST"] = service["spec"].get("clusterIP", "")
            if ports:
                env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
            for port in ports:
                if port.get("name"):
                    env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        return env

    def command(self) -> list[str]:
        """The hub container's command and arguments (the chart's), with the pod's paths mapped."""
        container = self.container
        args = [*container.get("command", []), *container.get("args", [])]
        assert args[0] == "jupyterhub", args
        return [str(Path(sys.executable).parent / "jupyterhub"), *(self._map(a) for a in args[1:])]

    # --- running -------------------------------------------------------------------------------------------

    def start_proxy(self) -> None:
        """The chart's proxy pod, on loopback ports: the command and environment of its Deployment
        (the chart's) in our proxy image (images/proxy: its files, over the chart's proxy)."""
        assert CHART_PROXY.is_dir(), "the chart's configurable-http-proxy is missing: make system installs it"
        deployment = self.admin.get("Deployment", "proxy", self.namespace)
        pod = deployment["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "chp")
        assert "/jhub-ext-proxy:" in container["image"], f"the values name {container['image']}"
        root = self.root / "proxy-pod"
        mounts = {POD_CHP_DIR: CHART_PROXY}
        copies = dockerfile_copies(PROXY_DOCKERFILE)
        for dest in copies.values():  # the image's files and their directories, under root
            for path in (dest, str(Path(dest).parent)):
                mounts.setdefault(path, root / path.lstrip("/"))
        for source, dest in copies.items():
            mounts[dest].parent.mkdir(parents=True, exist_ok=True)
            mounts[dest].write_text(map_paths(source.read_text(), mounts))
            mounts[dest].chmod(source.stat().st_mode)
        (image_path,) = re.findall(r"^ENV PATH=(\S+)$", PROXY_DOCKERFILE.read_text(), re.MULTILINE)
        env = {
            "PATH": map_paths(image_path.replace("$PATH", os.environ["PATH"]), mounts),
            **self._container_env(container),
        }
        # Kubernetes expands $(VAR) in a command; then the cluster's addresses become this machine's
        hub = f"http://127.0.0.1:{self.hub_port}"
        network = {
            "--ip=": "--ip=127.0.0.1",
            "--api-ip=": "--api-ip=127.0.0.1",
            "--port=8000": f"--port={self.proxy_port}",
            "--api-port=8001": f"--api-port={self.proxy_api_port}",
        }
        command: list[str] = []
        for arg in [*container.get("command", []), *container.get("args", [])]:
            arg = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), arg)
            command.append(network.get(arg, arg.replace(f"http://hub:{env['HUB_SERVICE_PORT']}", hub)))
        assert command[0] == "configurable-http-proxy", command
        command[0] = shutil.which(command[0], path=env["PATH"]) or command[0]
        assert command[0].startswith(str(root)), f"not the proxy image's command: {command[0]}"
        with self.proxy_log.open("wb") as log:
            self.proxy = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def run(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the hub expecting it to exit by itself (a start-up refusal)."""
        return subprocess.run(
            self.command(), env=self.environment(), cwd=self.path(POD_WORKDIR),
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def start(self, timeout: float = 120) -> HubPod:
        """Start the proxy and the hub, and wait for the hub to answer through the proxy."""
        self.start_proxy()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(), env=self.environment(), cwd=self.path(POD_WORKDIR),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

        def up() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited with {self.process.returncode}:\n{self.log()[-6000:]}")
            try:  # the hub answers before it has started its services and added their routes
                return (
                    requests.get(f"{self.url}/services/jobs/api/openapi.json", timeout=2).status_code == 200
                )
            except requests.ConnectionError:
                return False

        poll(up, timeout, "the chart's hub and its jobs service to answer through the proxy", interval=0.5)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Stop the hub (its services, the jobs service and the culler, with it), then the proxy."""
        for process in (self.process, self.proxy):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


class Rendered:
    """``helm template``'s objects (and those the guide creates with kubectl), read the way
    :class:`HubPod` reads an installed release from the API server."""

    def __init__(self, objects: list[Json]):
        self.objects = objects

    def get(self, kind: str, name: str, namespace: str | None = None) -> Json:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"{kind} {name} is not rendered")

    def list(self, kind: str, namespace: str | None = None) -> list[Json]:
        return [obj for obj in self.objects if obj["kind"] == kind]


def service_kubeconfig(cluster: Any, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig with a token of ``account`` in ``namespace``, as its pods would have mounted."""
    assert cluster.control_plane is not None
    return write_kubeconfig(
        path,
        cluster.control_plane.server,
        cluster.control_plane.pki.ca_cert,
        token=cluster.token(account, namespace),
        namespace=namespace,
        user=f"system:serviceaccount:{namespace}:{account}",
    )
