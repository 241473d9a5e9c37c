"""A group that spent its monthly budget, through a real hub and jobs service in local mode: the spawn
page says so, a spawn and a submit are refused naming the budget (the API's field ``budget``), and
``GET quota`` shows the spend; raising the budget lets work start again, without a restart. A budget
that says ``stop_running`` has the service stop its group's running servers through the hub, and
their owners told."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jhub_ext.service.store import JobStore, UsageRow

from ..hubprocess import HubProcess, wait_for
from ..receivers import Posts
from .test_jobs_service import PY, Jobs, service_pid, service_pid_or_none, token_for

pytestmark = pytest.mark.integration
BUDGET = "\nbudgets:\n  researchers: {monthly: 1, warn_at: 0.5, action: refuse}\n"
STOPPING = "\nbudgets:\n  researchers: {monthly: 1, action: refuse, stop_running: true}\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    workdir = Path(tmp_path_factory.mktemp("budgets"))
    # a budget pass every second
    with HubProcess(workdir, jobs_config="c.JobsService.queue_seconds = 1\n") as process:
        yield process


def spent(hub: HubProcess, amount_per_minute: float) -> None:
    """A server run of carol's this month, charged to researchers, that cost ``amount_per_minute``
    a minute for the last minute (written to the ledger as the service would)."""
    store = JobStore(f"sqlite:///{hub.state_dir / 'jobs' / 'jobs.sqlite'}", migrate=False)
    now = datetime.now(UTC)
    try:
        with store.session() as session:
            session.add(
                UsageRow(
                    subject="server",
                    user="carol",
                    name="",
                    groups=["researchers"],
                    profile="small",
                    cost_per_hour=amount_per_minute * 60,
                    currency="$",
                    started=now - timedelta(minutes=1),
                    ended=now,
                )
            )
    finally:
        store.close()


def test_a_spent_budget_refuses_spawns_and_submits_and_says_so(hub: HubProcess) -> None:
    alice = Jobs(hub, token_for(hub, "alice"))
    wait_for(alice.answers, 30, "the jobs service")
    shipped = hub.catalog.read_text()
    web = hub.client("alice")
    web.login()
    try:
        hub.catalog.write_text(shipped + BUDGET)
        spent(hub, 5.0)  # $5 of $1
        page = wait_for(lambda: "budget" in (text := web.spawn_page().text) and text, 10, "the budget notice")
        assert "group &#39;researchers&#39; has spent its $1 budget for" in page  # on the menu already
        refused = web.submit_spawn_form({"profile": "small"})
        assert refused.status_code == 403 and "has spent its $1 budget" in refused.text
        assert web.server() is None
        job = alice.submit(name="held", kind="batch", command=[PY, "-c", "pass"])
        assert job.status_code == 403 and job.json()["field"] == "budget"
        assert "until the budget renews on" in job.json()["error"]
        (researchers,) = [
            g for g in alice.call("GET", "/quota").json()["groups"] if g["group"] == "researchers"
        ]
        assert researchers["budget"]["level"] == "over" and researchers["budget"]["spent"] >= 5

        hub.catalog.write_text(shipped + BUDGET.replace("monthly: 1,", "monthly: 1000,"))  # raised
        wait_for(
            lambda: alice.submit(name="after", kind="batch", command=[PY, "-c", "pass"]).status_code == 201,
            10,
            "a submit",
        )
    finally:
        hub.catalog.write_text(shipped)
        alice.call("DELETE", "/jobs/after")


def test_usage_accrues_live_and_across_a_kill_of_the_service(hub: HubProcess) -> None:
    alice = Jobs(hub, token_for(hub, "alice"))
    wait_for(alice.answers, 30, "the jobs service")

    def hours() -> tuple[float, int]:
        """alice's hours this month, and her runs."""
        rows = alice.call("GET", "/usage?by=user").json()["rows"]
        return (rows[0]["hours"], rows[0]["runs"]) if rows else (0.0, 0)

    _, earlier = hours()
    sleeper = [PY, "-c", "import time; time.sleep(300)"]
    short = [PY, "-c", "import time; time.sleep(3)"]
    assert alice.submit(name="long", kind="scraper", command=sleeper).status_code == 201
    assert alice.submit(name="short", kind="batch", command=short, retries=0).status_code == 201
    alice.wait_status("long", "running")
    alice.wait_status("short", "running")

    counted = earlier + 2  # a run of "long" and one of "short"
    before = wait_for(lambda: (h := hours())[1] == counted and h[0], 10, "both runs in the ledger")
    old = service_pid(hub)
    os.kill(old, signal.SIGKILL)  # "short" ends while the service is away
    wait_for(lambda: service_pid_or_none(hub) not in (None, old), 30, "the hub to restart the service")
    wait_for(alice.answers, 30, "the service to answer again")
    assert alice.wait_status("short", "succeeded", timeout=30)["finished"]

    def accrued() -> tuple[float, int] | None:
        now = hours()
        return now if now[0] > before else None

    after, runs = wait_for(accrued, 20, "usage to accrue")
    assert runs == counted  # neither lost nor doubled by the restart
    time.sleep(1)
    assert hours()[0] > after  # "long" still accrues, live
    csv = alice.call("GET", "/usage?by=day,profile&format=csv")
    assert csv.headers["Content-Type"].startswith("text/csv") and "small" in csv.text
    for name in ("long", "short"):
        alice.call("DELETE", f"/jobs/{name}")


def test_a_spent_budget_that_stops_running_work_stops_a_members_server_and_tells_them(
    hub: HubProcess, posts: tuple[Posts, int]
) -> None:
    alice = Jobs(hub, token_for(hub, "alice"))
    wait_for(alice.answers, 30, "the jobs service")
    received, port = posts
    hook = f"http://127.0.0.1:{port}/alice-budget"
    saved = alice.call("PUT", "/settings", json={"notify": {"webhook": hook, "events": ["budget"]}})
    assert saved.status_code == 200
    shipped = hub.catalog.read_text()
    web = hub.client("alice")
    web.login()
    assert web.submit_spawn_form({"profile": "small"}).status_code == 200
    web.wait_ready()
    try:
        hub.catalog.write_text(shipped + STOPPING)
        spent(hub, 5.0)  # $5 of $1, by researchers, of whom alice is one
        wait_for(lambda: web.server() is None, 30, "the service's budget pass to stop alice's server")
        (told,) = wait_for(lambda: received.texts("/alice-budget"), 10, "alice to be told")
        assert "group 'researchers' has spent its $1 budget for" in told
        assert "its running servers and jobs are stopped" in told
        refused = web.submit_spawn_form({"profile": "small"})  # and refuses a new one
        assert refused.status_code == 403 and "has spent its $1 budget" in refused.text
    finally:
        hub.catalog.write_text(shipped)
        if web.server() is not None:
            web.stop_server()
