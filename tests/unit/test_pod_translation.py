"""One profile-to-pod translation: a server's pod and a job's pod ask the same of the cluster.

The server's pod is the one KubeSpawner itself builds (``get_pod_manifest``) after our spawner
applied the selection; the job's pod is from ``kubernetes/workloads.py``. Both come from
``kubernetes.pods.pod_plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes_asyncio.client import ApiClient, Configuration
from kubernetes_asyncio.config import kube_config

from jhub_ext.core.catalog import Kind, load_catalog
from jhub_ext.core.catalog.model import Profile
from jhub_ext.core.catalog.selection import resolve_selection
from jhub_ext.core.jobs.model import Placement, parse_submission
from jhub_ext.kubernetes.backend import KubernetesJobBackend
from jhub_ext.kubernetes.hubwatch import SETTINGS_KEY
from jhub_ext.kubernetes.pods import DEFAULT_GID, DEFAULT_UID, pod_plan
from jhub_ext.kubernetes.spawner import ProfileKubeSpawner
from jhub_ext.kubernetes.workloads import Site, build_workload

from ..conftest import SHIPPED_CATALOG

CATALOG = load_catalog(SHIPPED_CATALOG)
GROUPS = frozenset({"gpu", "researchers"})


@dataclass
class Group:
    name: str


@dataclass
class User:
    """What KubeSpawner and our mixin read of a hub user."""

    name: str = "alice"
    id: int = 1
    url: str = "/user/alice/"
    admin: bool = False
    groups: list[Group] = field(default_factory=lambda: [Group(g) for g in sorted(GROUPS)])


async def server_pod(spawner: ProfileKubeSpawner, profile: Profile) -> dict[str, Any]:
    """The pod KubeSpawner builds for ``profile`` after our spawner applied the choice, as a dict."""
    spawner.apply_selection(resolve_selection(CATALOG, {"profile": profile.slug}, GROUPS, Kind.SERVER))
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(pod)  # type: ignore[no-any-return]


def job_pod(profile: Profile) -> dict[str, Any]:
    spec = parse_submission({"name": "count", "kind": "batch", "command": ["python", "count.py"]})
    placement = Placement(user="alice", profile=profile, image="x/y:1", groups=GROUPS)
    return build_workload(spec, placement)["spec"]["template"]  # type: ignore[no-any-return]


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@pytest.fixture(autouse=True)
def _kubeconfig(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """KubeSpawner loads a client configuration when it is created (nothing here contacts it);
    the process-wide default it sets is put back afterwards."""
    saved = Configuration.get_default_copy()
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    # read from $KUBECONFIG when kubernetes_asyncio is imported: too early to set that here
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    yield
    Configuration.set_default(saved)


@pytest.fixture
async def new_spawner() -> Any:
    """Make spawners as the hub would (nothing contacts a cluster); close their API client after."""
    made: list[ProfileKubeSpawner] = []

    def make() -> ProfileKubeSpawner:
        made.append(ProfileKubeSpawner(_mock=True, user=User()))
        return made[-1]

    yield make
    for client in {id(s.api.api_client): s.api.api_client for s in made}.values():
        await client.close()


@pytest.mark.parametrize("slug", [p.slug for p in CATALOG.profiles if Kind.SERVER in p.kinds])
async def test_a_server_and_a_job_of_one_profile_ask_the_same_of_the_cluster(
    slug: str, new_spawner: Any
) -> None:
    profile = CATALOG.profile(slug)
    assert profile is not None
    server, job = await server_pod(new_spawner(), profile), job_pod(profile)
    server_container = next(c for c in server["spec"]["containers"] if c["name"] == "notebook")
    job_container = job["spec"]["containers"][0]
    assert server_container["resources"] == job_container["resources"]
    assert (
        server_container["resources"]
        == pod_plan(profile, user="alice", kind=Kind.SERVER, groups=GROUPS).resources
    )
    for key in ("nodeSelector", "tolerations", "affinity"):
        assert server["spec"].get(key) == job["spec"].get(key), key
    for key in ("runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot", "seccompProfile"):
        server_value = server["spec"]["securityContext"].get(
            key, server_container["securityContext"].get(key)
        )
        assert server_value == job["spec"]["securityContext"][key], key
    for key in ("allowPrivilegeEscalation", "capabilities"):
        assert server_container["securityContext"][key] == job_container["securityContext"][key], key
    assert (
        server["spec"]["automountServiceAccountToken"] is job["spec"]["automountServiceAccountToken"] is False
    )
    shared = {k: v for k, v in job["metadata"]["labels"].items() if not k.startswith("jhub-ext.io/job")}
    shared.pop("jhub-ext.io/kind")  # "job" and "server"
    shared.pop("app.kubernetes.io/managed-by")  # KubeSpawner says it manages its pods
    assert shared.items() <= server["metadata"]["labels"].items()
    assert server["metadata"]["labels"]["jhub-ext.io/kind"] == "server"


def test_a_gpu_profile_reserves_its_gpus_and_lands_on_their_nodes() -> None:
    gpu = CATALOG.profile("gpu-a100")
    assert gpu is not None and gpu.resources.gpu_count
    plan = pod_plan(gpu, user="alice", kind=Kind.JOB, groups=GROUPS)
    count = str(gpu.resources.gpu_count)
    assert plan.resources["requests"][gpu.resources.gpu_resource] == count
    assert plan.resources["limits"][gpu.resources.gpu_resource] == count
    assert plan.node_selector["nvidia.com/gpu.product"] == gpu.resources.gpu_type
    assert plan.tolerations == [dict(t) for t in gpu.tolerations]
    assert plan.env["JHUB_EXT_PROFILE"] == "gpu-a100"


async def test_servers_and_jobs_run_as_the_same_unprivileged_user_by_default(new_spawner: Any) -> None:
    spawner = new_spawner()
    assert (spawner.uid, spawner.gid, spawner.fs_gid) == (DEFAULT_UID, DEFAULT_GID, DEFAULT_GID)
    assert (Site().uid, Site().gid) == (DEFAULT_UID, DEFAULT_GID)
    assert (KubernetesJobBackend().uid, KubernetesJobBackend().gid) == (DEFAULT_UID, DEFAULT_GID)


async def test_a_later_start_with_another_profile_keeps_nothing_of_the_earlier_one(new_spawner: Any) -> None:
    gpu, small = CATALOG.profile("gpu-a100"), CATALOG.profile("small")
    assert gpu is not None and small is not None
    spawner = new_spawner()
    spawner.node_selector = {"pool": "users"}  # the admin's own, kept whatever the profile
    spawner.environment = {"TEAM": "social"}
    await server_pod(spawner, gpu)
    pod = await server_pod(spawner, small)
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "notebook")
    assert gpu.resources.gpu_resource not in container["resources"].get("limits", {})
    assert pod["spec"]["nodeSelector"] == {"pool": "users", **dict(small.node_selector)}
    assert not pod["spec"].get("tolerations")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TEAM"] == "social" and env["JHUB_EXT_PROFILE"] == "small"
    assert pod["metadata"]["labels"]["jhub-ext.io/profile"] == "small"
    assert small.default_image is not None and container["image"] == small.default_image.image


async def test_the_servers_of_one_hub_share_its_one_view_of_the_cluster(new_spawner: Any) -> None:
    """The node and pod caches, the API probe and the orphan reaper are the hub's, kept in the
    settings its users share, not in the spawner's class: a second hub in the process has its own."""
    hub_settings: dict[str, Any] = {}
    first, second, other_hub = new_spawner(), new_spawner(), new_spawner()
    first.user.settings = second.user.settings = hub_settings
    other_hub.user.settings = {}
    assert first.cluster is second.cluster is hub_settings[SETTINGS_KEY]
    assert other_hub.cluster is not first.cluster
    assert first.cluster.api_down_since is None and first.cluster.caches == {}
