"""Sending notifications: by email (SMTP) and by webhook (Slack-compatible JSON), retried, in the background.

:class:`Notifier` observes lifecycle events (:mod:`jhub_ext.core.events`) and :class:`QuietWatcher`
finds scrapers that went quiet; :mod:`jhub_ext.core.notify` decides what each means and in which
words. Neither ever holds up or fails what published: the notifier only queues, and a background
task asks whose settings apply, then sends each message, trying again with a growing pause when
a mail server or receiver fails for a while, and logging the message it gave up on.

A webhook is posted without following redirects, without the environment's proxy, and only if
it is still within the admin's allowed prefixes when it is sent (they may have narrowed since the
user saved it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from enum import StrEnum
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from traitlets import Enum, Float, Integer, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from jhub_ext.core.events import Event, Happened, Subject
from jhub_ext.core.notify import (
    JobMoment,
    Notification,
    NotifyEvent,
    NotifySettings,
    ScraperActivity,
    budget_notification,
    job_notification,
    notify_event,
    parse_prefix,
    quiet_jobs,
    quiet_notification,
    webhook_allowed,
)
from jhub_ext.core.settings import env_default
from jhub_ext.core.usage import BudgetState

logger = logging.getLogger(__name__)

#: user, job name -> the settings that apply to that job (its own, else its owner's), or None
SettingsFor = Callable[[str, str], Awaitable[NotifySettings | None]]
#: the running scrapers that set ``quiet_after``, with when each last printed a line
ScraperLister = Callable[[], Awaitable[Iterable[ScraperActivity]]]
#: what a receiver answers when asking again later may work
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class SmtpSecurity(StrEnum):
    """How the connection to the mail server is protected."""

    NONE = "none"  # plain SMTP (a relay on the same host or network)
    STARTTLS = "starttls"  # plain, then upgraded to TLS (port 587)
    SSL = "ssl"  # TLS from the start (port 465)


@dataclass(frozen=True)
class SmtpConfig:
    """The admin's mail server, and the address notifications come from."""

    host: str
    port: int = 25
    sender: str = "jobs@localhost"
    security: SmtpSecurity = SmtpSecurity.NONE
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0  # seconds, for each step of one attempt


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed delivery is tried again (by default 5 attempts over
    about two and a half minutes: pauses of 10, 20, 40 and 80 seconds)."""

    attempts: int = 5
    first_wait: float = 10.0  # seconds before the second attempt; each pause doubles
    max_wait: float = 120.0


class DeliveryError(Exception):
    """A delivery that failed; ``transient`` if trying again later may work."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class _Budget:
    """A budget reached, to tell a member of its group about, in the catalog's currency."""

    state: BudgetState
    currency: str


@dataclass(frozen=True)
class _Pending:
    """Something to tell a user, waiting to be sent: about a job's event, or a quiet scraper."""

    what: NotifyEvent
    user: str
    name: str
    about: Event | ScraperActivity | _Budget
    at: datetime


@dataclass
class DeliveryCounts:
    """What the notifier has done since it started."""

    delivered: int = 0  # messages that reached a mail server or receiver
    failed: int = 0  # messages given up on
    dropped: int = 0  # notifications not queued: the queue was full, or the notifier stopping


class Notifier:
    """Tells users about their jobs (an observer of lifecycle events; see the module).

    ``settings_for(user, name)`` says where and of what the owner of a job is told; ``smtp`` is
    the mail server (None: no email is sent); ``allowed_prefixes`` the admin's webhook prefixes,
    checked again at each send (replace the attribute to narrow them); ``dashboard_url`` the jobs
    dashboard (``https://hub.example.org/services/jobs/``) that messages link to.
    """

    def __init__(
        self,
        settings_for: SettingsFor,
        *,
        smtp: SmtpConfig | None = None,
        allowed_prefixes: Sequence[str] = (),
        dashboard_url: str | None = None,
        retry: RetryPolicy | None = None,
        webhook_timeout: float = 10.0,
        max_queued: int = 1000,
        concurrency: int = 8,
    ):
        self.settings_for = settings_for
        self.smtp = smtp
        self.allowed_prefixes = tuple(allowed_prefixes)
        self.dashboard_url = dashboard_url
        self.retry = retry or RetryPolicy()
        self.webhook_timeout = webhook_timeout
        self.counts = DeliveryCounts()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(max_queued)
        self._slots = asyncio.Semaphore(concurrency)
        self._last: dict[tuple[str, str], JobMoment] = {}  # what the last event said of each job
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._http: SimpleAsyncHTTPClient | None = None
        self._stopping = False

    # --- what to tell: called by the publisher, never waits ------------------------------------------

    async def __call__(self, event: Event) -> None:
        """Queue what ``event`` tells its job's owner, if anything (see :func:`notify_event`)."""
        if event.subject is not Subject.JOB:
            return
        key = (event.user, event.name)
        before = self._last.get(key)
        if event.happened is Happened.DELETED:
            self._last.pop(key, None)
        else:
            self._last[key] = JobMoment.of(event)
        what = notify_event(event, before)
        if what is not None:
            self._enqueue(_Pending(what, event.user, event.name, event, event.at))

    def quiet(self, scraper: ScraperActivity, now: datetime) -> None:
        """Queue telling the owner of ``scraper`` that it went quiet (see :class:`QuietWatcher`)."""
        self._enqueue(_Pending(NotifyEvent.QUIET, scraper.user, scraper.name, scraper, now))

    def budget(self, user: str, state: BudgetState, currency: str, now: datetime) -> None:
        """Queue telling ``user`` that a group of theirs reached its budget's warning level, or spent
        it all (``state``)."""
        self._enqueue(_Pending(NotifyEvent.BUDGET, user, state.group, _Budget(state, currency), now))

    def _enqueue(self, pending: _Pending) -> None:
        if self._stopping:
            self.counts.dropped += 1
            logger.warning("Not telling %s of %s %s: notifications are stopping", pending.user, *_of(pending))
            return
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.counts.dropped += 1
            logger.error(
                "Not telling %s of %s %s: %d notifications wait already (is the mail server down?)",
                pending.user,
                *_of(pending),
                self._queue.qsize(),
            )

    # --- lifetime --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start sending what is queued, in the background."""
        if self._worker is None:
            self._stopping = False
            self._http = SimpleAsyncHTTPClient(force_instance=True, max_body_size=1024 * 1024)
            self._worker = asyncio.create_task(self._work(), name="notifier")

    async def idle(self) -> None:
        """Wait until every queued notification is sent or given up on."""
        await self._queue.join()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking notifications, send what is queued for up to ``timeout`` seconds, then give
        up on the rest (logged)."""
        self._stopping = True
        if self._worker is not None:
            try:
                await asyncio.wait_for(self.idle(), timeout)
            except TimeoutError:
                logger.error(
                    "Gave up on %d notifications not sent in time", self._queue.qsize() + len(self._tasks)
                )
            for task in (self._worker, *self._tasks):
                task.cancel()
            await asyncio.gather(self._worker, *self._tasks, return_exceptions=True)
            self._worker = None
        if self._http is not None:
            self._http.close()
            self._http = None

    async def _work(self) -> None:
        while True:
            pending = await self._queue.get()
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, pending: _Pending) -> None:
        try:
            notification = await self._compose(pending)
            if notification is not None:
                await asyncio.gather(*(self._deliver(notification, c) for c in ("email", "webhook")))
        except Exception:
            logger.exception("Could not tell %s of %s %s", pending.user, *_of(pending))
        finally:
            self._slots.release()
            self._queue.task_done()

    async def _compose(self, pending: _Pending) -> Notification | None:
        if isinstance(pending.about, _Budget):  # the user's own settings: not a job's
            settings = await self.settings_for(pending.user, "")
            budget = pending.about
            return budget_notification(
                pending.user, budget.state, settings, budget.currency, self.dashboard_url
            )
        settings = await self.settings_for(pending.user, pending.name)
        if isinstance(pending.about, ScraperActivity):
            return quiet_notification(pending.about, settings, pending.at, self.dashboard_url)
        return job_notification(pending.what, pending.about, settings, self.dashboard_url)

    # --- delivery --------------------------------------------------------------------------------------

    async def _deliver(self, notification: Notification, channel: str) -> None:
        """Send ``notification`` by ``channel`` if it has an address there, retrying transient failures."""
        address = notification.email if channel == "email" else notification.webhook
        if not address:
            return
        send = self.send_email if channel == "email" else self.post_webhook
        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.transient),
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_exponential(multiplier=self.retry.first_wait, max=self.retry.max_wait),
            reraise=True,
            before_sleep=functools.partial(_note, notification, channel),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await send(notification, address)
        except Exception as e:
            self.counts.failed += 1
            logger.error(
                "Gave up telling %s by %s that %s %s (%s): %s",
                notification.user,
                channel,
                notification.name,
                notification.what.value,
                _where(channel, address),
                e,
            )
            return
        self.counts.delivered += 1
        logger.info(
            "Told %s by %s that %s %s", notification.user, channel, notification.name, notification.what
        )

    async def send_email(self, notification: Notification, address: str) -> None:
        """Send ``notification`` to ``address`` through the admin's mail server (one attempt)."""
        if self.smtp is None:
            raise DeliveryError("no mail server is configured", transient=False)
        message = build_email(notification, address, self.smtp.sender)
        try:
            await asyncio.to_thread(send_smtp, self.smtp, message)
        except Exception as e:
            raise DeliveryError(f"{type(e).__name__}: {e}", transient=smtp_transient(e)) from e

    async def post_webhook(self, notification: Notification, url: str) -> None:
        """Post ``notification`` to ``url`` as Slack-compatible JSON (one attempt)."""
        if not webhook_allowed(url, self.allowed_prefixes):
            raise DeliveryError("the webhook is not within the allowed prefixes (any more)", transient=False)
        if self._http is None:
            raise DeliveryError("the notifier is not started", transient=False)
        request = HTTPRequest(
            url,
            method="POST",
            body=json.dumps(notification.webhook_json()),
            headers={"Content-Type": "application/json"},
            follow_redirects=False,
            connect_timeout=self.webhook_timeout,
            request_timeout=self.webhook_timeout,
            user_agent="jhub_ext jobs notifications",
        )
        try:
            response = await self._http.fetch(request, raise_error=False)
        except (HTTPClientError, OSError, TimeoutError) as e:
            raise DeliveryError(f"{type(e).__name__}: {e}", transient=True) from e
        if response.code >= 300:
            said = "a redirect, which is not followed" if 300 <= response.code < 400 else "an error"
            raise DeliveryError(
                f"the receiver answered {response.code} ({said})", transient=response.code in TRANSIENT_HTTP
            )


def _of(pending: _Pending) -> tuple[str, str]:
    return pending.name, pending.what.value


def _where(channel: str, address: str) -> str:
    """Where a message went, for logs: a webhook's scheme and host only (its path may be a secret)."""
    if channel == "webhook":
        parts = urlsplit(address)
        return f"{parts.scheme}://{parts.netloc}/..."
    return address


def _note(notification: Notification, channel: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    logger.warning(
        "Could not tell %s by %s that %s %s (attempt %d): %s; trying again",
        notification.user,
        channel,
        notification.name,
        notification.what.value,
        state.attempt_number,
        error,
    )


def build_email(notification: Notification, address: str, sender: str) -> EmailMessage:
    """The email telling ``notification`` to ``address``, from ``sender``."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = address
    message["Subject"] = notification.subject
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
    message.set_content(notification.text)
    return message


def send_smtp(config: SmtpConfig, message: EmailMessage) -> None:
    """Send ``message`` through the mail server of ``config`` (blocking: run it in a thread)."""
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if config.security is SmtpSecurity.SSL:
        smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
    else:
        smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with smtp:
        if config.security is SmtpSecurity.STARTTLS:
            smtp.starttls(context=context)
        if config.username:
            smtp.login(config.username, config.password or "")
        smtp.send_message(message)


def smtp_transient(error: BaseException) -> bool:
    """Whether a mail server's failure may pass: a lost or refused connection, a timeout, or a
    4xx answer; not a 5xx answer, a failed login or a certificate that does not verify."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return any(code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code < 500
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(error, (smtplib.SMTPException, ssl.SSLCertVerificationError)):
        return False
    return isinstance(error, (OSError, TimeoutError))


class QuietWatcher:
    """Tells the owners of scrapers that went quiet (see :func:`jhub_ext.core.notify.quiet_jobs`):
    :meth:`check` once, or :meth:`start` to check every ``interval`` seconds until :meth:`stop`."""

    def __init__(
        self,
        notifier: Notifier,
        scrapers: ScraperLister,
        *,
        interval: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.notifier = notifier
        self.scrapers = scrapers
        self.interval = interval
        self.clock = clock
        #: job -> the last output it was reported quiet after (a scraper no longer running is forgotten)
        self.reported: dict[tuple[str, str], datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def check(self) -> list[ScraperActivity]:
        """Tell of every scraper quiet now and not told of yet; the scrapers told of."""
        now = self.clock()
        running = list(await self.scrapers())
        quiet = quiet_jobs(running, self.reported, now)
        keys = {s.key for s in running}
        self.reported = {k: v for k, v in self.reported.items() if k in keys}
        for scraper in quiet:
            self.reported[scraper.key] = scraper.last_output
            self.notifier.quiet(scraper, now)
        return quiet

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:
                logger.exception("Could not check which scrapers went quiet")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Check every ``interval`` seconds, in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="quiet-watcher")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


class JobNotifications(LoggingConfigurable):
    """The admin's settings for telling users about their jobs (``c.JobNotifications``): the mail
    server, where webhooks may point, and how patiently a failed delivery is tried again."""

    smtp_host = Unicode(
        "",
        config=True,
        help="""
        The mail server notifications are sent through. Empty: no email is sent (webhooks still are).

        Example::

            c.JobNotifications.smtp_host = "smtp.example.org"
        """,
    )
    smtp_port = Integer(
        25,
        config=True,
        help="""
        The mail server's port: 25 for a relay, 587 with ``smtp_security = "starttls"``, 465 with "ssl".

        Example::

            c.JobNotifications.smtp_port = 587
        """,
    )
    smtp_security = Enum(
        [s.value for s in SmtpSecurity],
        default_value=SmtpSecurity.NONE.value,
        config=True,
        help="""
        How the connection to the mail server is protected: "none", "starttls" or "ssl".

        Example::

            c.JobNotifications.smtp_security = "starttls"
        """,
    )
    smtp_username = Unicode(
        "",
        config=True,
        help="""
        The user name to log in to the mail server with. Empty: no login.

        Example::

            c.JobNotifications.smtp_username = "jobs"
        """,
    )
    smtp_password = Unicode(
        config=True,
        help="""
        The password to log in to the mail server with. Default: $JHUB_EXT_SMTP_PASSWORD (keep it
        out of the config file).

        Example::

            c.JobNotifications.smtp_password = os.environ["SMTP_PASSWORD"]
        """,
    )
    _default_smtp_password = env_default("smtp_password", "JHUB_EXT_SMTP_PASSWORD")
    sender = Unicode(
        "jobs@localhost",
        config=True,
        help="""
        The address notifications come from.

        Example::

            c.JobNotifications.sender = "jupyterhub-jobs@example.org"
        """,
    )
    webhook_prefixes = List(
        Unicode(),
        config=True,
        help="""
        The URLs users' notification webhooks must start with (compared by scheme, host, port and
        whole path segments, never as plain text). A prefix without a port allows only its scheme's
        own (80 or 443); ``http://127.0.0.1:*`` allows any port of that host. Empty: no webhooks.
        Default: $JHUB_EXT_WEBHOOK_PREFIXES (separated by spaces).

        Example::

            c.JobNotifications.webhook_prefixes = ["https://hooks.slack.com/services/", "https://chat.example.org/hooks/"]
        """,
    )

    @validate("webhook_prefixes")
    def _check_prefixes(self, proposal: dict[str, list[str]]) -> list[str]:
        for prefix in proposal["value"]:
            try:
                parse_prefix(prefix)
            except ValueError as e:
                raise TraitError(f"c.JobNotifications.webhook_prefixes: {e}") from None
        return proposal["value"]

    _default_webhook_prefixes = env_default(
        "webhook_prefixes", "JHUB_EXT_WEBHOOK_PREFIXES", parse=lambda text: text.split()
    )
    public_url = Unicode(
        config=True,
        help="""
        The hub's address as users open it in their browser, for the links to a job's page in
        notifications. Empty: messages carry no link. Default: $JHUB_EXT_PUBLIC_URL.

        Example::

            c.JobNotifications.public_url = "https://hub.example.org"
        """,
    )
    _default_public_url = env_default("public_url", "JHUB_EXT_PUBLIC_URL")
    attempts = Integer(
        5,
        config=True,
        help="""
        How often a notification is tried before it is given up on (and the failure logged).

        Example::

            c.JobNotifications.attempts = 5
        """,
    )
    first_retry_seconds = Float(
        10.0,
        config=True,
        help="""
        The pause before a failed notification is tried again; each further pause doubles, up to
        two minutes.

        Example::

            c.JobNotifications.first_retry_seconds = 10
        """,
    )
    quiet_check_seconds = Float(
        60.0,
        config=True,
        help="""
        How often the service looks for scrapers that have printed nothing for their ``quiet_after``.

        Example::

            c.JobNotifications.quiet_check_seconds = 60
        """,
    )

    def notifier(self, settings_for: SettingsFor, service_prefix: str) -> Notifier:
        """A notifier with these settings, linking to the dashboard at ``service_prefix``."""
        smtp = None
        if self.smtp_host:
            smtp = SmtpConfig(
                self.smtp_host,
                self.smtp_port,
                self.sender,
                SmtpSecurity(self.smtp_security),
                self.smtp_username or None,
                self.smtp_password or None,
            )
        dashboard = f"{self.public_url.rstrip('/')}{service_prefix}" if self.public_url else None
        return Notifier(
            settings_for,
            smtp=smtp,
            allowed_prefixes=self.webhook_prefixes,
            dashboard_url=dashboard,
            retry=RetryPolicy(self.attempts, self.first_retry_seconds),
        )
