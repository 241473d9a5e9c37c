"""The jobs service's domain: who may do what to which job, quotas, and keeping the store in step.

Handlers parse and serialise; this decides. The backend runs work and reports what it
sees; the store keeps history. Both modes share all of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from jhub_ext.admission.budget import Clock, utc_now
from jhub_ext.admission.jobs import Admission, Admitted, QuotaFull
from jhub_ext.admission.lock import QuotaLock, QuotaLockTimeout
from jhub_ext.admission.reservations import JobReservations
from jhub_ext.core.catalog.ledger import UsageSource
from jhub_ext.core.catalog.model import BudgetAction, Catalog, Kind
from jhub_ext.core.catalog.quota import Usage, server_words
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.catalog.selection import SelectionError, resolve_selection
from jhub_ext.core.events import Event, Events, Happened, Subject, observed_job_event
from jhub_ext.core.jobs.backend import JobBackend, JobRejected, Observed
from jhub_ext.core.jobs.errors import Conflict, Invalid, NoSuchJob, NotAllowed, TooMany
from jhub_ext.core.jobs.model import JobKind, JobSpec, JobSpecError, JobStatus, Limits, parse_submission
from jhub_ext.core.jobs.oneatatime import OneAtATime
from jhub_ext.core.jobs.reasons import Reason, more_memory_hint
from jhub_ext.core.notify import NotifySettings, ScraperActivity, for_job, parse_job_notify, parse_notify
from jhub_ext.core.usage import (
    BudgetLevel,
    BudgetState,
    UsageQueryError,
    crossed,
    parse_level,
    stopped_by,
)
from jhub_ext.service.hubapi import ActiveServer, HubClient
from jhub_ext.service.queue import (
    BEHIND,
    JobQueue,
    Tried,
    room_words,
    waiting_words,
)
from jhub_ext.service.recorder import Recorder
from jhub_ext.service.store import JobExists, JobRecord, JobStore, StatusConflict, is_room_queue, room_queue
from jhub_ext.service.usage import SERVER, JobUsage, UsageBook, UsageQuery, UsageReport, usage_report

logger = logging.getLogger(__name__)
#: the actor of what the service itself does to a job (a start it could not make)
SERVICE = "jobs service"


@dataclass(frozen=True)
class Caller:
    """Who is asking: from the JupyterHub token or cookie."""

    name: str
    groups: frozenset[str]
    admin: bool


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0):
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, key: str, now: float | None = None) -> bool:
        """Count an event for ``key`` and say whether it fits in the window; a refused one is not counted."""
        now = time.monotonic() if now is None else now
        events = self._events[key]
        while events and events[0] <= now - self.window:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        return True

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Whole seconds until ``key`` may act again."""
        now = time.monotonic() if now is None else now
        events = self._events[key]
        return max(1, math.ceil(events[0] + self.window - now)) if events else 1

    def check(self, key: str, what: str) -> None:
        """Raise :class:`TooMany` (with when to try again) once ``key`` is over the limit."""
        if not self.allow(key):
            wait = self.retry_after(key)
            raise TooMany(
                f"too many {what}: at most {self.limit} a minute; try again in {wait} s",
                None,
                retry_after=wait,
            )


_Action = TypeVar("_Action", bound=Callable[..., Awaitable[Any]])


def _working(action: _Action) -> _Action:
    """Run a manager's action on ``(caller, owner, name)`` in the job's turn (see ``working_on``)."""

    @functools.wraps(action)
    async def wrapper(self: JobManager, caller: Caller, owner: str, name: str) -> Any:
        async with self.working_on(owner, name):
            return await action(self, caller, owner, name)

    return wrapper  # type: ignore[return-value]


class JobManager:
    """Decides every job request: permissions, rate limits, profiles and quotas, then backend and store.

    Also keeps the store in step with what the backend observes.
    """

    def __init__(
        self,
        store: JobStore,
        backend: JobBackend,
        catalog: CatalogSource,
        hub: HubClient | None,
        submits_per_minute: int = 30,
        *,
        actions_per_minute: int = 120,
        follows_per_user: int = 5,
        limits: Limits | None = None,
        quota_lock: QuotaLock | None = None,
        events: Events | None = None,
        webhook_prefixes: tuple[str, ...] = (),
        mail: bool = False,
        clock: Clock = utc_now,
    ):
        self.store = store
        #: where the service takes "now" from, in UTC: its lifecycle events' times (so the usage
        #: ledger's runs open and close by it), running work's live accrual, the budget verdicts and
        #: the budget pass. The wall clock; a test moves its own instead of waiting.
        self.clock = clock
        self.backend = backend
        self.catalog_source = catalog
        self.hub = hub
        self.rate = RateLimiter(submits_per_minute)  # submissions and restarts
        self.actions = RateLimiter(actions_per_minute)  # stops and deletes
        self.follows_per_user = follows_per_user
        self.following: dict[str, int] = defaultdict(int)  # open ``follow`` streams per user
        self.limits = limits or Limits()
        self.webhook_prefixes = webhook_prefixes  # where users' notification webhooks may point
        self.mail = mail  # whether notifications can be sent by email (a mail server is set up)
        #: tells a user that a group of theirs reached its budget's warning level, or spent it
        self.on_budget: Callable[[str, BudgetState], None] | None = None
        #: servers the budget pass asked the hub to stop, by (user, name): the start time of the run
        #: it stopped, so that it is told and logged once (see stop_servers_over_budget)
        self.servers_stopped: dict[tuple[str, str], datetime | None] = {}
        self.busy = OneAtATime()  # jobs an operation holds or waits for (see working_on)
        # jobs from the store (recorded under the quota locks), servers from the hub (asked before
        # taking them): the sources the hub's own count reads alike
        asked: list[UsageSource] = [hub] if hub is not None else []
        self.admission = Admission(catalog, quota_lock or QuotaLock(), [JobReservations(store.engine)], asked)
        #: lifecycle events; the recorder is the first observer (see :mod:`jhub_ext.core.events`),
        #: then the queue, which starts waiting jobs when others end
        self.recorder = Recorder(store, backend)
        self.queue = JobQueue(self)
        #: the usage ledger of jobs' runs (and, read from the hub by the app, servers')
        self.ledger = UsageBook(store, clock)
        self.job_usage = JobUsage(self.ledger, catalog.current)
        observers = [self.recorder, self.queue, self.job_usage, *(events.observers if events else ())]
        self.events = Events(observers)
        backend.on_change = self.on_change
        backend.limits = self.limits

    # --- what the backend observes, as lifecycle events ------------------------------------------------

    async def on_change(self, user: str, name: str, observed: Observed) -> None:
        """Publish what the backend now observes of a job, if it changes the job's record (the
        recorder, the first observer, writes it to the store)."""
        record = self.store.get(user, name)
        if record is None:
            return
        if observed.reason is Reason.OUT_OF_MEMORY and observed.message:
            hint = more_memory_hint(
                self.catalog, record.profile, frozenset(record.groups), record.kind.profile_kind
            )
            observed = dataclasses.replace(observed, message=f"{observed.message}; {hint}")
        event = observed_job_event(
            user,
            name,
            observed,
            recorded=record.status,
            recorded_message=record.message,
            recorded_restarts=record.restarts,
            recorded_reason=record.reason,
        )
        if event is not None:
            await self.events.publish(self._about(event, record))

    def _about(self, event: Event, record: JobRecord) -> Event:
        """``event`` with what the record says of its job, at the service's clock's now."""
        return dataclasses.replace(
            event,
            kind=record.kind.value,
            profile=record.profile,
            groups=frozenset(record.groups),
            at=self.clock(),
        )

    async def _published(
        self, happened: Happened, record: JobRecord, actor: str, message: str | None = None
    ) -> None:
        """Publish what a user (``actor``) did to a job, once it is recorded."""
        event = Event(
            Subject.JOB,
            happened,
            record.user,
            record.name,
            status=record.status,
            message=message if message is not None else record.message,
            reason=record.reason,
            exit_code=record.exit_code,
            restarts=record.restarts,
            actor=actor,
        )
        await self.events.publish(self._about(event, record))

    # --- access ---------------------------------------------------------------------------------------

    def owner_for(self, caller: Caller, requested: str | None) -> str:
        """Whose jobs a request is about: the caller's own unless an admin names someone."""
        if not requested or requested == caller.name:
            return caller.name
        if not caller.admin:
            raise NotAllowed("only admins may see or act on other users' jobs; leave out ?user=", "user")
        return requested

    def job(self, caller: Caller, owner: str, name: str) -> JobRecord:
        """The job ``owner`` has named ``name``; a 404 if there is none."""
        record = self.store.get(owner, name)
        if record is None:
            raise NoSuchJob(f"there is no job '{name[:70]}'; list your jobs with GET jobs", "name")
        return record

    def list_jobs(
        self, caller: Caller, requested: str | None, limit: int | None = None, offset: int = 0
    ) -> tuple[list[JobRecord], int]:
        """A page of the jobs the caller asked for, newest first, and how many there are in all."""
        if requested == "*":
            if not caller.admin:
                raise NotAllowed("only admins may list everyone's jobs; leave out ?user=", "user")
            owner = None
        else:
            owner = self.owner_for(caller, requested)
        return self.store.list_jobs(owner, limit, offset), self.store.count_jobs(owner)

    # --- profiles and quotas ----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        """The profile and quota catalog as it stands now (it may be reloaded)."""
        return self.catalog_source.current()

    async def usage(self, catalog: Catalog, groups: frozenset[str]) -> dict[str, Usage]:
        """What the members of ``groups`` run now: jobs (from the store) and servers (from the hub),
        counted by the ledger's one rule, as the hub counts them."""
        return await self.admission.usage(catalog, groups)

    async def quota(self, caller: Caller) -> list[dict[str, Any]]:
        """For each quota group the caller is in, its limits and how much is in use now."""
        catalog = self.catalog
        in_use = await self.usage(catalog, caller.groups)
        waiting = self.waiting(caller.groups & catalog.quotas.keys())
        budgets = {state.group: state for state in self.budgets(caller.groups)}
        return [
            {
                "group": group,
                "usage": in_use.get(group, Usage()).to_json(),
                "limits": {
                    key: getattr(catalog.quotas[group], key)
                    for key in ("cpu", "memory", "gpus", "servers", "jobs")
                },
                "waiting": waiting[group].to_json(),
            }
            | ({"budget": budgets[group].to_json(catalog.currency)} if group in budgets else {})
            for group in sorted(caller.groups & catalog.quotas.keys())
        ] + [
            {"group": group, "budget": state.to_json(catalog.currency)}
            for group, state in sorted(budgets.items())
            if group not in catalog.quotas
        ]

    def budgets(self, groups: frozenset[str], now: datetime | None = None) -> tuple[BudgetState, ...]:
        """Where each of ``groups`` with a budget stands this month (UTC), from the usage ledger."""
        return self.ledger.reader.states(self.catalog, groups, now)

    def usage_report(self, caller: Caller, query: UsageQuery, now: datetime | None = None) -> UsageReport:
        """The cost of servers and jobs the caller may see, as ``query`` asks (see ``GET usage``): their
        own (an admin: anyone's, or everyone's with user ``*``), or the totals of one of their groups
        (who in it spent what: admins only)."""
        if query.group is not None and not caller.admin:
            if query.group not in caller.groups:
                raise NotAllowed("you may see the usage of your own groups only; leave out ?group=", "group")
            if "user" in (query.by or ""):
                raise NotAllowed("only admins see who in a group spent what; use by=day or by=profile", "by")
        if query.user == "*" and not caller.admin:
            raise NotAllowed("only admins may see everyone's usage; leave out ?user=", "user")
        whole_group = query.group is not None and query.user is None
        owner = None if query.user == "*" or whole_group else self.owner_for(caller, query.user)
        try:
            return usage_report(self.ledger, self.catalog.currency, query, owner=owner, now=now)
        except UsageQueryError as e:
            raise Invalid(str(e), e.field) from None

    def waiting(self, groups: frozenset[str]) -> dict[str, Usage]:
        """What the queued jobs charged to each of ``groups`` would use once started (they use
        nothing while they wait)."""
        totals = {group: Usage() for group in groups}
        for record in self.store.queued_jobs():
            for group in totals.keys() & set(record.groups):
                totals[group] = totals[group] + Usage(**record.usage)
        return totals

    def queue_ahead(self, groups: frozenset[str], profile: str) -> str | None:
        """The queue a new job of ``groups`` and ``profile`` must wait in behind others, so that
        nobody overtakes: the first of its groups whose quota has jobs waiting, else the queue of
        the jobs of its profile that wait for room on a machine, if they have one."""
        waiting = {record.queue for record in self.store.queued_jobs()}
        first = min(groups & self.catalog.quotas.keys() & waiting, default=None)
        return first or (room_queue(profile) if room_queue(profile) in waiting else None)

    # --- notification settings -------------------------------------------------------------------------

    def notify_settings(self, caller: Caller, requested: str | None) -> dict[str, Any]:
        """The settings of whom to tell what about the jobs of the caller (an admin: anyone's)."""
        owner = self.owner_for(caller, requested)
        return {"notify": (for_job(self.store.notify_settings(owner), None) or NotifySettings()).to_json()}

    def save_notify_settings(self, caller: Caller, requested: str | None, body: Any) -> dict[str, Any]:
        """Check and save ``{"notify": {...}}`` as the caller's settings (an admin: anyone's)."""
        owner = self.owner_for(caller, requested)
        if not isinstance(body, dict) or set(body) != {"notify"}:
            raise Invalid(
                'the body must be {"notify": {"email": ..., "webhook": ..., "events": [...]}}', "notify"
            )
        try:
            settings = parse_notify(body["notify"], self.webhook_prefixes)
        except JobSpecError as e:
            raise Invalid(str(e), e.field) from None
        self.store.save_notify_settings(owner, settings.to_json())
        return {"notify": settings.to_json()}

    async def settings_for(self, user: str, name: str) -> NotifySettings | None:
        """The notification settings that apply to ``user``'s job ``name``: its own given at submit,
        over its owner's (for the notifier)."""
        record = self.store.get(user, name)
        return for_job(self.store.notify_settings(user), record.notify if record else None)

    async def watched_scrapers(self) -> list[ScraperActivity]:
        """The running scrapers that set ``quiet_after``, with when each last printed a line (or
        started, if it has printed nothing since): what the quiet watcher looks at."""
        found = []
        for record in self.store.running(JobKind.SCRAPER):
            quiet_after = record.spec.get("quiet_after")
            if not quiet_after or record.started is None:
                continue
            printed = await self.backend.last_output(record.user, record.name)
            last = max(printed, record.started) if printed else record.started
            found.append(ScraperActivity(record.user, record.name, quiet_after, last, record.profile))
        return found

    # --- actions -------------------------------------------------------------------------------------------

    async def submit(self, caller: Caller, body: Any) -> JobRecord:
        """Validate a submission, check profile access and quota, record the job and start it.

        Anything that fails after the job was recorded removes it again, so nothing stays counted.
        """
        self.rate.check(caller.name, "submissions")
        try:
            spec = parse_submission(body, self.limits)
            notify = parse_job_notify(body.get("notify"), self.webhook_prefixes)
        except JobSpecError as e:
            raise Invalid(str(e), e.field) from None
        async with self.working_on(caller.name, spec.name):
            return await self._submit(caller, spec, notify)

    async def _submit(self, caller: Caller, spec: JobSpec, notify: dict[str, Any]) -> JobRecord:
        admitted = self.admission.plan(caller.name, caller.groups, spec, spec.profile)
        if self.store.exists(caller.name, spec.name):
            raise Conflict(
                f"you already have a job named '{spec.name}'; choose another name or delete it first",
                "name",
            )
        # a job that names no profile runs in its owner's notebook's image
        image = None if spec.profile else await self.notebook_image(caller)
        admitted = admitted.running_in(image)
        try:  # what would fail later is refused now
            await self.backend.validate(admitted.runs, admitted.placement)
        except JobRejected as e:
            raise Invalid(e.message, e.field) from None
        queue, why = self._over_budget(caller.groups, spec)
        if queue is None:
            queue, why = await self._behind(admitted, spec)
        if queue is None:
            try:
                async with self.admission.reserve(admitted):
                    record = self._create(caller, spec, admitted, image, notify)
            except QuotaFull as full:
                if not spec.wait:
                    raise
                queue, why = full.queue, waiting_words(full.problems)
        if queue is not None:  # it waits in the queue, reserving nothing
            record = self._create(caller, spec, admitted, image, notify, queue=queue, why=why)
            await self._published(Happened.SUBMITTED, record, caller.name)
            self.queue.wake()  # room may have freed meanwhile
            return record
        try:
            await self.backend.submit(admitted.runs, admitted.placement)
        except JobRejected as e:
            self.store.delete(caller.name, spec.name, actor="jobs service: not started")
            raise Invalid(e.message, e.field) from None
        except Exception:
            # nothing may stay pending (and counted) for a job that never started
            with contextlib.suppress(Exception):
                await self.backend.delete(caller.name, spec.name)
            self.store.delete(caller.name, spec.name, actor="jobs service: not started")
            raise
        await self._published(Happened.SUBMITTED, record, caller.name)  # pending, as recorded
        return record

    def _create(
        self,
        caller: Caller,
        spec: JobSpec,
        admitted: Admitted,
        image: str | None,
        notify: dict[str, Any],
        *,
        queue: str | None = None,
        why: str | None = None,
    ) -> JobRecord:
        """Record a submitted job (at the end of ``queue``, if given), as submitted: a restart bounds
        it anew."""
        try:
            return self.store.create(
                caller.name,
                spec,
                admitted.selection.profile.slug,
                groups=caller.groups,
                usage=admitted.usage.to_json(),
                image=image,
                queue=queue,
                message=why,
                notify=notify,
            )
        except JobExists:
            raise Conflict(f"you already have a job named '{spec.name}'", "name") from None

    def _over_budget(self, groups: frozenset[str], spec: JobSpec) -> tuple[str | None, str | None]:
        """The queue a job waits in because a spent monthly budget of ``groups`` says so, and why; a
        refusal (field ``budget``) where the budget refuses, or the job may not wait."""
        verdict = self.ledger.reader.verdict(self.catalog, groups, Kind.JOB)
        if verdict.starts or verdict.deciding is None:
            return None, None
        why = verdict.message(self.catalog.currency)
        if verdict.action is not BudgetAction.QUEUE or not spec.wait:
            raise NotAllowed(why or "a budget of your groups is spent", "budget")
        return verdict.deciding.group, why

    async def _behind(self, admitted: Admitted, spec: JobSpec) -> tuple[str | None, str | None]:
        """The queue a job must wait in before it may start, if any, and why: behind others that
        came first, or for room on a machine (a refusal if it may not wait, or no machine could ever
        take it)."""
        queue = self.queue_ahead(admitted.placement.groups, admitted.selection.profile.slug)
        if queue is None:
            return self._no_room(admitted, spec)
        if not spec.wait:
            whose = "its profile's" if is_room_queue(queue) else f"group '{queue}'"
            raise NotAllowed(
                f"jobs of {whose} wait for room before it, and it was sent with wait false; "
                "send it with wait true (the default) to join the queue",
                "wait",
            )
        if is_room_queue(queue):
            room = self.backend.room(admitted.placement)
            return queue, room_words(room.short) if not room.now else BEHIND
        full = await self.admission.full(admitted)
        return queue, waiting_words(full.problems) if full is not None else BEHIND

    def _no_room(self, admitted: Admitted, spec: JobSpec) -> tuple[str | None, str | None]:
        """The queue of the jobs of its profile that wait for room on a machine, and why, if no
        machine it may run on has room for the job now; a refusal (reason ``can-never-fit``) if none
        ever could, naming the largest profile of the owner's that one could, or if it may not wait."""
        room = self.backend.room(admitted.placement)
        if room.now:
            return None, None
        profile = admitted.selection.profile
        if not room.ever:
            fitting = [
                p
                for p in self.catalog.visible_to(admitted.placement.groups, Kind.JOB)
                if self.backend.room(dataclasses.replace(admitted.placement, profile=p)).ever
            ]
            largest = max(
                fitting,
                key=lambda p: (p.resources.gpu_count, p.resources.cpu, p.resources.memory),
                default=None,
            )
            then = f"choose a smaller profile, such as '{largest.slug}'" if largest else "ask an admin"
            raise NotAllowed(
                f"profile '{profile.slug}' can never start: {room.short}; {then}",
                "profile",
                reason=Reason.CAN_NEVER_FIT.value,
            )
        if not spec.wait:
            raise NotAllowed(
                f"no machine has room for it now: {room.short}; send it with wait true (the default)"
                " to wait for room",
                "wait",
            )
        return room_queue(profile.slug), room_words(room.short)

    async def notebook_image(self, caller: Caller) -> str | None:
        """The image of the caller's running notebook server: a job runs where its code was written."""
        if self.hub is None:
            return None
        options = await self.hub.server_options(caller.name)
        if options is None:
            return None
        try:
            selection = resolve_selection(self.catalog, options, caller.groups, Kind.SERVER)
        except SelectionError:
            return None
        return selection.image.image if selection.image else None

    @_working
    async def stop(self, caller: Caller, owner: str, name: str) -> JobRecord:
        """Stop a job that is still going and return its record; a finished job is left as it is."""
        self.actions.check(caller.name, "stops and deletes")
        self.job(caller, owner, name)
        if caller.name != owner:
            await self._stop(
                owner, name, f"stopped by an admin ({caller.name})", Reason.STOPPED_BY_ADMIN, caller.name
            )
        else:
            await self._stop(owner, name, "stopped", Reason.STOPPED_BY_USER, caller.name)
        return self.job(caller, owner, name)

    async def enforce_budgets(self, now: datetime | None = None) -> None:
        """What the budgets ask of the service besides admission (the budget pass, run with each
        pass of the queue): tell the members of each group whose budget reached a level they were
        not told of yet this month, and stop the jobs and servers of spent budgets that stop running
        work (the month's spend is read once for all, at ``now``: by default the clock's)."""
        states = self.budgets(frozenset(self.catalog.budgets), now)
        if states:
            told = await self.tell_budgets(states)
            await self.stop_over_budget(states)
            await self.stop_servers_over_budget(states, told)

    async def tell_budgets(self, states: Sequence[BudgetState] | None = None) -> list[tuple[str, str]]:
        """Tell the members of each group whose budget reached ``warn_at``, or was spent, of it once
        this month (those who saved notification settings: no one else can be told); (user, group)
        of each told. ``states``: every budget's, where the caller read them already."""
        told: list[tuple[str, str]] = []
        if self.on_budget is None:
            return told
        members: dict[str, frozenset[str]] | None = None
        for state in self.budgets(frozenset(self.catalog.budgets)) if states is None else states:
            month = state.month.strftime("%Y-%m")
            previous = parse_level(self.store.budget_told(state.group, month))
            if not crossed(previous, state):
                continue
            members = members if members is not None else await self._members()
            for user, groups in members.items():
                if state.group in groups:
                    self.on_budget(user, state)
                    told.append((user, state.group))
            self.store.tell_budget(state.group, month, state.level.value)
        return told

    async def _members(self) -> dict[str, frozenset[str]]:
        """The groups of everyone who saved notification settings: the hub's answer, or without a
        hub their latest job's."""
        found = {}
        for user in self.store.users_with_settings():
            if self.hub is not None:
                found[user] = await self.hub.groups(user)
            else:
                latest = self.store.list_jobs(user, limit=1)
                found[user] = frozenset(latest[0].groups) if latest else frozenset()
        return found

    async def stop_over_budget(self, states: Sequence[BudgetState] | None = None) -> list[tuple[str, str]]:
        """Stop the running and starting jobs charged to a group whose spent budget says
        ``stop_running`` (each in its turn, saying why); the jobs stopped. ``states``: every
        budget's, where the caller read them already."""
        catalog = self.catalog
        states = self.budgets(frozenset(catalog.budgets)) if states is None else states
        stopping = [s for s in states if s.budget.stop_running and s.level is BudgetLevel.OVER]
        found: list[tuple[str, str]] = []
        if not stopping:  # the usual case: no job is read at all
            return found
        for record in self.store.going():
            state = stopped_by(record.groups, stopping)
            if state is not None:
                async with self.working_on(record.user, record.name):
                    why = state.stopping(catalog.currency)
                    if await self._stop(record.user, record.name, why, Reason.STOPPED_BY_ADMIN, SERVICE):
                        found.append((record.user, record.name))
        return found

    async def stop_servers_over_budget(
        self, states: Sequence[BudgetState] | None = None, told: Collection[tuple[str, str]] = ()
    ) -> list[tuple[str, str]]:
        """Stop the running and starting servers charged to a group whose spent budget says
        ``stop_running``, through the hub; (user, server name) of each stopped. A server is charged
        as the usage ledger charges it: to its owner's groups when its run began (its open run's),
        else, not in the ledger yet, to its owner's groups now.

        Each is stopped once: one the hub is stopping already is left to it; the log says why, and
        its owner is told (the budget's notice, unless ``told`` says this pass told them of that
        group already), the first time only (a server that still runs, not stopping, after the hub
        was asked is asked again, with a warning, but its owner is not told again). A server the hub
        no longer has (404) is passed over. ``states``: every budget's, where the caller read them
        already."""
        hub = self.hub
        states = self.budgets(frozenset(self.catalog.budgets)) if states is None else states
        stopping = [s for s in states if s.budget.stop_running and s.level is BudgetLevel.OVER]
        if hub is None or not stopping:  # the usual case: the hub is not asked at all
            self.servers_stopped.clear()
            return []
        charged = self.ledger.open_groups(SERVER)
        active = await hub.active_servers()
        seen = {(server.user, server.name) for server in active}
        self.servers_stopped = {k: v for k, v in self.servers_stopped.items() if k in seen}
        found: list[tuple[str, str]] = []
        for server in active:
            key = (server.user, server.name)
            state = stopped_by(charged.get(key, server.groups), stopping)
            if state is None or server.stopping:
                continue
            if await self._stop_server(hub, server, state, told):
                found.append(key)
        return found

    async def _stop_server(
        self, hub: HubClient, server: ActiveServer, state: BudgetState, told: Collection[tuple[str, str]]
    ) -> bool:
        """Ask the hub to stop ``server``, which ``state`` stops; whether this is its first stop
        (logged and told)."""
        key, what = (server.user, server.name), server_words(server.name)
        try:
            if not await hub.stop_server(server.user, server.name):
                return False  # gone already
        except Exception as e:
            logger.warning("Could not stop %s's %s, whose budget is spent: %s", server.user, what, e)
            return False
        if key in self.servers_stopped and self.servers_stopped[key] == server.started:
            logger.warning(
                "%s's %s still runs after the hub was asked to stop it: asked again", server.user, what
            )
            return False
        self.servers_stopped[key] = server.started
        logger.info("Stopping %s's %s: %s", server.user, what, state.stopping(self.catalog.currency))
        if self.on_budget is not None and (server.user, state.group) not in told:
            self.on_budget(server.user, state)
        return True

    async def _stop(self, owner: str, name: str, why: str, reason: Reason, actor: str) -> bool:
        """Stop a job that is still going (in its turn), saying why and who; whether it was going."""
        record = self.store.get(owner, name)
        if record is None or record.status.finished:
            return False
        await self.recorder.keep_log(owner, name)  # before its pods or process go, and their output
        await self.backend.stop(owner, name)
        try:
            stopped = self.store.set_status(
                owner, name, JobStatus.STOPPED, message=why, reason=reason.value, detail="", actor=actor
            )
        except StatusConflict:
            return False  # it ended by itself meanwhile
        await self._published(Happened.ENDED, stopped, actor)
        return True

    @_working
    async def restart(self, caller: Caller, owner: str, name: str) -> JobRecord:
        """Stop a job if it runs, then start it again from its stored spec, quota permitting."""
        self.rate.check(caller.name, "submissions and restarts")
        record = self.job(caller, owner, name)
        try:
            spec = parse_submission(record.spec, self.limits)
        except JobSpecError as e:
            raise Conflict(
                f"this job cannot run any more ({e}); delete it and submit it again", e.field
            ) from None
        # the owner's groups as they are now (asked before anything is stopped): leaving a group
        # takes its profiles and quota away
        groups = await self.hub.groups(owner) if self.hub is not None else frozenset(record.groups)
        if not record.status.finished:
            await self.backend.stop(owner, name)
            with contextlib.suppress(StatusConflict):  # it ended meanwhile: restarted all the same
                self.store.set_status(
                    owner, name, JobStatus.STOPPED, message="stopped for a restart", reason="", detail=""
                )
        admitted = self._admit(owner, groups, spec, record)
        reserved = (groups, admitted.usage.to_json())
        queue, why = self._over_budget(groups, spec)
        if queue is None:
            queue, why = await self._behind(admitted, spec)
        if queue is None:
            try:
                async with self.admission.reserve(admitted):
                    self.store.set_status(
                        owner,
                        name,
                        JobStatus.PENDING,
                        message="restarted",
                        reason="",
                        detail="",
                        actor=caller.name,
                        reserved=reserved,
                    )
            except QuotaFull as full:
                if not spec.wait:
                    raise
                queue, why = full.queue, waiting_words(full.problems)
        if queue is not None:  # it waits in the queue, reserving nothing
            record = self.store.set_status(
                owner, name, JobStatus.PENDING, message=why, actor=caller.name, reserved=reserved, queue=queue
            )
            await self._published(Happened.RESTARTED, record, caller.name)
            self.queue.wake()
            return record
        try:
            await self.backend.submit(admitted.runs, admitted.placement)
        except JobRejected as e:
            await self._failed(owner, name, f"could not start: {e.message}")
            raise Invalid(e.message, e.field) from None
        except Exception as e:
            await self._failed(owner, name, f"failed: could not start ({e})")
            raise
        record = self.job(caller, owner, name)
        await self._published(Happened.RESTARTED, record, caller.name)
        return record

    async def start_queued(self, queued: JobRecord) -> Tried:
        """Start a queued job, in its turn, if its groups' quotas and budgets have room now (see
        :mod:`jhub_ext.service.queue`); one that cannot run any more (its profile gone, or larger than
        its quota now allows) ends ``failed``, saying why."""
        owner, name = queued.user, queued.name
        async with self.working_on(owner, name):
            record = self.store.get(owner, name)
            if record is None or not record.queued:
                return Tried.STARTED  # stopped, deleted or started meanwhile: gone from the queue
            try:
                spec = parse_submission(record.spec, self.limits)
                admitted = self._admit(owner, frozenset(record.groups), spec, record)
                started = await self._leave_queue(record, admitted)
            except (JobSpecError, NotAllowed, Invalid) as e:
                await self._failed(owner, name, f"failed: could not start ({e})")
                return Tried.STARTED
            if started is None:
                return Tried.FULL
            await self._published(Happened.SUBMITTED, started, SERVICE)
            try:
                await self.backend.submit(admitted.runs, admitted.placement)
            except JobRejected as e:
                await self._failed(owner, name, f"could not start: {e.message}")
            except Exception as e:
                logger.exception("Could not start queued job %s/%s", owner, name)
                await self._failed(owner, name, f"failed: could not start ({e})")
            return Tried.STARTED

    async def _leave_queue(self, record: JobRecord, admitted: Admitted) -> JobRecord | None:
        """Take a queued job out of its queue, under its groups' quota locks, if their budgets and
        quotas have room for it now; else say anew why it still waits, and None."""
        groups = frozenset(record.groups)
        verdict = self.ledger.reader.verdict(self.catalog, groups, Kind.JOB)
        why = verdict.message(self.catalog.currency)  # a spent budget holds it until it renews
        room = self.backend.room(admitted.placement)
        if verdict.starts and not room.now:  # no machine has room for it yet
            why = room_words(room.short)
        elif verdict.starts:
            try:
                async with self.admission.reserve(admitted):
                    return self.store.leave_queue(
                        record.user, record.name, (groups, admitted.usage.to_json())
                    )
            except QuotaFull as full:
                why = waiting_words(full.problems)
            except QuotaLockTimeout:
                return None  # the quotas are busy: the next pass tries again
        if why and why != record.message:
            self.store.why_queued(record.user, record.name, why)
        return None

    async def resume(self, owner: str, name: str) -> None:
        """Finish starting a recorded job whose start was cut short (the service died between its
        record and its workload): as submitted, on what it reserved then. Its record ends ``failed``,
        saying why, where it cannot start any more."""
        record = self.store.get(owner, name)
        if record is None:
            return
        try:
            spec = parse_submission(record.spec, self.limits)
            admitted = self._admit(owner, frozenset(record.groups), spec, record)
            await self.backend.submit(admitted.runs, admitted.placement)
        except (JobSpecError, NotAllowed, Invalid, JobRejected) as e:
            await self._failed(owner, name, f"failed: could not start ({e})")

    async def _failed(self, owner: str, name: str, message: str) -> None:
        """Record and publish that a job the service was starting could not start."""
        record = self.store.set_status(
            owner, name, JobStatus.FAILED, message=message, reason=Reason.CANNOT_START.value, detail=""
        )
        await self._published(Happened.ENDED, record, SERVICE)

    def _admit(self, owner: str, groups: frozenset[str], spec: JobSpec, record: JobRecord) -> Admitted:
        """A recorded job's admission: with the profile and image it was submitted with."""
        return self.admission.plan(owner, groups, spec, record.profile).running_in(record.image)

    @_working
    async def delete(self, caller: Caller, owner: str, name: str) -> None:
        """Remove a job from the backend and from the store."""
        self.actions.check(caller.name, "stops and deletes")
        record = self.job(caller, owner, name)
        await self.backend.delete(owner, name)
        self.store.delete(owner, name, actor=caller.name)
        await self._published(Happened.DELETED, record, caller.name)

    def working_on(self, user: str, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """The job's turn: submit, restart, stop and delete of one job, and the reconciler's
        corrections, run one at a time, each waiting for the one before (see
        :mod:`jhub_ext.core.jobs.oneatatime`); the reconciler leaves a job alone while anyone holds or
        waits for its turn."""
        return self.busy.turn((user, name))

    @contextlib.contextmanager
    def follow_slot(self, caller: Caller) -> Any:
        """One of the caller's few concurrent ``follow`` streams, for as long as the stream lasts."""
        if self.following[caller.name] >= self.follows_per_user:
            raise TooMany(
                f"you follow {self.follows_per_user} logs already; close one (Ctrl-C) and try again",
                "follow",
                retry_after=10,
            )
        self.following[caller.name] += 1
        try:
            yield
        finally:
            self.following[caller.name] -= 1
            if not self.following[caller.name]:
                del self.following[caller.name]

    def logs(
        self, caller: Caller, owner: str, name: str, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        """A job's output, in chunks: live from the backend, or the kept tail once the backend forgot it.

        Whether there is such a job is checked at once, before anything is streamed.
        """
        self.job(caller, owner, name)
        return self._logs(owner, name, follow, tail)

    async def _logs(self, owner: str, name: str, follow: bool, tail: int | None) -> AsyncIterator[str]:
        observed = self.backend.observed(owner, name)
        if observed is not None:
            said = False
            async for chunk in self.backend.logs(owner, name, follow=follow, tail=tail):
                said = said or bool(chunk)
                yield chunk
            if said or not observed.status.finished:
                return
        # gone from the backend, or ended with its output gone (a stopped job's pods): the kept tail
        kept = self.store.log_tail(owner, name) or ""
        lines = kept.splitlines(keepends=True)
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        yield "".join(lines)
