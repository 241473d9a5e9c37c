"""Notifications end to end: a real hub and jobs service in local mode tell users of their jobs' ends,
failures and crashes by email (to a real SMTP server, aiosmtpd) and webhook (a real HTTP receiver),
as each user set at ``api/settings`` or per job at submit; nobody sets or reads another's settings, no
webhook points outside the admin's prefixes, and a mail server that is down never affects a job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.jobs.model import JobStatus
from jhub_ext.local.backend import LocalJobBackend
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.notify import Notifier, QuietWatcher, RetryPolicy
from jhub_ext.service.store import JobStore

from ..conftest import SHIPPED_CATALOG, free_port
from ..hubprocess import HubProcess, wait_for
from ..receivers import Posts
from .test_jobs_service import PY, Jobs, token_for

pytestmark = pytest.mark.integration
HOOKS = ("http://127.0.0.1:*",)


class Mailbox:
    """What a real SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def to(self, address: str, subject_has: str) -> list[Message]:
        return [m for rcpt, m in self.messages if address in rcpt and subject_has in str(m["Subject"])]


@pytest.fixture(scope="module")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, mailbox: tuple[Mailbox, int], posts: tuple[Posts, int]
) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("notify"))
    config = (
        f'c.JobNotifications.smtp_host = "127.0.0.1"\n'
        f"c.JobNotifications.smtp_port = {mailbox[1]}\n"
        f'c.JobNotifications.sender = "jobs@hub.example.org"\n'
        f"c.JobNotifications.first_retry_seconds = 0.2\n"
    )
    with HubProcess(workdir, jobs_config=config) as process:
        yield process


@pytest.fixture(scope="module")
def users(hub: HubProcess) -> dict[str, Jobs]:
    jobs = {name: Jobs(hub, token_for(hub, name)) for name in ("alice", "bob", "admin")}
    wait_for(jobs["alice"].answers, 30, "the jobs service")
    return jobs


def test_settings_are_each_users_own_checked_and_kept(
    users: dict[str, Jobs], posts: tuple[Posts, int]
) -> None:
    alice, bob = users["alice"], users["bob"]
    assert alice.call("GET", "/settings").json() == {
        "notify": {
            "email": None,
            "webhook": None,
            "events": ["succeeded", "failed", "restarted", "quiet", "budget"],
        }
    }
    mine = {
        "email": "alice@example.org",
        "webhook": f"http://127.0.0.1:{posts[1]}/alice",
        "events": ["failed"],
    }
    saved = alice.call("PUT", "/settings", json={"notify": mine})
    assert saved.status_code == 200 and saved.json() == {"notify": mine}
    assert alice.call("GET", "/settings").json() == {"notify": mine}
    for bad, field in (
        ({"notify": {"webhook": "https://evil.example.org/x"}}, "notify.webhook"),
        ({"notify": {"webhook": "http://127.0.0.1.evil.org/x"}}, "notify.webhook"),
        ({"notify": {"email": "a@example.org\r\nBcc: all@example.org"}}, "notify.email"),
        ({"notify": {"events": ["everything"]}}, "notify.events"),
        ({"notify": {"email": "a@example.org"}, "user": "bob"}, "notify"),
    ):
        refused = alice.call("PUT", "/settings", json=bad)
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.text
    assert alice.call("GET", "/settings").json() == {"notify": mine}  # nothing changed
    # bob can neither read nor write alice's; an admin can read them
    assert bob.call("GET", "/settings?user=alice").status_code == 403
    assert bob.call("PUT", "/settings?user=alice", json={"notify": {"events": []}}).status_code == 403
    assert users["admin"].call("GET", "/settings?user=alice").json() == {"notify": mine}
    refused = bob.submit(
        name="x", kind="batch", command=["true"], notify={"webhook": "https://evil.example.org"}
    )
    assert refused.status_code == 400 and refused.json()["field"] == "notify.webhook"


def test_a_failed_job_is_told_by_email_and_webhook_and_a_job_may_ask_for_less(
    users: dict[str, Jobs], mailbox: tuple[Mailbox, int], posts: tuple[Posts, int]
) -> None:
    box, (found, port) = mailbox[0], posts
    bob = users["bob"]
    hook = f"http://127.0.0.1:{port}/bob"
    settings = {"email": "bob@example.org", "webhook": hook, "events": ["succeeded", "failed", "restarted"]}
    assert bob.call("PUT", "/settings", json={"notify": settings}).status_code == 200
    code = "print('reading input'); raise SystemExit(3)"
    assert bob.submit(name="told", kind="batch", command=[PY, "-c", code], retries=0).status_code == 201
    assert (
        bob.submit(
            name="untold", kind="batch", command=[PY, "-c", code], retries=0, notify={"events": []}
        ).status_code
        == 201
    )
    bob.wait_status("told", "failed")
    bob.wait_status("untold", "failed")
    (mail,) = wait_for(lambda: box.to("bob@example.org", "told") or None, 20, "the email")
    assert mail["Subject"] == "Your batch job told failed" and mail["From"] == "jobs@hub.example.org"
    body = mail.get_payload()
    assert "exited with code 3" in body and "Exit code:   3" in body
    assert "http://127.0.0.1:" in body and "/services/jobs/jobs/told" in body
    (text,) = wait_for(lambda: [t for t in found.texts("/bob") if "told" in t] or None, 20, "the webhook")
    assert text.startswith("Your batch job told failed.")
    assert not box.to("bob@example.org", "untold") and not [t for t in found.texts("/bob") if "untold" in t]
    for name in ("told", "untold"):
        bob.call("DELETE", f"/jobs/{name}")


def test_a_scraper_restarted_after_a_crash_is_told_and_a_stop_is_not(
    users: dict[str, Jobs], posts: tuple[Posts, int]
) -> None:
    found, port = posts
    alice = users["alice"]
    hook = f"http://127.0.0.1:{port}/alice-crash"
    notify = {"webhook": hook, "events": ["restarted", "failed", "succeeded"]}
    code = "import time; print('up', flush=True); time.sleep(0.5); raise SystemExit(1)"
    assert (
        alice.submit(name="crashy", kind="scraper", command=[PY, "-c", code], notify=notify).status_code
        == 201
    )
    told = wait_for(lambda: found.texts("/alice-crash") or None, 60, "the restart to be told")
    assert "Your scraper crashy was restarted after it stopped unexpectedly." in told[0]
    assert alice.call("POST", "/jobs/crashy/stop").status_code == 200
    alice.call("DELETE", "/jobs/crashy")
    # each message tells a restart; the owner's stop is not told (it is neither a success nor a failure)
    headline = "Your scraper crashy was restarted after it stopped unexpectedly."
    assert all(text.startswith(headline) for text in found.texts("/alice-crash"))


async def test_a_scraper_that_goes_quiet_is_told_once_per_silence(
    tmp_path: Path, posts: tuple[Posts, int]
) -> None:
    """The service's own parts, in this process, on the real local backend: the clock is moved on
    instead of waiting the shortest quiet_after (a minute)."""
    found, port = posts
    backend = LocalJobBackend(jobs_dir=str(tmp_path / "jobs"), poll_interval=0.05)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    manager = JobManager(store, backend, CatalogSource(SHIPPED_CATALOG), None, webhook_prefixes=HOOKS)
    notifier = Notifier(manager.settings_for, allowed_prefixes=HOOKS, retry=RetryPolicy(2, 0.01))
    now = [datetime.now(UTC)]
    watcher = QuietWatcher(notifier, manager.watched_scrapers, clock=lambda: now[0])
    alice = Caller("alice", frozenset({"researchers"}), admin=False)
    manager.save_notify_settings(alice, None, {"notify": {"webhook": f"http://127.0.0.1:{port}/quiet"}})
    code = "import time; print('fetched page 1', flush=True); time.sleep(600)"
    await backend.start()
    await notifier.start()
    try:
        body = {"name": "news", "kind": "scraper", "command": [PY, "-c", code], "quiet_after": 60}
        await manager.submit(alice, body)

        async def printed() -> datetime | None:
            record = store.get("alice", "news")
            running = record is not None and record.status is JobStatus.RUNNING
            return await backend.last_output("alice", "news") if running else None

        for _ in range(200):
            if last := await printed():
                break
            await asyncio.sleep(0.05)
        assert last is not None
        now[0] = last + timedelta(seconds=30)
        assert await watcher.check() == []  # not quiet for long enough yet
        now[0] = last + timedelta(seconds=61)
        (told,) = await watcher.check()
        assert (told.name, told.quiet_after) == ("news", 60)
        now[0] = last + timedelta(seconds=600)
        assert await watcher.check() == []  # told once for this silence
        await notifier.idle()
        (text,) = found.texts("/quiet")
        assert text.startswith("Your scraper news has gone quiet.")
        assert "printed nothing for 1 minute, longer than its quiet_after of 1 minute" in text
    finally:
        await notifier.stop()
        await manager.delete(alice, "alice", "news")
        await backend.shutdown()
        store.close()
