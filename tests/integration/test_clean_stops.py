"""Stopping the hub at any moment, start-up included, leaves no process behind (local mode).

The test process becomes a child subreaper (``PR_SET_CHILD_SUBREAPER``), so whatever the hub
starts and leaves behind (the proxy, the jobs service, servers) becomes the test's own descendant,
where it can be found, instead of being adopted by init and lost from sight. Job runners are the
one exception, by design: they outlive the service and are re-adopted by its next start.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from devcluster.rest import poll

from ..hubprocess import HubProcess
from .test_jobs_service import Jobs, token_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]
PR_SET_CHILD_SUBREAPER = 36
RUNNER = "jhub_ext.local.runner"
PORTS = ("JHUB_EXT_PORT", "JHUB_EXT_PROXY_API_PORT", "JHUB_EXT_HUB_PORT", "JHUB_EXT_JOBS_PORT")


@pytest.fixture(scope="module", autouse=True)
def subreaper() -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def descendants() -> dict[int, tuple[int, str]]:
    """Living descendants of this process (zombies among them are reaped): their parent and command."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            state, ppid = stat
            if state == "Z" and ppid == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry.name), os.WNOHANG)  # an orphan that ended: ours to reap now
                continue
            parents[int(entry.name)] = ppid
    found: dict[int, tuple[int, str]] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                found[pid] = (ppid, command)
                frontier.append(pid)
    return found


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def leftovers(before: dict[int, tuple[int, str]], allowed: str | None = None) -> dict[int, str]:
    """New descendants, but those under a process whose command has ``allowed`` (and it)."""
    now = descendants()

    def under_allowed(pid: int) -> bool:
        while pid in now:
            ppid, command = now[pid]
            if allowed and allowed in command:
                return True
            pid = ppid
        return False

    return {pid: cmd for pid, (_, cmd) in now.items() if pid not in before and not under_allowed(pid)}


def stop_and_check(
    hub: HubProcess, before: dict[int, tuple[int, str]], sig: signal.Signals, allowed: str | None = None
) -> None:
    """Stop ``hub`` with ``sig``; nothing it started may be left (but ``allowed``), nor hold its ports."""
    assert hub.process is not None
    hub.process.send_signal(sig)
    hub.process.wait(timeout=60)
    ports = [int(hub.env[key]) for key in PORTS]
    try:
        poll(lambda: not leftovers(before, allowed), 20, "the hub's processes to end")
    except TimeoutError:
        left = leftovers(before, allowed)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"{sig.name} left processes behind: {left}\nhub log:\n{hub.log()[-3000:]}")
    # a connection's socket may outlive its process for a moment while the kernel closes it
    try:
        poll(lambda: all(port_free(port) for port in ports), 10, "the hub's ports to come free")
    except TimeoutError:
        held = {port: sockets_on(port) for port in ports if not port_free(port)}
        pytest.fail(f"{sig.name} left ports of the hub held: {held}")


#: the states of /proc/net/tcp, by their hex code
TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def sockets_on(port: int) -> list[str]:
    """The TCP sockets with ``port`` as their local port: state, remote end, and owning processes."""
    owners: dict[str, list[str]] = {}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                owners.setdefault(target[8:-1], []).append(fd.parts[2])
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            state, inode = TCP_STATES.get(fields[3], fields[3]), fields[9]
            found.append(f"{state} to {fields[2]} held by {owners.get(inode, ['no process'])}")
    return found


@pytest.mark.parametrize(
    ("sig", "after"),
    [
        (signal.SIGTERM, 0.5),
        (signal.SIGINT, 1.0),
        (signal.SIGTERM, 1.5),
        (signal.SIGINT, 2.5),
        (signal.SIGINT, 3.5),
        (signal.SIGTERM, 4.0),
        (signal.SIGINT, None),  # None: once the hub answers
        (signal.SIGTERM, None),
        (signal.SIGKILL, None),  # no clean-up at all: the kernel tells the proxy and the service
    ],
    ids=[
        "term-0.5s",
        "int-1s",
        "term-1.5s",
        "int-2.5s",
        "int-3.5s",
        "term-4s",
        "int-ready",
        "term-ready",
        "kill-ready",
    ],
)
def test_a_hub_stopped_at_any_moment_leaves_no_process_behind(
    tmp_path: Path, sig: signal.Signals, after: float | None
) -> None:
    before = descendants()
    hub = HubProcess(tmp_path)
    if after is None:
        hub.start()
    else:
        with hub.log_path.open("wb") as log:
            hub.process = subprocess.Popen(
                hub.command(), env=hub.env, cwd=hub.workdir, stdout=log, stderr=subprocess.STDOUT
            )
        time.sleep(after)
    stop_and_check(hub, before, sig)


def test_jobs_outlive_a_stopped_hub_and_are_adopted_by_the_next(tmp_path: Path) -> None:
    before = descendants()
    hub = HubProcess(tmp_path).start()
    jobs = Jobs(hub, token_for(hub, "alice"))
    code = "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.5)\n"
    assert jobs.submit(name="ticker", kind="scraper", command=["python", "t.py"], files={"t.py": code}).ok
    jobs.wait_status("ticker", "running")
    stop_and_check(hub, before, signal.SIGTERM, allowed=RUNNER)
    runners = {pid for pid, (_, cmd) in descendants().items() if RUNNER in cmd and pid not in before}
    assert runners, "the scraper's runner outlives the hub"
    hub.start()  # the same state directory, ports and catalog
    try:
        jobs = Jobs(hub, token_for(hub, "alice"))
        job = jobs.call("GET", "/jobs/ticker").json()
        assert (job["status"], job["restarts"]) == ("running", 0)  # adopted, not started again
        assert runners <= set(descendants())
        assert jobs.call("DELETE", "/jobs/ticker").status_code == 204
    finally:
        stop_and_check(hub, before, signal.SIGTERM)
