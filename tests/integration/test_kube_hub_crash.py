"""The hub killed (SIGKILL) with a server running and a spawn under way, then started again: the
running server survives, and the spawn that was cut short ends either as a server the hub knows or
with its pod gone (by JupyterHub's own clean-up of a pending spawner, or by our reaper of pods no
hub record knows), so no pod is left that no hub record knows."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..hubprocess import HubProcess, wait_for
from ..kube import Namespace

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture
def crash_hub(kube_namespace: Namespace, tmp_path: Path) -> Iterator[HubProcess]:
    users = {"alice": ["researchers"], "bob": ["researchers"]}
    env = {"JHUB_EXT_ORPHAN_GRACE_SECONDS": "10"}
    process = HubProcess.kubernetes(tmp_path, kube_namespace, users, extra_env=env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_a_killed_hub_keeps_its_servers_and_leaves_no_orphan_pod(
    crash_hub: HubProcess, kube_namespace: Namespace
) -> None:
    hub, ns = crash_hub, kube_namespace
    alice, bob = hub.client("alice"), hub.client("bob")
    alice.login()
    bob.login()
    assert alice.api("POST", "/users/alice/server", json={"profile": "small"}).status_code in (201, 202)
    alice.wait_ready(timeout=180)
    assert bob.api("POST", "/users/bob/server", json={"profile": "small"}).status_code in (201, 202)
    wait_for(lambda: ns.admin.find("Pod", "jupyter-bob", ns.name) is not None, 60, "bob's pod to be made")
    assert hub.process is not None
    hub.process.send_signal(signal.SIGKILL)  # in the middle of bob's spawn
    hub.process.wait(timeout=30)
    hub.start()  # the same state, ports and namespace
    alice, bob = hub.client("alice"), hub.client("bob")
    alice.login()
    bob.login()
    server = alice.server()
    assert server is not None and server["ready"]  # the running server survived
    assert ns.admin.find("Pod", "jupyter-alice", ns.name) is not None

    def consistent() -> bool:
        """Bob's cut-short spawn ends one way or the other: a server the hub knows, or no pod."""
        record, pod = bob.server(), ns.admin.find("Pod", "jupyter-bob", ns.name)
        return (record is None and pod is None) or (record is not None and bool(record.get("ready")))

    wait_for(consistent, 120, "bob's spawn to end with no pod the hub does not know")
    alice.stop_server()
    wait_for(lambda: ns.admin.find("Pod", "jupyter-alice", ns.name) is None, 60, "alice's pod to go")
