"""The configuration the Zero to JupyterHub chart's hub pod loads, with our values, as a hub would.

The chart's own ``jupyterhub_config.py`` and ``z2jh.py`` run first, from the objects ``helm
template`` renders for the published charts (4.3.3 and 4.4.0), then ours (``hub.extraConfig``), in
a fresh interpreter, exactly as JupyterHub loads a config file. What comes out is what a hub would
run with: so the chart's settings can no longer silently undo ours, or ours the chart's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from jhub_ext.core.catalog import load_catalog

from ..chart import HubPod, Rendered, chart_package, chart_versions, render, run_guide
from ..conftest import HUB_CONFIG

NAMESPACE = "research"
REGISTRY = "registry.test/team"
TAG = "t1"
SITE_VALUES: dict[str, Any] = {
    "imagePullSecrets": ["registry-credentials"],
    "hub": {
        "config": {
            "JupyterHub": {"authenticator_class": "generic-oauth"},
            "GenericOAuthenticator": {
                "client_id": "jupyterhub",
                "authorize_url": "https://login.test/oauth2/auth",
                "token_url": "https://login.test/oauth2/token",
                "userdata_url": "https://login.test/userinfo",
                "admin_groups": ["hub-admins"],
                "allowed_groups": ["researchers", "gpu"],
                "manage_groups": True,
            },
        },
        "services": {"grafana": {"url": "http://grafana:3000"}},
        "loadRoles": {"user": {"scopes": ["self", "read:users:name"]}},
    },
    "singleuser": {"extraEnv": {"TEAM_BUCKET": "s3://team"}, "defaultUrl": "/tree"},
}

DUMP = """
import json, sys
from traitlets.config.loader import PyFileConfigLoader
config = PyFileConfigLoader(sys.argv[1]).load_config()
def plain(value):
    return json.loads(json.dumps(value, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))
print("CONFIG=" + json.dumps({section: {k: plain(v) for k, v in values.items()}
                              for section, values in config.items()}))
"""


def site(workdir: Path, values: dict[str, Any]) -> Path:
    """A copy of hub_config/ pointed at the test's registry by the guide's own commands, and the
    site's values beside it, as an admin's working copy."""
    shutil.copytree(HUB_CONFIG, workdir / "hub_config", dirs_exist_ok=True)
    run_guide("images", workdir, {"REGISTRY": REGISTRY, "TAG": TAG}, workdir / "no-kubeconfig")
    (workdir / "my-values.yaml").write_text(yaml.safe_dump(values))
    return workdir


def load(
    workdir: Path, values: dict[str, Any], version: str
) -> tuple[subprocess.CompletedProcess[str], list]:
    """Render the chart with our values and the site's, lay out the hub pod, and load its config."""
    site(workdir, values)
    objects = render(
        chart_package(version, workdir),
        NAMESPACE,
        [workdir / "hub_config" / "values.yaml", workdir / "my-values.yaml"],
    )
    catalog = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "jhub-ext-catalog", "namespace": NAMESPACE},
        "data": {"profiles.yaml": (workdir / "hub_config" / "profiles.yaml").read_text()},
    }
    pod = HubPod(workdir / "pod", NAMESPACE, Rendered([*objects, catalog]), workdir / "kubeconfig")
    pod.lay_out(network=False)  # loaded, not run: the configuration exactly as the pod has it
    config = pod.path("/usr/local/etc/jupyterhub/jupyterhub_config.py")
    result = subprocess.run(
        [sys.executable, "-c", DUMP, str(config)],
        env=pod.environment(),
        cwd=pod.path("/srv/jupyterhub"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, objects


def loaded(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("CONFIG="))
    return json.loads(line.removeprefix("CONFIG="))  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=chart_versions())
def chart(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list]:
    result, objects = load(tmp_path_factory.mktemp("chart"), SITE_VALUES, request.param)
    return loaded(result), objects


def test_our_service_and_roles_join_the_charts_culler_and_the_admins(chart: tuple[dict, list]) -> None:
    config, _ = chart
    services = {s["name"]: s for s in config["JupyterHub"]["services"]}
    assert set(services) == {"jupyterhub-idle-culler", "grafana", "jobs"}
    culler = services["jupyterhub-idle-culler"]["command"]
    assert "--timeout=3600" in culler and "--cull-every=300" in culler
    assert any(arg.startswith("--url=http://localhost:8081") for arg in culler)  # not through a Service
    # the jobs service is reached at the pod's own address, by the hub and the proxy alike
    assert services["jobs"]["url"] == "http://127.0.0.1:8082"  # POD_IP, as the fieldRef gives it
    roles = {r["name"]: r for r in config["JupyterHub"]["load_roles"]}
    assert roles["jupyterhub-idle-culler"]["services"] == ["jupyterhub-idle-culler"]
    assert {"self", "read:users:name", "custom:jobs:use"} <= set(roles["user"]["scopes"])
    assert roles["jobs-admin"]["groups"] == ["hub-admins"]  # the admins the values name


def test_notebooks_learn_where_the_jobs_service_is_and_keep_the_admins_variables(
    chart: tuple[dict, list],
) -> None:
    config, _ = chart
    environment = config["ProfileKubeSpawner"]["environment"]
    assert environment["JHUB_EXT_JOBS_URL"] == "http://proxy-public/services/jobs/"
    assert environment["TEAM_BUCKET"] == "s3://team"
    assert config["Spawner"]["default_url"] == "/tree"  # the admin's singleuser.defaultUrl wins


def test_the_login_the_values_configure_is_kept(chart: tuple[dict, list]) -> None:
    config, _ = chart
    assert config["JupyterHub"]["authenticator_class"] == "generic-oauth"
    assert config["GenericOAuthenticator"]["client_id"] == "jupyterhub"
    assert config["GenericOAuthenticator"]["allowed_groups"] == ["researchers", "gpu"]
    assert "DemoAuthenticator" not in config


def test_servers_and_jobs_run_in_the_releases_namespace_with_its_pull_secrets(
    chart: tuple[dict, list],
) -> None:
    config, _ = chart
    assert config["KubeSpawner"]["namespace"] == NAMESPACE
    assert config["JupyterHub"]["spawner_class"] == "jhub_ext.kubernetes.spawner.ProfileKubeSpawner"
    jobs = next(s for s in config["JupyterHub"]["services"] if s["name"] == "jobs")["environment"]
    assert jobs["JHUB_EXT_NAMESPACE"] == NAMESPACE
    assert jobs["JHUB_EXT_JOBS_IMAGE_PULL_SECRETS"] == "registry-credentials"
    assert jobs["JHUB_EXT_SINGLEUSER_IMAGE"] == f"{REGISTRY}/jhub-ext-singleuser:{TAG}"
    assert config["KubeSpawner"]["image_pull_secrets"] == ["registry-credentials"]


def test_no_pod_of_the_install_runs_privileged_or_as_root(chart: tuple[dict, list]) -> None:
    config, objects = chart
    assert config["KubeSpawner"].get("init_containers", []) == []  # no iptables container for servers
    for obj in objects:
        spec = obj.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
            security = container.get("securityContext", {})
            assert not security.get("privileged"), (obj["metadata"]["name"], container["name"])
            assert security.get("runAsUser") != 0, (obj["metadata"]["name"], container["name"])


def test_every_image_of_the_catalog_is_pre_pulled_on_every_node(
    chart: tuple[dict, list], tmp_path: Path
) -> None:
    _, objects = chart
    puller = next(
        o for o in objects if o["kind"] == "DaemonSet" and o["metadata"]["name"] == "continuous-image-puller"
    )
    pulled = {c["image"] for c in puller["spec"]["template"]["spec"]["initContainers"]}
    catalog = load_catalog(site(tmp_path, SITE_VALUES) / "hub_config" / "profiles.yaml")
    wanted = {image.image for profile in catalog.profiles for image in profile.images}
    assert wanted, "the shipped catalog names the project's images"
    assert wanted <= pulled, f"add to prePuller.extraImages: {sorted(wanted - pulled)}"
    tolerations = puller["spec"]["template"]["spec"].get("tolerations", [])
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations)  # the GPU nodes get the GPU image


def test_the_hub_container_is_not_capped_at_one_cpu(chart: tuple[dict, list]) -> None:
    _, objects = chart
    hub = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "hub")
    container = hub["spec"]["template"]["spec"]["containers"][0]
    assert float(container["resources"]["limits"]["cpu"]) >= 2  # hub, jobs service and culler


@pytest.mark.parametrize("version", chart_versions())
def test_a_hub_in_a_cluster_with_no_login_configured_refuses_to_start(version: str, tmp_path: Path) -> None:
    result, _ = load(tmp_path / "none", {}, version)
    assert result.returncode != 0
    assert "no login is configured, so it will not start" in result.stderr
    assert "hub.config.GenericOAuthenticator" in result.stderr
    # the admin may opt in to the demo users explicitly, and is warned
    opted = {"hub": {"extraEnv": {"JHUB_EXT_ALLOW_DEMO_USERS": "1"}}}
    result, _ = load(tmp_path / "demo", opted, version)
    config = loaded(result)
    assert config["JupyterHub"]["authenticator_class"] == "jhub_ext.hub.demoauth.DemoAuthenticator"
    assert "JHUB_EXT_ALLOW_DEMO_USERS=1" in result.stderr


@pytest.mark.parametrize("version", chart_versions())
def test_a_service_named_jobs_in_the_values_is_a_clear_conflict(version: str, tmp_path: Path) -> None:
    values = {**SITE_VALUES, "hub": {**SITE_VALUES["hub"], "services": {"jobs": {"url": "http://x:1"}}}}
    result, _ = load(tmp_path, values, version)
    assert result.returncode != 0
    assert textwrap.shorten("a JupyterHub service named 'jobs' is configured already", 200) in result.stderr
