"""A job's status from its Kubernetes objects, as the watch caches hold them (literal objects)."""

from __future__ import annotations

from typing import Any

from jhub_ext.backends.kubernetes import derive_status
from jhub_ext.jobs.model import JobStatus


def job(*conditions: tuple[str, str], failed: int = 0, deadline: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "alice-x-123456", "uid": "u1"},
        "spec": {"activeDeadlineSeconds": deadline} if deadline else {},
        "status": {
            "failed": failed,
            "conditions": [{"type": kind, "status": "True", "reason": reason} for kind, reason in conditions],
        },
    }


def pod(
    phase: str, *, code: int | None = None, reason: str = "Error", init_code: int | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "job", "restartCount": 0, "state": {}}],
    }
    if code is not None:
        status["containerStatuses"][0]["state"] = {"terminated": {"exitCode": code, "reason": reason}}
    elif phase == "Running":
        status["containerStatuses"][0]["state"] = {"running": {}}
    if init_code is not None:
        status["initContainerStatuses"] = [{"name": "code", "state": {"terminated": {"exitCode": init_code}}}]
    return {"metadata": {"name": "p", "creationTimestamp": "2026-11-25T10:00:00Z"}, "status": status}


def test_a_complete_job_succeeded() -> None:
    observed = derive_status("jobs", job(("Complete", "")), [pod("Succeeded", code=0, reason="Completed")])
    assert (observed.status, observed.exit_code) == (JobStatus.SUCCEEDED, 0)


def test_a_failed_job_reports_the_exit_code_and_attempts() -> None:
    pods = [pod("Failed", code=3), pod("Failed", code=3)]
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=2), pods)
    assert (observed.status, observed.exit_code) == (JobStatus.FAILED, 3)
    assert observed.message == "exited with code 3 (2 attempts)"


def test_a_failed_job_waits_for_its_pods_exit_code_from_the_other_watch() -> None:
    observed = derive_status("jobs", job(("Failed", "BackoffLimitExceeded"), failed=1), [pod("Running")])
    assert observed.status is JobStatus.RUNNING


def test_deadline_out_of_memory_and_code_copy_failures_say_so() -> None:
    deadline = derive_status("jobs", job(("Failed", "DeadlineExceeded"), deadline=30), [pod("Running")])
    assert deadline.status is JobStatus.FAILED and deadline.message == "stopped after its deadline of 30 s"
    oom = derive_status(
        "jobs",
        job(("Failed", "BackoffLimitExceeded"), failed=1),
        [pod("Failed", code=137, reason="OOMKilled")],
    )
    assert oom.exit_code == 137 and "ran out of memory" in (oom.message or "")
    copy = derive_status(
        "jobs", job(("Failed", "BackoffLimitExceeded"), failed=1), [pod("Failed", init_code=1)]
    )
    assert copy.exit_code == 1 and "code could not be copied" in (copy.message or "")


def test_workloads_without_a_result_are_pending_or_running() -> None:
    assert derive_status("jobs", None, []).status is JobStatus.PENDING
    assert derive_status("deployments", {"metadata": {}}, [pod("Running")]).status is JobStatus.RUNNING
    assert derive_status("cronjobs", {"metadata": {}}, [pod("Succeeded", code=0)]).exit_code == 0
