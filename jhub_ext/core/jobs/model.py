"""Jobs as data: what a submission means once validated, and how a job's status may change.

Pure: no tornado, no Kubernetes client, no database. Every refusal is a
:class:`JobSpecError` naming the field at fault and the fix, so the API can answer
``{"error": ..., "field": ...}`` with a 4xx status and change nothing.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from jhub_ext.core.catalog.model import Kind, Profile
from jhub_ext.core.jobs import cron as cron_grammar
from jhub_ext.core.jobs.reasons import Reason

NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # used with fullmatch: no "$\n" slips by
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Set by the service for every job, or steering the dynamic loader or the interpreter; a submission
#: may not set them, in any letter case.
RESERVED_ENV_PREFIXES = ("JUPYTERHUB_", "JHUB_EXT_", "KUBERNETES_", "LD_", "PYTHON")
RESERVED_ENV = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "SHELL",
        "HOSTNAME",
        "PWD",
        "PYTHONPATH",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "CPU_LIMIT",
        "CPU_GUARANTEE",
        "MEM_LIMIT",
        "MEM_GUARANTEE",
        "JUPYTER_IMAGE",
        "JUPYTER_IMAGE_SPEC",
    }
)


class JobKind(StrEnum):
    """What sort of work a job is, which decides how it is run and retried."""

    BATCH = "batch"  # runs to completion, retried with backoff
    SCRAPER = "scraper"  # long-running, restarted on failure
    SCHEDULED = "scheduled"  # runs on a cron schedule

    @property
    def rules(self) -> KindRules:
        """What this kind of job is (its entry in :data:`KIND_RULES`)."""
        return KIND_RULES[self]

    @property
    def profile_kind(self) -> Kind:
        """The use of a catalog profile this kind of job needs (the profiles' ``kinds``)."""
        return KIND_RULES[self].profile_kind


class Runs(StrEnum):
    """How a kind of job runs."""

    ONCE = "once"  # to completion; a failed run is tried again up to ``retries`` times
    UNTIL_STOPPED = "until stopped"  # restarted after any exit, with a backoff; no deadline
    ON_SCHEDULE = "on schedule"  # one run per firing of its cron schedule


@dataclass(frozen=True)
class KindRules:
    """Everything that depends on a job's kind, in one place: a new kind is one entry here (and its
    Kubernetes object's builder, :func:`jhub_ext.kubernetes.workloads.build_workload`)."""

    profile_kind: Kind  # the use of a catalog profile it needs
    runs: Runs
    workload: str  # the Kubernetes resource it becomes

    @property
    def takes_retries(self) -> bool:
        """Whether a submission may say how often a failed run is tried again."""
        return self.runs is Runs.ONCE

    @property
    def has_deadline(self) -> bool:
        """Whether it runs under a deadline (its own, else its profile's longest run)."""
        return self.runs is not Runs.UNTIL_STOPPED


KIND_RULES: Mapping[JobKind, KindRules] = MappingProxyType(
    {
        JobKind.BATCH: KindRules(Kind.JOB, Runs.ONCE, workload="jobs"),
        JobKind.SCRAPER: KindRules(Kind.SCRAPER, Runs.UNTIL_STOPPED, workload="deployments"),
        JobKind.SCHEDULED: KindRules(Kind.JOB, Runs.ON_SCHEDULE, workload="cronjobs"),
    }
)


class JobStatus(StrEnum):
    """Where a job is in its life; see :func:`can_transition` for the changes allowed."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or stopped), for now."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED)


class ConcurrencyPolicy(StrEnum):
    """What a scheduled job does when its previous run is still going (as a Kubernetes CronJob)."""

    FORBID = "forbid"  # skip this run
    REPLACE = "replace"  # stop the old run, start the new one
    ALLOW = "allow"  # run both


_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.SUCCEEDED}
    ),
    JobStatus.RUNNING: frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.PENDING}
    ),
    JobStatus.SUCCEEDED: frozenset({JobStatus.PENDING}),  # restart
    JobStatus.FAILED: frozenset({JobStatus.PENDING}),  # restart
    JobStatus.STOPPED: frozenset({JobStatus.PENDING}),  # restart
}


@dataclass(frozen=True)
class Observed:
    """What a backend sees of a job now: its status, exit code, why in plain words (``message``, and
    its code ``reason``), and its restarts. A reason of None keeps the one recorded; ``detail`` is
    the platform's own words, for admins."""

    status: JobStatus
    exit_code: int | None = None
    message: str | None = None
    restarts: int = 0
    reason: Reason | None = None
    detail: str | None = None


def can_transition(old: JobStatus, new: JobStatus) -> bool:
    """Whether a job may go from ``old`` to ``new`` (staying put is always allowed)."""
    return old == new or new in _TRANSITIONS[old]


class JobSpecError(ValueError):
    """A refused submission; ``field`` names what to fix."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)

    def to_json(self) -> dict[str, str]:
        """The refusal as the API's error body."""
        return {"error": str(self), "field": self.field}


@dataclass(frozen=True)
class Limits:
    """Bounds on a submission, set by the admin."""

    max_files: int = 200
    max_snapshot_bytes: int = 512 * 1024  # a ConfigMap holds at most 1 MiB
    max_path_length: int = 255
    max_env: int = 100
    max_env_value_bytes: int = 32 * 1024
    max_env_total_bytes: int = 256 * 1024  # the whole object must stay far below etcd's 1.5 MiB
    max_command_args: int = 256
    max_retries: int = 20
    max_history: int = 100
    #: the most runs of one scheduled job alive at once (``concurrency_policy: allow`` may ask up to this)
    max_live_runs: int = 1


@dataclass(frozen=True)
class Schedule:
    """When a scheduled job runs: a cron line in a time zone, and what overlapping runs do."""

    cron: str
    timezone: str = "UTC"
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    history_limit: int = 3
    max_live_runs: int = 1  # runs alive at once; more than 1 only with ``allow``

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after ``moment`` (an aware datetime), in the schedule's time zone."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        result: datetime = croniter(self.cron, local).get_next(datetime)
        return result


#: the shortest and longest ``quiet_after`` a scraper may set, in seconds
QUIET_AFTER_BOUNDS = (60, 7 * 24 * 3600)


def parse_quiet_after(value: Any, field: str = "quiet_after") -> int | None:
    """A scraper's ``quiet_after``: whole seconds within :data:`QUIET_AFTER_BOUNDS`, or None."""
    if value is None:
        return None
    low, high = QUIET_AFTER_BOUNDS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobSpecError(
            field, f"{field} must be a whole number of seconds from {low} to {high}, such as 900 (15 minutes)"
        )
    return value


@dataclass(frozen=True)
class JobSpec:
    """A validated submission: everything needed to run a job."""

    name: str
    kind: JobKind
    command: tuple[str, ...]
    files: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    profile: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    schedule: Schedule | None = None
    retries: int = 3  # batch: failed runs retried (with exponential backoff) before the job fails
    deadline_seconds: int | None = (
        None  # batch, or each run of a scheduled job: stop and fail after this long
    )
    #: whether it waits in its groups' queue when their quota is full now (else it is refused)
    wait: bool = True
    #: a scraper: seconds without a line of output after which its owner is told it went quiet
    quiet_after: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The submission this spec was parsed from (normalised): ``parse_submission`` reads it back."""
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind.value,
            "command": list(self.command),
            "files": dict(self.files),
            "profile": self.profile,
            "env": dict(self.env),
        }
        if self.kind.rules.takes_retries:
            body.update(retries=self.retries, deadline_seconds=self.deadline_seconds)
        elif self.kind.rules.has_deadline and self.deadline_seconds is not None:
            body.update(deadline_seconds=self.deadline_seconds)
        if not self.wait:
            body.update(wait=False)
        if self.quiet_after is not None:
            body.update(quiet_after=self.quiet_after)
        if self.schedule is not None:
            body.update(
                schedule=self.schedule.cron,
                timezone=self.schedule.timezone,
                concurrency_policy=self.schedule.concurrency_policy.value,
                history_limit=self.schedule.history_limit,
                max_live_runs=self.schedule.max_live_runs,
            )
        return body


SUBMIT_FIELDS = (
    "name",
    "kind",
    "command",
    "files",
    "profile",
    "env",
    "schedule",
    "timezone",
    "concurrency_policy",
    "history_limit",
    "max_live_runs",
    "retries",
    "deadline_seconds",
    "wait",
    "quiet_after",
    "notify",  # checked by the service, against the admin's webhook prefixes (jhub_ext.core.notify)
)


def parse_submission(body: Any, limits: Limits = Limits()) -> JobSpec:
    """Validate a submit body (parsed JSON) and build a :class:`JobSpec`; raise :class:`JobSpecError`."""
    if not isinstance(body, Mapping):
        raise JobSpecError(
            "body", 'the body must be a JSON object such as {"name": "x", "kind": "batch", ...}'
        )
    unknown = sorted(str(k) for k in body if k not in SUBMIT_FIELDS)
    if unknown:
        raise JobSpecError(
            unknown[0], f"unknown field '{unknown[0]}'; the fields are: {', '.join(SUBMIT_FIELDS)}"
        )
    name = parse_name(body.get("name"))
    kind = _parse_kind(body.get("kind"))
    command = _parse_command(body.get("command"), limits)
    files = _parse_files(body.get("files", {}), limits)
    profile = body.get("profile")
    if profile is not None and (not isinstance(profile, str) or not profile):
        raise JobSpecError(
            "profile", 'profile must be a profile\'s slug such as "small"; leave it out for the default'
        )
    env = _parse_env(body.get("env", {}), limits)
    schedule = _parse_schedule(body, kind, limits)
    retries = _parse_int(body, "retries", 3, 0, limits.max_retries)
    deadline = body.get("deadline_seconds")
    if deadline is not None:
        deadline = _parse_int(body, "deadline_seconds", None, 1, 366 * 24 * 3600)
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise JobSpecError(
            "wait", "wait must be true (wait in the queue when the quota is full) or false (refuse at once)"
        )
    quiet_after = parse_quiet_after(body.get("quiet_after"))
    if quiet_after is not None and kind.rules.runs is not Runs.UNTIL_STOPPED:
        raise JobSpecError(
            "quiet_after", "quiet_after applies to scrapers only (they run until stopped); remove it"
        )
    if not kind.rules.takes_retries and body.get("retries") is not None:
        raise JobSpecError("retries", "retries applies to batch jobs only; remove it")
    if not kind.rules.has_deadline and deadline is not None:
        raise JobSpecError(
            "deadline_seconds",
            "deadline_seconds applies to batch and scheduled jobs; a scraper runs until stopped",
        )
    return JobSpec(
        name=name,
        kind=kind,
        command=command,
        files=MappingProxyType(files),
        profile=profile,
        env=MappingProxyType(env),
        schedule=schedule,
        retries=retries,
        deadline_seconds=deadline,
        wait=wait,
        quiet_after=quiet_after,
    )


def parse_name(name: Any) -> str:
    """``name`` if it is a valid job name (a DNS label); a :class:`JobSpecError` otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = f"'{name[:70]}'" if isinstance(name, str) else "the name"
        raise JobSpecError(
            "name",
            f"{shown} is not a valid job name; use up to 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, such as news-scraper",
        )
    return name


def _parse_kind(kind: Any) -> JobKind:
    try:
        return JobKind(kind)
    except ValueError:
        options = ", ".join(k.value for k in JobKind)
        raise JobSpecError("kind", f"kind must be one of: {options}") from None


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be passed to a process or stored as UTF-8, or None if it can."""
    if "\0" in text:
        return "contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\ud800-\\udfff), which is not text"
    return None


def _parse_command(command: Any, limits: Limits) -> tuple[str, ...]:
    if isinstance(command, str) or not isinstance(command, list) or not command:
        raise JobSpecError(
            "command", 'command must be a non-empty list of strings such as ["python", "scrape.py"]'
        )
    if len(command) > limits.max_command_args:
        raise JobSpecError("command", f"command has more than {limits.max_command_args} arguments")
    if not all(isinstance(arg, str) for arg in command) or not command[0]:
        raise JobSpecError("command", "every argument of command must be a string, and the first not empty")
    for index, arg in enumerate(command):
        if problem := text_problem(arg):
            raise JobSpecError("command", f"argument {index} of command {problem}; remove it")
    return tuple(command)


def safe_relative_path(path: str) -> str | None:
    """``path`` normalised if it stays inside the job's directory, else None."""
    if not path or "\\" in path or "\0" in path or path.startswith("/"):
        return None
    normal = posixpath.normpath(path)
    if normal in (".", "") or normal.startswith("../") or normal == ".." or normal != path.rstrip("/"):
        return None
    return normal


def _add_file(result: dict[str, str], path: Any, text: Any, limits: Limits) -> int:
    """Add one file of a submission to ``result`` (by its normal path); the bytes it counts."""
    where = f"files.{path}" if isinstance(path, str) and len(path) <= 100 else "files"
    normal = safe_relative_path(path) if isinstance(path, str) else None
    if normal is None or len(path) > limits.max_path_length:
        raise JobSpecError(
            where,
            f"'{str(path)[:100]}' is not a relative path inside the job's directory; "
            "use a path such as scraper.py or lib/util.py (no leading /, no ..)",
        )
    if not isinstance(text, str):
        raise JobSpecError(where, f"the content of '{path}' must be text")
    if (problem := text_problem(path) or text_problem(text)) is not None:
        raise JobSpecError(where, f"'{path}' {problem}; ship UTF-8 text only")
    if normal in result:
        raise JobSpecError(where, f"'{path}' is given twice; ship each file once")
    result[normal] = text
    return len(text.encode("utf-8")) + len(path)


def _check_no_file_is_a_directory(files: Mapping[str, str]) -> None:
    """A file cannot also be a directory: "a" and "a/b"."""
    for normal in files:
        parent = posixpath.dirname(normal)
        while parent:
            if parent in files:
                raise JobSpecError(
                    f"files.{parent}"[:106],
                    f"'{parent}' is both a file and the directory of '{normal}'; rename one of them",
                )
            parent = posixpath.dirname(parent)


def _parse_files(files: Any, limits: Limits) -> dict[str, str]:
    if not isinstance(files, Mapping):
        raise JobSpecError(
            "files", 'files must be an object mapping relative paths to text, such as {"run.py": "..."}'
        )
    if len(files) > limits.max_files:
        raise JobSpecError("files", f"files has {len(files)} entries; ship at most {limits.max_files}")
    result: dict[str, str] = {}
    total = sum(_add_file(result, path, text, limits) for path, text in files.items())
    _check_no_file_is_a_directory(result)
    if total > limits.max_snapshot_bytes:
        raise JobSpecError(
            "files",
            f"the code snapshot is {-(-total // 1024)} KiB; the limit is "
            f"{limits.max_snapshot_bytes // 1024} KiB. Ship only code, and read data from storage instead",
        )
    return result


def _parse_env(env: Any, limits: Limits) -> dict[str, str]:
    if not isinstance(env, Mapping):
        raise JobSpecError("env", 'env must be an object of strings, such as {"LANG": "C.UTF-8"}')
    if len(env) > limits.max_env:
        raise JobSpecError("env", f"env has {len(env)} variables; set at most {limits.max_env}")
    for key, value in env.items():
        if not isinstance(key, str) or not ENV_NAME_RE.fullmatch(key):
            raise JobSpecError(
                "env", f"'{str(key)[:70]}' is not a valid variable name; use letters, digits and _"
            )
        if key.upper() in RESERVED_ENV or key.upper().startswith(RESERVED_ENV_PREFIXES):
            raise JobSpecError(
                f"env.{key}", f"{key} is set by the jobs service and cannot be overridden; rename it"
            )
        if not isinstance(value, str):
            raise JobSpecError(f"env.{key}", f"the value of {key} must be a string; quote it")
        if problem := text_problem(value):
            raise JobSpecError(f"env.{key}", f"the value of {key} {problem}; remove it")
        if len(value.encode("utf-8")) > limits.max_env_value_bytes:
            raise JobSpecError(
                f"env.{key}", f"the value of {key} is too long; ship large data in files instead"
            )
    total = sum(len(str(k).encode()) + len(v.encode("utf-8")) for k, v in env.items())
    if total > limits.max_env_total_bytes:
        raise JobSpecError(
            "env", f"env holds {total} bytes; keep it under {limits.max_env_total_bytes}, ship data in files"
        )
    return dict(env)


def _parse_int(body: Mapping[str, Any], key: str, fallback: Any, low: int, high: int) -> Any:
    value = body.get(key)
    if value is None:
        return fallback
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise JobSpecError(key, f"{key} must be a whole number from {low} to {high}")
    return value


def _parse_schedule(body: Mapping[str, Any], kind: JobKind, limits: Limits) -> Schedule | None:
    scheduling = ("schedule", "timezone", "concurrency_policy", "history_limit")
    if kind.rules.runs is not Runs.ON_SCHEDULE:
        for key in scheduling:
            if body.get(key) is not None:
                raise JobSpecError(
                    key, f'{key} applies to scheduled jobs only; use kind "scheduled" or remove it'
                )
        return None
    cron = _parse_cron(body.get("schedule"))
    timezone = parse_timezone(body.get("timezone"))
    policy = body.get("concurrency_policy") or ConcurrencyPolicy.FORBID.value
    try:
        concurrency = ConcurrencyPolicy(policy)
    except ValueError:
        raise JobSpecError(
            "concurrency_policy", "concurrency_policy must be one of: forbid, replace, allow"
        ) from None
    history = _parse_int(body, "history_limit", 3, 0, limits.max_history)
    live = _parse_int(body, "max_live_runs", 1, 1, max(limits.max_live_runs, 1))
    if live > 1 and concurrency is not ConcurrencyPolicy.ALLOW:
        raise JobSpecError(
            "max_live_runs", 'more than one live run needs concurrency_policy "allow"; remove max_live_runs'
        )
    schedule = Schedule(cron, timezone, concurrency, history, live)
    try:
        schedule.next_after(datetime.now(ZoneInfo("UTC")))
    except CroniterError:
        raise JobSpecError(
            "schedule", f"'{cron}' never fires (no such date, such as 31 February); choose days that exist"
        ) from None
    return schedule


def _parse_cron(value: Any) -> str:
    try:
        return cron_grammar.parse_cron(value)
    except ValueError as e:
        raise JobSpecError("schedule", str(e)) from None


def parse_timezone(timezone: Any) -> str:
    """A time zone name of the tz database (as Kubernetes' CronJob ``timeZone`` takes), or UTC."""
    try:
        return cron_grammar.parse_timezone(timezone)
    except ValueError as e:
        raise JobSpecError("timezone", str(e)) from None


@dataclass(frozen=True)
class Placement:
    """Where and as whom a job runs: decided by the service from the user, their groups and the profile."""

    user: str
    groups: frozenset[str] = frozenset()
    profile: Profile | None = None
    image: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Room:
    """Whether the machines have room for a job's pod: ``now`` (one machine it may run on has its
    CPUs, memory and GPUs free), and ``ever`` (one would, empty); ``short`` says what is short, in
    plain words ("0 of 4 A100 GPUs are free"). A backend that cannot tell has room."""

    now: bool = True
    ever: bool = True
    short: str = ""


#: room, as far as a backend can tell
ROOMY = Room()
