"""A hostile job that waits for the hub's doors to come free, to take them and read what comes in.

Jobs keep running while the jobs service restarts and while the hub is stopped (by design), so a
job that binds the hub's, the proxy's or the service's port the moment it is free would receive
the requests, and tokens, meant for them. As root, a job has a network of its own, and the jobs
service's socket is held by its keeper through a restart of the service: nothing is captured, and
the service answers again at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..hubprocess import HubProcess, wait_for
from .test_clean_stops import PORTS, port_free
from .test_jobs_service import Jobs, service_pid, token_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="jobs get a network of their own only as root (CI runs as root)"
    ),
]

#: binds every port it is given as soon as it can, and prints whatever arrives on one
SQUATTER = r"""
import json, select, socket, sys, time
ports = json.loads(sys.argv[1])
held = {}
print("waiting", flush=True)
while True:
    for port in ports:
        if port not in held:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port)); s.listen(); s.setblocking(False)
                held[port] = s
                print("bound", port, flush=True)
            except OSError:
                s.close()
    for s in select.select(list(held.values()), [], [], 0.05)[0]:
        conn, _ = s.accept()
        conn.settimeout(1)
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        print("CAPTURED", json.dumps(data.decode(errors="replace")), flush=True)
        conn.close()
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(Path(tmp_path_factory.mktemp("squatting"))).start()
    try:
        yield process
    finally:
        process.stop()


def squat(hub: HubProcess, jobs: Jobs, name: str) -> list[int]:
    ports = [int(hub.env[key]) for key in PORTS]
    created = jobs.submit(
        name=name,
        kind="scraper",
        command=["python", "squat.py", json.dumps(ports)],
        files={"squat.py": SQUATTER},
    )
    assert created.status_code == 201, created.text
    wait_for(lambda: "waiting" in jobs.call("GET", f"/jobs/{name}/logs").text, 60, "the squatter")
    return ports


def port_taken(port: int) -> bool:
    return not port_free(port)


def keeper_child(keeper: int) -> int:
    children = Path(f"/proc/{keeper}/task/{keeper}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_service_port_never_comes_free_and_a_killed_service_is_back_at_once(hub: HubProcess) -> None:
    alice, bob = Jobs(hub, token_for(hub, "alice")), Jobs(hub, token_for(hub, "bob"))
    wait_for(alice.answers, 60, "the jobs service")
    ports = squat(hub, alice, "squatter")
    service_port = int(hub.env["JHUB_EXT_JOBS_PORT"])
    keeper = service_pid(hub)
    worker = keeper_child(keeper)
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()
    taken = []
    while time.monotonic() - killed < 2:  # the port stays the keeper's through the restart
        taken.append(port_taken(service_port))
        time.sleep(0.01)
    assert all(taken)
    # bob's request made right after the crash waits in the socket's backlog and is answered
    answer = bob.call("GET", "/jobs")
    assert answer.status_code == 200, answer.text[:300]
    assert keeper_child(keeper) != worker and service_pid(hub) == keeper
    logs = alice.call("GET", "/jobs/squatter/logs").text
    assert "CAPTURED" not in logs, logs
    assert {p: port_taken(p) for p in ports} == dict.fromkeys(ports, True)  # the hub's doors are its own
    assert alice.call("DELETE", "/jobs/squatter").status_code == 204


def test_a_stopped_hub_leaves_nothing_to_capture_and_starts_again(hub: HubProcess) -> None:
    alice = Jobs(hub, token_for(hub, "alice"))
    wait_for(alice.answers, 60, "the jobs service")
    ports = squat(hub, alice, "patient")
    hub.stop()  # the squatter keeps running: jobs outlive the hub
    time.sleep(1)  # its loop has had twenty chances to bind each port
    free = {p: not port_taken(p) for p in ports}
    assert free == dict.fromkeys(ports, True), "a job holds a port of the stopped hub"
    hub.start()
    alice = Jobs(hub, token_for(hub, "alice"))
    wait_for(alice.answers, 60, "the jobs service")
    bob = hub.client("bob")
    assert bob.login().url.endswith("/hub/spawn")  # a login form posted to the real hub
    job = alice.call("GET", "/jobs/patient").json()
    assert job["status"] == "running"
    logs = alice.call("GET", "/jobs/patient/logs").text
    assert "CAPTURED" not in logs, logs
    assert alice.call("DELETE", "/jobs/patient").status_code == 204
