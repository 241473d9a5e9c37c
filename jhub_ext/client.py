"""A Python client for the jobs service, for notebooks, scripts and the ``jhub-jobs`` command.

Inside a server started by the hub, ``JobsClient()`` needs no arguments: it finds the
service from ``$JHUB_EXT_JOBS_URL`` and authenticates with the server's own
``$JUPYTERHUB_API_TOKEN`` (``$JHUB_EXT_TOKEN``, when set, wins: Binder uses it).
Elsewhere, pass ``url`` and ``token`` (a token from the hub's token page)::

    from jhub_ext.client import JobsClient
    jobs = JobsClient()
    jobs.submit("news", "scraper", ["python", "scrape.py"], files={"scrape.py": code})
    print(jobs.logs("news", tail=20))

Every refusal raises :class:`JobsError`, carrying the service's message and the field at fault.
This module imports only the standard library and ``requests``: it runs in users' servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_URL = "http://127.0.0.1:8000/services/jobs/"
STATUSES = ("pending", "running", "succeeded", "failed", "stopped")


class JobsError(Exception):
    """The jobs service refused a request, or could not be reached."""

    def __init__(self, message: str, field: str | None = None, status: int | None = None):
        self.message = message
        self.field = field
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.message} (field: {self.field})" if self.field else self.message


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class Job:
    """A job as the service reports it: status, times, exit code and the command it runs."""

    name: str
    user: str
    kind: str
    profile: str | None
    status: str
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    restarts: int = 0
    message: str | None = None
    reason: str | None = None  # why it waits or ended, as a code (docs/reference/job-reasons.md)
    detail: str | None = None  # admins only: the platform's own words
    command: tuple[str, ...] = ()
    schedule: str | None = None
    timezone: str | None = None
    queue_position: int | None = None  # while queued: its place in the queue of its group (1: next)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Job:
        """The job described by an API answer; a missing creation time reads as now."""
        created = _time(body.get("created")) or datetime.now(UTC)
        return cls(
            name=body["name"],
            user=body["user"],
            kind=body["kind"],
            profile=body.get("profile"),
            status=body["status"],
            created=created,
            started=_time(body.get("started")),
            finished=_time(body.get("finished")),
            exit_code=body.get("exit_code"),
            restarts=body.get("restarts", 0),
            message=body.get("message"),
            reason=body.get("reason"),
            detail=body.get("detail"),
            command=tuple(body.get("command") or ()),
            schedule=body.get("schedule"),
            timezone=body.get("timezone"),
            queue_position=body.get("queue_position"),
        )

    def state(self) -> str:
        """Its status and why, in a few words: "pending: starting: it runs in a moment"."""
        return f"{self.status}: {self.message}" if self.message else self.status

    def age(self, now: datetime | None = None) -> str:
        """How long ago it was submitted, for people: "5s", "12m", "3h", "2d"."""
        seconds = max(0, int(((now or datetime.now(UTC)) - self.created).total_seconds()))
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"


@dataclass(frozen=True)
class Profile:
    """A hardware profile jobs may run on, with its price per hour; ``raw`` is the API's whole entry."""

    slug: str
    display_name: str
    description: str
    summary: str
    cost_per_hour: float
    kinds: tuple[str, ...] = ()
    raw: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Profile:
        """The profile described by one entry of ``GET profiles``."""
        return cls(
            slug=body["slug"],
            display_name=body["display_name"],
            description=body.get("description", ""),
            summary=(body.get("resources") or {}).get("summary", ""),
            cost_per_hour=body.get("cost_per_hour", 0.0),
            kinds=tuple(body.get("kinds") or ()),
            raw=body,
        )


_BINARY_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def amount(resource: str, value: float) -> str:
    """A quota figure as the spawn page says it: memory in binary units ("8 GiB"), CPUs as a number
    ("2.5"), counts (GPUs, servers, jobs) as whole numbers."""
    if resource != "memory":
        return f"{value:g}"
    size, unit = float(value), 0
    while size >= 1024 and unit < len(_BINARY_UNITS) - 1:
        size, unit = size / 1024, unit + 1
    return f"{size:.3g} {_BINARY_UNITS[unit]}" if unit else f"{value:g} bytes"


@dataclass(frozen=True)
class QuotaLine:
    """One of a group's limits, how much of it is in use, and how much queued jobs wait for."""

    group: str
    resource: str  # cpu, memory, gpus, servers or jobs
    in_use: float
    limit: float
    waiting: float = 0  # what the group's queued jobs would use once started

    @classmethod
    def from_json(cls, groups: Sequence[Mapping[str, Any]]) -> list[QuotaLine]:
        """The lines of ``GET quota``'s groups: one per limit that is set."""
        return [
            cls(
                entry["group"],
                resource,
                entry["usage"].get(resource, 0),
                limit,
                (entry.get("waiting") or {}).get(resource, 0),
            )
            for entry in groups
            for resource, limit in (entry.get("limits") or {}).items()
            if limit is not None
        ]

    def waiting_text(self) -> str:
        """What queued jobs wait for, in the units the spawn page uses."""
        return amount(self.resource, self.waiting)

    def text(self) -> str:
        """The line in words: "cpu 6 of 6 (4 more waiting in the queue)"."""
        said = f"{self.resource} {self.in_use_text()} of {self.limit_text()}"
        if self.waiting:
            said += f" ({self.waiting_text()} more waiting in the queue)"
        return said

    def in_use_text(self) -> str:
        """What is in use, in the units the spawn page uses."""
        return amount(self.resource, self.in_use)

    def limit_text(self) -> str:
        """The limit, in the units the spawn page uses."""
        return amount(self.resource, self.limit)


NOTIFY_EVENTS = ("succeeded", "failed", "restarted", "quiet", "budget")


def notify_events(text: str) -> list[str]:
    """The events of a ``--notify``/``--events`` option: "failed,quiet", "all" or "none"."""
    words = [word.strip() for word in text.split(",") if word.strip()]
    if words == ["all"]:
        return list(NOTIFY_EVENTS)
    if words == ["none"]:
        return []
    unknown = [word for word in words if word not in NOTIFY_EVENTS]
    if unknown or not words:
        raise JobsError(
            f"'{text}' is not a list of events: give some of {', '.join(NOTIFY_EVENTS)} "
            "separated by commas, or all, or none",
            "notify",
        )
    return words


def submit_options(no_wait: bool, notify: str | None, quiet_after: int | None) -> dict[str, Any]:
    """A submission's options from a command's: ``wait: false`` with --no-wait (the service's
    default is to queue), the job's own ``notify`` events with --notify, and ``quiet_after``."""
    options: dict[str, Any] = {"wait": False} if no_wait else {}
    if notify is not None:
        options["notify"] = {"events": notify_events(notify)}
    if quiet_after is not None:
        options["quiet_after"] = quiet_after
    return options


def changed_settings(
    current: Mapping[str, Any], email: str | None, webhook: str | None, events: str | None
) -> dict[str, Any]:
    """``current`` notification settings with what a command gave changed ("" clears an address)."""
    notify = dict(current)
    if email is not None:
        notify["email"] = email or None
    if webhook is not None:
        notify["webhook"] = webhook or None
    if events is not None:
        notify["events"] = notify_events(events)
    return notify


def settings_text(notify: Mapping[str, Any]) -> str:
    """Notification settings in a few lines, for people."""
    events = ", ".join(notify.get("events") or []) or "nothing"
    lines = [
        f"email    {notify.get('email') or '-'}",
        f"webhook  {notify.get('webhook') or '-'}",
        f"events   {events}",
    ]
    if not notify.get("email") and not notify.get("webhook"):
        lines.append("(no address: you are told nothing; set one with --email or --webhook)")
    return "\n".join(lines)


def budget_lines(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    """What ``GET quota`` says of each group's budget, one line each."""
    return [entry["budget"]["message"] for entry in groups if entry.get("budget")]


def usage_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A usage report (``GET usage``) as a header and rows of text, then its total."""
    by = list(report["by"])
    currency = report["currency"]
    rows = [
        [str(row.get(key) if row.get(key) is not None else "-") for key in by]
        + [f"{row['hours']:.2f}", f"{row['cost']:.2f}"]
        for row in report["rows"]
    ]
    rows.append(["total"] + [""] * (len(by) - 1) + ["", f"{report['total']:.2f}"])
    return [key.upper() for key in by] + ["HOURS", f"COST ({currency})"], rows


def snapshot(path: str | Path, max_files: int = 200) -> dict[str, str]:
    """The code snapshot of a file or a small directory: relative path -> text."""
    root = Path(path)
    if root.is_file():
        return {root.name: root.read_text()}
    if not root.is_dir():
        raise JobsError(f"{path} is neither a file nor a directory", "files")
    files: dict[str, str] = {}
    for item in sorted(root.rglob("*")):
        parts = item.relative_to(root).parts
        if any(part.startswith(".") or part == "__pycache__" for part in parts) or not item.is_file():
            continue
        try:
            files["/".join(parts)] = item.read_text()
        except UnicodeDecodeError:
            raise JobsError(
                f"{item} is not a text file; ship code only, and read data from storage", "files"
            ) from None
        if len(files) > max_files:
            raise JobsError(f"{path} has more than {max_files} files; ship a smaller directory", "files")
    return files


class JobsClient:
    """Every call of the jobs API, as methods."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60):
        self.url = (url or os.environ.get("JHUB_EXT_JOBS_URL") or DEFAULT_URL).rstrip("/") + "/"
        self.token = token or os.environ.get("JHUB_EXT_TOKEN") or os.environ.get("JUPYTERHUB_API_TOKEN")
        if not self.token:
            raise JobsError(
                "no JupyterHub token: run this in a server started by the hub, or set JUPYTERHUB_API_TOKEN "
                "to a token from the hub's token page",
                "token",
            )
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {self.token}"

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.url}api/{path}", timeout=self.timeout, **kwargs)
        except requests.ConnectionError:
            raise JobsError(f"cannot reach the jobs service at {self.url}; is the hub running?") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message, fld = body.get("error") or response.reason, body.get("field")
            except ValueError:
                message, fld = f"the jobs service answered {response.status_code} {response.reason}", None
            raise JobsError(message, fld, response.status_code)
        return response

    @staticmethod
    def _owner(user: str | None) -> dict[str, str]:
        return {"user": user} if user else {}

    # --- jobs ----------------------------------------------------------------------------------------

    def submit(
        self,
        name: str,
        kind: str,
        command: list[str],
        *,
        files: Mapping[str, str] | None = None,
        profile: str | None = None,
        env: Mapping[str, str] | None = None,
        schedule: str | None = None,
        timezone: str | None = None,
        **options: Any,
    ) -> Job:
        """Submit a new job and return it as the service recorded it.

        ``files`` is a code snapshot (see :func:`snapshot`); ``schedule`` is a cron line for scheduled jobs.
        Other ``options`` (``retries``, ``deadline_seconds``, ``wait``...) are sent as they are. A job
        the quota has no room for now comes back queued (``reason`` "queued", ``queue_position``), and
        so does one no machine has room for now (``reason`` "waiting-for-capacity"), unless sent with
        ``wait=False``: then it is refused.
        """
        body: dict[str, Any] = {"name": name, "kind": kind, "command": list(command), **options}
        for key, value in (
            ("files", files),
            ("profile", profile),
            ("env", env),
            ("schedule", schedule),
            ("timezone", timezone),
        ):
            if value is not None:
                body[key] = dict(value) if isinstance(value, Mapping) else value
        return Job.from_json(self._request("POST", "jobs", json=body).json())

    def jobs(self, user: str | None = None) -> list[Job]:
        """Your jobs, newest first; admins may name a user, or ``"*"`` for everyone's."""
        body = self._request("GET", "jobs", params=self._owner(user)).json()
        return [Job.from_json(job) for job in body["jobs"]]

    def job(self, name: str, user: str | None = None) -> Job:
        """One job by name; admins may name its owner."""
        return Job.from_json(self._request("GET", f"jobs/{quote(name)}", params=self._owner(user)).json())

    def logs(self, name: str, *, tail: int | None = None, user: str | None = None) -> str:
        """A job's output so far, or only its last ``tail`` lines."""
        params = {**self._owner(user), **({"tail": str(tail)} if tail is not None else {})}
        return self._request("GET", f"jobs/{quote(name)}/logs", params=params).text

    def follow(self, name: str, *, tail: int | None = None, user: str | None = None) -> Iterator[str]:
        """Yield the job's output as it is written, until the job ends."""
        params = {**self._owner(user), "follow": "1", **({"tail": str(tail)} if tail is not None else {})}
        response = self._request("GET", f"jobs/{quote(name)}/logs", params=params, stream=True)
        with response:
            response.encoding = "utf-8-sig"  # a follow stream starts with a byte order mark
            for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
                yield chunk if isinstance(chunk, str) else chunk.decode("utf-8", errors="replace")

    def stop(self, name: str, user: str | None = None) -> Job:
        """Stop a job and return its new state."""
        return Job.from_json(
            self._request("POST", f"jobs/{quote(name)}/stop", params=self._owner(user)).json()
        )

    def restart(self, name: str, user: str | None = None) -> Job:
        """Start a job again from the top and return its new state."""
        return Job.from_json(
            self._request("POST", f"jobs/{quote(name)}/restart", params=self._owner(user)).json()
        )

    def delete(self, name: str, user: str | None = None) -> None:
        """Delete a job, stopping it first if it still runs."""
        self._request("DELETE", f"jobs/{quote(name)}", params=self._owner(user))

    # --- the catalog and quotas -------------------------------------------------------------------------

    def profiles(self) -> list[Profile]:
        """The profiles you may run jobs on."""
        return [Profile.from_json(p) for p in self._request("GET", "profiles").json()["profiles"]]

    # --- notification settings -------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Whom you are told what about your jobs: ``{"notify": {"email", "webhook", "events"}}``."""
        body: dict[str, Any] = self._request("GET", "settings").json()
        return body

    def save_settings(self, notify: Mapping[str, Any]) -> dict[str, Any]:
        """Replace your notification settings with ``notify``; the settings as saved."""
        body: dict[str, Any] = self._request("PUT", "settings", json={"notify": dict(notify)}).json()
        return body

    def usage(self, **query: str | None) -> dict[str, Any]:
        """What your servers and jobs cost (``GET usage``): ``since``, ``until``, ``by``, ``group``,
        ``profile``, ``user`` (admins) as the API takes them."""
        params = {key: value for key, value in query.items() if value is not None}
        body: dict[str, Any] = self._request("GET", "usage", params=params).json()
        return body

    def usage_csv(self, **query: str | None) -> str:
        """The same as :meth:`usage`, as CSV."""
        params = {key: value for key, value in query.items() if value is not None} | {"format": "csv"}
        return self._request("GET", "usage", params=params).text

    def quota(self) -> list[dict[str, Any]]:
        """For each of your groups with a quota: its limits and how much is in use (the API's JSON;
        :meth:`QuotaLine.from_json` reads it line by line)."""
        groups: list[dict[str, Any]] = self._request("GET", "quota").json()["groups"]
        return groups
