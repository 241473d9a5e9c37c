"""Notifications, delivered: real lifecycle events reach a real SMTP server (aiosmtpd) and a real
webhook receiver (tornado) on 127.0.0.1, with the right words; failures are retried and never reach
the publisher; a webhook outside the admin's prefixes is never contacted, nor a redirect followed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application, RequestHandler

from jhub_ext.core.events import Event, Events, Happened, Subject
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.notify import NotifyEvent, NotifySettings, ScraperActivity
from jhub_ext.service.notify import Notifier, QuietWatcher, RetryPolicy, SmtpConfig

from ..conftest import free_port

QUICK = RetryPolicy(attempts=3, first_wait=0.01, max_wait=0.05)
DASHBOARD = "http://127.0.0.1:8000/services/jobs/"


# --- a real mail server and a real webhook receiver ----------------------------------------------------


class Mailbox:
    """An aiosmtpd handler keeping what it receives; it may answer "try later" to the first few."""

    def __init__(self, refuse_first: int = 0):
        self.refuse_first = refuse_first
        self.attempts = 0
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.attempts += 1
        if self.attempts <= self.refuse_first:
            return "451 4.3.0 busy, try again later"
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_port() -> int:
    return free_port()


def mail_server(mailbox: Mailbox, port: int) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@pytest.fixture
def mailbox(smtp_port: int) -> Iterator[Mailbox]:
    box = Mailbox()
    controller = mail_server(box, smtp_port)
    yield box
    controller.stop()


@dataclass
class Receiver:
    """A webhook receiver: what each path was sent, and how it answers."""

    port: int = 0
    posts: dict[str, list[Any]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # path -> how many times to answer 503

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


class Hook(RequestHandler):
    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def post(self, path: str) -> None:
        self.receiver.posts.setdefault(path, []).append(json.loads(self.request.body))
        if path == "/hooks/moved":
            self.redirect("/hooks/target", status=307)
        elif self.receiver.failures.get(path, 0) > 0:
            self.receiver.failures[path] -= 1
            self.set_status(503)
        else:
            self.write("ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    sock, receiver.port = bind_unused_port()
    server = HTTPServer(Application([(r"(/.*)", Hook, {"receiver": receiver})]))
    server.add_sockets([sock])
    yield receiver
    server.stop()
    await server.close_all_connections()


# --- the notifier under test ---------------------------------------------------------------------------


class Settings:
    """The settings the service would look up: by user, whatever the job."""

    def __init__(self, **by_user: NotifySettings):
        self.by_user = by_user
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, user: str, name: str) -> NotifySettings | None:
        self.asked.append((user, name))
        return self.by_user.get(user)


@pytest.fixture
async def make_notifier(receiver: Receiver, smtp_port: int) -> AsyncIterator[Any]:
    made: list[Notifier] = []

    async def make(settings: Settings, **options: Any) -> Notifier:
        options.setdefault(
            "smtp", SmtpConfig("127.0.0.1", smtp_port, sender="jobs@hub.example.org", timeout=5)
        )
        options.setdefault("allowed_prefixes", [receiver.url("/hooks")])
        options.setdefault("retry", QUICK)
        notifier = Notifier(settings, dashboard_url=DASHBOARD, webhook_timeout=5, **options)
        await notifier.start()
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        await notifier.stop(timeout=5)


class LogWatch(logging.Handler):
    """Sets ``seen`` once a record of the notifier's log contains ``text``."""

    def __init__(self, text: str):
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def log_watch() -> Iterator[Any]:
    logger = logging.getLogger("jhub_ext.service.notify")
    watches: list[LogWatch] = []

    def watch(text: str) -> LogWatch:
        watches.append(LogWatch(text))
        logger.addHandler(watches[-1])
        return watches[-1]

    yield watch
    for w in watches:
        logger.removeHandler(w)


def failed(user: str = "alice", name: str = "news", **more: Any) -> Event:
    facts: dict[str, Any] = {
        "status": JobStatus.FAILED,
        "message": "exited with code 3 (2 attempts)",
        "reason": Reason.EXIT_CODE,
        "exit_code": 3,
        "kind": "batch",
        "profile": "small",
    }
    return Event(Subject.JOB, Happened.ENDED, user, name, **{**facts, **more})


def alice(**more: Any) -> NotifySettings:
    return NotifySettings(email="alice@example.org", **more)


# --- delivery ------------------------------------------------------------------------------------------


async def test_a_failed_job_reaches_its_owner_by_email_and_webhook(
    make_notifier: Any, mailbox: Mailbox, receiver: Receiver
) -> None:
    settings = Settings(alice=alice(webhook=receiver.url("/hooks/alice")))
    notifier = await make_notifier(settings)
    events = Events([notifier])
    assert await events.publish(failed())
    await notifier.idle()
    [(to, message)] = mailbox.messages
    assert to == ["alice@example.org"] and message["To"] == "alice@example.org"
    assert message["From"] == "jobs@hub.example.org" and message["Subject"] == "Your batch job news failed"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_payload(decode=True).decode()
    assert "exited with code 3 (2 attempts)" in body and f"{DASHBOARD}jobs/news" in body
    [posted] = receiver.posts["/hooks/alice"]
    assert list(posted) == ["text"] and "Your batch job news failed" in posted["text"]
    assert settings.asked == [("alice", "news")] and notifier.counts.delivered == 2


async def test_only_what_the_settings_ask_for_is_sent_and_only_to_the_owner(
    make_notifier: Any, mailbox: Mailbox, receiver: Receiver
) -> None:
    settings = Settings(
        alice=alice(events=frozenset({NotifyEvent.SUCCEEDED})),
        bob=NotifySettings(email="bob@example.org"),
    )
    notifier = await make_notifier(settings)
    events = Events([notifier])
    await events.publish(failed())  # alice is not told of failures
    await events.publish(failed(actor="alice", status=JobStatus.STOPPED))  # a stop is no failure
    await events.publish(failed("bob", "feed"))
    await events.publish(failed("bob", "feed"))  # observed again: told once
    await events.publish(failed("carol", "x"))  # carol has no settings
    await notifier.idle()
    assert [to for to, _ in mailbox.messages] == [["bob@example.org"]]
    assert receiver.posts == {}


async def test_a_crash_restart_is_told_and_a_restart_the_owner_asked_for_is_not(
    make_notifier: Any, mailbox: Mailbox
) -> None:
    notifier = await make_notifier(Settings(alice=alice()))
    events = Events([notifier])
    scraper = {"kind": "scraper", "profile": "small"}
    await events.publish(
        Event(Subject.JOB, Happened.STARTED, "alice", "news", status=JobStatus.RUNNING, **scraper)
    )
    await events.publish(
        Event(
            Subject.JOB,
            Happened.WAITING,
            "alice",
            "news",
            status=JobStatus.PENDING,
            message="exited with code 1; restarting in 2s",
            reason=Reason.RESTARTING,
            restarts=1,
            **scraper,
        )
    )
    await events.publish(
        Event(
            Subject.JOB,
            Happened.RESTARTED,
            "alice",
            "news",
            status=JobStatus.PENDING,
            actor="alice",
            restarts=2,
        )
    )
    await notifier.idle()
    [(_, message)] = mailbox.messages
    assert message["Subject"] == "Your scraper news was restarted after it stopped unexpectedly"
    assert "exited with code 1; restarting in 2s" in message.get_payload(decode=True).decode()


async def test_a_receiver_that_fails_twice_gets_the_message_on_the_third_attempt(
    make_notifier: Any, receiver: Receiver, log_watch: Any
) -> None:
    receiver.failures["/hooks/flaky"] = 2
    retried = log_watch("trying again")
    notifier = await make_notifier(Settings(alice=NotifySettings(webhook=receiver.url("/hooks/flaky"))))
    await Events([notifier]).publish(failed())
    await notifier.idle()
    assert len(receiver.posts["/hooks/flaky"]) == 3 and retried.seen.is_set()
    assert (notifier.counts.delivered, notifier.counts.failed) == (1, 0)


async def test_a_mail_server_that_says_try_later_is_tried_again(make_notifier: Any, smtp_port: int) -> None:
    box = Mailbox(refuse_first=2)
    controller = mail_server(box, smtp_port)
    try:
        notifier = await make_notifier(Settings(alice=alice()))
        await Events([notifier]).publish(failed())
        await notifier.idle()
    finally:
        controller.stop()
    assert box.attempts == 3 and len(box.messages) == 1


async def test_a_mail_server_that_is_down_never_holds_up_the_publisher_and_is_retried(
    make_notifier: Any, smtp_port: int, log_watch: Any
) -> None:
    retried = log_watch("trying again")
    patient = RetryPolicy(attempts=50, first_wait=0.02, max_wait=0.1)
    notifier = await make_notifier(Settings(alice=alice()), retry=patient)
    heard: list[Event] = []
    events = Events([notifier, heard.append])  # an observer after the notifier still hears
    started = time.monotonic()
    assert await events.publish(failed())
    assert time.monotonic() - started < 0.5 and len(heard) == 1
    await asyncio.wait_for(retried.seen.wait(), 10)  # at least one attempt failed: nothing listens
    box = Mailbox()
    controller = mail_server(box, smtp_port)  # the mail server comes back
    try:
        await asyncio.wait_for(notifier.idle(), 20)
    finally:
        controller.stop()
    assert len(box.messages) == 1 and notifier.counts.delivered == 1


async def test_a_delivery_given_up_on_is_logged_and_the_job_is_not_affected(
    make_notifier: Any, log_watch: Any
) -> None:
    gave_up = log_watch("Gave up telling alice by email that news failed")
    notifier = await make_notifier(Settings(alice=alice()))  # nothing listens on the SMTP port
    assert await Events([notifier]).publish(failed())
    await notifier.idle()
    assert gave_up.seen.is_set() and (notifier.counts.delivered, notifier.counts.failed) == (0, 1)


async def test_a_webhook_outside_the_allowed_prefixes_is_never_contacted(
    make_notifier: Any, receiver: Receiver, log_watch: Any
) -> None:
    refused = log_watch("not within the allowed prefixes")
    settings = Settings(
        alice=NotifySettings(webhook=receiver.url("/outside")),
        bob=NotifySettings(webhook=f"http://127.0.0.1:{receiver.port}@127.0.0.2/hooks"),
    )
    notifier = await make_notifier(settings)
    events = Events([notifier])
    await events.publish(failed())
    await events.publish(failed("bob", "feed"))
    await notifier.idle()
    assert receiver.posts == {} and refused.seen.is_set() and notifier.counts.failed == 2


async def test_prefixes_narrowed_after_the_settings_were_saved_apply_at_send_time(
    make_notifier: Any, receiver: Receiver
) -> None:
    notifier = await make_notifier(Settings(alice=NotifySettings(webhook=receiver.url("/hooks/alice"))))
    notifier.allowed_prefixes = (receiver.url("/hooks/team"),)
    await Events([notifier]).publish(failed())
    await notifier.idle()
    assert receiver.posts == {} and notifier.counts.failed == 1


async def test_a_redirect_from_the_receiver_is_not_followed(
    make_notifier: Any, receiver: Receiver, log_watch: Any
) -> None:
    said = log_watch("a redirect, which is not followed")
    notifier = await make_notifier(Settings(alice=NotifySettings(webhook=receiver.url("/hooks/moved"))))
    await Events([notifier]).publish(failed())
    await notifier.idle()
    assert len(receiver.posts["/hooks/moved"]) == 1  # tried once: a redirect is no passing failure
    assert "/hooks/target" not in receiver.posts and said.seen.is_set()


async def test_stopping_gives_up_on_what_is_still_failing_within_its_time(
    make_notifier: Any, receiver: Receiver
) -> None:
    receiver.failures["/hooks/down"] = 10**6
    patient = RetryPolicy(attempts=1000, first_wait=0.05, max_wait=0.05)
    notifier = await make_notifier(
        Settings(alice=NotifySettings(webhook=receiver.url("/hooks/down"))), retry=patient
    )
    await Events([notifier]).publish(failed())
    started = time.monotonic()
    await notifier.stop(timeout=0.3)
    assert time.monotonic() - started < 3
    assert receiver.posts["/hooks/down"]  # it was being tried


# --- quiet scrapers ------------------------------------------------------------------------------------


async def test_a_quiet_scraper_is_told_once_until_it_prints_again(
    make_notifier: Any, mailbox: Mailbox
) -> None:
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    clock = {"now": start}
    running = {"news": ScraperActivity("alice", "news", 600, start, profile="small")}

    async def scrapers() -> list[ScraperActivity]:
        return list(running.values())

    notifier = await make_notifier(Settings(alice=alice()))
    watcher = QuietWatcher(notifier, scrapers, clock=lambda: clock["now"])
    assert await watcher.check() == []
    clock["now"] = start + timedelta(minutes=11)
    assert [s.name for s in await watcher.check()] == ["news"]
    clock["now"] = start + timedelta(minutes=30)
    assert await watcher.check() == []  # told once per silence
    running["news"] = ScraperActivity("alice", "news", 600, start + timedelta(minutes=31))  # a new line
    clock["now"] = start + timedelta(minutes=42)
    assert [s.name for s in await watcher.check()] == ["news"]
    await notifier.idle()
    subjects = [message["Subject"] for _, message in mailbox.messages]
    assert subjects == ["Your scraper news has gone quiet"] * 2
    assert "printed nothing for 11 minutes" in mailbox.messages[0][1].get_payload(decode=True).decode()
