"""Notification settings in the service: each user's own, a job's own over them field by field, all
checked against the admin's webhook prefixes; and a finished job observed again is not told again."""

from __future__ import annotations

import pytest

from jhub_ext.core.events import Happened, observed_job_event
from jhub_ext.core.jobs.errors import Invalid, NotAllowed
from jhub_ext.core.jobs.model import JobStatus, Observed
from jhub_ext.core.notify import NotifyEvent, NotifySettings, for_job, notify_event
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import JobStore

from .managers import ADMIN, ALICE, BOB, Make, batch

HOOKS = ("http://127.0.0.1:*",)
ALL = ["succeeded", "failed", "restarted", "quiet", "budget"]


@pytest.fixture
def manager(make: Make) -> JobManager:
    return make(webhook_prefixes=HOOKS)


def test_a_user_sees_and_changes_only_their_own_settings(manager: JobManager) -> None:
    assert manager.notify_settings(ALICE, None) == {"notify": {"email": None, "webhook": None, "events": ALL}}
    mine = {"email": "alice@example.org", "webhook": "http://127.0.0.1:9/hook", "events": ["failed"]}
    assert manager.save_notify_settings(ALICE, None, {"notify": mine}) == {"notify": mine}
    assert manager.notify_settings(ALICE, "alice") == {"notify": mine}
    assert manager.notify_settings(ADMIN, "alice") == {"notify": mine}  # an admin may look
    with pytest.raises(NotAllowed):
        manager.notify_settings(BOB, "alice")
    with pytest.raises(NotAllowed):
        manager.save_notify_settings(BOB, "alice", {"notify": {"events": []}})
    assert manager.notify_settings(ALICE, None) == {"notify": mine}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"notify": {"webhook": "https://elsewhere.example.org/hook"}}, "notify.webhook"),
        ({"notify": {"email": "two@example.org, more@example.org"}}, "notify.email"),
        ({"notify": {"events": "failed"}}, "notify.events"),
        ({"notify": {"sms": "+49"}}, "notify.sms"),
        ({"email": "alice@example.org"}, "notify"),
        ([], "notify"),
    ],
)
def test_bad_settings_are_refused_naming_the_field_and_keep_what_was_saved(
    manager: JobManager, body: object, field: str
) -> None:
    saved = {"notify": {"email": "alice@example.org", "webhook": None, "events": ["failed"]}}
    manager.save_notify_settings(ALICE, None, saved)
    with pytest.raises(Invalid) as refused:
        manager.save_notify_settings(ALICE, None, body)
    assert refused.value.field == field
    assert manager.notify_settings(ALICE, None) == saved


async def test_a_jobs_own_settings_win_field_by_field(manager: JobManager, store: JobStore) -> None:
    manager.save_notify_settings(
        ALICE, None, {"notify": {"email": "alice@example.org", "events": ["failed"]}}
    )
    await manager.submit(ALICE, batch("plain"))
    await manager.submit(ALICE, batch("loud", notify={"events": ["succeeded", "failed"]}))
    await manager.submit(ALICE, batch("hooked", notify={"webhook": "http://127.0.0.1:9/x"}))
    assert await manager.settings_for("alice", "plain") == NotifySettings(
        email="alice@example.org", events=frozenset({NotifyEvent.FAILED})
    )
    assert await manager.settings_for("alice", "loud") == NotifySettings(
        email="alice@example.org", events=frozenset({NotifyEvent.SUCCEEDED, NotifyEvent.FAILED})
    )
    assert await manager.settings_for("alice", "hooked") == NotifySettings(
        email="alice@example.org", webhook="http://127.0.0.1:9/x", events=frozenset({NotifyEvent.FAILED})
    )
    assert await manager.settings_for("bob", "anything") is None  # bob set nothing
    with pytest.raises(Invalid) as refused:
        await manager.submit(ALICE, batch("far", notify={"webhook": "https://elsewhere.example.org/x"}))
    assert refused.value.field == "notify.webhook" and store.get("alice", "far") is None


def test_settings_saved_by_a_later_release_are_read_without_failing() -> None:
    assert for_job(
        {"email": "a@example.org", "events": ["failed", "from-the-future"]}, None
    ) == NotifySettings(email="a@example.org", events=frozenset({NotifyEvent.FAILED}))
    assert for_job(None, None) is None


async def test_quiet_after_is_for_scrapers_only(manager: JobManager) -> None:
    with pytest.raises(Invalid) as refused:
        await manager.submit(ALICE, batch("once", quiet_after=600))
    assert refused.value.field == "quiet_after"
    record = await manager.submit(ALICE, batch("watched", kind="scraper", quiet_after=600))
    assert record.spec["quiet_after"] == 600


def test_a_finished_job_observed_again_is_not_told_again() -> None:
    failed = Observed(JobStatus.FAILED, exit_code=3, message="exited with code 3")
    first = observed_job_event(
        "alice", "x", failed, recorded=JobStatus.RUNNING, recorded_message=None, recorded_restarts=0
    )
    again = observed_job_event(
        "alice",
        "x",
        failed,
        recorded=JobStatus.FAILED,
        recorded_message="exited with code 3",
        recorded_restarts=0,
    )
    assert first is not None and again is not None and again.happened is Happened.ENDED
    assert notify_event(first) is NotifyEvent.FAILED
    assert notify_event(again) is None  # e.g. re-observed after a restart of the service
