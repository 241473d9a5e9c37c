"""The jobs database on real SQLite files: idempotent creation, status history, log tails, audit."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.service.store import LOG_TAIL_BYTES, JobExists, JobStore, StatusConflict

SPEC = parse_submission({"name": "news", "kind": "batch", "command": ["python", "run.py"]})


@pytest.fixture
def store(any_store: JobStore) -> JobStore:
    """The same tests on SQLite (the default) and on a real PostgreSQL server."""
    return any_store


def test_a_job_is_unique_per_user_and_name(store: JobStore) -> None:
    store.create("alice", SPEC, "small")
    with pytest.raises(JobExists):
        store.create("alice", SPEC, "small")
    store.create("bob", SPEC, "small")  # another user may use the same name
    assert [(j.user, j.name) for j in store.list_jobs()] == [("bob", "news"), ("alice", "news")]
    assert [j.user for j in store.list_jobs("alice")] == ["alice"]


def test_a_failed_batch_job_keeps_its_exit_code_and_logs(store: JobStore) -> None:
    store.create("alice", SPEC, "small")
    store.set_status("alice", "news", JobStatus.RUNNING)
    store.append_log("alice", "news", "starting\n")
    store.append_log("alice", "news", "boom\n")
    record = store.set_status("alice", "news", JobStatus.FAILED, exit_code=3)
    assert record.to_json()["exit_code"] == 3 and record.finished is not None
    assert store.log_tail("alice", "news") == "starting\nboom\n"


def test_restart_stop_and_the_audit_trail(store: JobStore) -> None:
    store.create("alice", SPEC, "small")
    store.set_status("alice", "news", JobStatus.RUNNING)
    store.set_status("alice", "news", JobStatus.STOPPED, actor="admin")
    record = store.set_status("alice", "news", JobStatus.PENDING, actor="alice")
    assert record.restarts == 1 and record.exit_code is None and "exit_code" not in record.to_json()
    store.set_status("alice", "news", JobStatus.RUNNING)
    store.set_status("alice", "news", JobStatus.SUCCEEDED, exit_code=0)
    with pytest.raises(StatusConflict, match="job 'news' is succeeded and cannot become failed"):
        store.set_status("alice", "news", JobStatus.FAILED)
    assert store.get("alice", "news").status is JobStatus.SUCCEEDED  # the refused change left no trace
    assert store.delete("alice", "news", actor="alice")
    assert store.get("alice", "news") is None
    actions = [(a["actor"], a["action"]) for a in store.audit("alice")]
    assert actions == [("alice", "submit"), ("admin", "stop"), ("alice", "restart"), ("alice", "delete")]


def test_the_log_tail_is_bounded(store: JobStore) -> None:
    store.create("alice", SPEC, None)
    store.append_log("alice", "news", "x" * LOG_TAIL_BYTES)
    store.append_log("alice", "news", "END")
    tail = store.log_tail("alice", "news")
    assert tail is not None and len(tail) == LOG_TAIL_BYTES and tail.endswith("END")


def test_nothing_is_lost_across_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    first = JobStore(url)
    first.create("alice", SPEC, "small")
    first.set_status("alice", "news", JobStatus.RUNNING)
    first.close()
    second = JobStore(url)
    record = second.get("alice", "news")
    assert record is not None and record.status is JobStatus.RUNNING and record.started is not None
    second.close()


def test_pages_counts_and_states(store: JobStore) -> None:
    for i in range(5):
        store.create("alice", parse_submission({"name": f"j{i}", "kind": "batch", "command": ["x"]}), None)
    store.set_status("alice", "j0", JobStatus.RUNNING)
    store.set_status("alice", "j0", JobStatus.SUCCEEDED, exit_code=0)
    assert [j.name for j in store.list_jobs("alice", limit=2, offset=1)] == ["j3", "j2"]
    assert store.count_jobs("alice") == 5 and store.count_jobs("bob") == 0
    unfinished = [name for (_, name), (status, _, _) in store.states().items() if not status.finished]
    assert sorted(unfinished) == ["j1", "j2", "j3", "j4"]
    assert store.users() == ["alice"]


def test_a_commit_survives_the_service_being_killed_right_after_it(tmp_path: Path) -> None:
    """SQLite syncs at checkpoints, not at every commit (a commit's fsync blocked the event loop):
    what was committed is still there when the process is killed before anything else happens."""
    url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    JobStore(url).close()
    child = (
        "import os, signal, sys\n"
        "from jhub_ext.core.jobs.model import JobStatus, parse_submission\n"
        "from jhub_ext.service.store import JobStore\n"
        "store = JobStore(sys.argv[1])\n"
        "spec = parse_submission({'name': 'news', 'kind': 'batch', 'command': ['true']})\n"
        "store.create('alice', spec, 'small')\n"
        "store.set_status('alice', 'news', JobStatus.RUNNING)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", child, url], timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL
    store = JobStore(url)
    try:
        record = store.get("alice", "news")
        assert record is not None and record.status is JobStatus.RUNNING
        with store.engine.connect() as connection:  # and the database is whole
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        store.close()
