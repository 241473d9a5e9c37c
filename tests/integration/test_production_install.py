"""The production install on the real control plane, as the install guide
(docs/how-to/install-on-kubernetes.md) says, for each published chart.

The guide's own commands install the chart with our values (Helm and kubectl built from their Go
modules); every object is accepted and every pod the chart's controllers make is admitted under the
namespace's "restricted" Pod Security. Then the hub configuration the chart's hub pod loads runs as
a real hub process, as the hub's ServiceAccount (see tests/chart.py for what is mapped and why): a
researcher logs in, spawns every server profile the catalog offers them (each pod admitted,
scheduled and running), the notebook's environment reaches the jobs service through the proxy, a
job submitted with the client from that environment runs, the idle culler runs with its role, and
the chart's proxy pod, in our proxy image, answers API clients in JSON while the service restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from devcluster.rest import poll

from jhub_ext.client import JobsClient

from ..chart import HubPod, chart_package, chart_versions, guide_block, run_guide, service_kubeconfig
from ..conftest import HUB_CONFIG, free_port
from ..hubprocess import HubClient, jobs_service_keeper
from ..oidc import OAuthClient, OIDCProvider, log_in_over_http

REGISTRY = "registry.test/team"
TAG = "t1"
#: how long a server may be idle before the culler stops it, here (the shipped values: an hour)
CULL_SECONDS = 45
#: the team's identity provider: its users and their groups
PEOPLE = {
    "bob": {"password": "bob-password", "groups": ["researchers", "gpu"]},
    "ada": {"password": "ada-password", "groups": ["hub-admins"]},
    "olaf": {"password": "olaf-password", "groups": ["finance"]},
}


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """The team's identity provider: Ory Hydra, built from its Go module, with the tests' sign-in page."""
    with OIDCProvider(tmp_path_factory.mktemp("idp"), PEOPLE) as started:
        yield started


def site_values(provider: OIDCProvider, client: OAuthClient, hub_url: str) -> dict[str, Any]:
    """The guide's own my-values.yaml, with this provider's endpoints and this client in place of the
    example's, and a culler quick enough to watch."""
    text = guide_block("site-values")
    for example, real in (
        ("https://login.example.org/oauth2/auth", provider.authorize_url),
        ("https://login.example.org/oauth2/token", provider.token_url),
        ("https://login.example.org/userinfo", provider.userinfo_url),
        ("https://hub.example.org", hub_url),
        ("client_id: jupyterhub", f"client_id: {client.client_id}"),
    ):
        assert example in text, f"the guide's site values no longer name {example}"
        text = text.replace(example, real)
    values = yaml.safe_load(text)
    values["cull"] = {"timeout": CULL_SECONDS, "every": 10}
    values["imagePullSecrets"] = [
        "registry-credentials"
    ]  # a private registry (docs/how-to/install-on-kubernetes.md, step 1)
    return values  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=chart_versions())
def installed(
    request: pytest.FixtureRequest,
    cluster: Any,
    provider: OIDCProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    """The chart installed by the guide's commands into a namespace of its own."""
    version = request.param
    workdir = tmp_path_factory.mktemp(f"install-{version}")
    proxy_port = free_port()  # where the hub's users reach it here, for the provider's redirect
    client = provider.register_client(f"http://127.0.0.1:{proxy_port}/hub/oauth_callback")
    shutil.copytree(HUB_CONFIG, workdir / "hub_config")
    values = site_values(provider, client, f"http://127.0.0.1:{proxy_port}")
    (workdir / "my-values.yaml").write_text(yaml.safe_dump(values))
    namespace = f"prod-{version.replace('.', '-')}"
    variables = {
        "NAMESPACE": namespace,
        "REGISTRY": REGISTRY,
        "TAG": TAG,
        "CHART": str(chart_package(version, workdir)),
        "CHART_VERSION": version,
        "OAUTH_CLIENT_SECRET": client.client_secret,
    }
    run_guide("images", workdir, variables, cluster.admin_kubeconfig)
    try:
        output = run_guide("install", workdir, variables, cluster.admin_kubeconfig)
        yield {"namespace": namespace, "workdir": workdir, "proxy_port": proxy_port, "output": output}
    finally:
        cluster.delete_namespace(namespace, wait=False)
        cluster.admin.delete("ClusterRoleBinding", f"jhub-ext-capacity-{namespace}")


def logged_in(hub: HubPod, name: str) -> HubClient:
    """A browser-like session of ``name``, logged in through the identity provider."""
    client = HubClient(hub, name)  # type: ignore[arg-type]
    client.session = log_in_over_http(hub.url, name, PEOPLE[name]["password"])
    return client


def test_every_pod_of_the_chart_is_admitted_under_restricted(installed: dict[str, Any], cluster: Any) -> None:
    namespace = installed["namespace"]
    # the guide's server-side dry run of every object: accepted, and no pod template Pod Security would refuse
    output = installed["output"]
    assert "configured (server dry run)" in output or "created (server dry run)" in output, output
    assert "would violate PodSecurity" not in output, output
    labels = cluster.admin.get("Namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    made = [*cluster.admin.list("Deployment", namespace), *cluster.admin.list("DaemonSet", namespace)]

    def admitted() -> bool:
        pods = cluster.admin.list("Pod", namespace)
        owners = {ref["name"].rsplit("-", 1)[0] if ref["kind"] == "ReplicaSet" else ref["name"]
                  for pod in pods for ref in pod["metadata"].get("ownerReferences", [])}  # fmt: skip
        return all(o["metadata"]["name"] in owners for o in made)

    try:
        poll(admitted, 60, "a pod of every Deployment and DaemonSet of the chart", interval=1)
    except Exception:
        events = [
            e["message"] for e in cluster.admin.list("Event", namespace) if e.get("reason") == "FailedCreate"
        ]
        raise AssertionError(f"pods not admitted: {events}") from None
    refused = [
        e["message"] for e in cluster.admin.list("Event", namespace) if e.get("reason") == "FailedCreate"
    ]
    assert not refused, refused


@pytest.fixture(scope="module")
def chart_hub(installed: dict[str, Any], cluster: Any) -> Iterator[HubPod]:
    """The chart's hub pod, run beside the cluster as the hub's ServiceAccount."""
    namespace = installed["namespace"]
    workdir: Path = installed["workdir"]
    cluster.admin.wait_for("ServiceAccount", "hub", namespace, lambda _: True)
    kubeconfig = service_kubeconfig(cluster, namespace, "hub", workdir / "hub.kubeconfig")
    pod = HubPod(workdir / "hub-pod", namespace, cluster.admin, kubeconfig, installed["proxy_port"])
    # the chart's hub and proxy pods cannot run under the node agent (paths are not mapped there):
    # no copy of them may run beside ours, which run their Deployments' commands (tests/chart.py)
    for name in ("hub", "proxy"):
        cluster.admin.merge_patch("Deployment", name, namespace, {"spec": {"replicas": 0}})
    pod.lay_out().start()
    try:
        yield pod
    finally:
        pod.stop()


def test_a_researcher_spawns_every_profile_and_reaches_the_jobs_service(
    chart_hub: HubPod, cluster: Any, installed: dict[str, Any]
) -> None:
    namespace = installed["namespace"]
    bob = logged_in(chart_hub, "bob")
    assert sorted(bob.api("GET", "/user").json()["groups"]) == ["gpu", "researchers"]  # the provider's
    profiles = ("small", "large-memory", "gpu-a100")
    for profile in profiles:
        response = bob.submit_spawn_form({"profile": profile})
        assert response.status_code == 200, response.text[-2000:]
        server = bob.wait_ready(timeout=180)
        pods = cluster.admin.list("Pod", namespace, labels="component=singleuser-server")
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        pod = pods[0]
        assert pod["status"]["phase"] == "Running"
        assert pod["metadata"]["labels"]["jhub-ext.io/profile"] == profile
        spec = pod["spec"]
        assert spec["containers"][0]["image"].startswith(f"{REGISTRY}/jhub-ext-singleuser")  # ours
        assert spec["imagePullSecrets"] == [{"name": "registry-credentials"}]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert not spec.get("initContainers")  # no privileged iptables container
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        if profile == "small":
            check_jobs_from_the_notebook(env, cluster, namespace, chart_hub)
        assert server["ready"]
        bob.stop_server()
    bob.session.close()


def check_jobs_from_the_notebook(env: dict[str, Any], cluster: Any, namespace: str, hub: HubPod) -> None:
    """The notebook's JHUB_EXT_JOBS_URL names the chart's public proxy Service; with its address
    mapped to the proxy that stands for it here, the client submits a job that runs."""
    url = urlsplit(env["JHUB_EXT_JOBS_URL"])
    service = cluster.admin.get("Service", url.hostname, namespace)
    assert service["spec"]["selector"]["component"] == "proxy"
    assert any(p["port"] == (url.port or 80) and p["targetPort"] == "http" for p in service["spec"]["ports"])
    jobs = JobsClient(url=f"{hub.url}{url.path}", token=env["JUPYTERHUB_API_TOKEN"])
    jobs.submit("hello", "batch", ["python", "-c", "print('hello from the chart')"])
    poll(lambda: jobs.job("hello").status in ("succeeded", "failed"), 180, "the job to finish", interval=1)
    assert jobs.job("hello").status == "succeeded", jobs.logs("hello")
    assert "hello from the chart" in jobs.logs("hello")
    # the job ran as its owner's work, in the notebook's image, pulled with the same secrets
    (job_pod,) = cluster.admin.list(
        "Pod", namespace, labels="jhub-ext.io/user=bob,jhub-ext.io/job-kind=batch"
    )
    assert job_pod["spec"]["containers"][0]["image"] == f"{REGISTRY}/jhub-ext-singleuser:{TAG}"
    assert job_pod["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    assert job_pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_providers_groups_decide_who_is_admin_and_who_is_refused(chart_hub: HubPod) -> None:
    ada = logged_in(chart_hub, "ada")
    assert ada.api("GET", "/user").json()["admin"] is True
    refused = log_in_over_http_status(chart_hub, "olaf")
    assert refused.status_code == 403
    assert "this hub is for the groups researchers, gpu and hub-admins" in refused.text
    ada.session.close()


def log_in_over_http_status(hub: HubPod, name: str) -> Any:
    """The hub's last answer of a log-in through the provider (expected to be refused)."""
    try:
        log_in_over_http(hub.url, name, PEOPLE[name]["password"])
    except requests.HTTPError as e:
        return e.response
    raise AssertionError(f"{name} was let in")


def test_the_idle_culler_runs_with_its_role_and_stops_an_idle_server(chart_hub: HubPod) -> None:
    admin = logged_in(chart_hub, "ada")
    services = admin.api("GET", "/services").json()  # name -> model
    assert {"jupyterhub-idle-culler", "jobs"} <= set(services)
    culler = admin.api("GET", "/services/jupyterhub-idle-culler").json()
    assert "jupyterhub-idle-culler" in culler.get("roles", [])
    assert culler.get("pid"), culler  # a managed service the hub started, and still running
    bob = logged_in(chart_hub, "bob")
    assert bob.submit_spawn_form({"profile": "small"}).status_code == 200
    bob.wait_ready(timeout=180)
    poll(lambda: bob.server() is None, CULL_SECONDS + 90, "the culler to stop bob's idle server", interval=2)
    assert "Culling server bob" in chart_hub.log()
    for client in (admin, bob):
        client.session.close()


def test_while_the_hub_restarts_its_jobs_service_api_clients_get_json_and_nothing_changes(
    chart_hub: HubPod,
) -> None:
    """The chart's proxy pod runs our proxy image: while the hub restarts a killed jobs service, its
    API clients get the API's own JSON 503 with Retry-After, browsers the hub's page."""
    bob = logged_in(chart_hub, "bob")
    token = bob.api("POST", "/users/bob/tokens", json={"note": "tests"}).json()["token"]
    api, headers = f"{chart_hub.url}/services/jobs/api", {"Authorization": f"token {token}"}
    assert requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code == 200
    keeper = jobs_service_keeper()
    os.kill(keeper, signal.SIGKILL)
    poll(lambda: exited(keeper), 10, "the killed service to exit", interval=0.05)
    # the hub notices at its next poll of the service (every 30 s) and starts it again
    job = {"name": "while-down", "kind": "batch", "command": ["python", "-c", "print(1)"]}
    for down in (
        requests.get(f"{api}/jobs", headers=headers, timeout=10),
        requests.post(f"{api}/jobs", headers=headers, json=job, timeout=10),
    ):
        assert down.status_code == 503, down.text[:500]
        assert down.headers["Content-Type"].startswith("application/json"), down.headers
        assert down.headers["Retry-After"] == "10"
        assert "try again shortly" in down.json()["error"]
    page = bob.session.get(f"{chart_hub.url}/services/jobs/", timeout=10)  # a browser's request
    assert page.status_code == 503 and page.headers["Content-Type"].startswith("text/html"), page.headers
    assert "<html" in page.text.lower()

    def back() -> bool:
        return requests.get(f"{api}/jobs", headers=headers, timeout=10).status_code == 200

    poll(back, 90, "the hub to start its jobs service again", interval=1)
    assert jobs_service_keeper() != keeper
    names = [j["name"] for j in requests.get(f"{api}/jobs", headers=headers, timeout=10).json()["jobs"]]
    assert "while-down" not in names  # refused while down: nothing was changed
    bob.session.close()


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
