"""The jobs service's metrics for admins, over a real store, read as Prometheus reads them: scraped over
HTTP behind JupyterHub's ``read:metrics`` scope and parsed with prometheus_client's own parser.

The hub is the only stand-in: a small HTTP server answering ``GET /hub/api/user`` with literal models,
as the hub answers HubAuth for a token (a 403 for a token it does not know).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.httpclient import JupyterHubHTTPClient
from jupyterhub.services.auth import HubOAuth
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPResponse
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from jhub_ext.core.events import Events
from jhub_ext.core.jobs.model import JobSpec, JobStatus, parse_submission
from jhub_ext.core.jobs.reasons import Reason
from jhub_ext.service.handlers import NotFoundHandler, api_handlers
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.metrics import ServiceMetrics, metrics_handlers
from jhub_ext.service.store import JobStore

from .managers import ALICE, BOB, FakeBackend, Make, batch

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "/services/jobs/"
CAROL = Caller("carol", frozenset({"researchers", "gpu"}), admin=False)  # charged to both groups
DAVE = Caller("dave", frozenset(), admin=False)  # in no group: charged to none


class WatchingBackend(FakeBackend):
    """A backend that follows watches, healthy or not as the test says."""

    def __init__(self, watches: Mapping[str, bool]):
        super().__init__()
        self.watches = dict(watches)

    def health(self) -> dict[str, bool]:
        return dict(self.watches)


def parse(exposition: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(exposition)}


def scrape(metrics: ServiceMetrics) -> dict[str, Metric]:
    return parse(generate_latest(metrics.registry).decode())


def values(families: dict[str, Metric], sample: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples named ``sample``, by the values of ``labels``, in that order."""
    return {
        tuple(s.labels[label] for label in labels): s.value
        for family in families.values()
        for s in family.samples
        if s.name == sample
    }


def series(family: Metric) -> set[str]:
    """The names a query may use of a family: a counter's ``_total``, a histogram's bucket, count and sum."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    return {family.name + suffix for suffix in suffixes.get(family.type, ("",))}


def exposed_names(families: dict[str, Metric]) -> set[str]:
    return {name for family in families.values() for name in series(family)}


async def test_jobs_are_counted_by_status_kind_profile_and_group(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    await manager.submit(ALICE, batch("a"))
    await manager.submit(ALICE, batch("b"))
    await backend.report("alice", "a", JobStatus.RUNNING)
    await manager.stop(ALICE, "alice", "b")
    await manager.submit(BOB, batch("p1"))
    assert (await manager.submit(BOB, batch("p2"))).queued  # physics has room for one small job
    await manager.submit(CAROL, batch("s", kind="scraper"))
    await manager.submit(DAVE, batch("d"))

    families = scrape(ServiceMetrics(store, backend))

    labels = ("status", "kind", "profile", "group")
    assert values(families, "jhub_jobs_jobs", *labels) == {
        ("running", "batch", "small", "researchers"): 1,
        ("stopped", "batch", "small", "researchers"): 1,
        ("pending", "batch", "small", "physics"): 2,
        ("pending", "scraper", "small", "gpu"): 1,  # carol's scraper, once in each of her groups
        ("pending", "scraper", "small", "researchers"): 1,
        ("pending", "batch", "small", ""): 1,  # dave's, charged to no group
    }
    assert values(families, "jhub_jobs_distinct_jobs", "status", "kind", "profile") == {
        ("running", "batch", "small"): 1,
        ("stopped", "batch", "small"): 1,
        ("pending", "batch", "small"): 3,
        ("pending", "scraper", "small"): 1,
    }
    # every group in use has a queue length, 0 when nobody waits
    assert values(families, "jhub_jobs_queued", "group") == {
        ("gpu",): 0,
        ("physics",): 1,
        ("researchers",): 0,
    }
    assert values(families, "jhub_jobs_database_up") == {(): 1}
    assert values(families, "jhub_jobs_backend_up", "backend") == {("FakeBackend",): 1}
    # sources the app did not give have their names and no samples
    assert values(families, "jhub_jobs_cost_this_month") == {}
    assert values(families, "jhub_jobs_notifications_total") == {}


def test_jobs_are_counted_in_one_grouped_query_on_either_database(any_store: JobStore) -> None:
    def spec(name: str) -> JobSpec:
        return parse_submission(batch(name))

    both = frozenset({"researchers", "gpu"})
    any_store.create("carol", spec("a"), "small", groups=both)
    any_store.create("carol", spec("b"), "small", groups=both)
    any_store.create("dave", spec("c"), None, queue="physics", message="waits for room")
    any_store.set_status("carol", "b", JobStatus.RUNNING)

    assert any_store.job_counts() == {
        ("pending", "batch", "small", ("gpu", "researchers"), None): 1,
        ("running", "batch", "small", ("gpu", "researchers"), None): 1,
        ("pending", "batch", None, (), "physics"): 1,
    }


async def test_a_queued_job_leaves_the_queue_length_when_it_starts(
    manager: JobManager, store: JobStore, backend: FakeBackend
) -> None:
    metrics = ServiceMetrics(store, backend)
    await manager.submit(BOB, batch("p1"))
    await manager.submit(BOB, batch("p2"))
    assert values(scrape(metrics), "jhub_jobs_queued", "group") == {("physics",): 1}
    await backend.report("bob", "p1", JobStatus.SUCCEEDED, exit_code=0)
    assert await manager.queue.dispatch() == [("bob", "p2")]
    families = scrape(metrics)
    assert values(families, "jhub_jobs_queued", "group") == {("physics",): 0}
    assert values(families, "jhub_jobs_distinct_jobs", "status") == {("succeeded",): 1, ("pending",): 1}


async def test_each_run_that_ends_is_counted_once(make: Make, store: JobStore, backend: FakeBackend) -> None:
    metrics = ServiceMetrics(store, backend)
    manager = make(events=Events([metrics]))
    await manager.submit(ALICE, batch("a"))
    await manager.submit(ALICE, batch("b"))
    await backend.report("alice", "a", JobStatus.RUNNING)
    failed = {"exit_code": 3, "reason": Reason.EXIT_CODE}
    await backend.report("alice", "a", JobStatus.FAILED, **failed)
    await backend.report("alice", "a", JobStatus.FAILED, **failed)  # told again (its log grew)
    await manager.stop(ALICE, "alice", "b")
    await backend.report("alice", "b", JobStatus.STOPPED)  # the backend sees what the stop did
    await manager.restart(ALICE, "alice", "a")
    await backend.report("alice", "a", JobStatus.SUCCEEDED, exit_code=0, reason=Reason.COMPLETED)  # 2nd run

    ended = values(scrape(metrics), "jhub_jobs_ended_total", "kind", "status", "reason")

    assert ended == {
        ("batch", "failed", "exit-code"): 1,
        ("batch", "stopped", "stopped-by-user"): 1,
        ("batch", "succeeded", "completed"): 1,
    }


def test_cost_notifications_and_watches_come_from_their_sources(store: JobStore) -> None:
    metrics = ServiceMetrics(
        store,
        WatchingBackend({"pods": True, "jobs": False}),
        cost=lambda: {"researchers": 12.5, "gpu": 3},
        currency=lambda: "EUR",
        notifications=lambda: {"delivered": 4, "failed": 1, "dropped": 0},
    )
    families = scrape(metrics)
    assert values(families, "jhub_jobs_cost_this_month", "group", "currency") == {
        ("gpu", "EUR"): 3.0,
        ("researchers", "EUR"): 12.5,
    }
    assert values(families, "jhub_jobs_notifications_total", "outcome") == {
        ("delivered",): 4,
        ("failed",): 1,
        ("dropped",): 0,
    }
    assert families["jhub_jobs_notifications"].type == "counter"
    # one watch behind: the backend is down, and the watch that is says which
    assert values(families, "jhub_jobs_backend_watch_up", "watch") == {("jobs",): 0, ("pods",): 1}
    assert values(families, "jhub_jobs_backend_up", "backend") == {("WatchingBackend",): 0}


def test_a_source_that_fails_leaves_out_only_its_own_figures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("the ledger is being rebuilt")

    unreachable = JobStore(f"sqlite:///{tmp_path / 'no such directory' / 'jobs.sqlite'}", migrate=False)
    metrics = ServiceMetrics(
        unreachable, WatchingBackend({"pods": True}), cost=broken, notifications=lambda: {"delivered": 2}
    )
    with caplog.at_level(logging.ERROR, logger="jhub_ext.service.metrics"):
        families = scrape(metrics)
    unreachable.close()
    assert values(families, "jhub_jobs_database_up") == {(): 0}
    assert values(families, "jhub_jobs_jobs") == {} and values(families, "jhub_jobs_cost_this_month") == {}
    assert values(families, "jhub_jobs_backend_up", "backend") == {("WatchingBackend",): 1}
    assert values(families, "jhub_jobs_notifications_total", "outcome") == {("delivered",): 2}
    assert "the jobs database did not answer" in caplog.text and "the ledger is being rebuilt" in caplog.text


def test_each_service_keeps_its_own_registry(store: JobStore, backend: FakeBackend) -> None:
    first, second = ServiceMetrics(store, backend), ServiceMetrics(store, backend)  # no duplicate names
    assert "jhub_jobs_jobs" in scrape(first) and "jhub_jobs_jobs" in scrape(second)
    assert not any(name.startswith("jhub_jobs") for name in parse(generate_latest(REGISTRY).decode()))


# --- over HTTP, behind the hub's scopes ---------------------------------------------------------------

MODELS = {
    "admin-token": {"kind": "user", "name": "admin", "admin": True, "groups": [], "scopes": ["read:metrics"]},
    "alice-token": {
        "kind": "user",
        "name": "alice",
        "admin": False,
        "groups": ["researchers"],
        "scopes": ["access:services!service=jobs", "custom:jobs:use", "read:users:groups!user=alice"],
    },
    "prometheus-token": {"kind": "service", "name": "prometheus", "scopes": ["read:metrics"]},
}


class FakeHubUser(web.RequestHandler):
    """The hub's ``GET /hub/api/user``: the model of the token's owner, with the token's scopes."""

    def get(self) -> None:
        token = self.request.headers.get("Authorization", "").partition(" ")[2]
        if token not in MODELS:
            raise web.HTTPError(403)
        self.finish(MODELS[token])


class Served:
    """Tornado applications on free loopback ports, and a client for them."""

    def __init__(self) -> None:
        self.servers: list[HTTPServer] = []
        self.client = AsyncHTTPClient(force_instance=True)

    def serve(self, app: web.Application) -> str:
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets(sockets)
        self.servers.append(server)
        return f"http://127.0.0.1:{sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        self.client.close()
        for server in self.servers:
            server.stop()
            await server.close_all_connections()


@pytest.fixture
async def service(
    manager: JobManager, store: JobStore, backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Served]]:
    """The jobs service's routes (the API, the metrics, the JSON 404) behind the fake hub, configured
    as the hub configures a managed service: by its environment."""
    served = Served()
    hub = served.serve(web.Application([("/hub/api/user", FakeHubUser)]))
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"{hub}/hub/api")
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "the-service's-own-token")
    monkeypatch.setenv("JUPYTERHUB_CLIENT_ID", "service-jobs")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_NAME", "jobs")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", PREFIX)
    HubOAuth.clear_instance()  # made from the environment on first use
    metrics = ServiceMetrics(store, backend)
    app = web.Application(
        [*api_handlers(PREFIX), *metrics_handlers(PREFIX, metrics.registry)],
        jobs_manager=manager,
        jobs_prefix=PREFIX,
        jobs_log=logging.getLogger("jhub_ext.service"),
        cookie_secret="x" * 32,
        xsrf_cookies=False,
        default_handler_class=NotFoundHandler,
        log_function=metrics.log_request,
    )
    yield served.serve(app) + PREFIX, served
    await served.close()
    await JupyterHubHTTPClient.loop_instance().close()  # HubAuth's session with the hub
    HubOAuth.clear_instance()


async def fetch(served: Served, url: str, token: str | None = None, method: str = "GET") -> HTTPResponse:
    headers = {"Authorization": f"token {token}"} if token else {}
    return await served.client.fetch(
        url, method=method, headers=headers, raise_error=False, allow_nonstandard_methods=True
    )


async def test_metrics_need_the_read_metrics_scope(service: tuple[str, Served]) -> None:
    url, served = service
    for token in (None, "not-a-token"):
        refused = await fetch(served, f"{url}metrics", token)
        assert refused.code == 401, refused.body
        assert json.loads(refused.body)["error"].startswith("not logged in")
    forbidden = await fetch(served, f"{url}metrics", "alice-token")
    assert forbidden.code == 403 and forbidden.headers["Content-Type"].startswith("application/json")
    assert "read:metrics" in json.loads(forbidden.body)["error"]
    for token in ("admin-token", "prometheus-token"):  # an admin, and a service given the scope
        answer = await fetch(served, f"{url}metrics", token)
        assert answer.code == 200, answer.body
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        assert "jhub_jobs_jobs" in parse(answer.body.decode())


async def test_every_request_is_timed_by_method_handler_and_status(
    service: tuple[str, Served], caplog: pytest.LogCaptureFixture
) -> None:
    url, served = service
    caplog.set_level(logging.INFO, logger="tornado.access")
    assert (await fetch(served, f"{url}api/jobs", "alice-token")).code == 200
    assert (await fetch(served, f"{url}metrics?token=sekrit")).code == 401
    assert (await fetch(served, f"{url}nowhere/{'x' * 40}")).code == 404
    assert (await fetch(served, f"{url}api/jobs", method="BREW")).code == 405
    assert (await fetch(served, f"{url}metrics", "admin-token")).code == 200  # counted after it answers

    families = parse((await fetch(served, f"{url}metrics", "admin-token")).body.decode())

    counts = values(families, "jhub_jobs_request_duration_seconds_count", "method", "handler", "code")
    assert counts == {
        ("GET", "JobsHandler", "200"): 1,
        ("GET", "MetricsHandler", "401"): 1,
        ("GET", "MetricsHandler", "200"): 1,
        ("GET", "NotFoundHandler", "404"): 1,  # the path is never a label
        ("other", "JobsHandler", "405"): 1,  # nor a method a client made up
    }
    buckets = values(families, "jhub_jobs_request_duration_seconds_bucket", "handler", "code", "le")
    assert buckets["JobsHandler", "200", "+Inf"] == 1
    assert len(values(families, "jhub_jobs_request_duration_seconds_sum", "handler", "code")) == 5
    # the access log is written as before, but a token in the query is not
    lines = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any(
        re.match(r"200 GET /services/jobs/api/jobs \(127\.0\.0\.1\) [\d.]+ms$", line) for line in lines
    )
    assert any("/metrics?token=[secret]" in line for line in lines)
    assert "sekrit" not in caplog.text


# --- the dashboard and the reference name what exists -------------------------------------------------


@pytest.fixture
def every_family(store: JobStore) -> dict[str, Metric]:
    """A scrape with every source given and one request timed."""
    metrics = ServiceMetrics(
        store, WatchingBackend({"pods": True}), cost=lambda: {"g": 1.0}, notifications=lambda: {"sent": 1}
    )
    metrics.requests.labels("GET", "JobsHandler", "200").observe(0.01)
    return scrape(metrics)


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left of it once strings, label matchers,
    ranges, Grafana variables, grouping clauses, functions and keywords are taken out."""
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    keywords = {"and", "or", "unless", "offset", "bool", "by", "without", "inf", "nan"}
    return {
        m.group()
        for m in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", expr)
        if m.group().lower() not in keywords and not expr[m.end() :].lstrip().startswith("(")
    }


def test_promql_metric_names_finds_only_metrics() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, handler) (rate(jhub_jobs_request_duration_seconds_bucket"
        '{code=~"2..", handler!="MetricsHandler"}[$__rate_interval]))) > 1e3 and on (group) jhub_jobs_queued'
    )
    assert promql_metric_names(expr) == {"jhub_jobs_request_duration_seconds_bucket", "jhub_jobs_queued"}


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text("utf-8"))
    panels = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]  # a row may hold panels of its own
    return [panel for panel in panels if panel["type"] != "row"]


def test_the_dashboard_queries_only_metrics_that_exist(every_family: dict[str, Metric]) -> None:
    exposed = exposed_names(every_family)
    panels = dashboard_panels()
    assert panels, "the dashboard has panels"
    read = set()
    for panel in panels:
        exprs = [target["expr"] for target in panel["targets"]]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names and names <= exposed, f"panel {panel['title']!r}: {sorted(names - exposed)}"
            read |= names
    # the panels the issue asks for: jobs by status, queues, cost, latency, backend health
    for name in (
        "jhub_jobs_distinct_jobs",
        "jhub_jobs_queued",
        "jhub_jobs_cost_this_month",
        "jhub_jobs_request_duration_seconds_bucket",
        "jhub_jobs_backend_up",
    ):
        assert name in read, f"no panel shows {name}"


def test_the_reference_names_every_metric_and_only_those(every_family: dict[str, Metric]) -> None:
    page = (ROOT / "docs" / "reference" / "metrics.md").read_text("utf-8")
    named = set(re.findall(r"\bjhub_jobs_\w+", page))
    # (the ``_created`` series of counters and histograms, the client's own, the page names once for all)
    ours = [
        f
        for name, f in every_family.items()
        if name.startswith("jhub_jobs") and not name.endswith("_created")
    ]
    missing = [family.name for family in ours if not ({family.name} | series(family)) & named]
    assert missing == [], "metrics missing from docs/reference/metrics.md"
    unknown = named - exposed_names(every_family) - set(every_family)
    assert unknown == set(), "the page names metrics that do not exist"
