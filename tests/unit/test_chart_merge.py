"""Joining the configuration we are loaded into (the chart's): adding, never replacing."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import V1Capabilities, V1Container, V1SecurityContext
from traitlets.config import Config

from jhub_ext.hub import chart


def test_a_setting_someone_made_is_kept_and_an_unset_one_gets_ours() -> None:
    c = Config()
    c.Spawner.default_url = "/tree"
    chart.set_default(c.Spawner, "default_url", "/lab")
    chart.set_default(c.Spawner, "http_timeout", 120)
    assert (c.Spawner.default_url, c.Spawner.http_timeout) == ("/tree", 120)


def test_configured_reads_lazy_appends_as_values() -> None:
    c = Config()
    c.JupyterHub.services.append({"name": "a"})  # appended before anyone set the list
    assert chart.configured(c.JupyterHub, "services", []) == [{"name": "a"}]
    assert chart.configured(c.JupyterHub, "load_roles", []) == []


def test_our_service_is_added_after_the_others_and_a_name_clash_says_how_to_fix_it() -> None:
    culler = {"name": "jupyterhub-idle-culler", "command": ["python3", "-m", "jupyterhub_idle_culler"]}
    services = chart.with_service([culler], {"name": "jobs", "url": "http://10.0.0.5:8082"})
    assert [s["name"] for s in services] == ["jupyterhub-idle-culler", "jobs"]
    with pytest.raises(chart.ConfigConflict, match="named 'jobs' is configured already.*remove or rename"):
        chart.with_service(services, {"name": "jobs"})


def test_roles_of_the_same_name_are_joined_and_the_others_kept() -> None:
    admins_user_role = {"name": "user", "scopes": ["self", "read:users:name"]}
    culler = {
        "name": "jupyterhub-idle-culler",
        "scopes": ["list:users"],
        "services": ["jupyterhub-idle-culler"],
    }
    ours = [
        {"name": "user", "scopes": ["self", "custom:jobs:use"]},
        {"name": "jobs-service", "scopes": ["list:users"], "services": ["jobs"]},
    ]
    roles = {r["name"]: r for r in chart.with_roles([admins_user_role, culler], ours)}
    assert roles["user"]["scopes"] == ["custom:jobs:use", "read:users:name", "self"]
    assert roles["jupyterhub-idle-culler"] == culler
    assert roles["jobs-service"]["services"] == ["jobs"]
    assert admins_user_role["scopes"] == ["self", "read:users:name"]  # the input is not changed


def test_the_environment_in_force_is_the_most_specific_class_over_the_general() -> None:
    c = Config()
    c.Spawner.environment = {"A": "spawner", "B": "spawner"}
    c.KubeSpawner.environment = {"B": "chart", "C": "chart"}
    assert chart.merged_environment(c, ("Spawner", "KubeSpawner", "ProfileKubeSpawner")) == {
        "A": "spawner",
        "B": "chart",
        "C": "chart",
    }


def test_admins_are_read_from_every_authenticator_section() -> None:
    c = Config()
    c.Authenticator.admin_users = {"root-admin"}
    c.GenericOAuthenticator.admin_groups = {"hub-admins"}
    c.GenericOAuthenticator.admin_users = {"carol"}
    c.KubeSpawner.admin_users = {"not-an-authenticator"}
    assert chart.admins(c) == ({"root-admin", "carol"}, {"hub-admins"})


def test_pull_secrets_are_names_however_they_are_given() -> None:
    assert chart.pull_secret_names(["a", {"name": "b"}]) == ["a", "b"]


def test_only_the_charts_default_authenticator_counts_as_none_chosen() -> None:
    assert chart.admin_chose_authenticator("generic-oauth")
    assert not chart.admin_chose_authenticator("dummy")
    assert not chart.admin_chose_authenticator(None)


def test_the_charts_iptables_container_is_found_as_a_client_model_or_a_dict() -> None:
    iptables = V1Container(
        name="block-cloud-metadata",
        image="network-tools",
        security_context=V1SecurityContext(
            privileged=True, run_as_user=0, capabilities=V1Capabilities(add=["NET_ADMIN"])
        ),
    )
    harmless = {"name": "fetch", "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": False}}
    as_dict = {"name": "root", "securityContext": {"runAsUser": 0}}
    assert chart.privileged_init_containers([iptables, harmless, as_dict]) == ["block-cloud-metadata", "root"]
