"""One operation at a time per job (#21): a user racing submit, restart, stop and delete on the
same jobs of a real local hub never gets a 5xx, and afterwards every record agrees with what
runs, no process runs that no record owns, and the quota counts exactly the running records.
The reconciler ends work that no record owns (a directory and its processes)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.local.backend import LocalJobBackend
from jhub_ext.service.manager import JobManager
from jhub_ext.service.reconcile import reconcile
from jhub_ext.service.store import JobStore

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess, wait_for
from .test_jobs_service import Jobs, token_for

pytestmark = pytest.mark.integration

USER = "racer"
NAMES = ["r-a", "r-b", "r-c", "r-d"]
RACES = 100
SLEEPER = ["python", "-c", "import time; time.sleep(600)"]
SHORT = ["python", "-c", "import time; time.sleep(0.3)"]
#: what each operation may answer: a documented status, never a 5xx
QUOTA_JOBS = 3  # the racers' quota
ALLOWED = {
    "submit": {201, 202, 403, 409},  # 202: queued, the group's quota being full
    "restart": {200, 202, 403, 404},
    "stop": {200, 404},
    "delete": {204, 404},
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("races"))
    catalog = SHIPPED_CATALOG.read_text().split("\nquotas:")[0]
    catalog = catalog.replace("groups: [researchers, gpu]", "groups: [researchers, gpu, racers]")
    config = "c.JobsService.submits_per_minute = 10**5\nc.JobsService.actions_per_minute = 10**5\n"
    quotas = f"\nquotas:\n  researchers: {{jobs: 50}}\n  racers: {{jobs: {QUOTA_JOBS}}}\n  gpu: {{gpus: 2}}\n"
    users = json.dumps({USER: ["racers"]})
    with HubProcess(
        workdir, catalog_text=catalog + quotas, extra_env={"JHUB_EXT_DEMO_USERS": users}, jobs_config=config
    ) as process:
        yield process


def job_processes(root: Path) -> dict[str, set[int]]:
    """The user's job processes, by job name: those working (or with their home) in a job's
    directory, read from /proc (zombies, which have neither, are not counted)."""
    found: dict[str, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        homes = [v[5:].decode(errors="replace") for v in environ if v.startswith(b"HOME=")]
        for place in (Path(cwd), *map(Path, homes)):
            if place.is_relative_to(root) and len(place.parts) > len(root.parts):
                found.setdefault(place.parts[len(root.parts)], set()).add(int(entry.name))
    return found


def race(jobs: Jobs, name: str, rng: random.Random, answers: list[tuple[str, int, str]]) -> None:
    """2 to 4 operations on one job, all at once."""
    operations = [rng.choice(list(ALLOWED)) for _ in range(rng.randint(2, 4))]
    barrier = threading.Barrier(len(operations))

    def act(operation: str) -> None:
        barrier.wait()
        if operation == "submit":
            command = SLEEPER if rng.random() < 0.8 else SHORT
            kind = "scraper" if command is SLEEPER else "batch"
            response = jobs.submit(name=name, kind=kind, command=command)
        elif operation == "delete":
            response = jobs.call("DELETE", f"/jobs/{name}")
        else:
            response = jobs.call("POST", f"/jobs/{name}/{operation}")
        answers.append((operation, response.status_code, response.text[:300]))

    with ThreadPoolExecutor(len(operations)) as pool:
        list(pool.map(act, operations))


def test_racing_operations_on_the_same_jobs_leave_records_and_processes_in_agreement(hub: HubProcess) -> None:
    jobs = Jobs(hub, token_for(hub, USER))
    wait_for(jobs.answers, 30, "the jobs service")
    root = hub.state_dir / "jobs" / "run" / f"u-{USER}"
    answers: list[tuple[str, int, str]] = []
    started = time.monotonic()

    def races_on(name: str) -> None:
        rng = random.Random(f"{name}-{RACES}")  # noqa: S311 (a repeatable mix of races, not a secret)
        for _ in range(RACES // len(NAMES)):
            race(jobs, name, rng, answers)

    with ThreadPoolExecutor(len(NAMES)) as pool:
        list(pool.map(races_on, NAMES))
    wrong = [a for a in answers if a[1] not in ALLOWED[a[0]]]
    assert not wrong, wrong
    assert "Traceback" not in hub.log()

    def agree() -> tuple[list[dict[str, Any]], dict[str, set[int]]] | None:
        records = jobs.call("GET", "/jobs").json()["jobs"]
        if any(r["status"] == "pending" and r["reason"] != "queued" for r in records):
            return None  # still starting (or waiting to run again); a queued one has nothing running
        queued = sum(r["reason"] == "queued" for r in records)
        if queued and sum(r["status"] in ("pending", "running") for r in records) - queued < QUOTA_JOBS:
            return None  # room for a queued job, which starts in a moment
        processes = job_processes(root)
        for record in records:
            if (record["status"] == "running") != bool(processes.get(record["name"])):
                return None
        if set(processes) - {r["name"] for r in records}:
            return None
        return records, processes

    try:
        records, _ = wait_for(agree, 30, "records and processes to agree")
    except Exception:
        records = jobs.call("GET", "/jobs").json()["jobs"]
        raise AssertionError(
            f"records {[(r['name'], r['status']) for r in records]} vs processes {job_processes(root)}"
        ) from None
    (group,) = jobs.call("GET", "/quota").json()["groups"]
    counted = [r for r in records if r["status"] in ("pending", "running") and r["reason"] != "queued"]
    assert group["usage"]["jobs"] == len(counted)  # a queued job reserves nothing
    assert group["waiting"]["jobs"] == sum(r["reason"] == "queued" for r in records)
    assert time.monotonic() - started < 90
    for record in records:
        assert jobs.call("DELETE", f"/jobs/{record['name']}").status_code == 204
    wait_for(lambda: not job_processes(root), 15, "no job process left after the deletes")


async def test_the_reconciler_ends_work_no_record_owns(tmp_path: Path) -> None:
    """A job directory and its processes with no record (a submit or delete cut short) go; a
    directory whose submit is in flight (its job's turn held) stays."""
    backend = LocalJobBackend(jobs_dir=str(tmp_path / "jobs"), poll_interval=0.05)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    manager = JobManager(store, backend, CatalogSource(SHIPPED_CATALOG), None)
    await backend.start()
    stray, busy = tmp_path / "jobs" / "u-alice" / "stray", tmp_path / "jobs" / "u-alice" / "busy"
    processes = []
    for directory in (stray, busy):
        (directory / "files").mkdir(parents=True)
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(600)"],
                cwd=directory / "files",
                start_new_session=True,
            )
        )
    try:
        later = datetime.now(UTC) + timedelta(hours=1)
        async with manager.working_on("alice", "busy"):
            done = await reconcile(manager, grace_seconds=60, now=later)
        assert done.removed == [("alice", "stray")]
        assert processes[0].wait(10) == -9 and not stray.exists()
        assert processes[1].poll() is None and busy.exists()
        assert (await reconcile(manager, grace_seconds=60, now=later)).removed == [("alice", "busy")]
        assert processes[1].wait(10) == -9 and not busy.exists()
    finally:
        for process in processes:
            process.kill()
            process.wait()
        await backend.shutdown()
        store.close()
