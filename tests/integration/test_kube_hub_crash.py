"""The hub killed (SIGKILL) with servers running and spawns under way, then started again: the
running servers survive, and each spawn that was cut short ends either as a server the hub knows or
with its pod gone (by JupyterHub's own clean-up of a pending spawner, or by our reaper of pods no
hub record knows), so no pod is left that no hub record knows.

``make test`` runs it with one server running and one spawn under way; ``make test-faults`` with
the issue's 20 and 10.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..conftest import SHIPPED_CATALOG
from ..faults import full, roomy_catalog, size
from ..hubprocess import HubClient, HubProcess, wait_for
from ..kube import Namespace

pytestmark = [pytest.mark.integration, pytest.mark.faults]
RUNNING = [f"run{i}" for i in range(size(1, 20))]
SPAWNING = [f"new{i}" for i in range(size(1, 10))]


@pytest.fixture
def crash_hub(kube_namespace: Namespace, tmp_path: Path) -> Iterator[HubProcess]:
    users = {user: ["researchers"] for user in RUNNING + SPAWNING}
    env = {"JHUB_EXT_ORPHAN_GRACE_SECONDS": "10"}
    catalog = roomy_catalog(SHIPPED_CATALOG.read_text(), cpu=64, memory="512Gi", servers=40)
    process = HubProcess.kubernetes(
        tmp_path, kube_namespace, users, extra_env=env, catalog_text=catalog if full() else None
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def logged_in(hub: HubProcess, users: list[str]) -> list[HubClient]:
    clients = [hub.client(user) for user in users]
    for client in clients:
        client.login()
    return clients


def spawn(client: HubClient) -> None:
    answer = client.api("POST", f"/users/{client.username}/server", json={"profile": "small"})
    assert answer.status_code in (201, 202), answer.text


def test_a_killed_hub_keeps_its_servers_and_leaves_no_orphan_pod(
    crash_hub: HubProcess, kube_namespace: Namespace
) -> None:
    hub, ns = crash_hub, kube_namespace
    running = logged_in(hub, RUNNING)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(spawn, running))
        list(pool.map(lambda client: client.wait_ready(timeout=300), running))
    spawning = logged_in(hub, SPAWNING)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(spawn, spawning))

    def made(user: str) -> bool:
        return ns.admin.find("Pod", f"jupyter-{user}", ns.name) is not None

    wait_for(lambda: any(made(user) for user in SPAWNING), 60, "a spawn to make its pod")
    assert hub.process is not None
    hub.process.send_signal(signal.SIGKILL)  # in the middle of the spawns
    hub.process.wait(timeout=30)
    hub.start()  # the same state, ports and namespace
    running = logged_in(hub, RUNNING)
    for client in running:  # every running server survived
        server = client.server()
        assert server is not None and server["ready"], client.username
        assert made(client.username)
    spawning = logged_in(hub, SPAWNING)

    def consistent(client: HubClient) -> bool:
        """A cut-short spawn ends one way or the other: a server the hub knows, or no pod."""
        record, pod = client.server(), made(client.username)
        return (record is None and not pod) or (record is not None and bool(record.get("ready")))

    for client in spawning:
        wait_for(lambda c=client: consistent(c), 120, f"{client.username}'s spawn to end with no unknown pod")
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda client: client.stop_server(), [c for c in running + spawning if c.server()]))
    wait_for(lambda: not ns.pods(), 90, "every server pod to go")
