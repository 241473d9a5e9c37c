"""Notifications, decided: settings parsed strictly (every refusal names its field), webhooks only
within the admin's prefixes at URL boundaries, which lifecycle events are told, when a scraper
counts as quiet, and plain words with no Kubernetes in them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jhub_ext.core.events import Event, Happened, Subject
from jhub_ext.core.jobs.model import JobSpecError, JobStatus, parse_quiet_after
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.notify import (
    DEFAULT_EVENTS,
    JobMoment,
    NotifyEvent,
    NotifySettings,
    ScraperActivity,
    notification_for,
    notify_event,
    parse_notify,
    parse_prefix,
    quiet_jobs,
    quiet_notification,
    webhook_allowed,
)

PREFIXES = ["http://127.0.0.1", "https://hooks.example.org/services/T1"]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
EVERYWHERE = NotifySettings(email="alice@example.org", webhook="https://hooks.example.org/services/T1/B2")


def refused(body: Any, prefixes: list[str] = PREFIXES, field: str = "notify") -> JobSpecError:
    with pytest.raises(JobSpecError) as caught:
        parse_notify(body, prefixes, field)
    return caught.value


# --- settings ------------------------------------------------------------------------------------


def test_settings_round_trip_and_default_to_every_event() -> None:
    body = {"email": "a@b.org", "webhook": "https://hooks.example.org/services/T1/B2", "events": ["failed"]}
    settings = parse_notify(body, PREFIXES)
    assert settings == NotifySettings("a@b.org", body["webhook"], frozenset({NotifyEvent.FAILED}))
    assert parse_notify(settings.to_json(), PREFIXES) == settings
    assert parse_notify({"email": "a@b.org"}, PREFIXES).events == DEFAULT_EVENTS == frozenset(NotifyEvent)
    assert parse_notify({"email": "a@b.org"}, PREFIXES).to_json()["events"] == [
        "succeeded",
        "failed",
        "restarted",
        "quiet",
        "budget",
    ]


def test_empty_values_clear_and_an_empty_event_list_means_none() -> None:
    assert parse_notify(None, PREFIXES) == NotifySettings()
    cleared = parse_notify({"email": "", "webhook": None, "events": []}, PREFIXES)
    assert (cleared.email, cleared.webhook, cleared.events) == (None, None, frozenset())
    assert not NotifySettings().wants(NotifyEvent.FAILED)  # no address: never told
    assert not NotifySettings(email="a@b.org", events=frozenset()).wants(NotifyEvent.FAILED)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("a@b.org", "notify"),
        ({"mail": "a@b.org"}, "notify.mail"),
        ({"email": 3}, "notify.email"),
        ({"email": "Alice <a@b.org>"}, "notify.email"),
        ({"email": "a@b.org, eve@evil.org"}, "notify.email"),
        ({"email": "a@b.org\r\nBcc: eve@evil.org"}, "notify.email"),
        ({"email": "a@b.org\n"}, "notify.email"),
        ({"email": "a@b.org\x00"}, "notify.email"),
        ({"email": "alice@localhost"}, "notify.email"),
        ({"email": "älice@b.org"}, "notify.email"),
        ({"email": "a" * 65 + "@b.org"}, "notify.email"),
        ({"email": "a@" + "b" * 60 + "." + "c" * 200 + ".org"}, "notify.email"),
        ({"webhook": "ftp://127.0.0.1/x"}, "notify.webhook"),
        ({"webhook": "http://user:pw@127.0.0.1/x"}, "notify.webhook"),
        ({"webhook": "http://127.0.0.1/x#top"}, "notify.webhook"),
        ({"webhook": "http://127.0.0.1/x y"}, "notify.webhook"),
        ({"webhook": "http://127.0.0.1/x\r\nHost: evil"}, "notify.webhook"),
        ({"webhook": "http://127.0.0.1/" + "x" * 2100}, "notify.webhook"),
        ({"webhook": "https://evil.org/"}, "notify.webhook"),
        ({"webhook": ["http://127.0.0.1/"]}, "notify.webhook"),
        ({"events": "failed"}, "notify.events"),
        ({"events": ["failed", "exploded"]}, "notify.events"),
        ({"events": [["failed"]]}, "notify.events"),
    ],
)
def test_every_refusal_names_its_field(body: Any, field: str) -> None:
    error = refused(body)
    assert error.field == field
    assert error.to_json()["field"] == field and str(error)


def test_a_refusal_says_the_fix() -> None:
    assert "the fields are: email, webhook, events" in str(refused({"mail": "a@b.org"}))
    assert "you@example.org" in str(refused({"email": "Alice <a@b.org>"}))
    assert "exploded" in str(refused({"events": ["exploded"]})) and "quiet" in str(refused({"events": ["x"]}))
    outside = str(refused({"webhook": "https://evil.org/"}))
    assert "https://hooks.example.org/services/T1" in outside
    assert refused({"email": 1}, field="jobs.notify").field == "jobs.notify.email"


def test_with_no_prefixes_the_admin_allows_no_webhook() -> None:
    error = refused({"webhook": "http://127.0.0.1/hook"}, prefixes=[])
    assert error.field == "notify.webhook" and "admin allows no webhooks" in str(error)
    assert parse_notify({"email": "a@b.org"}, []).email == "a@b.org"


def test_quiet_after_is_bounded_whole_seconds() -> None:
    assert parse_quiet_after(None) is None and parse_quiet_after(900) == 900
    for bad in (59, 8 * 24 * 3600, 900.5, True, "900"):
        with pytest.raises(JobSpecError) as caught:
            parse_quiet_after(bad)
        assert caught.value.field == "quiet_after"


# --- webhook prefixes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1",
        "http://127.0.0.1/",
        "http://127.0.0.1/hook?channel=jobs",
        "http://127.0.0.1:80/hook",
        "https://hooks.example.org/services/T1",
        "https://hooks.example.org/services/T1/B2/secret",
        "https://HOOKS.example.org:443/services/T1/B2",
    ],
)
def test_urls_within_a_prefix(url: str) -> None:
    assert webhook_allowed(url, PREFIXES)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1.evil.org/",  # a longer host
        "http://127.0.0.1@evil.org/",  # the prefix's host as a user name
        "http://127.0.0.1:80@evil.org/",
        "http://127.0.0.1\\@evil.org/",
        "http://127.0.0.1%2eevil.org/",
        "http://127.0.0.1:8080/hook",  # another port than the prefix's (its scheme's own)
        "https://127.0.0.1/",  # another scheme
        "http://127.0.0.2/",
        "https://hooks.example.org/services/T12",  # a longer last segment
        "https://hooks.example.org/services",
        "https://hooks.example.org/services/T1/../../admin",
        "https://hooks.example.org/services/T1/%2e%2e/x",
        "https://hooks.example.org:8443/services/T1/B2",
        "http://hooks.example.org/services/T1/B2",
        "javascript://127.0.0.1/",
        "http://127.0.0.1:abc/",
    ],
)
def test_urls_outside_every_prefix(url: str) -> None:
    assert not webhook_allowed(url, PREFIXES)


def test_a_prefix_may_allow_any_port_and_a_bad_prefix_allows_nothing() -> None:
    assert webhook_allowed("http://127.0.0.1:8080/hook", ["http://127.0.0.1:*"])
    assert webhook_allowed("http://127.0.0.1:9/hooks/a", ["http://127.0.0.1:*/hooks"])
    assert not webhook_allowed("http://127.0.0.1:9/hooksx", ["http://127.0.0.1:*/hooks"])
    assert not webhook_allowed("http://127.0.0.1.evil.org:9/", ["http://127.0.0.1:*"])
    parse_prefix("http://127.0.0.1:*")
    for bad in ("ftp://127.0.0.1", "http://u@127.0.0.1", "http://127.0.0.1/?x=1", "http://127.0.0.1:*:8/"):
        with pytest.raises(ValueError, match="webhook prefix"):
            parse_prefix(bad)
        assert not webhook_allowed("http://127.0.0.1/", [bad])


# --- which events are told ----------------------------------------------------------------------------


def job_event(happened: Happened, status: JobStatus | None, **more: Any) -> Event:
    more.setdefault("kind", "batch")
    more.setdefault("profile", "small")
    return Event(Subject.JOB, happened, "alice", "news", status=status, at=T0, **more)


@pytest.mark.parametrize(
    ("event", "told"),
    [
        (job_event(Happened.ENDED, JobStatus.SUCCEEDED), NotifyEvent.SUCCEEDED),
        (job_event(Happened.ENDED, JobStatus.FAILED, exit_code=3), NotifyEvent.FAILED),
        (job_event(Happened.ENDED, JobStatus.FAILED, actor="jobs service"), NotifyEvent.FAILED),
        (job_event(Happened.ENDED, JobStatus.STOPPED, actor="alice"), None),  # a stop is no failure
        (job_event(Happened.ENDED, JobStatus.STOPPED), None),
        (job_event(Happened.RESTARTED, JobStatus.RUNNING, restarts=1), NotifyEvent.RESTARTED),
        (job_event(Happened.RESTARTED, JobStatus.PENDING, restarts=1, actor="alice"), None),
        (job_event(Happened.RESTARTED, JobStatus.PENDING, restarts=1, actor="admin"), None),
        # the local backend says a crash as waiting to run again, with one more restart
        (
            job_event(Happened.WAITING, JobStatus.PENDING, restarts=2, reason=Reason.RESTARTING),
            NotifyEvent.RESTARTED,
        ),
        (job_event(Happened.WAITING, JobStatus.PENDING, restarts=0, reason=Reason.RESTARTING), None),
        (job_event(Happened.WAITING, JobStatus.PENDING, restarts=2, reason=Reason.NEXT_RUN), None),
        (job_event(Happened.WAITING, JobStatus.PENDING, reason=Reason.WAITING_FOR_CAPACITY), None),
        (job_event(Happened.SUBMITTED, JobStatus.PENDING, actor="alice"), None),
        (job_event(Happened.STARTED, JobStatus.RUNNING), None),
        (job_event(Happened.DELETED, JobStatus.FAILED, actor="alice"), None),
        (Event(Subject.SERVER, Happened.ENDED, "alice", "", status=JobStatus.FAILED), None),
    ],
)
def test_which_events_are_told(event: Event, told: NotifyEvent | None) -> None:
    assert notify_event(event) is told


def test_an_event_told_again_is_not_told_twice() -> None:
    failed = job_event(Happened.ENDED, JobStatus.FAILED)
    assert notify_event(failed, JobMoment(JobStatus.RUNNING, 0)) is NotifyEvent.FAILED
    assert notify_event(failed, JobMoment.of(failed)) is None  # a finished job observed again
    assert notify_event(failed, JobMoment(JobStatus.PENDING, 0)) is NotifyEvent.FAILED  # after a restart
    crash = job_event(Happened.WAITING, JobStatus.PENDING, restarts=3, reason=Reason.CRASH_LOOP)
    assert notify_event(crash, JobMoment(JobStatus.RUNNING, 2)) is NotifyEvent.RESTARTED
    assert notify_event(crash, JobMoment(JobStatus.PENDING, 3)) is None  # its message changed, no restart
    running = job_event(Happened.STARTED, JobStatus.RUNNING, restarts=3)
    assert notify_event(running, JobMoment(JobStatus.PENDING, 3)) is None
    assert notify_event(running, JobMoment(JobStatus.PENDING, 2)) is NotifyEvent.RESTARTED


def test_the_settings_decide_whether_and_where() -> None:
    failed = job_event(Happened.ENDED, JobStatus.FAILED, exit_code=3)
    only_quiet = NotifySettings(email="a@b.org", events=frozenset({NotifyEvent.QUIET}))
    assert notification_for(failed, only_quiet) is None
    assert notification_for(failed, None) is None
    told = notification_for(failed, NotifySettings(webhook="http://127.0.0.1/h"))
    assert told is not None and (told.email, told.webhook, told.what) == (
        None,
        "http://127.0.0.1/h",
        "failed",
    )


# --- the words ----------------------------------------------------------------------------------------

KUBERNETES_WORDS = re.compile(
    r"\b(pods?|kubernetes|k8s|containers?|deployments?|cronjobs?|nodes?|namespaces?|oomkilled|"
    r"crashloopbackoff|kubelet|replicasets?|evicted by kubelet)\b",
    re.IGNORECASE,
)


def test_a_failure_in_plain_words_with_a_link() -> None:
    failed = job_event(
        Happened.ENDED,
        JobStatus.FAILED,
        exit_code=3,
        message="exited with code 3 (2 attempts)",
        reason=Reason.EXIT_CODE,
        detail={"platform": "BackoffLimitExceeded: Job has reached the specified backoff limit"},
    )
    told = notification_for(failed, EVERYWHERE, dashboard_url="http://127.0.0.1:8000/services/jobs/")
    assert told is not None
    assert told.subject == "Your batch job news failed"
    for words in (
        "exited with code 3 (2 attempts)",
        "Profile:     small",
        "Exit code:   3",
        "2026-03-02 09:30:00 UTC",
        "http://127.0.0.1:8000/services/jobs/jobs/news",
        '"failed"',
    ):
        assert words in told.text
    assert "BackoffLimit" not in told.text  # the platform's words are for admins
    assert "\n" not in told.subject and "\r" not in told.subject


def test_every_message_is_free_of_kubernetes_words() -> None:
    events = [
        job_event(Happened.ENDED, JobStatus.SUCCEEDED, message="completed"),
        job_event(Happened.ENDED, JobStatus.FAILED, message="ran out of memory (killed at its memory limit)"),
        job_event(
            Happened.RESTARTED, JobStatus.RUNNING, restarts=4, kind="scraper", message="its machine was lost"
        ),
    ]
    texts = []
    for event in events:
        told = notification_for(event, EVERYWHERE)
        assert told is not None
        texts += [told.subject, told.text, told.webhook_json()["text"]]
    scraper = ScraperActivity("alice", "news", 900, T0, profile="small")
    quiet = quiet_notification(scraper, EVERYWHERE, T0 + timedelta(minutes=16))
    assert quiet is not None
    texts += [quiet.subject, quiet.text]
    for text in texts:
        assert not KUBERNETES_WORDS.search(text), text
    assert "Your batch job news finished successfully" in texts[0]
    assert "restarted" in texts[6] and "Restarts:    4" in texts[7]


def test_a_quiet_scraper_in_words() -> None:
    scraper = ScraperActivity("alice", "news", 900, T0, profile="small")
    told = quiet_notification(scraper, EVERYWHERE, T0 + timedelta(minutes=16), "https://hub/services/jobs")
    assert told is not None and told.what is NotifyEvent.QUIET
    assert told.subject == "Your scraper news has gone quiet"
    assert "printed nothing for 16 minutes" in told.text and "quiet_after of 15 minutes" in told.text
    assert (
        "Last output: 2026-03-02 09:30:00 UTC" in told.text
        and "https://hub/services/jobs/jobs/news" in told.text
    )
    no_quiet = NotifySettings(email="a@b.org", events=frozenset({NotifyEvent.FAILED}))
    assert quiet_notification(scraper, no_quiet, T0 + timedelta(hours=1)) is None


def test_the_webhook_body_is_slack_text_that_cannot_mention_or_link() -> None:
    failed = job_event(
        Happened.ENDED, JobStatus.FAILED, message="exited: <!channel> & <https://evil.org|click>"
    )
    told = notification_for(failed, EVERYWHERE)
    assert told is not None
    body = told.webhook_json()
    assert list(body) == ["text"] and "<" not in body["text"] and ">" not in body["text"]
    assert "&lt;!channel&gt; &amp; &lt;https://evil.org|click&gt;" in body["text"]


def test_control_characters_a_job_printed_do_not_reach_the_message() -> None:
    failed = job_event(Happened.ENDED, JobStatus.FAILED, message="exited \x1b[31mred\x1b[0m\nBcc: x\u202e")
    told = notification_for(failed, EVERYWHERE)
    assert told is not None
    assert "\x1b" not in told.text and "\u202e" not in told.text and "Bcc: x" in told.text
    assert "exited  [31mred [0m Bcc: x" in told.text  # one line


# --- quiet scrapers --------------------------------------------------------------------------------------


def test_a_quiet_scraper_is_told_once_per_silence_and_a_new_line_rearms_it() -> None:
    news = ScraperActivity("alice", "news", 900, T0)
    busy = ScraperActivity("bob", "feed", 900, T0 + timedelta(minutes=10))
    now = T0 + timedelta(minutes=15)
    assert quiet_jobs([news, busy], {}, now - timedelta(seconds=1)) == []
    assert quiet_jobs([news, busy], {}, now) == [news]  # silent for exactly its quiet_after
    reported = {news.key: news.last_output}
    assert quiet_jobs([news, busy], reported, now + timedelta(hours=3)) == [busy]  # news told already
    printed_again = ScraperActivity("alice", "news", 900, T0 + timedelta(hours=1))
    assert quiet_jobs([printed_again], reported, T0 + timedelta(hours=1, minutes=14)) == []
    assert quiet_jobs([printed_again], reported, T0 + timedelta(hours=1, minutes=15)) == [printed_again]
