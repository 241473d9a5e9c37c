"""The manifests shipped in hub_config/k8s/ are valid Kubernetes objects."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from ..conftest import HUB_CONFIG

KUBERNETES = "1.37.0"
MANIFESTS = sorted((HUB_CONFIG / "k8s").glob("*.yaml"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_shipped_manifests_pass_the_official_schema(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_namespace_enforces_the_restricted_standard() -> None:
    namespace = yaml.safe_load((HUB_CONFIG / "k8s" / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_job_pods_cannot_reach_the_cloud_metadata_address() -> None:
    policy = yaml.safe_load((HUB_CONFIG / "k8s" / "networkpolicy.yaml").read_text())
    internet = policy["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert internet["cidr"] == "0.0.0.0/0" and "169.254.169.254/32" in internet["except"]
    assert policy["spec"]["ingress"] == []


def test_the_rbac_grants_no_write_access_cluster_wide() -> None:
    documents = list(yaml.safe_load_all((HUB_CONFIG / "k8s" / "rbac.yaml").read_text()))
    for role in (d for d in documents if d["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            assert set(rule["verbs"]) <= {"get", "list", "watch"}
    for role in (d for d in documents if d["kind"] == "Role"):
        assert all("*" not in rule["verbs"] and "*" not in rule["resources"] for rule in role["rules"])


def test_the_values_file_wires_the_catalog_and_the_jobs_service() -> None:
    values = yaml.safe_load((HUB_CONFIG / "values.yaml").read_text())
    env = values["hub"]["extraEnv"]
    assert env["JHUB_EXT_MODE"] == "kubernetes"
    mount = values["hub"]["extraVolumeMounts"][0]
    assert (
        env["JHUB_EXT_CATALOG"].startswith(mount["mountPath"] + "/") and "subPath" not in mount
    )  # hot reload
    assert values["hub"]["extraVolumes"][0]["configMap"]["name"] == "jhub-ext-catalog"
    # the proxy reaches the jobs service at the hub pod's own address, which the hub's policy admits
    assert env["POD_IP"] == {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    (rule,) = values["hub"]["networkPolicy"]["ingress"]
    assert rule["ports"] == [{"port": 8082}]
    assert {"component": "proxy"} in [source["podSelector"]["matchLabels"] for source in rule["from"]]
    assert values["cull"]["enabled"] is True
    assert "configure(c," in values["hub"]["extraConfig"]["jhub_ext"]  # on the chart's own config object
