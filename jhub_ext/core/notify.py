"""Notifications: who is told what about their jobs, where, and in which words.

A user is told by email, by webhook (Slack-compatible JSON), or both, when a job of theirs
``succeeded``, ``failed``, was ``restarted`` by the platform after it ended unexpectedly, or (a
scraper) went ``quiet``: printed no line for the ``quiet_after`` seconds it set. Their settings
(``{"email": ..., "webhook": ..., "events": [...]}``) are parsed here with the same care as a
submission: every refusal is a :class:`JobSpecError` naming the field and the fix. A webhook may only
point where the admin allows (their URL prefixes, matched at URL boundaries, never as plain text).

Pure: no I/O. :mod:`jhub_ext.service.notify` delivers what this decides.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from jhub_ext.core.events import Event, Happened, Subject
from jhub_ext.core.jobs.model import JobSpecError, JobStatus
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.core.usage import BudgetLevel, BudgetState, month_words


class NotifyEvent(StrEnum):
    """What a user may be told about a job of theirs."""

    SUCCEEDED = "succeeded"  # it finished, successfully
    FAILED = "failed"  # it finished, failed (a stop is not a failure)
    RESTARTED = "restarted"  # the platform ran it again after it ended unexpectedly
    QUIET = "quiet"  # a scraper printed nothing for its ``quiet_after``
    BUDGET = "budget"  # a group of theirs reached its budget's ``warn_at``, or spent it all


#: what a user who gives an address but no ``events`` is told of: everything. ``quiet`` only ever
#: concerns scrapers that set ``quiet_after``, and ``succeeded`` is what the owner of a long batch
#: job waits for, so none of them is noise by default.
DEFAULT_EVENTS = frozenset(NotifyEvent)
NOTIFY_FIELDS = ("email", "webhook", "events")
MAX_EMAIL_LENGTH = 254  # RFC 5321's longest path, less its angle brackets
MAX_LOCAL_PART_LENGTH = 64
MAX_WEBHOOK_LENGTH = 2048

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: one plain address: a dot-atom local part, at a domain of two labels or more (ASCII only)
EMAIL_RE = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+", re.ASCII)
_URL_CHARACTERS = re.compile(r"[!-~]+", re.ASCII)  # printable ASCII, no space
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ANY_PORT = re.compile(r"([A-Za-z]+://[^/?#]*):\*([/?#].*)?", re.ASCII | re.DOTALL)  # a prefix's host:*


@dataclass(frozen=True)
class NotifySettings:
    """Where one user (or one job) is told, and of what; no address means never."""

    email: str | None = None
    webhook: str | None = None
    events: frozenset[NotifyEvent] = DEFAULT_EVENTS

    def wants(self, what: NotifyEvent) -> bool:
        """Whether ``what`` is to be told somewhere."""
        return bool(self.email or self.webhook) and what in self.events

    def to_json(self) -> dict[str, Any]:
        """The settings as the API shows them; :func:`parse_notify` reads them back."""
        return {
            "email": self.email,
            "webhook": self.webhook,
            "events": [e.value for e in NotifyEvent if e in self.events],
        }


# --- parsing ------------------------------------------------------------------------------------


def parse_notify(body: Any, allowed_prefixes: Sequence[str], field: str = "notify") -> NotifySettings:
    """Validate notification settings (parsed JSON; None clears them all).

    ``allowed_prefixes`` are the admin's webhook URL prefixes (see :func:`webhook_allowed`). An
    empty or null ``email`` or ``webhook`` clears it; a missing or null ``events`` means
    :data:`DEFAULT_EVENTS`, an empty list none. Raise :class:`JobSpecError` naming the field.
    """
    if body is None:
        return NotifySettings()
    if not isinstance(body, Mapping):
        raise JobSpecError(
            field,
            f'{field} must be an object such as {{"email": "you@example.org", "events": ["failed"]}}',
        )
    unknown = sorted(str(k) for k in body if k not in NOTIFY_FIELDS)
    if unknown:
        raise JobSpecError(
            f"{field}.{unknown[0][:60]}",
            f"unknown field '{unknown[0][:60]}' in {field}; the fields are: {', '.join(NOTIFY_FIELDS)}",
        )
    return NotifySettings(
        email=parse_email(body.get("email"), f"{field}.email"),
        webhook=parse_webhook(body.get("webhook"), allowed_prefixes, f"{field}.webhook"),
        events=_parse_events(body.get("events"), f"{field}.events"),
    )


def parse_job_notify(body: Any, allowed_prefixes: Sequence[str], field: str = "notify") -> dict[str, Any]:
    """Validate a submission's own ``notify`` (as :func:`parse_notify`), keeping only what it gives:
    what it leaves out is its owner's (see :func:`for_job`). ``{}`` for none."""
    if body is None:
        return {}
    parsed = parse_notify(body, allowed_prefixes, field).to_json()
    return {key: parsed[key] for key in NOTIFY_FIELDS if key in body}


def for_job(owner: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> NotifySettings | None:
    """The settings that apply to a job, from what was saved (both checked by :func:`parse_notify`
    then): what it gave at submit (``own``, from :func:`parse_job_notify`) over its owner's
    settings, field by field; None if neither says anything."""
    if not owner and not own:
        return None
    merged = {**(owner or {}), **(own or {})}
    events = merged.get("events")
    known = {e.value for e in NotifyEvent}  # a code a later release saved is left out, not fatal
    return NotifySettings(
        email=merged.get("email") or None,
        webhook=merged.get("webhook") or None,
        events=DEFAULT_EVENTS if events is None else frozenset(NotifyEvent(e) for e in events if e in known),
    )


def parse_email(value: Any, field: str = "notify.email") -> str | None:
    """One plain address such as ``you@example.org`` (no name, no second address); None if empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise JobSpecError(field, f'{field} must be an address such as "you@example.org", or null')
    if len(value) > MAX_EMAIL_LENGTH or len(value.partition("@")[0]) > MAX_LOCAL_PART_LENGTH:
        raise JobSpecError(
            field,
            f"{field} is too long: an address has at most {MAX_EMAIL_LENGTH} characters, "
            f"{MAX_LOCAL_PART_LENGTH} before the @",
        )
    if not EMAIL_RE.fullmatch(value):
        raise JobSpecError(
            field,
            f"{field} must be one plain address such as you@example.org: no name or <>, no spaces, "
            "commas or line breaks, and a domain with a dot",
        )
    return value


def parse_webhook(value: Any, allowed_prefixes: Sequence[str], field: str = "notify.webhook") -> str | None:
    """A webhook URL the admin allows (see :func:`webhook_allowed`); None if empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise JobSpecError(field, f'{field} must be a URL such as "https://hooks.example.org/...", or null')
    if len(value) > MAX_WEBHOOK_LENGTH:
        raise JobSpecError(
            field, f"{field} is longer than {MAX_WEBHOOK_LENGTH} characters; use a shorter URL"
        )
    problem = webhook_problem(value)
    if problem is not None:
        raise JobSpecError(field, f"{field} {problem}")
    if not allowed_prefixes:
        raise JobSpecError(field, f"{field}: the admin allows no webhooks here; leave it out or use email")
    if not webhook_allowed(value, allowed_prefixes):
        raise JobSpecError(
            field, f"{field} must start with one of the URLs the admin allows: {', '.join(allowed_prefixes)}"
        )
    return value


def _parse_events(value: Any, field: str) -> frozenset[NotifyEvent]:
    if value is None:
        return DEFAULT_EVENTS
    names = ", ".join(e.value for e in NotifyEvent)
    if not isinstance(value, list) or len(value) > 4 * len(NotifyEvent):
        raise JobSpecError(field, f'{field} must be a short list such as ["failed", "quiet"], of: {names}')
    events: set[NotifyEvent] = set()
    for item in value:
        try:
            events.add(NotifyEvent(item))
        except (ValueError, TypeError):
            raise JobSpecError(field, f"'{str(item)[:40]}' is not an event; choose among: {names}") from None
    return frozenset(events)


# --- webhook URLs and the admin's prefixes ---------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """A URL cut where it is compared: scheme, host, port and path segments. A prefix's port may be
    None: any port (``:*``)."""

    scheme: str
    host: str
    port: int | None
    segments: tuple[str, ...]

    def covers(self, other: _Place) -> bool:
        """Whether URLs at ``other`` start with this prefix, at URL boundaries."""
        if (self.scheme, self.host) != (other.scheme, other.host):
            return False
        if self.port is not None and self.port != other.port:
            return False
        return other.segments[: len(self.segments)] == self.segments


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError("is not a valid URL") from None
    return parts


def _place(parts: SplitResult, any_port: bool = False) -> _Place:
    scheme = parts.scheme.lower()
    port = None if any_port else parts.port or _DEFAULT_PORTS[scheme]
    segments = tuple(s for s in parts.path.split("/") if s)
    return _Place(scheme, (parts.hostname or "").lower(), port, segments)


def _url_problem(url: str) -> tuple[str | None, SplitResult | None]:
    """Why ``url`` cannot be a webhook or one of the admin's prefixes (else None), and its parts."""
    if not _URL_CHARACTERS.fullmatch(url) or "\\" in url:
        return "must be plain ASCII with no spaces, backslashes or control characters", None
    try:
        parts = _split(url)
    except ValueError as e:
        return str(e), None
    if parts.scheme.lower() not in _DEFAULT_PORTS:
        return "must be an http:// or https:// URL", None
    if not parts.hostname:
        return "must name a host, such as https://hooks.example.org/...", None
    if parts.username is not None or parts.password is not None:
        return "must not carry a user name or password before the host (no user:password@)", None
    if "#" in url:
        return "must not have a #fragment", None
    if any(unquote(s) in (".", "..") for s in parts.path.split("/")):
        return "must not have . or .. in its path", None
    return None, parts


def webhook_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook whatever the admin allows, in words after its name; or None."""
    return _url_problem(url)[0]


def _prefix_problem(prefix: str) -> tuple[str | None, _Place | None]:
    any_port = _ANY_PORT.fullmatch(prefix)
    problem, parts = _url_problem(any_port.expand(r"\1\2") if any_port else prefix)
    if problem is None and parts is not None and parts.query:
        problem = "must not have a ?query"
    if problem is not None or parts is None:
        return problem, None
    if any_port and parts.port is not None:
        return "gives two ports", None
    return None, _place(parts, any_port=bool(any_port))


def parse_prefix(prefix: str) -> None:
    """Check one of the admin's webhook prefixes; ValueError saying what is wrong with it."""
    problem, _ = _prefix_problem(prefix)
    if problem is not None:
        raise ValueError(f"the webhook prefix {prefix!r} {problem}")


def webhook_allowed(url: str, allowed_prefixes: Iterable[str]) -> bool:
    """Whether ``url`` starts with one of ``allowed_prefixes`` at a URL boundary.

    Scheme, host and port are compared parsed: ``http://127.0.0.1`` allows ``http://127.0.0.1/x`` and
    ``http://127.0.0.1:80/x``, not ``http://127.0.0.1:8080/x`` (a prefix without a port means the
    scheme's own; ``http://127.0.0.1:*`` allows any port), nor ``http://127.0.0.1.evil.org/`` or
    ``http://127.0.0.1@evil.org``. Then the path, by whole segments:
    ``https://hooks.example.org/services/T1`` allows ``.../services/T1/B2``, not ``.../services/T12``.
    A prefix that is not valid itself (see :func:`parse_prefix`) allows nothing.
    """
    problem, parts = _url_problem(url)
    if problem is not None or parts is None:
        return False
    place = _place(parts)
    prefixes = (_prefix_problem(prefix)[1] for prefix in allowed_prefixes)
    return any(prefix is not None and prefix.covers(place) for prefix in prefixes)


# --- which lifecycle events are told ---------------------------------------------------------------


@dataclass(frozen=True)
class JobMoment:
    """What the last event told of a job (to tell a change from an event told again)."""

    status: JobStatus | None
    restarts: int

    @classmethod
    def of(cls, event: Event) -> JobMoment:
        """The job as ``event`` leaves it."""
        return cls(event.status, event.restarts)


#: why a job waits that says its last run ended and it runs again (a crash, a lost machine...),
#: as opposed to waiting for its first run, for room, or for its next scheduled time
RUNS_AGAIN = frozenset(
    {
        Reason.RESTARTING,
        Reason.CRASH_LOOP,
        Reason.NODE_LOST,
        Reason.EXIT_CODE,
        Reason.OUT_OF_MEMORY,
        Reason.EVICTED,
        Reason.FAILED,
        Reason.CANNOT_START,
        Reason.DEADLINE_EXCEEDED,
    }
)


def notify_event(event: Event, before: JobMoment | None = None) -> NotifyEvent | None:
    """What a lifecycle event of a job tells its owner, if anything, given ``before``: what the
    previous event of the same job said (None: not known).

    Ended ``succeeded`` or ``failed`` (a stop is neither); ``restarted`` when the platform ran it
    again after a run ended unexpectedly (no actor; said as ``restarted``, or as waiting to run
    again with one more restart, as the local backend says it): a restart someone asked for is not
    told. An event that repeats what ``before`` said is not told again. ``quiet`` is never an event:
    the quiet watcher tells it (:func:`quiet_jobs`).
    """
    if event.subject is not Subject.JOB:
        return None
    if event.happened is Happened.ENDED:
        if event.previous is event.status or (before is not None and before.status is event.status):
            return None  # a finished job observed again
        if event.status is JobStatus.SUCCEEDED:
            return NotifyEvent.SUCCEEDED
        return NotifyEvent.FAILED if event.status is JobStatus.FAILED else None
    return NotifyEvent.RESTARTED if _restarted_by_platform(event, before) else None


def _restarted_by_platform(event: Event, before: JobMoment | None) -> bool:
    if event.actor is not None or event.restarts < 1:
        return False
    if before is not None:
        again = (Happened.RESTARTED, Happened.WAITING, Happened.STARTED)
        return event.happened in again and event.restarts > before.restarts
    if event.happened is Happened.RESTARTED:
        return True
    return event.happened is Happened.WAITING and event.reason in RUNS_AGAIN


# --- the words --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """One message to one user about one job, and where it goes."""

    what: NotifyEvent
    user: str
    name: str
    subject: str  # one line, for an email's subject
    text: str  # plain words, several lines
    email: str | None
    webhook: str | None

    def webhook_json(self) -> dict[str, str]:
        """The webhook's body: Slack-compatible, with ``&``, ``<`` and ``>`` escaped as Slack asks
        (so nothing in a job's message can mention @channel or make a link)."""
        return {"text": self.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")}


_KIND_WORDS = {"batch": "batch job", "scraper": "scraper", "scheduled": "scheduled job"}
_HEADLINES = {
    NotifyEvent.SUCCEEDED: "finished successfully",
    NotifyEvent.FAILED: "failed",
    NotifyEvent.RESTARTED: "was restarted after it stopped unexpectedly",
    NotifyEvent.QUIET: "has gone quiet",
}


def _plain(text: str) -> str:
    """``text`` without control characters (terminal escapes a job printed), one line."""
    return "".join(" " if unicodedata.category(c).startswith("C") else c for c in text).strip()


def duration_words(seconds: float) -> str:
    """A duration in rounded words: "45 seconds", "15 minutes", "2 hours", "3 days"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = round(seconds / size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = max(0, round(seconds))
    return f"{count} second{'' if count == 1 else 's'}"


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def job_page(dashboard_url: str | None, name: str) -> str | None:
    """The job's page on the dashboard at ``dashboard_url`` (``.../services/jobs/``), or None."""
    if not dashboard_url:
        return None
    return f"{dashboard_url.rstrip('/')}/jobs/{name}"


def _compose(
    what: NotifyEvent,
    facts: Mapping[str, str | None],
    settings: NotifySettings,
    dashboard_url: str | None,
) -> Notification:
    """The message about a job from its ``facts`` (user, name, kind, profile, status, why...)."""
    name, user = facts["name"] or "", facts["user"] or ""
    kind = _KIND_WORDS.get(facts.get("kind") or "", "job")
    headline = f"Your {kind} {name} {_HEADLINES[what]}"
    lines = [f"{headline}.", ""]
    for label in ("why", "kind", "profile", "status", "exit code", "restarts", "last output", "when"):
        if facts.get(label):
            lines.append(f"{label.capitalize() + ':':<13}{facts[label]}")
    if page := job_page(dashboard_url, name):
        lines += ["", f"Its page: {page}"]
    lines += ["", f'You get this message because your notification settings include "{what.value}".']
    return Notification(what, user, name, headline, "\n".join(lines), settings.email, settings.webhook)


def notification_for(
    event: Event,
    settings: NotifySettings | None,
    *,
    before: JobMoment | None = None,
    dashboard_url: str | None = None,
) -> Notification | None:
    """The message a lifecycle event of a job sends its owner under ``settings``, or None: the
    event is not one to tell (:func:`notify_event`), or the settings do not ask for it."""
    what = notify_event(event, before)
    return None if what is None else job_notification(what, event, settings, dashboard_url)


def job_notification(
    what: NotifyEvent, event: Event, settings: NotifySettings | None, dashboard_url: str | None = None
) -> Notification | None:
    """The message telling ``what`` of the job ``event`` is about, if ``settings`` ask for it."""
    if settings is None or not settings.wants(what):
        return None
    facts = {
        "user": event.user,
        "name": event.name,
        "kind": event.kind,
        "profile": event.profile,
        "status": event.status.value if event.status else None,
        "why": None if what is NotifyEvent.SUCCEEDED else _plain(event.message or "") or None,
        "exit code": None if event.exit_code is None else str(event.exit_code),
        "restarts": str(event.restarts) if what is NotifyEvent.RESTARTED else None,
        "when": _when(event.at),
    }
    return _compose(what, facts, settings, dashboard_url)


def budget_notification(
    user: str,
    state: BudgetState,
    settings: NotifySettings | None,
    currency: str,
    dashboard_url: str | None = None,
) -> Notification | None:
    """The message telling ``user`` that a group of theirs reached its budget's warning level, or
    spent it all (``state``), if ``settings`` ask for it."""
    if settings is None or not settings.wants(NotifyEvent.BUDGET):
        return None
    where = "has spent its" if state.level is BudgetLevel.OVER else "is close to its"
    subject = f"Group {state.group} {where} budget for {month_words(state.month)}"
    lines = [f"{subject}.", "", state.notification(currency)]
    if dashboard_url:
        lines += ["", f"What was spent, and on what: {dashboard_url.rstrip('/')}/usage"]
    lines += ["", f'You get this message because your notification settings include "{NotifyEvent.BUDGET}".']
    text = "\n".join(lines)
    return Notification(
        NotifyEvent.BUDGET, user, state.group, subject, text, settings.email, settings.webhook
    )


# --- scrapers that went quiet -------------------------------------------------------------------------


@dataclass(frozen=True)
class ScraperActivity:
    """A running scraper that set ``quiet_after``, and when it last printed a line (or started, if
    it has printed nothing since)."""

    user: str
    name: str
    quiet_after: float  # seconds
    last_output: datetime  # aware
    profile: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """The job: (user, name)."""
        return (self.user, self.name)


def quiet_jobs(
    scrapers: Iterable[ScraperActivity], reported: Mapping[tuple[str, str], datetime], now: datetime
) -> list[ScraperActivity]:
    """The scrapers to report quiet now: silent for their ``quiet_after`` and not yet reported for
    this silence. ``reported`` maps a job to the ``last_output`` it was last reported quiet after:
    once per silence, and a new line re-arms it."""
    return [
        s
        for s in scrapers
        if (now - s.last_output).total_seconds() >= s.quiet_after and reported.get(s.key) != s.last_output
    ]


def quiet_notification(
    scraper: ScraperActivity,
    settings: NotifySettings | None,
    now: datetime,
    dashboard_url: str | None = None,
) -> Notification | None:
    """The message telling the owner that ``scraper`` went quiet, if ``settings`` ask for it."""
    if settings is None or not settings.wants(NotifyEvent.QUIET):
        return None
    silent = duration_words((now - scraper.last_output).total_seconds())
    facts = {
        "user": scraper.user,
        "name": scraper.name,
        "kind": "scraper",
        "profile": scraper.profile,
        "status": JobStatus.RUNNING.value,
        "why": f"it has printed nothing for {silent}, longer than its quiet_after of "
        f"{duration_words(scraper.quiet_after)}; it may be stuck: have a look at its log",
        "last output": _when(scraper.last_output),
        "when": _when(now),
    }
    return _compose(NotifyEvent.QUIET, facts, settings, dashboard_url)
