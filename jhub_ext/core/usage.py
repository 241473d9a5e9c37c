"""What servers and jobs cost: each run's cost, totals by day, user, profile or group, a CSV export,
and where each group stands against its monthly budget, in plain words.

The rules, which the usage API, the spawn page, ``%quota``, the jobs queue and the notifications
all follow by calling this module:

- **A run's cost** is its profile's ``cost_per_hour``, frozen when the run started (a later edit of
  the catalog changes only later runs), times the hours it ran, in the catalog's ``currency``. A run
  still going accrues up to the moment asked, never beyond: every function that reads a running
  run takes ``now``.
- **Days and months are UTC.** A run that spans midnight UTC is split between the two days, and
  so between two months at the turn of a month. Budgets renew at 00:00 UTC on the 1st.
- **Groups**: a run counts in full against every group it is charged to, as quotas count a
  workload in each of its owner's groups. Totals by group therefore add up to more than the grand
  total when users are in several groups.
- **Amounts** are floats that are never rounded in computation (sums use :func:`math.fsum`); they
  are rounded only where people or files see them: two decimals in messages
  (:func:`format_money`), four in CSV (so that the rows of a day add up to its total to the cent),
  six in JSON (which drops floating-point noise, nothing a currency shows).
- **Budgets** apply to a user through every group of theirs that has one, as quotas do. A budget is
  *reached* when what its group spent this month is at least ``monthly`` (a sum that differs from
  it only by floating-point noise counts as reaching it). Of the budgets of a user's groups that are
  reached, the strictest ``action`` decides about new work (``refuse`` over ``queue`` over
  ``warn``), on a tie the one most over; a server cannot wait in the jobs queue, so ``queue``
  refuses new servers. Running work is stopped only by a reached budget with ``stop_running``.

Pure: no I/O, no clock; the usage store and the service read the runs and the time, then ask here.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from itertools import product
from typing import Any

from jhub_ext.core.catalog.model import Budget, BudgetAction, Catalog, Kind

#: what a run is of
SUBJECTS = ("job", "server")
HOUR = timedelta(hours=1)
#: the API's field of a refusal or a queued job's reason that a budget caused
BUDGET_FIELD = "budget"
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


def _check_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (in UTC, say), not {moment!r}")


# --- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One run of a server or a job, from the usage ledger: whose, charged to which groups, on which
    profile at what cost per hour (frozen at its start), from when to when (``ended`` None: it is
    still running and accrues live). ``name`` is the job's, or the server's ("" for a user's default
    server); ``cpu`` (cores), ``memory`` (bytes) and ``gpus`` are what its profile gave it."""

    subject: str
    user: str
    name: str
    groups: frozenset[str]
    profile: str | None
    cost_per_hour: float
    started: datetime
    ended: datetime | None = None
    cpu: float = 0.0
    memory: int = 0
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.subject not in SUBJECTS:
            raise ValueError(f"a run is of a job or a server, not {self.subject!r}")
        if not (math.isfinite(self.cost_per_hour) and self.cost_per_hour >= 0):
            raise ValueError(f"a run's cost_per_hour is a number of zero or more, not {self.cost_per_hour!r}")
        _check_aware(self.started, "a run's start")
        if self.ended is not None:
            _check_aware(self.ended, "a run's end")
            if self.ended < self.started:
                raise ValueError(f"a run cannot end ({self.ended}) before it started ({self.started})")

    @property
    def running(self) -> bool:
        """Whether the run is still going."""
        return self.ended is None

    def window(self, until: datetime, since: datetime | None = None) -> tuple[datetime, datetime] | None:
        """The part of the run inside [``since``, ``until``] (a running run goes on up to ``until``),
        in UTC; None if it has no time there. For a running run, ``until`` must not be after now."""
        _check_aware(until, "until")
        start = self.started if since is None else max(self.started, _aware(since, "since"))
        end = until if self.ended is None else min(self.ended, until)
        if end <= start:
            return None
        return start.astimezone(UTC), end.astimezone(UTC)

    def hours(self, until: datetime, since: datetime | None = None) -> float:
        """Hours the run ran inside [``since``, ``until``]."""
        window = self.window(until, since)
        return (window[1] - window[0]) / HOUR if window else 0.0

    def cost(self, until: datetime, since: datetime | None = None) -> float:
        """What the part of the run inside [``since``, ``until``] cost: its cost per hour times those
        hours (a running run up to ``until``, which must not be after now)."""
        return self.cost_per_hour * self.hours(until, since)

    def days(self, until: datetime, since: datetime | None = None) -> Iterator[tuple[date, float]]:
        """The hours of the part inside [``since``, ``until``], split at each midnight UTC, by day."""
        window = self.window(until, since)
        if window is None:
            return
        start, end = window
        while start < end:
            midnight = datetime.combine(start.date() + timedelta(days=1), time(), UTC)
            piece = min(midnight, end)
            yield start.date(), (piece - start) / HOUR
            start = piece


def _aware(moment: datetime, name: str) -> datetime:
    _check_aware(moment, name)
    return moment


def matching(
    runs: Iterable[Run], *, user: str | None = None, group: str | None = None, profile: str | None = None
) -> list[Run]:
    """The runs of ``user``, charged to ``group``, on ``profile`` (each None: any), in their order."""
    return [
        run
        for run in runs
        if (user is None or run.user == user)
        and (group is None or group in run.groups)
        and (profile is None or run.profile == profile)
    ]


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The calendar month (UTC) that ``now`` is in: its first instant, and the next month's."""
    now = _aware(now, "now").astimezone(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    after = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    return start, after


# --- totals ----------------------------------------------------------------------------------------


class By(StrEnum):
    """What usage is totalled by (the API's ``by``); two of them, such as ``day,profile``, give the
    rows of a chart of cost per day stacked by profile."""

    DAY = "day"  # a UTC day, as 2026-12-01
    USER = "user"
    PROFILE = "profile"  # the profile's slug (None: the run's profile was not known)
    GROUP = "group"  # each group a run is charged to, in full (None: it is charged to none)


@dataclass(frozen=True)
class SpendRow:
    """The usage of one key: ``key`` holds one value per dimension of ``by``, in its order. ``cost``
    in the catalog's currency, ``hours`` of running time, ``runs``: how many runs had time there."""

    by: tuple[By, ...]
    key: tuple[str | None, ...]
    cost: float
    hours: float
    runs: int

    def value(self, dimension: By) -> str | None:
        """This row's value of ``dimension`` (one of its ``by``)."""
        return self.key[self.by.index(dimension)]

    def to_json(self) -> dict[str, Any]:
        """The row for the API: its key's values by dimension, then cost, hours and runs."""
        found: dict[str, Any] = {
            dimension.value: value for dimension, value in zip(self.by, self.key, strict=True)
        }
        return found | {"cost": round(self.cost, 6), "hours": round(self.hours, 6), "runs": self.runs}


class UsageQueryError(ValueError):
    """A usage query that cannot be answered; ``field`` names the parameter, the message the fix."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


def parse_by(text: str) -> tuple[By, ...]:
    """The API's ``by`` (``day``, or several separated by commas, such as ``day,profile``) as
    dimensions."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    choices = ", ".join(d.value for d in By)
    try:
        dimensions = tuple(By(name) for name in names)
    except ValueError:
        raise UsageQueryError(
            "by",
            f"by {text!r} is not one of {choices}; use one, or several separated by commas, such as "
            "day,profile",
        ) from None
    if not dimensions or len(set(dimensions)) != len(dimensions):
        raise UsageQueryError(
            "by", f"by {text!r} must name one or more of {choices}, each once, such as day,profile"
        )
    return dimensions


_DATE = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def parse_moment(text: str, field: str, *, end_of_day: bool = False) -> datetime:
    """The API's ``since`` or ``until`` (``field``): a date (``2026-12-01``: its midnight UTC, or the
    next midnight with ``end_of_day``, so that ``until=2026-12-31`` takes in the whole of the 31st)
    or an ISO time (``2026-12-01T09:30:00Z``; one without an offset is UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageQueryError(
            field,
            f"{field} {text!r} is not a date or a time; use a date such as 2026-12-01 or a time "
            "such as 2026-12-01T09:30:00Z",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and _DATE.fullmatch(text.strip()):
        moment += timedelta(days=1)
    return moment


def _dimensions(by: By | Sequence[By]) -> tuple[By, ...]:
    dimensions = (by,) if isinstance(by, By) else tuple(By(d) for d in by)
    if not dimensions or len(set(dimensions)) != len(dimensions):
        raise ValueError(f"usage is totalled by one or more of {', '.join(By)}, each once, not {by!r}")
    return dimensions


def _values(run: Run, dimension: By) -> tuple[str | None, ...]:
    if dimension is By.USER:
        return (run.user,)
    if dimension is By.PROFILE:
        return (run.profile,)
    return tuple(sorted(run.groups)) or (None,)  # By.GROUP (days are split apart by the caller)


def _sort_key(key: tuple[str | None, ...]) -> tuple[tuple[bool, str], ...]:
    return tuple((value is None, value or "") for value in key)


def spend(
    runs: Iterable[Run],
    *,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    by: By | Sequence[By] = By.DAY,
) -> list[SpendRow]:
    """The cost of ``runs`` inside [``since``, ``until``] totalled by ``by`` (one dimension, or
    several for stacked charts), one row per key that has time, in key order (days in order, no-value
    keys last). ``until`` defaults to ``now`` and never goes past it: running runs accrue up to now.
    A run that spans midnight UTC counts in each of its days; one charged to several groups counts
    in full in each of them."""
    dimensions = _dimensions(by)
    end = now if until is None else min(_aware(until, "until"), _aware(now, "now"))
    costs: dict[tuple[str | None, ...], list[float]] = defaultdict(list)
    hours: dict[tuple[str | None, ...], list[float]] = defaultdict(list)
    for run in runs:
        if By.DAY in dimensions:
            pieces = [(day.isoformat(), h) for day, h in run.days(end, since)]
        else:
            ran = run.hours(end, since)
            pieces = [("", ran)] if ran > 0 else []
        for day, ran in pieces:
            options = [(day,) if d is By.DAY else _values(run, d) for d in dimensions]
            for key in product(*options):
                costs[key].append(run.cost_per_hour * ran)
                hours[key].append(ran)
    return [
        SpendRow(dimensions, key, math.fsum(costs[key]), math.fsum(hours[key]), len(hours[key]))
        for key in sorted(costs, key=_sort_key)
    ]


def total_cost(
    runs: Iterable[Run], *, now: datetime, since: datetime | None = None, until: datetime | None = None
) -> float:
    """What ``runs`` cost inside [``since``, ``until``] (``until`` as in :func:`spend`), each once."""
    end = now if until is None else min(_aware(until, "until"), _aware(now, "now"))
    return math.fsum(run.cost(end, since) for run in runs)


def month_spend(runs: Iterable[Run], groups: Iterable[str], *, now: datetime) -> dict[str, float]:
    """What was spent this month (UTC, up to ``now``) by each of ``groups``: the cost of the runs
    charged to it (0.0 for a group with none)."""
    start, _ = month_bounds(now)
    found: dict[str, list[float]] = {group: [] for group in groups}
    for run in runs:
        cost = run.cost(now, start)
        for group in run.groups & found.keys():
            found[group].append(cost)
    return {group: math.fsum(costs) for group, costs in found.items()}


def burn_rate(runs: Iterable[Run], group: str) -> float:
    """What the running runs charged to ``group`` cost per hour together, now."""
    return math.fsum(run.cost_per_hour for run in runs if run.running and group in run.groups)


# --- CSV -------------------------------------------------------------------------------------------

#: the first characters that make a spreadsheet read a cell as a formula (and tab and carriage
#: return, which some spreadsheets drop before reading one)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str | None) -> str:
    """A text cell that a spreadsheet shows as text: one that would start a formula gets a leading
    ``'`` (as a user name such as ``=HYPERLINK(...)`` would)."""
    if text is None:
        return ""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: quotes where needed, lines end with CRLF
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _number(value: float) -> str:
    return f"{value:.4f}"


def usage_csv(rows: Iterable[SpendRow], *, by: By | Sequence[By], currency: str) -> str:
    """The rows of :func:`spend` as CSV: a header (the dimensions of ``by``, then cost, currency,
    hours, runs), then one line per row, amounts to four decimals."""
    dimensions = _dimensions(by)
    header = [*(d.value for d in dimensions), "cost", "currency", "hours", "runs"]
    lines = (
        [
            *(csv_cell(row.value(d)) for d in dimensions),
            _number(row.cost),
            csv_cell(currency),
            _number(row.hours),
            str(row.runs),
        ]
        for row in rows
    )
    return _csv(header, lines)


RUNS_CSV_HEADER = (
    "subject", "user", "name", "groups", "profile", "cpu", "memory", "gpus", "cost_per_hour",
    "started", "ended", "hours", "cost", "currency",
)  # fmt: skip


def runs_csv(
    runs: Iterable[Run],
    *,
    now: datetime,
    currency: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> str:
    """Each run with time inside [``since``, ``until``] (as in :func:`spend`) as one CSV line, in
    order of start: its hours and cost are those inside the window; ``ended`` is empty while it
    runs; ``groups`` are separated by spaces; times are ISO 8601 in UTC."""
    end = now if until is None else min(_aware(until, "until"), _aware(now, "now"))
    lines = []
    for run in sorted(runs, key=lambda r: (r.started, r.user, r.name)):
        if run.window(end, since) is None:
            continue
        lines.append(
            [
                run.subject,
                csv_cell(run.user),
                csv_cell(run.name),
                csv_cell(" ".join(sorted(run.groups))),
                csv_cell(run.profile),
                f"{run.cpu:g}",
                str(run.memory),
                str(run.gpus),
                f"{run.cost_per_hour:g}",
                run.started.astimezone(UTC).isoformat(),
                run.ended.astimezone(UTC).isoformat() if run.ended else "",
                _number(run.hours(end, since)),
                _number(run.cost(end, since)),
                csv_cell(currency),
            ]
        )
    return _csv(RUNS_CSV_HEADER, lines)


# --- money, in words -------------------------------------------------------------------------------


def format_money(amount: float, currency: str, *, whole: bool = False) -> str:
    """An amount for people: two decimals (none with ``whole`` where the amount is whole, as for a
    budget of 500), after a currency written in letters (``412.50 EUR``), else after a symbol
    (``€412.50``, ``$412.50``)."""
    number = f"{amount:.0f}" if whole and amount == round(amount) else f"{amount:.2f}"
    if len(currency) > 1 and currency.isalpha():
        return f"{number} {currency}"
    return f"{currency}{number}"


def month_words(moment: datetime) -> str:
    """The month (UTC) ``moment`` is in, as ``December 2026``."""
    moment = moment.astimezone(UTC)
    return f"{_MONTHS[moment.month - 1]} {moment.year}"


def day_words(moment: datetime) -> str:
    """The day (UTC) of ``moment``, as ``1 January 2027``."""
    moment = moment.astimezone(UTC)
    return f"{moment.day} {month_words(moment)}"


# --- budgets -------------------------------------------------------------------------------------


class BudgetLevel(StrEnum):
    """Where a group stands against its monthly budget."""

    OK = "ok"  # below ``warn_at``
    WARN = "warn"  # at ``warn_at`` or above, below the whole budget
    OVER = "over"  # the whole budget is spent: its ``action`` applies to new work

    @property
    def rank(self) -> int:
        """0, 1, 2: a level above another was crossed since."""
        return list(BudgetLevel).index(self)


#: a spend this close to a threshold, relatively, has reached it: floating-point noise, not money
_CLOSE = 1e-9


def _reached(spent: float, threshold: float) -> bool:
    return spent >= threshold or math.isclose(spent, threshold, rel_tol=_CLOSE)


@dataclass(frozen=True)
class BudgetState:
    """What group ``group`` spent in the month (UTC) that began at ``month``, against ``budget``;
    ``renews``: when the next month's budget begins."""

    group: str
    budget: Budget
    spent: float
    month: datetime
    renews: datetime

    @property
    def limit(self) -> float:
        """The monthly budget."""
        return self.budget.monthly

    @property
    def fraction(self) -> float:
        """How much of the budget is spent: 0.5 for half, above 1 when over."""
        return self.spent / self.budget.monthly

    @property
    def remaining(self) -> float:
        """What may still be spent this month (0.0 when over)."""
        return max(0.0, self.budget.monthly - self.spent)

    @property
    def level(self) -> BudgetLevel:
        """ok, warn (at ``warn_at``) or over (at the whole budget, or above)."""
        if _reached(self.spent, self.budget.monthly):
            return BudgetLevel.OVER
        if _reached(self.spent, self.budget.warn_at * self.budget.monthly):
            return BudgetLevel.WARN
        return BudgetLevel.OK

    @property
    def percent(self) -> int:
        """The fraction spent in whole percent, rounded down (99 % until it is reached)."""
        return (
            100 if self.level is BudgetLevel.OVER and self.fraction < 1 else math.floor(self.fraction * 100)
        )

    def summary(self, currency: str) -> str:
        """One line for the spawn page and ``%quota``: "group 'researchers' has spent 412.50 EUR of
        its 500 EUR budget this month (82%)"."""
        return (
            f"group '{self.group}' has spent {format_money(self.spent, currency)} of its "
            f"{self._limit(currency)} budget this month ({self.percent}%)"
        )

    def refusal(self, currency: str, kind: Kind = Kind.JOB) -> str:
        """Why new work is refused (a 403 with field ``budget``): for ``kind``, under ``refuse``, or
        a server under ``queue`` (a server cannot wait in the jobs queue)."""
        if self.budget.action is BudgetAction.QUEUE and kind is Kind.SERVER:
            refused = "new servers of the group are refused, and its new jobs wait in the queue,"
        else:
            refused = "new work of the group is refused"
        return f"{self._spent_all(currency)}; {refused} {self._until()}, unless an admin raises the budget"

    def waiting(self, currency: str) -> str:
        """Why a queued job waits (its reason's words), under ``queue``."""
        return (
            f"{self._spent_all(currency)}; it starts by itself when the budget renews on "
            f"{day_words(self.renews)} (00:00 UTC), or sooner if an admin raises the budget"
        )

    def stopping(self, currency: str) -> str:
        """Why a running server or job is stopped, under ``stop_running``."""
        return (
            f"stopped: {self._spent_all(currency)}, and that budget stops the group's running servers "
            f"and jobs; start it again when the budget renews on {day_words(self.renews)} (00:00 UTC)"
        )

    def notification(self, currency: str) -> str:
        """What the group's members are told when it reaches ``warn_at``, or the whole budget."""
        if self.level is BudgetLevel.OVER:
            then = self._consequence(future=False)
            spent = format_money(self.spent, currency)
            return f"{self._spent_all(currency)} ({spent} so far). {then[0].upper()}{then[1:]}."
        return (
            f"group '{self.group}' has spent {format_money(self.spent, currency)} ({self.percent}%) of its "
            f"{self._limit(currency)} budget for {month_words(self.month)}. At {self._limit(currency)}, "
            f"{self._consequence(future=True)}."
        )

    def to_json(self, currency: str) -> dict[str, Any]:
        """The state for the API, the spawn page and ``%quota``."""
        return {
            "group": self.group,
            "spent": round(self.spent, 6),
            "limit": self.limit,
            "currency": currency,
            "fraction": round(self.fraction, 6),
            "level": self.level.value,
            "warn_at": self.budget.warn_at,
            "action": self.budget.action.value,
            "stop_running": self.budget.stop_running,
            "month": self.month.strftime("%Y-%m"),
            "renews": self.renews.isoformat(),
            "message": self.summary(currency),
        }

    def _limit(self, currency: str) -> str:
        return format_money(self.limit, currency, whole=True)

    def _spent_all(self, currency: str) -> str:
        return (
            f"group '{self.group}' has spent its {self._limit(currency)} budget for {month_words(self.month)}"
        )

    def _until(self) -> str:
        return f"until the budget renews on {day_words(self.renews)} (00:00 UTC)"

    def _consequence(self, *, future: bool) -> str:
        are, wait = ("will be", "will wait") if future else ("are", "wait")
        action = self.budget.action
        if action is BudgetAction.WARN:
            return "new work keeps starting: this budget only warns"
        if action is BudgetAction.QUEUE:
            said = f"new jobs of the group {wait} in the queue and its new servers {are} refused"
        else:
            said = f"new servers and jobs of the group {are} refused"
        said += f" {self._until()}"
        if self.budget.stop_running:
            said += f"; its running servers and jobs {are} stopped"
        return said


def budget_state(group: str, budget: Budget, spent: float, *, now: datetime) -> BudgetState:
    """Where ``group`` stands against ``budget`` having ``spent`` this month (the month of ``now``)."""
    month, renews = month_bounds(now)
    return BudgetState(group, budget, spent, month, renews)


def budget_states(
    catalog: Catalog, groups: Iterable[str], spent: Mapping[str, float], *, now: datetime
) -> tuple[BudgetState, ...]:
    """The state of every budget that applies to a member of ``groups`` (each of their groups with a
    budget), in group order; ``spent``: each group's spend this month (absent: nothing)."""
    return tuple(
        budget_state(group, catalog.budgets[group], spent.get(group, 0.0), now=now)
        for group in sorted(set(groups) & catalog.budgets.keys())
    )


def _effective(action: BudgetAction, kind: Kind) -> BudgetAction:
    """A server cannot wait in the jobs queue: ``queue`` refuses it."""
    return BudgetAction.REFUSE if action is BudgetAction.QUEUE and kind is Kind.SERVER else action


@dataclass(frozen=True)
class BudgetVerdict:
    """What the budgets of a user's groups say about a new server or job (``kind``): ``action`` is
    None while every budget has room, else what the deciding reached budget (``deciding``) does to
    it (``queue`` only for jobs); ``states``: every budget that applies, for the notices."""

    kind: Kind
    states: tuple[BudgetState, ...]
    action: BudgetAction | None = None
    deciding: BudgetState | None = None

    @property
    def starts(self) -> bool:
        """Whether the new work starts now (no budget reached, or only ones that warn)."""
        return self.action in (None, BudgetAction.WARN)

    @property
    def notices(self) -> tuple[BudgetState, ...]:
        """The budgets at ``warn_at`` or over: their spend is shown on the spawn page and ``%quota``."""
        return tuple(s for s in self.states if s.level is not BudgetLevel.OK)

    def message(self, currency: str) -> str | None:
        """The refusal or the queued job's reason, in words; None when the work starts."""
        if self.deciding is None or self.starts:
            return None
        if self.action is BudgetAction.QUEUE:
            return self.deciding.waiting(currency)
        return self.deciding.refusal(currency, self.kind)


def budget_verdict(states: Iterable[BudgetState], kind: Kind = Kind.JOB) -> BudgetVerdict:
    """Decide what budgets do to new work of ``kind``: of the reached budgets among ``states``, the
    strictest action (refuse, then queue, then warn; for a server, queue counts as refuse) decides,
    on a tie the budget most spent, then the first group by name."""
    states = tuple(states)
    over = [s for s in sorted(states, key=lambda s: s.group) if s.level is BudgetLevel.OVER]
    if not over:
        return BudgetVerdict(kind, states)
    deciding = max(over, key=lambda s: (_effective(s.budget.action, kind).strictness, s.fraction))
    return BudgetVerdict(kind, states, _effective(deciding.budget.action, kind), deciding)


def stopped_by(groups: Iterable[str], states: Iterable[BudgetState]) -> BudgetState | None:
    """The reached budget with ``stop_running`` among those of a running run's ``groups`` that
    stops it (the most spent, then the first by name), or None: it keeps running."""
    charged = set(groups)
    stopping = [
        s
        for s in sorted(states, key=lambda s: s.group)
        if s.group in charged and s.budget.stop_running and s.level is BudgetLevel.OVER
    ]
    return max(stopping, key=lambda s: s.fraction, default=None)


def parse_level(text: str | None) -> BudgetLevel | None:
    """A stored level; None for none, or for one this release does not know."""
    try:
        return BudgetLevel(text) if text else None
    except ValueError:
        return None


def crossed(previous: BudgetLevel | None, state: BudgetState) -> bool:
    """Whether ``state`` is at a level above ``previous`` (the last one its members were told of in
    this month; None: none yet), so that they are told now: once at ``warn_at``, once at the whole."""
    return state.level.rank > (previous.rank if previous is not None else BudgetLevel.OK.rank)


def reaches_at(state: BudgetState, burning_per_hour: float, *, now: datetime) -> datetime | None:
    """When ``state``'s group reaches its next level (``warn_at``, then the whole budget) if what it
    runs now keeps running (``burning_per_hour``: its :func:`burn_rate`), or None if it does not
    before the budget renews: so that a check can be timed instead of polled for."""
    level = state.level
    if level is BudgetLevel.OVER or burning_per_hour <= 0:
        return None
    fraction = state.budget.warn_at if level is BudgetLevel.OK else 1.0
    hours = (fraction * state.limit - state.spent) / burning_per_hour
    when = _aware(now, "now") + timedelta(hours=max(hours, 0.0))
    return when if when < state.renews else None
