"""Local mode as an isolation boundary: as root, each user's servers and jobs run as their own account.

A job of alice tries to read what belongs to bob and to the hub; the kernel refuses every read.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jhub_ext.local.accounts import account_name

from ..hubprocess import HubProcess, wait_for
from .test_jobs_service import Jobs, token_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="system accounts need root (CI runs the suite as root)"),
]

PROBE = r"""
import glob, json, os, sys
def attempt(path, how="read"):
    try:
        if how == "list":
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        return "allowed"
    except OSError as e:
        return type(e).__name__
foreign = {}
for environ in glob.glob("/proc/[0-9]*/environ"):
    try:
        if os.stat(environ).st_uid != os.getuid():
            foreign[environ] = attempt(environ)
    except OSError:
        pass
commands = []
for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
    try:
        with open(cmdline, "rb") as f:
            commands.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        pass
paths = json.loads(sys.argv[1])
print(json.dumps({
    "uid": os.getuid(),
    "home": os.environ["HOME"],
    "files": {p: attempt(p) for p in paths["read"]},
    "dirs": {p: attempt(p, "list") for p in paths["list"]},
    "readable_foreign_environs": sorted(p for p, r in foreign.items() if r == "allowed"),
    "foreign_environs": sorted(foreign),
    "commands": commands,
}))
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(Path(tmp_path_factory.mktemp("isolation"))).start()
    try:
        yield process
    finally:
        process.stop()


def test_a_job_of_alice_cannot_read_bob_or_the_hub(hub: HubProcess) -> None:
    alice, bob = Jobs(hub, token_for(hub, "alice")), Jobs(hub, token_for(hub, "bob"))
    wait_for(alice.answers, 30, "the jobs service")
    keeper = (
        "import os, pathlib, time\n"
        "pathlib.Path(os.environ['HOME'], 'secret.txt').write_text('bob-secret')\n"
        "print('kept', flush=True)\n"
        "time.sleep(600)\n"
    )
    created = bob.submit(
        name="keeper",
        kind="scraper",
        command=["python", "keep.py"],
        files={"keep.py": keeper},
        env={"BOB_TOKEN": "s3cr3t"},
    )
    assert created.status_code == 201, created.text
    wait_for(lambda: "kept" in bob.call("GET", "/jobs/keeper/logs").text, 60, "bob's job")

    state = hub.state_dir
    bob_home = state / "home" / account_name("bob")
    bob_job = next((state / "jobs" / "run").glob("u-bob/keeper"))
    paths = {
        "read": [
            str(bob_home / "secret.txt"),
            str(state / "jupyterhub_cookie_secret"),
            str(state / "jupyterhub.sqlite"),
            str(state / "jobs" / "jobs.sqlite"),
            str(bob_job / "output.log"),
            str(bob_job / "spec.json"),
            str(bob_job / "files" / "keep.py"),
        ],
        "list": [str(bob_home), str(bob_job / "files"), str(state / "home"), str(state / "jobs" / "run")],
    }
    probe = alice.submit(
        name="probe",
        kind="batch",
        command=["python", "probe.py", json.dumps(paths)],
        files={"probe.py": PROBE},
        retries=0,
    )
    assert probe.status_code == 201, probe.text
    assert alice.wait_status("probe", "succeeded", "failed", timeout=60)["status"] == "succeeded"
    seen = json.loads(alice.call("GET", "/jobs/probe/logs").text.strip().splitlines()[-1])

    alice_account = pwd.getpwnam(account_name("alice"))
    assert seen["uid"] == alice_account.pw_uid != 0
    assert seen["home"] == str(state / "home" / account_name("alice"))
    assert seen["files"] == {path: "PermissionError" for path in paths["read"]}
    assert seen["dirs"] == {path: "PermissionError" for path in paths["list"]}
    # the hub's, the service's and bob's processes (their tokens, their command lines) are not even
    # in sight: the job has a PID namespace of its own, with its own /proc
    # (the one process not the job's account's is the run's own init, process 1, root's)
    assert seen["foreign_environs"] == ["/proc/1/environ"] and seen["readable_foreign_environs"] == []
    # all it sees: its init (a fork of the runner) and itself; not bob's keeper, the hub or the service
    assert any("probe.py" in c for c in seen["commands"])
    assert all(
        c.startswith((f"{sys.executable} -I -m jhub_ext.local.runner ", "python probe.py "))
        for c in seen["commands"]
    ), seen["commands"]
    assert os.stat(bob_home).st_mode & 0o777 == 0o700

    for user, name in ((bob, "keeper"), (alice, "probe")):
        assert user.call("DELETE", f"/jobs/{name}").status_code == 204


def test_servers_run_as_their_users_accounts_in_namespaces_of_their_own(hub: HubProcess) -> None:
    client = hub.client("alice")
    client.login()
    assert client.api("POST", "/users/alice/server", json={"profile": "small"}).status_code in (201, 202)
    try:
        client.wait_ready()
        servers = [
            process
            for process in Path("/proc").iterdir()
            if process.name.isdigit()
            and b"jupyterhub-singleuser" in _cmdline(process)
            and b"jhub_ext.local.confine" not in _cmdline(process)  # its confinement's, root's
        ]
        assert {process.stat().st_uid for process in servers} == {pwd.getpwnam(account_name("alice")).pw_uid}
        # its own network (the hub's ports are not there to take) and its own processes only
        for kind in ("net", "pid"):
            hubs = os.readlink(f"/proc/self/ns/{kind}")
            assert all(os.readlink(process / "ns" / kind) != hubs for process in servers), kind
        # and yet it answers through the proxy, its port forwarded in from this machine's loopback
        lab = client.session.get(client.url("/user/alice/lab"))  # with the hub's OAuth, through the proxy
        assert lab.status_code == 200 and "JupyterLab" in lab.text
        page = hub.client("admin")
        page.login()
        assert "jhub-ext-isolation" not in page.spawn_page().text  # isolated: nothing to warn about
    finally:
        client.stop_server()


def _cmdline(process: Path) -> bytes:
    try:
        return (process / "cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""
