"""Local jobs confined as root: a control group, a PID namespace and a network of their own per run.

Each test plays what a careless or hostile job does (``nohup``, ``setsid``, double forks, many
processes, more memory than its profile, binding the machine's ports) and looks from outside, as the
machine sees it, at what is left.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from jhub_ext.core.catalog.model import Profile, Resources
from jhub_ext.core.jobs.backend import Placement
from jhub_ext.core.jobs.lifecycle import OUT_OF_MEMORY
from jhub_ext.core.jobs.model import JobStatus, Limits, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.local import cgroups, confine, netns
from jhub_ext.local.backend import LocalJobBackend
from jhub_ext.local.process import group_prefix

from ..hubprocess import wait_for
from ..observations import Recorder

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="control groups and namespaces need root (CI runs as root)"),
]

MIB = 2**20
SMALL = Profile("small", "Small", resources=Resources(cpu_limit=0.5, mem_limit=128 * MIB))
ALICE = Placement(user="alice", groups=frozenset({"researchers"}), profile=SMALL)
PY = sys.executable


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalJobBackend]:
    b = LocalJobBackend(jobs_dir=str(tmp_path / "jobs"), backoff_base=0.05, poll_interval=0.05)
    b.on_change = Recorder()
    b.stop_grace_seconds = 2
    await b.start()
    assert b.support is not None and b.support.cgroups and b.support.network, confine.support()
    yield b
    for user, name in list(await b.inventory()):
        await b.delete(user, name)
    await b.shutdown()


def recorder(b: LocalJobBackend) -> Recorder:
    assert isinstance(b.on_change, Recorder)
    return b.on_change


def spec(name: str, kind: str, code: str, *args: str, **extra: object):  # type: ignore[no-untyped-def]
    return parse_submission(
        {"name": name, "kind": kind, "command": [PY, "job.py", *args], "files": {"job.py": code}, **extra},
        Limits(),
    )


async def logged(b: LocalJobBackend, name: str, text: str) -> str:
    """The job's log once it holds ``text`` (or after 10 s, for the caller to check)."""
    output = ""
    for _ in range(200):
        output = "".join([chunk async for chunk in b.logs("alice", name)])
        if text in output:
            break
        await asyncio.sleep(0.05)
    return output


def marked(marker: str) -> list[int]:
    """The processes of this machine whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def group_of(pid: int) -> str | None:
    """The name of the jhub_ext control group process ``pid`` is in, if any."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        path = line.split(":", 2)[2]
        if path.startswith(f"/{cgroups.ROOT}/"):
            return path.split("/")[2]
    return None


def leftovers(user: str, name: str) -> set[str]:
    """The control groups and network namespaces of the job's runs that are still there."""
    prefix = group_prefix(user, name)
    return {n for n in cgroups.layout().names() | netns.names(prefix) if n.startswith(prefix)}


#: starts three sleepers that try to outlive the run: nohup, setsid, a double fork
ESCAPE = """
import os, subprocess, sys, time
marker = sys.argv[1]
sleeper = [sys.executable, "-c", "import time; time.sleep(600)", marker]
subprocess.Popen(["nohup", *sleeper], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen(sleeper, start_new_session=True)
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, sleeper)
    os._exit(0)
os.wait()
time.sleep(0.5)
def holds(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return marker.encode() in f.read()
mine = [p for p in os.listdir("/proc") if p.isdigit() and holds(p)]
print("escapees", len(mine) - 2, flush=True)  # less this process and the run's init (their argv hold it)
"""


async def test_a_starting_service_ends_the_empty_groups_of_killed_runners_but_no_run_just_starting(
    tmp_path: Path,
) -> None:
    """An empty group made an hour ago was left by a runner killed before its run began; one made a
    moment ago may be a run another service on this machine is starting: only the first is ended."""
    layout = cgroups.layout()
    left, starting = layout.group("job-left-behind-test"), layout.group("job-starting-test")
    for group in (left, starting):
        group.create(cgroups.Limits())
    an_hour_ago = time.time() - 3600
    for directory in set(left.dirs.values()):
        os.utime(directory, (an_hour_ago, an_hour_ago))
    b = LocalJobBackend(jobs_dir=str(tmp_path / "jobs"))
    try:
        await b.start()
        assert not left.exists() and starting.exists()
    finally:
        await b.shutdown()
        confine.end(left.name)
        confine.end(starting.name)


async def test_a_runs_leftovers_end_when_it_ends(backend: LocalJobBackend) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    await backend.submit(spec("escape", "batch", ESCAPE, marker, retries=0), ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    assert final.status is JobStatus.SUCCEEDED
    assert "escapees 3" in await logged(backend, "escape", "escapees")
    assert marked(marker) == []  # the run's end was the end of its PID namespace
    wait_for(lambda: not leftovers("alice", "escape"), 10, "the run's group and namespace to go")


async def test_stop_ends_every_process_of_a_scraper(backend: LocalJobBackend) -> None:
    marker = f"scrape-{uuid.uuid4().hex}"
    code = ESCAPE + "\ntime.sleep(600)\n"
    await backend.submit(spec("scrape", "scraper", code, marker), ALICE)
    assert "escapees 3" in await logged(backend, "scrape", "escapees")
    assert len(marked(marker)) >= 4
    await backend.stop("alice", "scrape")
    assert marked(marker) == []
    assert leftovers("alice", "scrape") == set()


async def test_memory_is_the_whole_runs_and_its_end_reads_out_of_memory(backend: LocalJobBackend) -> None:
    # three processes of 60 MiB each: each within 128 MiB, together over it
    code = (
        "import subprocess, sys\n"
        'hold = \'import time; x = b"x" * (60 * 2**20); print("held", flush=True); time.sleep(60)\'\n'
        "hog = [sys.executable, '-c', hold]\n"
        "procs = [subprocess.Popen(hog) for _ in range(3)]\n"
        "sys.exit(max(abs(p.wait()) for p in procs))\n"
    )
    await backend.submit(spec("hog", "batch", code, retries=0), ALICE)
    final = await recorder(backend).until(lambda o: o.status.finished)
    assert final.status is JobStatus.FAILED
    assert final.message == f"{OUT_OF_MEMORY.text} (1 attempt)"  # as Kubernetes mode says it
    assert final.reason is Reason.OUT_OF_MEMORY


async def test_a_run_cannot_have_more_processes_than_its_profile_allows(backend: LocalJobBackend) -> None:
    code = (
        "import subprocess, sys\n"
        "started, refusal = [], None\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        started.append(subprocess.Popen(['sleep', '60']))\n"
        "    except OSError as e:\n"
        "        refusal = e.strerror\n"
        "        break\n"
        "print('started', len(started), 'then', refusal, flush=True)\n"
        "for p in started:\n"
        "    p.kill()\n"
    )
    builds = Profile("build", "Build", resources=SMALL.resources, max_processes=40)  # the site's is 1024
    await backend.submit(spec("forks", "batch", code, retries=0), replace(ALICE, profile=builds))
    await recorder(backend).until(lambda o: o.status.finished)
    output = await logged(backend, "forks", "started")
    count = int(output.split("started ", 1)[1].split()[0])
    assert 20 < count < 40 and "then None" not in output, output


async def test_the_limits_are_on_the_runs_group(backend: LocalJobBackend) -> None:
    marker = f"limits-{uuid.uuid4().hex}"
    await backend.submit(
        spec("limits", "scraper", "import time; print('up', flush=True); time.sleep(600)", marker), ALICE
    )
    await logged(backend, "limits", "up")
    [name] = {group_of(pid) for pid in marked(marker)} - {None}  # the runner itself is in none
    layout = cgroups.layout()
    group = layout.group(name)
    assert group.name.startswith(group_prefix("alice", "limits"))
    memory = "memory.max" if "memory" in layout.v2 else "memory.limit_in_bytes"
    assert int((group.dirs["memory"] / memory).read_text()) == 128 * MIB
    if "cpu" in layout.v2:
        assert (group.dirs["cpu"] / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (group.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (group.dirs["pids"] / "pids.max").read_text().strip() == str(confine.DEFAULT_MAX_PROCESSES)


async def test_a_run_sees_only_its_own_processes(backend: LocalJobBackend) -> None:
    code = (
        "import os, json\n"
        "seen = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "print(json.dumps({'me': os.getpid(), 'seen': seen}))\n"
    )
    await backend.submit(spec("ps", "batch", code, retries=0), ALICE)
    await recorder(backend).until(lambda o: o.status.finished)
    seen = json.loads((await logged(backend, "ps", "seen")).strip().splitlines()[-1])
    assert seen == {"me": 2, "seen": [1, 2]}  # its init and itself


class Listener:
    """A TCP listener on this machine's loopback that records who connects."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept: a blocked accept keeps it listening
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


NETWORK = """
import json, socket, sys, time
taken = int(sys.argv[1])
def attempt(how, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        if how == "connect":
            s.connect(("127.0.0.1", port))
        else:
            s.bind(("127.0.0.1", port)); s.listen()
            keep.append(s)
        return "ok"
    except OSError as e:
        return type(e).__name__
keep = []
print(json.dumps({
    "connect to the machine's port": attempt("connect", taken),
    "bind the machine's port": attempt("bind", taken),
}), flush=True)
time.sleep(600)
"""


async def test_a_run_can_neither_reach_nor_take_this_machines_ports(backend: LocalJobBackend) -> None:
    listener = Listener()
    await backend.submit(spec("net", "scraper", NETWORK, str(listener.port)), ALICE)
    seen = json.loads((await logged(backend, "net", "connect")).strip().splitlines()[-1])
    # it binds the port in its own namespace only: the machine's port is still the listener's
    assert seen == {
        "connect to the machine's port": "ConnectionRefusedError",
        "bind the machine's port": "ok",
    }
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5):
        pass
    wait_for(lambda: listener.accepted == 1, 5, "the machine's own connection")
    listener.close()
    # with the machine's port free, the job's listener is still not reachable from here
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", listener.port), timeout=5)
    await backend.stop("alice", "net")
