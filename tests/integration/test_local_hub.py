"""The local-mode hub from hub_config/, end to end over HTTP: login, menu, spawn, refusals, reload."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from jhub_ext.local import cgroups

from ..hubprocess import HubClient, HubProcess, checked_profile, profiles_in_form, wait_for
from .test_local_confinement import group_of

pytestmark = pytest.mark.integration


def proc_status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def memory_limit(pid: int) -> str:
    """The memory limit of the server ``pid``: its control group's where it is confined (as root),
    else its address-space limit."""
    group = confined_group(pid)
    if group is not None:
        limits = cgroups.layout().group(group)
        name = "memory.max" if "memory" in limits.layout.v2 else "memory.limit_in_bytes"
        return (limits.dirs["memory"] / name).read_text().strip()
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max address space"):
            return line.split()[3]
    raise AssertionError("no address space limit line")


def confined_group(pid: int) -> str | None:
    """The name of the jhub_ext control group that process ``pid`` (or its first child) is in."""
    for candidate in (pid, *children(pid)):
        if (name := group_of(candidate)) is not None:
            return name
    return None


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_each_user_sees_the_profiles_their_groups_allow(hub: HubProcess) -> None:
    seen = {}
    for name in ("alice", "bob", "admin"):
        client = hub.client(name)
        assert client.login().url.endswith("/hub/spawn")
        page = client.spawn_page()
        assert page.status_code == 200
        seen[name] = profiles_in_form(page.text)
    assert seen == {
        "alice": ["small", "large-memory"],
        "bob": ["small", "large-memory", "gpu-a100"],
        "admin": ["small"],
    }


def test_menu_shows_resources_and_cost(hub: HubProcess) -> None:
    client = hub.client("bob")
    client.login()
    html = client.spawn_page().text
    assert "1 × NVIDIA-A100-SXM4-80GB GPU" in html
    assert "8 CPUs · 64 GiB" in html
    assert "$2.50 per hour" in html
    assert checked_profile(html) == "small"  # the catalog's default for a first visit


def test_spawn_small_applies_its_limits_and_answers_through_the_proxy(hub: HubProcess) -> None:
    alice = hub.client("alice")
    alice.login()
    response = alice.submit_spawn_form({"profile": "small", "profile-option-small--image": "r"})
    assert response.status_code == 200, response.text[-2000:]
    try:
        alice.wait_ready()
        check_small_server(hub, alice)
    finally:
        alice.stop_server()
    # The next visit pre-selects the last choice, image included.
    html = alice.spawn_page().text
    assert checked_profile(html) == "small"
    assert re.search(r'<option value="r"\s+selected>', html)


def check_small_server(hub: HubProcess, alice: HubClient) -> None:
    lab = alice.session.get(alice.url("/user/alice/lab"))  # through the proxy, with the hub's OAuth
    assert lab.status_code == 200 and lab.url.endswith("/user/alice/lab")
    assert "JupyterLab" in lab.text
    status = alice.session.get(alice.url("/user/alice/api/status"))
    assert status.status_code == 200

    admin = hub.client("admin")
    admin.login()
    state = admin.api("GET", "/users/alice").json()["servers"][""]["state"]
    pid = state["pid"]
    cores = proc_status(pid, "Cpus_allowed_list")
    assert cores.isdigit() and int(cores) in os.sched_getaffinity(0)  # cpu.limit 1 -> one core
    assert memory_limit(pid) == str(4 * 2**30)  # memory.limit 4Gi
    assert (confined_group(pid) is not None) == (os.geteuid() == 0)  # as root, always confined
    server_env = environ(pid)
    assert server_env["CPU_LIMIT"] == "1.0"
    assert server_env["MEM_LIMIT"] == str(4 * 2**30)
    assert server_env["CPU_GUARANTEE"] == "0.5"
    assert server_env["JUPYTER_IMAGE"] == "REGISTRY/jhub-ext-singleuser-r:TAG"
    assert server_env["JHUB_EXT_PROFILE"] == "small"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"profile": "gpu-a100"}, "there is no profile &#39;gpu-a100&#39; that you can use"),
        ({"profile": "no-such-profile"}, "there is no profile &#39;no-such-profile&#39; that you can use"),
        (
            {"profile": "small", "profile-option-small--image": "evil/image:latest"},
            "image &#39;evil/image:latest&#39; is not offered by profile &#39;small&#39;",
        ),
    ],
    ids=["forbidden-profile", "unknown-profile", "image-outside-choices"],
)
def test_forged_form_fields_are_refused(hub: HubProcess, fields: dict[str, str], message: str) -> None:
    alice = hub.client("alice")
    alice.login()
    response = alice.submit_spawn_form(fields)
    assert response.status_code == 400
    assert message in response.text
    assert alice.server() is None


@pytest.mark.parametrize(
    ("user_options", "message"),
    [
        ({"profile": "gpu-a100"}, "there is no profile 'gpu-a100' that you can use"),
        ({"profile": "small", "image": "evil"}, "image 'evil' is not offered by profile 'small'"),
        ({"profile": "small", "cpu_limit": "64"}, "unknown option 'cpu_limit'"),
    ],
    ids=["forbidden-profile", "image-outside-choices", "unknown-option"],
)
def test_forged_rest_api_options_are_refused(
    hub: HubProcess, user_options: dict[str, str], message: str
) -> None:
    alice = hub.client("alice")
    alice.login()
    response = alice.api("POST", "/users/alice/server", json={"user_options": user_options})
    assert response.status_code == 400
    assert message in response.json()["message"]
    wait_for(lambda: alice.server() is None, 10, "the refused server to be gone")


def test_group_quota_refuses_with_usage_and_limit(hub: HubProcess) -> None:
    hub.catalog.write_text(hub.catalog.read_text().replace("servers: 10", "servers: 1"))
    alice, bob = hub.client("alice"), hub.client("bob")
    alice.login()
    bob.login()
    assert alice.submit_spawn_form({"profile": "small"}).status_code == 200
    alice.wait_ready()
    try:
        refused = bob.submit_spawn_form({"profile": "small"})
        assert refused.status_code == 403
        assert (
            "group &#39;researchers&#39; may use 1 server at once and uses 1; this needs 1 more"
            in refused.text
        )
        assert bob.server() is None
    finally:
        alice.stop_server()


def test_catalog_edits_apply_without_restart_and_bad_edits_keep_the_last_good(hub: HubProcess) -> None:
    alice, admin = hub.client("alice"), hub.client("admin")
    alice.login()
    admin.login()

    good = hub.catalog.read_text().replace("display_name: Small\n", "display_name: Small (renamed)\n")
    hub.catalog.write_text(good)
    wait_for(lambda: "Small (renamed)" in alice.spawn_page().text, 5, "the edit to show")

    hub.catalog.write_text(good.replace("limit: 1}", "limit: 2 GB}", 1))
    page = alice.spawn_page().text
    assert "Small (renamed)" in page  # the last valid catalog keeps serving
    assert "jhub-ext-catalog-error" not in page  # researchers are not shown admin messages
    admin_page = admin.spawn_page().text
    assert "The profile catalog has errors" in admin_page
    assert (
        "cpu.limit &#39;2 GB&#39; is not a CPU quantity; use a number of cores such as 2 or 500m"
        in admin_page
    )
    assert "still serving the last valid version" in hub.log()

    # Spawning still works, with the last good catalog.
    assert alice.submit_spawn_form({"profile": "small"}).status_code == 200
    try:
        alice.wait_ready()
    finally:
        alice.stop_server()


def test_start_up_with_a_broken_catalog_is_a_clear_error(tmp_path: Path) -> None:
    broken = "version: 1\nprofiles:\n  - slug: small\n    display_name: Small\n    cpu: {limit: lots}\n"
    result = HubProcess(tmp_path, catalog_text=broken).run()
    assert result.returncode != 0
    assert "the profile catalog cannot be used, so the hub will not start" in result.stderr
    assert "profile 'small': cpu.limit 'lots' is not a CPU quantity" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_up_without_a_catalog_is_a_clear_error(tmp_path: Path) -> None:
    process = HubProcess(tmp_path)
    process.catalog.unlink()
    result = process.run()
    assert result.returncode != 0
    assert "profiles.yaml: file not found" in result.stderr
    assert "Traceback" not in result.stderr
