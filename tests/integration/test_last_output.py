"""When a running job last printed a line (``JobBackend.last_output``), in both backends: what tells
the owner of a scraper that went quiet."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from devcluster.agent.logs import Renderer

from jhub_ext.core.catalog import load_catalog
from jhub_ext.core.jobs.backend import JobBackend, Placement
from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.core.names import object_name
from jhub_ext.kubernetes.backend import KubernetesJobBackend
from jhub_ext.kubernetes.logs import line_time
from jhub_ext.local.backend import LocalJobBackend

from ..conftest import SHIPPED_CATALOG
from ..kube import Namespace, eventually
from ..observations import Recorder

#: a file's modification time comes from the kernel's coarse clock, a tick behind ``datetime.now()``
TICK = timedelta(milliseconds=50)
#: a job that prints a line each time the test creates the file it waits for
SIGNALLED = """
import os, time
def wait(name):
    while not os.path.exists(name):
        time.sleep(0.02)
wait('go')
print('first', flush=True)
wait('again')
print('second', flush=True)
time.sleep(60)
"""


# --- local mode --------------------------------------------------------------------------------------

ALICE = Placement(user="alice", groups=frozenset({"researchers"}))


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalJobBackend]:
    b = LocalJobBackend(jobs_dir=str(tmp_path / "jobs"), backoff_base=0.05, poll_interval=0.05)
    b.on_change = Recorder()
    b.stop_grace_seconds = 2
    await b.start()
    yield b
    for user, name in list(await b.inventory()):
        await b.delete(user, name)
    await b.shutdown()


def local_spec(name: str, kind: str, code: str) -> Any:
    return parse_submission(
        {"name": name, "kind": kind, "command": [sys.executable, "job.py"], "files": {"job.py": code}}
    )


async def printed(b: JobBackend, name: str, text: str) -> None:
    """Wait until the job's log holds ``text``."""
    for _ in range(200):
        if text in "".join([chunk async for chunk in b.logs("alice", name)]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the job never printed {text!r}")


async def signal(b: LocalJobBackend, name: str, file: str, text: str) -> tuple[datetime, datetime]:
    """Create ``file`` for the job, and wait until it has printed ``text``: the times around it."""
    directory = b.directory("alice", name)
    assert directory is not None
    before = datetime.now(UTC)
    (directory / "files" / file).touch()
    await printed(b, name, text)
    return before - TICK, datetime.now(UTC)


async def test_a_local_job_s_last_output_follows_its_lines_and_stays_put_between(
    local: LocalJobBackend,
) -> None:
    assert await local.last_output("alice", "talker") is None  # no such job
    await local.submit(local_spec("talker", "scraper", SIGNALLED), ALICE)
    seen: Recorder = local.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.RUNNING)
    assert await local.last_output("alice", "talker") is None  # running, and printed nothing yet

    before, after = await signal(local, "talker", "go", "first")
    first = await local.last_output("alice", "talker")
    assert first is not None and first.tzinfo is not None and before <= first <= after
    await asyncio.sleep(0.2)  # quiet for a while: nothing moves
    assert await local.last_output("alice", "talker") == first

    before, after = await signal(local, "talker", "again", "second")
    second = await local.last_output("alice", "talker")
    assert second is not None and first < second and before <= second <= after


async def test_the_supervisor_s_line_in_a_local_log_is_not_the_job_s_output(local: LocalJobBackend) -> None:
    """A scraper that crashed, waiting to restart: the log's last line says so, and is jhub_ext's (the
    crashed run's own last line cannot be dated from the file then)."""
    local.backoff_base = 60  # long enough to look at the log between the runs
    code = "print('about to fail', flush=True)\nraise SystemExit(1)\n"
    await local.submit(local_spec("crashy", "scraper", code), ALICE)
    seen: Recorder = local.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.PENDING and o.restarts == 1)
    log = "".join([chunk async for chunk in local.logs("alice", "crashy")])
    assert log.startswith("about to fail\n") and "restarting in" in log.splitlines()[-1]
    assert await local.last_output("alice", "crashy") is None


async def test_a_local_run_that_printed_nothing_yet_is_not_taken_for_the_one_before(
    local: LocalJobBackend,
) -> None:
    """A batch job run again: its new run prints nothing, the first run's line is still the log's last."""
    code = (
        "import os, time\n"
        "if os.path.exists('done'): time.sleep(60)\n"
        "open('done', 'w').close(); print('done')\n"
    )
    await local.submit(local_spec("again", "batch", code), ALICE)
    seen: Recorder = local.on_change  # type: ignore[assignment]
    await seen.until(lambda o: o.status is JobStatus.SUCCEEDED)
    assert await local.last_output("alice", "again") is not None
    await local.submit(local_spec("again", "batch", code), ALICE)
    await eventually(lambda: len(local.runs("alice", "again")) == 1, "the second run to start")
    assert await local.last_output("alice", "again") is None


# --- Kubernetes mode ---------------------------------------------------------------------------------

#: the kubelet's ``timestamps`` prefix: RFC 3339 with nine fraction digits, and a space
KUBELET_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z ")
KUBE_ALICE = Placement(
    user="alice",
    groups=frozenset({"researchers"}),
    profile=load_catalog(SHIPPED_CATALOG).profile("small"),
    image="example.org/python:3",
)


@pytest.fixture
async def kube(
    kube_namespace: Namespace, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[KubernetesJobBackend]:
    monkeypatch.setenv("KUBECONFIG", str(kube_namespace.kubeconfig))
    b = KubernetesJobBackend(namespace=kube_namespace.name, watch_timeout_seconds=30)
    await b.start()
    yield b
    await b.shutdown()


def running_container(ns: Namespace, job: str) -> bool:
    return any(
        "running" in (status.get("state") or {})
        for pod in ns.pods(f"jhub-ext.io/job={object_name('alice', job)}")
        for status in pod.get("status", {}).get("containerStatuses", [])
    )


@pytest.mark.integration
async def test_a_kubernetes_scraper_s_last_output_is_when_it_printed(
    kube: KubernetesJobBackend, kube_namespace: Namespace
) -> None:
    ns = kube_namespace
    talk = (
        "import datetime, time\n"
        "print(datetime.datetime.now(datetime.UTC).isoformat(), flush=True)\n"
        "time.sleep(120)\n"
    )
    for name, code in (("talker", talk), ("silent", "import time\ntime.sleep(120)\n")):
        job = parse_submission({"name": name, "kind": "scraper", "command": ["python", "-c", code]})
        await kube.submit(job, KUBE_ALICE)
    assert await kube.last_output("alice", "talker") is None  # no container has started yet

    deadline = asyncio.get_running_loop().time() + 30
    while (when := await kube.last_output("alice", "talker")) is None:
        assert asyncio.get_running_loop().time() < deadline, "the scraper never printed"
        await asyncio.sleep(0.2)
    said = datetime.fromisoformat("".join([chunk async for chunk in kube.logs("alice", "talker")]).strip())
    assert when.tzinfo is not None and abs(when - said) < timedelta(seconds=2)
    await asyncio.sleep(1.5)  # it sleeps: its last line stays where it was
    assert await kube.last_output("alice", "talker") == when

    # the time is the kubelet's own, as the API server passes it on
    pod = ns.pods(f"jhub-ext.io/job={object_name('alice', 'talker')}")[0]["metadata"]["name"]
    stamped = ns.admin.pod_log(pod, ns.name, "job", timestamps="true", tailLines="1")
    assert KUBELET_STAMP.match(stamped) and line_time(stamped.encode()) == when

    await eventually(lambda: running_container(ns, "silent"), "the silent scraper's container to run")
    assert await kube.last_output("alice", "silent") is None  # running, and printed nothing


# --- the parts, without a cluster --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"2024-05-06T07:08:09.123456789Z hello\n", datetime(2024, 5, 6, 7, 8, 9, 123456, UTC)),
        (b"2024-05-06T07:08:09.000000001Z \n", datetime(2024, 5, 6, 7, 8, 9, 0, UTC)),  # an empty line
        (b"2024-05-06T07:08:09Z no fraction", datetime(2024, 5, 6, 7, 8, 9, 0, UTC)),
        (b"2024-05-06t09:08:09.5+02:00 an offset", datetime(2024, 5, 6, 7, 8, 9, 500000, UTC)),
        (b"2024-05-06T07:08:09.25z", datetime(2024, 5, 6, 7, 8, 9, 250000, UTC)),  # cut after the time
        (b"hello 2024-05-06T07:08:09Z", None),
        (b"2024-13-06T07:08:09Z a month that is not", None),
        (b"2024-05-06T07:08:09.123Zed", None),
        (b"", None),
    ],
)
def test_a_kubelet_timestamp_is_read_to_an_aware_utc_datetime(line: bytes, expected: datetime | None) -> None:
    found = line_time(line)
    assert found == expected
    assert found is None or found.utcoffset() == timedelta(0)


def test_the_node_agent_stamps_lines_as_a_kubelet_does() -> None:
    """Nine fraction digits, once per line (a line stored in pieces too), its content untouched."""
    stored = (
        b"2024-05-06T07:08:09.123456Z stdout P a long \n"
        b"2024-05-06T07:08:09.223456Z stdout F line\n"
        b"2024-05-06T07:08:10Z stderr F progress\r100%\n"
    )
    stamped = Renderer(timestamps=True, since=None)
    assert b"".join(stamped(stored)) == (
        b"2024-05-06T07:08:09.123456000Z a long line\n2024-05-06T07:08:10.000000000Z progress\r100%\n"
    )
    plain = Renderer(timestamps=False, since=datetime(2024, 5, 6, 7, 8, 9, 200000, UTC))
    assert b"".join(plain(stored)) == b"line\nprogress\r100%\n"
