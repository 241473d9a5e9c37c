"""What servers and jobs cost, totals, CSV, and budgets: the pure rules of jhub_ext.core.usage.

The clock is a parameter everywhere: "now" moves by passing another time, never by sleeping.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from jhub_ext.core.catalog import Kind, parse_catalog
from jhub_ext.core.catalog.model import Budget, BudgetAction
from jhub_ext.core.usage import (
    BUDGET_FIELD,
    RUNS_CSV_HEADER,
    BudgetLevel,
    BudgetState,
    By,
    Run,
    SpendRow,
    UsageQueryError,
    budget_state,
    budget_states,
    budget_verdict,
    burn_rate,
    crossed,
    csv_cell,
    format_money,
    matching,
    month_bounds,
    month_spend,
    parse_by,
    parse_moment,
    reaches_at,
    runs_csv,
    spend,
    stopped_by,
    total_cost,
    usage_csv,
)


def at(day: int, hour: float = 0, month: int = 12, year: int = 2026) -> datetime:
    """A moment in UTC (December 2026 unless said), hours may be fractional."""
    return datetime(year, month, day, tzinfo=UTC) + timedelta(hours=hour)


def run(
    started: datetime,
    ended: datetime | None = None,
    *,
    user: str = "alice",
    name: str = "crawl",
    groups: frozenset[str] = frozenset({"researchers"}),
    profile: str | None = "small",
    cost: float = 2.5,
    subject: str = "job",
) -> Run:
    return Run(subject, user, name, groups, profile, cost, started, ended)


def table(rows: list[SpendRow]) -> dict[tuple[str | None, ...], float]:
    return {row.key: row.cost for row in rows}


# --- one run ---------------------------------------------------------------------------------------


def test_a_finished_run_costs_its_rate_times_its_hours() -> None:
    r = run(at(1, 9), at(1, 11), cost=2.5)
    assert r.cost(until=at(20)) == 5.0
    assert r.hours(until=at(20)) == 2.0
    assert not r.running


def test_a_running_run_accrues_up_to_the_moment_asked() -> None:
    r = run(at(1, 9), cost=0.05)
    assert r.running
    assert r.cost(until=at(1, 9)) == 0.0
    assert r.cost(until=at(1, 10)) == pytest.approx(0.05)
    assert r.cost(until=at(2, 9)) == pytest.approx(1.2)  # 24 hours later


def test_a_run_is_clipped_to_the_window_asked() -> None:
    r = run(at(1, 22), at(2, 4), cost=1.0)  # six hours
    assert r.cost(until=at(2), since=at(1)) == 2.0  # 22:00 to midnight
    assert r.cost(until=at(3), since=at(2)) == 4.0  # midnight to 04:00
    assert r.cost(until=at(2, 1), since=at(1, 23)) == 2.0
    assert r.cost(until=at(1, 12)) == 0.0  # the window ends before it starts
    assert r.cost(until=at(9), since=at(5)) == 0.0  # ... or starts after it ended
    assert r.cost(until=at(1), since=at(3)) == 0.0  # an empty window
    assert r.window(until=at(1, 23), since=at(1)) == (at(1, 22), at(1, 23))


def test_a_zero_cost_run_has_hours_but_costs_nothing() -> None:
    r = run(at(1), at(1, 3), cost=0.0)
    assert r.cost(until=at(2)) == 0.0 and r.hours(until=at(2)) == 3.0


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"subject": "pod"}, "a job or a server"),
        ({"cost": -1.0}, "cost_per_hour"),
        ({"cost": float("nan")}, "cost_per_hour"),
        ({"started": datetime(2026, 12, 1)}, "aware"),  # naive
        ({"ended": at(1)}, "before it started"),
        ({"ended": datetime(2026, 12, 3)}, "aware"),
    ],
)
def test_a_run_that_makes_no_sense_is_refused(fields: dict[str, Any], words: str) -> None:
    values = {"started": at(2), "ended": None, "cost": 1.0, "subject": "job"} | fields
    with pytest.raises(ValueError, match=words):
        run(values["started"], values["ended"], cost=values["cost"], subject=values["subject"])


def test_naive_bounds_are_refused_rather_than_guessed() -> None:
    r = run(at(1), at(2))
    with pytest.raises(ValueError, match="aware"):
        r.cost(until=datetime(2026, 12, 3))
    with pytest.raises(ValueError, match="aware"):
        r.cost(until=at(3), since=datetime(2026, 12, 1))


# --- days and months -------------------------------------------------------------------------------


def test_a_run_across_midnight_is_split_between_the_utc_days() -> None:
    r = run(at(1, 22), at(2, 2), cost=1.0)
    assert list(r.days(until=at(10))) == [(at(1).date(), 2.0), (at(2).date(), 2.0)]


def test_a_run_across_the_turn_of_a_month_and_a_year_is_split_there() -> None:
    november = run(at(30, 23, month=11), at(1, 1), cost=1.0)
    assert [(d.isoformat(), h) for d, h in november.days(until=at(10))] == [
        ("2026-11-30", 1.0),
        ("2026-12-01", 1.0),
    ]
    new_year = run(at(31, 20), at(1, 4, month=1, year=2027), cost=1.0)
    assert [(d.isoformat(), h) for d, h in new_year.days(until=at(2, month=1, year=2027))] == [
        ("2026-12-31", 4.0),
        ("2027-01-01", 4.0),
    ]


def test_days_are_utc_days_whatever_the_zone_of_the_times() -> None:
    paris = timezone(timedelta(hours=1))
    # 23:30 to 01:30 in Paris is 22:30 to 00:30 UTC: 1.5 hours on the 1st, half an hour on the 2nd
    r = run(datetime(2026, 12, 1, 23, 30, tzinfo=paris), datetime(2026, 12, 2, 1, 30, tzinfo=paris), cost=1.0)
    assert [(d.isoformat(), h) for d, h in r.days(until=at(10))] == [("2026-12-01", 1.5), ("2026-12-02", 0.5)]


def test_a_long_running_run_is_split_into_each_day_up_to_now() -> None:
    r = run(at(1, 12), cost=1.0)
    assert [h for _, h in r.days(until=at(4, 6))] == [12.0, 24.0, 24.0, 6.0]


@pytest.mark.parametrize(
    ("now", "start", "after"),
    [
        (at(20, 13.5), at(1), at(1, month=1, year=2027)),
        (at(1), at(1), at(1, month=1, year=2027)),  # the first instant belongs to the month
        (at(15, month=2), at(1, month=2), at(1, month=3)),
        (datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), at(1), at(1, month=1, year=2027)),
    ],
)
def test_month_bounds_are_the_utc_calendar_month(now: datetime, start: datetime, after: datetime) -> None:
    assert month_bounds(now) == (start, after)


# --- totals ----------------------------------------------------------------------------------------

RUNS = [
    run(at(1, 22), at(2, 2), user="alice", profile="small", cost=0.05),  # 2 h on the 1st, 2 h on the 2nd
    run(
        at(2, 10),
        at(2, 12),
        user="bob",
        profile="gpu-a100",
        cost=2.5,
        groups=frozenset({"researchers", "gpu"}),
    ),
    run(at(2, 23), user="bob", name="", subject="server", profile=None, cost=0.4, groups=frozenset()),
]
NOW = at(3, 1)  # bob's server has run two hours


def test_spend_by_day_splits_each_run_between_its_days() -> None:
    rows = spend(RUNS, now=NOW, by=By.DAY)
    assert [row.key for row in rows] == [("2026-12-01",), ("2026-12-02",), ("2026-12-03",)]
    assert [row.cost for row in rows] == pytest.approx([0.1, 0.1 + 5.0 + 0.4, 0.4])
    assert [row.runs for row in rows] == [1, 3, 1]
    assert [row.hours for row in rows] == pytest.approx([2.0, 5.0, 1.0])


def test_spend_by_user_profile_and_group() -> None:
    assert table(spend(RUNS, now=NOW, by=By.USER)) == pytest.approx({("alice",): 0.2, ("bob",): 5.8})
    # a run whose profile is unknown, or charged to no group, is a row of its own, last
    assert table(spend(RUNS, now=NOW, by=By.PROFILE)) == pytest.approx(
        {("gpu-a100",): 5.0, ("small",): 0.2, (None,): 0.8}
    )
    by_group = spend(RUNS, now=NOW, by=[By.GROUP])
    assert [row.key for row in by_group] == [("gpu",), ("researchers",), (None,)]
    # bob's GPU job counts in full in both of its groups
    assert table(by_group) == pytest.approx({("gpu",): 5.0, ("researchers",): 5.2, (None,): 0.8})


def test_spend_by_two_dimensions_gives_the_stacked_chart() -> None:
    rows = spend(RUNS, now=NOW, by=(By.DAY, By.PROFILE))
    assert table(rows) == pytest.approx(
        {
            ("2026-12-01", "small"): 0.1,
            ("2026-12-02", "gpu-a100"): 5.0,
            ("2026-12-02", "small"): 0.1,
            ("2026-12-02", None): 0.4,
            ("2026-12-03", None): 0.4,
        }
    )
    assert list(table(rows)) == [row.key for row in rows]  # days in order, no profile last
    by_user = spend(RUNS, now=NOW, by=(By.DAY, By.USER))
    assert table(by_user) == pytest.approx(
        {
            ("2026-12-01", "alice"): 0.1,
            ("2026-12-02", "alice"): 0.1,
            ("2026-12-02", "bob"): 5.4,
            ("2026-12-03", "bob"): 0.4,
        }
    )
    assert by_user[0].value(By.USER) == "alice" and by_user[0].value(By.DAY) == "2026-12-01"


def test_the_days_add_up_to_the_total() -> None:
    many = [
        run(at(1) + timedelta(minutes=7 * i), at(1) + timedelta(minutes=7 * i + 95), cost=0.1)
        for i in range(500)
    ]
    rows = spend(many, now=at(10), by=By.DAY)
    assert sum(row.cost for row in rows) == pytest.approx(total_cost(many, now=at(10)), rel=1e-12)
    assert total_cost(many, now=at(10)) == pytest.approx(500 * 0.1 * 95 / 60, rel=1e-12)


def test_spend_is_clipped_to_since_and_until_and_never_runs_ahead_of_now() -> None:
    rows = spend(RUNS, now=NOW, since=at(2), until=at(2, 11), by=By.USER)
    assert table(rows) == pytest.approx({("alice",): 0.1, ("bob",): 2.5})
    # an `until` in the future (the end of the month) charges running work up to now only
    assert table(spend(RUNS, now=NOW, until=at(31), by=By.USER)) == table(spend(RUNS, now=NOW, by=By.USER))
    later = spend(RUNS, now=NOW + timedelta(hours=10), by=By.USER)
    assert table(later)[("bob",)] == pytest.approx(5.8 + 4.0)  # the server accrued ten more hours
    assert spend(RUNS, now=NOW, since=at(5), by=By.DAY) == []


def test_spend_refuses_a_dimension_twice_or_none() -> None:
    with pytest.raises(ValueError, match="each once"):
        spend(RUNS, now=NOW, by=(By.DAY, By.DAY))
    with pytest.raises(ValueError, match="each once"):
        spend(RUNS, now=NOW, by=())


def test_rows_as_json_round_only_the_noise() -> None:
    row = spend([run(at(1), at(1, 3), cost=0.1)], now=NOW, by=(By.DAY, By.PROFILE))[0]
    assert row.cost != 0.3  # 0.30000000000000004: kept exact in computation
    assert row.to_json() == {"day": "2026-12-01", "profile": "small", "cost": 0.3, "hours": 3.0, "runs": 1}


def test_matching_filters_runs_by_user_group_and_profile() -> None:
    assert matching(RUNS, user="bob") == RUNS[1:]
    assert matching(RUNS, group="gpu") == [RUNS[1]]
    assert matching(RUNS, group="researchers", profile="small") == [RUNS[0]]
    assert matching(RUNS) == RUNS


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("day", (By.DAY,)),
        ("day,profile", (By.DAY, By.PROFILE)),
        (" day , user ", (By.DAY, By.USER)),
        ("group", (By.GROUP,)),
        ("day,user,profile", (By.DAY, By.USER, By.PROFILE)),
    ],
)
def test_the_api_by_is_parsed(text: str, expected: tuple[By, ...]) -> None:
    assert parse_by(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [("week", "not one of day, user, profile, group"), ("", "one or more"), ("day,day", "each once")],
)
def test_a_bad_by_names_the_field_and_the_choices(text: str, words: str) -> None:
    with pytest.raises(UsageQueryError, match=words) as caught:
        parse_by(text)
    assert caught.value.field == "by"


def test_since_and_until_are_dates_or_times_in_utc() -> None:
    assert parse_moment("2026-12-01", "since") == at(1)
    assert parse_moment("2026-12-31", "until", end_of_day=True) == at(1, month=1, year=2027)
    assert parse_moment("20261231", "until", end_of_day=True) == at(1, month=1, year=2027)
    assert parse_moment("2026-12-01T09:30:00Z", "since") == at(1, 9.5)
    assert parse_moment("2026-12-01T09:30:00", "since") == at(1, 9.5)  # no offset: UTC
    assert parse_moment("2026-12-01T10:30:00+01:00", "until", end_of_day=True) == at(1, 9.5)
    with pytest.raises(
        UsageQueryError, match="since 'yesterday' is not a date or a time; use a date such as"
    ) as caught:
        parse_moment("yesterday", "since")
    assert caught.value.field == "since"


# --- CSV -------------------------------------------------------------------------------------------


def read(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_usage_csv_has_a_header_and_a_line_per_row() -> None:
    rows = spend(RUNS, now=NOW, by=(By.DAY, By.PROFILE))
    text = usage_csv(rows, by=(By.DAY, By.PROFILE), currency="EUR")
    lines = read(text)
    assert lines[0] == ["day", "profile", "cost", "currency", "hours", "runs"]
    assert lines[1] == ["2026-12-01", "small", "0.1000", "EUR", "2.0000", "1"]
    assert lines[4] == ["2026-12-02", "", "0.4000", "EUR", "1.0000", "1"]  # no profile: empty
    assert len(lines) == 1 + len(rows)
    assert text.endswith("\r\n")
    assert read(usage_csv([], by=By.USER, currency="$")) == [["user", "cost", "currency", "hours", "runs"]]


@pytest.mark.parametrize("name", ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\r=1"])
def test_a_cell_that_would_start_a_formula_gets_a_leading_quote(name: str) -> None:
    assert csv_cell(name) == "'" + name
    rows = spend([run(at(1), at(1, 1), user=name)], now=NOW, by=By.USER)
    assert read(usage_csv(rows, by=By.USER, currency="$"))[1][0] == "'" + name


@pytest.mark.parametrize("text", ["alice", "a=b", "a-b", "", "'quoted"])
def test_other_cells_are_left_as_they_are(text: str) -> None:
    assert csv_cell(text) == text
    assert csv_cell(None) == ""


def test_runs_csv_lists_each_run_with_its_cost_in_the_window() -> None:
    nasty = run(at(2, 1), at(2, 2), user="=cmd|' /C calc'!A0", name="a,b", cost=1.0)
    lines = read(runs_csv([*RUNS, nasty], now=NOW, currency="€", since=at(2)))
    assert lines[0] == list(RUNS_CSV_HEADER)
    body = {(line[1], line[2]): dict(zip(RUNS_CSV_HEADER, line, strict=True)) for line in lines[1:]}
    assert len(body) == 4
    alice = body[("alice", "crawl")]
    assert alice["hours"] == "2.0000" and alice["cost"] == "0.1000"  # the 1st is outside the window
    assert alice["started"] == "2026-12-01T22:00:00+00:00" and alice["ended"] == "2026-12-02T02:00:00+00:00"
    server = body[("bob", "")]
    assert server["ended"] == "" and server["subject"] == "server" and server["profile"] == ""
    assert server["cost"] == "0.8000" and server["currency"] == "€"
    assert body[("bob", "crawl")]["groups"] == "gpu researchers"
    assert ("'=cmd|' /C calc'!A0", "a,b") in body  # guarded, and the comma kept inside its cell
    assert [line[1] for line in lines[1:]] == ["alice", "'=cmd|' /C calc'!A0", "bob", "bob"]  # by start


# --- money in words --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "whole", "expected"),
    [
        (412.5, "EUR", False, "412.50 EUR"),
        (500.0, "EUR", True, "500 EUR"),
        (500.5, "EUR", True, "500.50 EUR"),
        (0.05, "$", False, "$0.05"),
        (1234.567, "€", False, "€1234.57"),
        (12.0, "CHF", False, "12.00 CHF"),
        (3.0, "US$", True, "US$3"),
    ],
)
def test_format_money(amount: float, currency: str, whole: bool, expected: str) -> None:
    assert format_money(amount, currency, whole=whole) == expected


# --- budgets ---------------------------------------------------------------------------------------

BUDGET = Budget(monthly=500, warn_at=0.8, action=BudgetAction.REFUSE)


@pytest.mark.parametrize(
    ("spent", "level", "percent"),
    [
        (0.0, BudgetLevel.OK, 0),
        (399.99, BudgetLevel.OK, 79),  # just under warn_at
        (400.0, BudgetLevel.WARN, 80),  # at warn_at
        (499.99, BudgetLevel.WARN, 99),  # never 100 % before it is reached
        (500.0, BudgetLevel.OVER, 100),  # the whole budget
        (612.0, BudgetLevel.OVER, 122),
    ],
)
def test_budget_levels(spent: float, level: BudgetLevel, percent: int) -> None:
    state = budget_state("researchers", BUDGET, spent, now=at(20))
    assert state.level is level
    assert state.percent == percent
    assert state.spent == spent and state.limit == 500 and state.fraction == pytest.approx(spent / 500)
    assert state.remaining == max(0.0, 500 - spent)


def test_floating_point_noise_does_not_keep_a_budget_from_being_reached() -> None:
    spent = sum([0.1] * 5000)  # 500.0000000000x or 499.99999999999x, not 500
    assert spent != 500.0
    assert budget_state("g", Budget(monthly=500), spent, now=at(1)).level is BudgetLevel.OVER
    assert budget_state("g", Budget(monthly=500), 400 - 1e-10, now=at(1)).level is BudgetLevel.WARN


def test_warn_at_one_warns_only_when_the_budget_is_spent() -> None:
    budget = Budget(monthly=100, warn_at=1.0)
    assert budget_state("g", budget, 99.9, now=at(1)).level is BudgetLevel.OK
    assert budget_state("g", budget, 100.0, now=at(1)).level is BudgetLevel.OVER


def test_the_plain_words_of_a_budget() -> None:
    warn = budget_state("researchers", BUDGET, 412.5, now=at(20))
    assert (
        warn.summary("EUR")
        == "group 'researchers' has spent 412.50 EUR of its 500 EUR budget this month (82%)"
    )
    assert warn.notification("EUR") == (
        "group 'researchers' has spent 412.50 EUR (82%) of its 500 EUR budget for December 2026. "
        "At 500 EUR, new servers and jobs of the group will be refused until the budget renews on "
        "1 January 2027 (00:00 UTC)."
    )
    over = budget_state("researchers", BUDGET, 512.3, now=at(20))
    assert over.refusal("EUR") == (
        "group 'researchers' has spent its 500 EUR budget for December 2026; new work of the group is "
        "refused until the budget renews on 1 January 2027 (00:00 UTC), unless an admin raises the budget"
    )
    assert over.notification("€").startswith(
        "group 'researchers' has spent its €500 budget for December 2026 (€512.30 so far). "
        "New servers and jobs"
    )
    queue = budget_state("researchers", Budget(monthly=500, action=BudgetAction.QUEUE), 500, now=at(20))
    assert queue.waiting("EUR") == (
        "group 'researchers' has spent its 500 EUR budget for December 2026; it starts by itself when the "
        "budget renews on 1 January 2027 (00:00 UTC), or sooner if an admin raises the budget"
    )
    assert "new servers of the group are refused, and its new jobs wait in the queue" in queue.refusal(
        "EUR", Kind.SERVER
    )
    only_warns = budget_state("researchers", Budget(monthly=500), 600, now=at(20))
    assert only_warns.notification("$").endswith("New work keeps starting: this budget only warns.")
    stops = Budget(monthly=500, action=BudgetAction.QUEUE, stop_running=True)
    assert (
        budget_state("researchers", stops, 420, now=at(20))
        .notification("$")
        .endswith("; its running servers and jobs will be stopped.")
    )
    assert (
        budget_state("researchers", stops, 520, now=at(20))
        .stopping("$")
        .startswith("stopped: group 'researchers' has spent its $500 budget for December 2026")
    )


def test_a_budget_state_as_json() -> None:
    state = budget_state("researchers", BUDGET, 412.5, now=at(20, 13))
    assert state.to_json("EUR") == {
        "group": "researchers",
        "spent": 412.5,
        "limit": 500,
        "currency": "EUR",
        "fraction": 0.825,
        "level": "warn",
        "warn_at": 0.8,
        "action": "refuse",
        "stop_running": False,
        "month": "2026-12",
        "renews": "2027-01-01T00:00:00+00:00",
        "message": "group 'researchers' has spent 412.50 EUR of its 500 EUR budget this month (82%)",
    }


CATALOG = parse_catalog(
    """
version: 1
currency: EUR
groups: [researchers, gpu, students]
profiles:
  - {slug: small, display_name: Small}
budgets:
  researchers: {monthly: 500, action: queue}
  gpu: {monthly: 1000, warn_at: 0.5, action: refuse, stop_running: true}
"""
)


def test_the_budgets_that_apply_are_those_of_each_group_of_the_user() -> None:
    states = budget_states(CATALOG, {"researchers", "gpu", "students", "unknown"}, {"gpu": 100.0}, now=at(5))
    assert [(s.group, s.spent) for s in states] == [("gpu", 100.0), ("researchers", 0.0)]
    assert budget_states(CATALOG, {"students"}, {}, now=at(5)) == ()


def test_month_spend_counts_this_utc_month_of_the_runs_charged_to_each_group() -> None:
    runs = [
        run(at(30, 20, month=11), at(1, 4), cost=1.0),  # four hours in December
        run(at(3), at(3, 2), cost=10.0, groups=frozenset({"researchers", "gpu"})),
        run(at(19, 20), cost=1.0, groups=frozenset({"gpu"})),  # still running
        run(at(1, month=11), at(2, month=11), cost=100.0),  # last month
    ]
    assert month_spend(runs, ["researchers", "gpu", "students"], now=at(20)) == pytest.approx(
        {"researchers": 24.0, "gpu": 24.0, "students": 0.0}
    )
    assert month_spend(runs, ["researchers"], now=at(1, 10, month=1, year=2027)) == {"researchers": 0.0}
    assert burn_rate(runs, "gpu") == 1.0 and burn_rate(runs, "researchers") == 0.0


def states_at(spent: dict[str, float]) -> list[BudgetState]:
    return list(budget_states(CATALOG, {"researchers", "gpu"}, spent, now=at(20)))


def test_no_budget_spent_lets_work_start_and_shows_the_warnings() -> None:
    verdict = budget_verdict(states_at({"researchers": 450.0, "gpu": 100.0}))
    assert verdict.starts and verdict.action is None and verdict.message("EUR") is None
    assert [s.group for s in verdict.notices] == ["researchers"]


def test_the_strictest_action_of_the_spent_budgets_wins() -> None:
    queue_only = budget_verdict(states_at({"researchers": 500.0}), Kind.JOB)
    assert queue_only.action is BudgetAction.QUEUE and not queue_only.starts
    assert queue_only.message("EUR") == queue_only.deciding.waiting("EUR")  # type: ignore[union-attr]
    both = budget_verdict(states_at({"researchers": 900.0, "gpu": 1000.0}), Kind.JOB)
    assert both.action is BudgetAction.REFUSE and both.deciding and both.deciding.group == "gpu"
    assert both.message("EUR") == both.deciding.refusal("EUR", Kind.JOB)
    assert BUDGET_FIELD == "budget"


def test_a_server_cannot_wait_in_the_jobs_queue_so_queue_refuses_it() -> None:
    verdict = budget_verdict(states_at({"researchers": 500.0}), Kind.SERVER)
    assert verdict.action is BudgetAction.REFUSE and not verdict.starts
    assert "new servers of the group are refused" in (verdict.message("EUR") or "")


def test_a_budget_that_only_warns_lets_work_start_when_spent() -> None:
    states = list(
        budget_states(parse_catalog(CATALOG_WARN), {"researchers"}, {"researchers": 700}, now=at(3))
    )
    verdict = budget_verdict(states, Kind.SERVER)
    assert verdict.action is BudgetAction.WARN and verdict.starts and verdict.message("$") is None
    assert verdict.notices == tuple(states)


CATALOG_WARN = """
version: 1
groups: [researchers, other]
profiles: [{slug: small, display_name: Small}]
budgets:
  researchers: {monthly: 500}
  other: {monthly: 10, action: queue}
"""


def test_of_equally_strict_budgets_the_most_spent_decides() -> None:
    catalog = parse_catalog(CATALOG_WARN.replace("{monthly: 500}", "{monthly: 500, action: queue}"))
    states = budget_states(catalog, {"researchers", "other"}, {"researchers": 1000, "other": 11}, now=at(3))
    verdict = budget_verdict(states)
    assert verdict.deciding is not None and verdict.deciding.group == "researchers"  # 200 % over 110 %


def test_running_work_is_stopped_only_by_a_spent_budget_that_says_so() -> None:
    assert stopped_by({"researchers", "gpu"}, states_at({"researchers": 600.0, "gpu": 999.0})) is None
    stopping = stopped_by({"researchers", "gpu"}, states_at({"researchers": 600.0, "gpu": 1000.0}))
    assert stopping is not None and stopping.group == "gpu"
    assert stopped_by({"researchers"}, states_at({"gpu": 5000.0})) is None  # not charged to gpu


def test_members_are_told_once_at_each_level() -> None:
    state = budget_state("g", BUDGET, 450, now=at(1))
    assert crossed(None, state) and crossed(BudgetLevel.OK, state)
    assert not crossed(BudgetLevel.WARN, state)
    assert crossed(BudgetLevel.WARN, budget_state("g", BUDGET, 500, now=at(1)))
    assert not crossed(BudgetLevel.OVER, budget_state("g", BUDGET, 800, now=at(1)))
    assert not crossed(None, budget_state("g", BUDGET, 10, now=at(1)))


def test_a_budget_crosses_its_warning_then_its_limit_as_the_clock_moves() -> None:
    """A GPU job at 2.50 an hour from 1 December, against a 500 budget that warns at 80 %: the
    warning comes after 160 hours, the limit after 200; the clock is only ever passed in."""
    job = run(at(1), cost=2.5, groups=frozenset({"researchers"}))
    budget = Budget(monthly=500, warn_at=0.8, action=BudgetAction.REFUSE)

    def state(now: datetime) -> BudgetState:
        return budget_state(
            "researchers", budget, month_spend([job], ["researchers"], now=now)["researchers"], now=now
        )

    start = at(1)
    assert state(start).level is BudgetLevel.OK
    warn_time = reaches_at(state(start), burn_rate([job], "researchers"), now=start)
    assert warn_time == at(1) + timedelta(hours=160)
    assert state(warn_time - timedelta(seconds=1)).level is BudgetLevel.OK
    assert state(warn_time).level is BudgetLevel.WARN
    assert crossed(BudgetLevel.OK, state(warn_time))
    limit_time = reaches_at(state(warn_time), burn_rate([job], "researchers"), now=warn_time)
    assert limit_time == at(1) + timedelta(hours=200)
    assert state(limit_time - timedelta(seconds=1)).level is BudgetLevel.WARN
    over = state(limit_time)
    assert over.level is BudgetLevel.OVER and budget_verdict([over]).action is BudgetAction.REFUSE
    assert reaches_at(over, 2.5, now=limit_time) is None
    # a new month: the budget renews, whatever ran before
    january = at(1, 0.5, month=1, year=2027)
    assert state(january).level is BudgetLevel.OK and state(january).spent == pytest.approx(1.25)


def test_no_crossing_is_foreseen_without_spending_or_past_the_month() -> None:
    state = budget_state("g", BUDGET, 100, now=at(30))
    assert reaches_at(state, 0.0, now=at(30)) is None
    assert reaches_at(state, 1.0, now=at(30)) is None  # 300 more hours: after 1 January
    assert reaches_at(state, 1000.0, now=at(30)) == at(30) + timedelta(hours=0.3)
