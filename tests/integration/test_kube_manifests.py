"""Every manifest the product builds is admitted by the real API server: schema, defaults and
validation of the same release, and the restricted Pod Security admission of the namespace.

Server-side dry runs (``dryRun=All``) as the hub's own ServiceAccount: nothing is stored, and RBAC
applies as it would to the product."""

from __future__ import annotations

from typing import Any

import pytest
from devcluster.rest import KubeClient, KubeError, resource_path

from jhub_ext.core.catalog import load_catalog
from jhub_ext.core.jobs.model import Placement, parse_submission
from jhub_ext.kubernetes.workloads import Site, build_manifests

from ..conftest import SHIPPED_CATALOG
from ..kube import Namespace
from ..unit.test_k8s_jobs import FILES, SUBMISSIONS

pytestmark = pytest.mark.integration
CATALOG = load_catalog(SHIPPED_CATALOG)


def dry_run(client: KubeClient, manifest: dict[str, Any]) -> dict[str, Any]:
    path = resource_path(manifest["kind"], manifest["metadata"]["namespace"])
    return client.request("POST", path, manifest, params={"dryRun": "All", "fieldValidation": "Strict"})  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", SUBMISSIONS)
@pytest.mark.parametrize("profile", ["small", "large-memory", "gpu-a100"])
def test_the_api_server_admits_every_job_manifest(kind: str, profile: str, kube_namespace: Namespace) -> None:
    spec = parse_submission({**SUBMISSIONS[kind], "files": FILES})
    placement = Placement(
        user="alice",
        profile=CATALOG.profile(profile),
        image="example.org/x:1",
        groups=frozenset({"gpu", "researchers"}),
    )
    site = Site(namespace=kube_namespace.name, output_claim="outputs")
    hub = KubeClient(kube_namespace.kubeconfig)
    try:
        for manifest in build_manifests(spec, placement, site):
            admitted = dry_run(hub, manifest)
            assert admitted["metadata"]["name"] == manifest["metadata"]["name"]
    finally:
        hub.close()


def test_a_pod_the_restricted_standard_forbids_is_refused(kube_namespace: Namespace) -> None:
    """The check above means something: the same namespace refuses a pod that asks for root."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": kube_namespace.name},
        "spec": {
            "containers": [{"name": "c", "image": "example.org/x:1", "securityContext": {"runAsUser": 0}}]
        },
    }
    with pytest.raises(KubeError) as refused:
        dry_run(kube_namespace.admin, pod)
    assert refused.value.status == 403 and 'violates PodSecurity "restricted:latest"' in refused.value.message
