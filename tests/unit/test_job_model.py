"""Validating job submissions: every refusal names the field and the fix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jhub_ext.core.jobs.model import (
    ConcurrencyPolicy,
    JobKind,
    JobSpecError,
    JobStatus,
    Limits,
    can_transition,
    parse_submission,
    safe_relative_path,
)

BASE: dict[str, Any] = {"name": "news-scraper", "kind": "scraper", "command": ["python", "scrape.py"]}


def refused(**changes: Any) -> JobSpecError:
    body = {**BASE, **changes}
    body = {k: v for k, v in body.items() if v is not ...}
    with pytest.raises(JobSpecError) as caught:
        parse_submission(body, Limits(max_snapshot_bytes=1024))
    return caught.value


def test_a_full_scheduled_submission() -> None:
    spec = parse_submission(
        {
            "name": "daily-news",
            "kind": "scheduled",
            "command": ["python", "run.py"],
            "files": {"run.py": "print('hi')", "lib/util.py": ""},
            "profile": "small",
            "env": {"LANG": "C.UTF-8"},
            "schedule": "0  6 * * 1-5",
            "timezone": "Europe/Berlin",
            "concurrency_policy": "replace",
            "history_limit": 5,
        }
    )
    assert spec.kind is JobKind.SCHEDULED and spec.files["lib/util.py"] == ""
    assert spec.schedule is not None and spec.schedule.cron == "0 6 * * 1-5"
    assert spec.schedule.concurrency_policy is ConcurrencyPolicy.REPLACE
    # 06:00 Berlin on the next weekday after Wednesday 2026-11-25 10:00 UTC is Thursday 05:00 UTC
    after = spec.schedule.next_after(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    assert after.astimezone(UTC) == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert spec.to_json()["timezone"] == "Europe/Berlin"


def test_batch_defaults() -> None:
    spec = parse_submission({**BASE, "kind": "batch", "deadline_seconds": 3600})
    assert (spec.retries, spec.deadline_seconds, spec.schedule) == (3, 3600, None)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "News_Scraper"}, "name", "'News_Scraper' is not a valid job name"),
        ({"name": "a" * 64}, "name", "is not a valid job name"),
        ({"name": ...}, "name", "the name is not a valid job name"),
        ({"kind": "cron"}, "kind", "kind must be one of: batch, scraper, scheduled"),
        ({"command": []}, "command", "command must be a non-empty list of strings"),
        ({"command": "python x.py"}, "command", "command must be a non-empty list of strings"),
        ({"command": ["python", 3]}, "command", "every argument of command must be a string"),
        ({"files": {"../x": "a"}}, "files.../x", "'../x' is not a relative path inside the job's directory"),
        ({"files": {"/etc/x": "a"}}, "files./etc/x", "is not a relative path inside the job's directory"),
        ({"files": {"a/../../x": "a"}}, "files.a/../../x", "is not a relative path"),
        ({"files": {"x.py": 1}}, "files.x.py", "the content of 'x.py' must be text"),
        ({"files": {"big.py": "x" * 2000}}, "files", "the code snapshot is 2 KiB; the limit is 1 KiB"),
        ({"env": {"JUPYTERHUB_API_TOKEN": "x"}}, "env.JUPYTERHUB_API_TOKEN", "is set by the jobs service"),
        ({"env": {"PATH": "/x"}}, "env.PATH", "PATH is set by the jobs service and cannot be overridden"),
        ({"env": {"1BAD": "x"}}, "env", "'1BAD' is not a valid variable name"),
        ({"env": {"N": 3}}, "env.N", "the value of N must be a string; quote it"),
        ({"profile": 3}, "profile", "profile must be a profile's slug"),
        ({"schedule": "* * * * *"}, "schedule", "schedule applies to scheduled jobs only"),
        ({"kind": "scheduled"}, "schedule", "a scheduled job needs a cron schedule"),
        ({"kind": "scheduled", "schedule": "61 * * * *"}, "schedule", "'61 * * * *' is not a cron schedule"),
        (
            {"kind": "scheduled", "schedule": "* * * * * *"},
            "schedule",
            "is not a cron schedule (it has 6 fields, not five); use five fields",
        ),
        (
            {"kind": "scheduled", "schedule": "@daily", "timezone": "Mars/Olympus"},
            "timezone",
            "'Mars/Olympus' is not a time zone",
        ),
        (
            {"kind": "scheduled", "schedule": "@daily", "concurrency_policy": "queue"},
            "concurrency_policy",
            "concurrency_policy must be one of: forbid, replace, allow",
        ),
        ({"retries": 2}, "retries", "retries applies to batch jobs only"),
        ({"kind": "batch", "retries": -1}, "retries", "retries must be a whole number from 0 to 20"),
        (
            {"kind": "batch", "deadline_seconds": 0},
            "deadline_seconds",
            "deadline_seconds must be a whole number",
        ),
        ({"image": "evil"}, "image", "unknown field 'image'"),
    ],
)
def test_bad_submissions_are_refused(changes: dict[str, Any], field: str, message: str) -> None:
    error = refused(**changes)
    assert error.field == field
    assert message in str(error)
    assert error.to_json() == {"error": str(error), "field": field}


def test_the_body_must_be_an_object() -> None:
    with pytest.raises(JobSpecError, match="the body must be a JSON object"):
        parse_submission(["x"])


@pytest.mark.parametrize(
    ("path", "normal"),
    [("a.py", "a.py"), ("lib/b.py", "lib/b.py"), ("./c.py", None), ("", None), ("a\\b", None), ("..", None)],
)
def test_paths_stay_inside_the_job_directory(path: str, normal: str | None) -> None:
    assert safe_relative_path(path) == normal


def test_status_transitions() -> None:
    assert can_transition(JobStatus.PENDING, JobStatus.RUNNING)
    assert can_transition(JobStatus.RUNNING, JobStatus.STOPPED)
    assert can_transition(JobStatus.FAILED, JobStatus.PENDING)  # restart
    assert not can_transition(JobStatus.SUCCEEDED, JobStatus.RUNNING)
    assert not can_transition(JobStatus.STOPPED, JobStatus.FAILED)
    assert JobStatus.STOPPED.finished and not JobStatus.RUNNING.finished


@pytest.mark.parametrize(
    "body",
    [
        {**BASE},
        {**BASE, "kind": "batch", "retries": 0, "deadline_seconds": 60, "files": {"a.py": "x"}},
        {**BASE, "kind": "scheduled", "schedule": "@daily", "timezone": "Europe/Paris", "env": {"A": "1"}},
    ],
)
def test_a_spec_round_trips_through_json(body: dict[str, Any]) -> None:
    spec = parse_submission(body)
    assert parse_submission(spec.to_json()) == spec


@pytest.mark.parametrize("name", ["news\n", "news-\n", "a\nb"])
def test_names_must_match_whole_not_up_to_a_newline(name: str) -> None:
    assert refused(name=name).field == "name"


@pytest.mark.parametrize(
    "key", ["LD_AUDIT", "ld_preload", "PYTHONHOME", "PYTHONINSPECT", "pythonpath", "path", "Home", "PATH\n"]
)
def test_env_cannot_steer_the_loader_the_interpreter_or_the_service(key: str) -> None:
    assert refused(env={key: "x"}).field.startswith("env")


SCHEDULED: dict[str, Any] = {"kind": "scheduled", "schedule": "@daily"}


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        # what a process or a file could not take would wedge the job later: refused now
        ({"command": ["python", "a\0b"]}, "command", "argument 1 of command contains a NUL"),
        ({"command": ["python", "\ud800"]}, "command", "contains a lone surrogate"),
        ({"env": {"A": "x\0y"}}, "env.A", "the value of A contains a NUL"),
        ({"env": {"A": "\udfff"}}, "env.A", "contains a lone surrogate"),
        ({"files": {"a.py": "\ud83d"}}, "files.a.py", "contains a lone surrogate"),
        ({"files": {"a": "x", "a/b": "y"}}, "files.a", "'a' is both a file and the directory of 'a/b'"),
        ({"files": {"a/b": "x", "a/b/c/d": "y"}}, "files.a/b", "is both a file and the directory"),
        ({"files": {"a": "x", "a/": "y"}}, "files.a/", "'a/' is given twice"),
        # crons Kubernetes would refuse, and crons that never fire
        ({**SCHEDULED, "schedule": "0 0 31 2 *"}, "schedule", "never fires"),
        ({**SCHEDULED, "schedule": "0 0 30 2 *"}, "schedule", "never fires"),
        ({**SCHEDULED, "schedule": "0 0 L * *"}, "schedule", "is not a cron schedule"),
        ({**SCHEDULED, "schedule": "0 0 * * 1#2"}, "schedule", "is not a cron schedule"),
        ({**SCHEDULED, "schedule": "H * * * *"}, "schedule", "is not a cron schedule"),
        ({**SCHEDULED, "schedule": "0 0 * FOO *"}, "schedule", "is not a cron schedule"),
        ({**SCHEDULED, "schedule": "TZ=UTC 0 * * *"}, "schedule", "is not a cron schedule"),
        ({**SCHEDULED, "schedule": "*/0 * * * *"}, "schedule", "is not a cron schedule"),
        # time zones by the tz database, not by the file system
        ({**SCHEDULED, "timezone": "America"}, "timezone", "'America' is not a time zone"),
        ({**SCHEDULED, "timezone": "../../etc/passwd"}, "timezone", "is not a time zone"),
        ({**SCHEDULED, "timezone": "Europe/Berlin\0"}, "timezone", "is not a time zone"),
        ({**SCHEDULED, "timezone": "x" * 5000}, "timezone", "is not a time zone"),
        ({**SCHEDULED, "timezone": 3}, "timezone", "'3' is not a time zone"),
        # live runs of a schedule: one unless the admin allows more, and several only with "allow"
        (
            {**SCHEDULED, "max_live_runs": 2},
            "max_live_runs",
            "max_live_runs must be a whole number from 1 to 1",
        ),
    ],
)
def test_what_would_fail_later_is_refused_now(changes: dict[str, Any], field: str, message: str) -> None:
    error = refused(**changes)
    assert (error.field, error.to_json()["field"]) == (field, field)
    assert message in str(error)


def test_long_time_zones_are_not_echoed_whole() -> None:
    assert len(str(refused(**SCHEDULED, timezone="x" * 5000))) < 200


def test_the_admin_may_allow_several_live_runs_with_allow_only() -> None:
    limits = Limits(max_live_runs=3)
    body = {**BASE, **SCHEDULED, "concurrency_policy": "allow", "max_live_runs": 3}
    spec = parse_submission(body, limits)
    assert spec.schedule is not None and spec.schedule.max_live_runs == 3
    assert parse_submission(spec.to_json(), limits) == spec
    with pytest.raises(JobSpecError, match='needs concurrency_policy "allow"') as caught:
        parse_submission({**body, "concurrency_policy": "forbid"}, limits)
    assert caught.value.field == "max_live_runs"


@pytest.mark.parametrize("cron", ["0 6 * * MON-FRI", "0 0 29 2 *", "*/15 9-17 ? JAN,JUL *", "@hourly"])
def test_crons_kubernetes_takes_are_accepted(cron: str) -> None:
    spec = parse_submission({**BASE, **SCHEDULED, "schedule": cron})
    assert spec.schedule is not None and spec.schedule.cron == cron


def test_code_is_text_without_nul_bytes() -> None:
    assert refused(files={"data.txt": "a\0b"}).field == "files.data.txt"
