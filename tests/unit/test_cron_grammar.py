"""One schedule grammar for both modes: what Kubernetes' CronJob (robfig/cron) takes, and nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jhub_ext.core.jobs.cron import parse_cron, parse_timezone, time_zones
from jhub_ext.core.jobs.model import JobSpecError, parse_submission
from jhub_ext.service.handlers import DuplicateKey, _unique_keys

BASE: dict[str, Any] = {"name": "daily", "kind": "scheduled", "command": ["python", "run.py"]}


@pytest.mark.parametrize(
    "cron",
    [
        "0 6 * * *",
        "0 6 * * 0-6",
        "0 6 * * SUN,sat",
        "*/15 9-17 ? JAN-jun *",
        "5/10 * 1,15,31 * MON-FRI",
        "0 0 29 2 *",
        "59 23 31 12 6",
        "*/59 */23 */31 */12 */6",
        "0 0 1 1 ?",
        "@hourly",
        "@weekly",
    ],
)
def test_crons_kubernetes_takes_are_taken(cron: str) -> None:
    assert parse_cron(cron) == cron


@pytest.mark.parametrize(
    ("cron", "why"),
    [
        ("0 6 * * 7", "the day of week goes from 0 to 6"),  # croniter takes 7 as Sunday; Kubernetes does not
        ("5-1 * * * *", "runs backwards"),
        ("*/99999999999999999999 * * * *", "is not a whole number above 0"),
        ("*/0 * * * *", "is not a whole number above 0"),
        ("*/-1 * * * *", "is not a whole number above 0"),
        ("60 * * * *", "the minute goes from 0 to 59"),
        ("0 24 * * *", "the hour goes from 0 to 23"),
        ("0 0 0 * *", "the day of month goes from 1 to 31"),
        ("0 0 1 13 *", "the month goes from 1 to 12"),
        ("0 0 1 JAN-FOO *", "is not a number or a name"),
        ("? * * * *", "'?' is for the day of month or of week only"),
        ("1,,2 * * * *", "is not a number"),
        ("1-2-3 * * * *", "is not a range"),
        ("*/5/2 * * * *", "has two steps"),
        ("0 6 * *", "it has 4 fields, not five"),
        ("0 0 6 * * *", "it has 6 fields, not five"),
        ("0 6 L * *", "is not a number"),
        ("@reboot", "it has 1 fields, not five"),
    ],
)
def test_crons_kubernetes_refuses_are_refused_with_the_reason(cron: str, why: str) -> None:
    with pytest.raises(ValueError, match="is not a cron schedule") as caught:
        parse_cron(cron)
    assert why in str(caught.value)
    assert "the weekday from 0 = Sunday to 6" in str(caught.value)  # and what to write instead


def test_a_refused_schedule_names_its_field_in_a_submission() -> None:
    with pytest.raises(JobSpecError) as caught:
        parse_submission({**BASE, "schedule": "0 6 * * 7"})
    assert caught.value.field == "schedule"


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "Mars/Olympus", "", None])
def test_only_the_tz_databases_places_are_time_zones(zone: Any) -> None:
    if zone in ("", None):
        assert parse_timezone(zone) == "UTC"
        return
    with pytest.raises(ValueError, match="is not a time zone; use a tz database name"):
        parse_timezone(zone)
    with pytest.raises(JobSpecError) as caught:
        parse_submission({**BASE, "schedule": "@daily", "timezone": zone})
    assert caught.value.field == "timezone"


def test_real_places_are_time_zones() -> None:
    for zone in ("Europe/Berlin", "America/Sao_Paulo", "UTC", "Etc/GMT+5"):
        assert parse_timezone(zone) == zone
    assert len(time_zones()) > 300


def test_a_key_given_twice_is_refused_at_any_depth() -> None:
    assert json.loads('{"a": {"b": 1}, "c": 2}', object_pairs_hook=_unique_keys) == {"a": {"b": 1}, "c": 2}
    for text, key in (('{"name": "a", "name": "b"}', "name"), ('{"env": {"X": "1", "X": "2"}}', "X")):
        with pytest.raises(DuplicateKey) as caught:
            json.loads(text, object_pairs_hook=_unique_keys)
        assert caught.value.key == key
