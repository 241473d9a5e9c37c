"""Each kind of job is one entry of the jobs domain's table, and every part of the product follows
it: what a submission may say, which profiles it may use, how it runs, what it becomes in Kubernetes."""

from __future__ import annotations

from typing import Any

import pytest

from jhub_ext.core.catalog import parse_catalog
from jhub_ext.core.jobs.model import KIND_RULES, JobKind, JobSpecError, Placement, Runs, parse_submission
from jhub_ext.kubernetes.workloads import build_workload

CATALOG = parse_catalog(
    "version: 1\ngroups: [g]\nprofiles:\n  - {slug: small, display_name: S, cpu: {limit: 1}}\n"
)
RESOURCE_OF = {"Job": "jobs", "Deployment": "deployments", "CronJob": "cronjobs"}


def body(kind: JobKind, **extra: Any) -> dict[str, Any]:
    schedule = {"schedule": "@daily"} if KIND_RULES[kind].runs is Runs.ON_SCHEDULE else {}
    return {"name": "j", "kind": kind.value, "command": ["python", "-c", "1"], **schedule, **extra}


def test_every_kind_has_its_entry() -> None:
    assert set(KIND_RULES) == set(JobKind)
    assert all(kind.rules is KIND_RULES[kind] for kind in JobKind)


@pytest.mark.parametrize("kind", list(JobKind))
def test_a_submission_may_say_what_its_kinds_entry_allows(kind: JobKind) -> None:
    rules = kind.rules
    for field, allowed, value in (
        ("retries", rules.takes_retries, 2),
        ("deadline_seconds", rules.has_deadline, 60),
        ("schedule", rules.runs is Runs.ON_SCHEDULE, "@hourly"),
    ):
        submission = body(kind, **{field: value})
        if allowed:
            assert parse_submission(submission).to_json()[field] == value
        else:
            with pytest.raises(JobSpecError) as refused:
                parse_submission(submission)
            assert refused.value.field == field


@pytest.mark.parametrize("kind", list(JobKind))
def test_what_a_kind_becomes_in_kubernetes_is_its_entrys_workload(kind: JobKind) -> None:
    spec = parse_submission(body(kind, deadline_seconds=60) if kind.rules.has_deadline else body(kind))
    workload = build_workload(spec, Placement(user="alice", profile=CATALOG.profiles[0]))
    assert RESOURCE_OF[workload["kind"]] == kind.rules.workload
    assert kind.profile_kind in CATALOG.profiles[0].kinds
