"""Observers that admins configure hear what happens to servers (in the hub) and jobs (in the jobs
service), from a real hub and service in local mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import HUB_CONFIG
from ..hubprocess import HubProcess, wait_for
from .test_jobs_service import Jobs

pytestmark = pytest.mark.integration


def observer(heard: Path, setting: str) -> str:
    """Config lines defining an observer that writes each event as a JSON line, and naming it."""
    return (
        "import json as _json\n"
        f"def _heard(event, _path={str(heard)!r}):\n"
        "    fields = ('subject', 'happened', 'user', 'name', 'status', 'profile', 'actor', 'exit_code')\n"
        "    with open(_path, 'a') as f:\n"
        "        f.write(_json.dumps({k: getattr(event, k) for k in fields}, default=str) + '\\n')\n"
        f"{setting} = [_heard]\n"
    )


def events(heard: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in heard.read_text().splitlines()] if heard.exists() else []


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("events"))
    jobs_config = (HUB_CONFIG / "jobs_config.py").read_text() + observer(
        workdir / "jobs.jsonl", "c.JobsService.event_observers"
    )
    with HubProcess(
        workdir,
        extra_config=observer(workdir / "servers.jsonl", "c.LocalProfileSpawner.event_observers"),
        jobs_config=jobs_config,
    ) as process:
        yield process


def test_a_servers_life_reaches_the_hubs_observers(hub: HubProcess) -> None:
    alice = hub.client("alice")
    alice.login()
    assert alice.submit_spawn_form({"profile": "small"}).status_code == 200
    alice.wait_ready()
    alice.stop_server()
    heard = hub.workdir / "servers.jsonl"
    wait_for(lambda: len(events(heard)) >= 3, 30, "the server's events")
    assert [(e["subject"], e["happened"], e["user"], e["name"], e["profile"]) for e in events(heard)] == [
        ("server", happened, "alice", "", "small") for happened in ("submitted", "started", "ended")
    ]


def test_a_jobs_life_reaches_the_services_observers(hub: HubProcess) -> None:
    bob = hub.client("bob")
    bob.login()
    token = bob.api("POST", "/users/bob/tokens", json={"note": "tests"}).json()["token"]
    jobs = Jobs(hub, token)
    wait_for(jobs.answers, 60, "the jobs service")
    code = "print('done'); raise SystemExit(3)"
    assert jobs.submit(name="ends", kind="batch", command=["python", "-c", code]).status_code == 201
    jobs.wait_status("ends", "failed", timeout=120)
    assert jobs.call("DELETE", "/jobs/ends").status_code == 204
    heard = hub.workdir / "jobs.jsonl"
    wait_for(lambda: any(e["happened"] == "deleted" for e in events(heard)), 30, "the job's events")
    told = [(e["happened"], e["status"], e["actor"]) for e in events(heard) if e["name"] == "ends"]
    assert told[0] == ("submitted", "pending", "bob") and told[-1][::2] == ("deleted", "bob")
    ended = [e for e in events(heard) if e["happened"] == "ended"]
    assert [(e["status"], e["exit_code"], e["actor"]) for e in ended] == [("failed", 3, None)]
    assert {e["subject"] for e in events(heard)} == {"job"} and {e["user"] for e in events(heard)} == {"bob"}
