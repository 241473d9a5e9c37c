"""Prometheus metrics of the jobs service, at ``/services/jobs/metrics``, for admins.

The figures live in a registry of the service's own (never the process-wide default one), so a
test or a restarted application never meets a name registered twice. Most are read when scraped:
jobs by status, kind, profile and group from one grouped query of the store, the queues, the cost
per group this month and the notifications sent (from callables the app passes in), and the
backend's health. Two are kept as things happen: how long each request took, observed by
tornado's ``log_function`` setting (:meth:`ServiceMetrics.log_request`, which also writes the access
log as tornado would), and how many runs of jobs ended, heard as a lifecycle observer
(:mod:`jhub_ext.core.events`). Reading them takes JupyterHub's ``read:metrics`` scope, as the hub's own
``/hub/metrics`` does. ``docs/reference/metrics.md`` describes every name.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypedDict, Unpack

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from tornado import web
from tornado.log import access_log

from jhub_ext.core.events import Event, Happened, Subject
from jhub_ext.core.jobs.backend import JobBackend
from jhub_ext.core.jobs.errors import NotAllowed, NotLoggedIn
from jhub_ext.service.handlers import APIHandler
from jhub_ext.service.store import JobStore

logger = logging.getLogger(__name__)

#: the JupyterHub scope that reads metrics, the hub's and this service's
SCOPE_METRICS = "read:metrics"
#: how long requests take, in seconds: the API answers in milliseconds; a ``follow`` of a job's
#: logs lasts as long as its reader stays, and lands in the last bucket
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: query arguments never written to the access log as they are (HubAuth accepts ``?token=``)
SECRET_ARGUMENTS = re.compile(r"([?&](?:token|_xsrf)=)[^&#]*", re.IGNORECASE)

#: ``{group: amount}`` spent this month (the usage ledger's)
CostOfGroups = Callable[[], Mapping[str, float]]
#: ``{outcome: count}`` since the service started (the notifier's)
Outcomes = Callable[[], Mapping[str, int]]


@dataclass(frozen=True)
class Families:
    """Every family the collector reports, filled at each scrape."""

    jobs: GaugeMetricFamily
    distinct: GaugeMetricFamily
    queued: GaugeMetricFamily
    database: GaugeMetricFamily
    cost: GaugeMetricFamily
    backend: GaugeMetricFamily
    watches: GaugeMetricFamily
    notifications: CounterMetricFamily

    @classmethod
    def empty(cls) -> Families:
        """Every family, with no samples yet."""
        return cls(
            jobs=GaugeMetricFamily(
                "jhub_jobs_jobs",
                "Jobs in the jobs database, by status, kind, profile and quota group: a job charged to "
                "several groups counts once in each; one charged to none has group ''.",
                labels=["status", "kind", "profile", "group"],
            ),
            distinct=GaugeMetricFamily(
                "jhub_jobs_distinct_jobs",
                "Jobs in the jobs database, by status, kind and profile: each job once, whatever its groups.",
                labels=["status", "kind", "profile"],
            ),
            queued=GaugeMetricFamily(
                "jhub_jobs_queued",
                "Jobs waiting in a group's queue for room in its quota (status pending, reason queued).",
                labels=["group"],
            ),
            database=GaugeMetricFamily(
                "jhub_jobs_database_up", "1 if the jobs database answered this scrape, else 0."
            ),
            cost=GaugeMetricFamily(
                "jhub_jobs_cost_this_month",
                "What each group's servers and jobs have cost since the start of the month (UTC).",
                labels=["group", "currency"],
            ),
            backend=GaugeMetricFamily(
                "jhub_jobs_backend_up",
                "1 if the jobs backend follows what runs (every watch is up), else 0.",
                labels=["backend"],
            ),
            watches=GaugeMetricFamily(
                "jhub_jobs_backend_watch_up",
                "1 if the backend's watch has listed its objects and follows their changes now, else 0.",
                labels=["watch"],
            ),
            notifications=CounterMetricFamily(
                "jhub_jobs_notifications",
                "Notifications since the service started: delivered, failed (given up on) or dropped.",
                labels=["outcome"],
            ),
        )

    def all(self) -> list[Metric]:
        """The families, in the order they are exposed."""
        return [getattr(self, f.name) for f in fields(self)]


class Sources(TypedDict, total=False):
    """What the app's callables say, for the metrics: what each group has spent this month
    (``cost``), in the catalog's ``currency``, and the notifier's counts by outcome
    (``notifications``). Without them, those metrics have no samples."""

    cost: CostOfGroups | None
    currency: Callable[[], str]
    notifications: Outcomes | None


@dataclass(eq=False)  # the registry keeps collectors in a set: each is itself
class JobsCollector:
    """The figures read at each scrape: the store's jobs and queues, the backend's health, and what
    the app's callables say (:class:`Sources`). A source that fails is logged and left out of that
    scrape; the others are still reported."""

    store: JobStore
    backend: JobBackend
    cost: CostOfGroups | None = None
    currency: Callable[[], str] = lambda: ""
    notifications: Outcomes | None = None

    def describe(self) -> Iterable[Metric]:
        """The names, for the registry's check against registering one twice (no query is made)."""
        return Families.empty().all()

    def collect(self) -> Iterable[Metric]:
        """Read every figure now."""
        families = Families.empty()
        self._jobs(families)
        self._backend(families.backend, families.watches)
        if self.cost is not None:
            self._cost(families.cost, self.cost)
        if self.notifications is not None:
            self._notifications(families.notifications, self.notifications)
        return families.all()

    def _jobs(self, families: Families) -> None:
        try:
            counts = self.store.job_counts()
        except Exception:
            logger.exception("Metrics: the jobs database did not answer")
            families.database.add_metric([], 0)
            return
        families.database.add_metric([], 1)
        per_group: Counter[tuple[str, str, str, str]] = Counter()
        distinct: Counter[tuple[str, str, str]] = Counter()
        queued: Counter[str] = Counter()
        for (status, kind, profile, groups, queue), count in counts.items():
            distinct[status, kind, profile or ""] += count
            for group in groups or ("",):
                per_group[status, kind, profile or "", group] += count
            for group in groups:  # a group in use has a queue, empty or not
                queued.setdefault(group, 0)
            if queue is not None:
                queued[queue] += count
        for labels, count in sorted(per_group.items()):
            families.jobs.add_metric(list(labels), count)
        for kinds, count in sorted(distinct.items()):
            families.distinct.add_metric(list(kinds), count)
        for group, count in sorted(queued.items()):
            families.queued.add_metric([group], count)

    def _backend(self, up: GaugeMetricFamily, watches: GaugeMetricFamily) -> None:
        name = type(self.backend).__name__
        try:
            health = dict(self.backend.health())
        except Exception:
            logger.exception("Metrics: the backend could not say how its watches are")
            up.add_metric([name], 0)
            return
        up.add_metric([name], int(all(health.values())))
        for watch, ok in sorted(health.items()):
            watches.add_metric([watch], int(bool(ok)))

    def _cost(self, family: GaugeMetricFamily, cost: CostOfGroups) -> None:
        try:
            amounts, currency = dict(cost()), self.currency()
        except Exception:
            logger.exception("Metrics: the cost per group this month could not be read")
            return
        for group, amount in sorted(amounts.items()):
            family.add_metric([group, currency], float(amount))

    @staticmethod
    def _notifications(family: CounterMetricFamily, outcomes: Outcomes) -> None:
        try:
            counts = dict(outcomes())
        except Exception:
            logger.exception("Metrics: the notifier's counts could not be read")
            return
        for outcome, count in sorted(counts.items()):
            family.add_metric([outcome], count)


class ServiceMetrics:
    """The jobs service's metrics: its own registry, with the figures read at each scrape
    (:class:`JobsCollector`), the service process's own (CPU, memory, open files), the duration of
    every request, observed by :meth:`log_request`, and the runs of jobs that ended, heard as an
    observer of lifecycle events (call it with each :class:`~jhub_ext.core.events.Event`).

    ``sources``: what the app's callables say (:class:`Sources`).
    """

    def __init__(self, store: JobStore, backend: JobBackend, **sources: Unpack[Sources]):
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "jhub_jobs_request_duration_seconds",
            "How long the jobs service took to answer requests, by method, handler class and status.",
            ["method", "handler", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ended = prometheus_client.Counter(
            "jhub_jobs_ended",
            "Runs of jobs that ended since the service started, by kind, status and reason.",
            ["kind", "status", "reason"],
            registry=self.registry,
        )
        collector = JobsCollector(store, backend, **sources)
        self.registry.register(collector)
        ProcessCollector(registry=self.registry)

    def __call__(self, event: Event) -> None:
        """A lifecycle observer: count each run of a job that ends, once (a finished job told again,
        as after a restart of the service, is not counted again)."""
        if event.subject is not Subject.JOB or event.happened is not Happened.ENDED or event.status is None:
            return
        if event.previous is not None and event.previous.finished:
            return
        reason = event.reason.value if event.reason else ""
        self.ended.labels(event.kind or "", event.status.value, reason).inc()

    def observe(self, handler: web.RequestHandler) -> None:
        """Count a finished request: its method (an unknown one as ``other``), the class of the handler
        that answered (never the path: one label per URL would grow without bound), and its status."""
        request = handler.request
        method = request.method if request.method in handler.SUPPORTED_METHODS else "other"
        labels = (method, type(handler).__name__, str(handler.get_status()))
        self.requests.labels(*labels).observe(request.request_time())

    def log_request(self, handler: web.RequestHandler) -> None:
        """Tornado's ``log_function``: observe the request, then write the access log line tornado
        writes by default (with any token in the query hidden)."""
        self.observe(handler)
        log_access(handler)


def log_access(handler: web.RequestHandler) -> None:
    """Log a finished request to ``tornado.access`` as tornado does by default (status, method, URI,
    client address, milliseconds; info, a warning from 400, an error from 500), with the values of
    secret query arguments replaced."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    uri = SECRET_ARGUMENTS.sub(r"\1[secret]", request.uri or "")
    millis = 1000.0 * request.request_time()
    access_log.log(level, "%d %s %s (%s) %.2fms", status, request.method, uri, request.remote_ip, millis)


class MetricsHandler(APIHandler):
    """``GET metrics``: the metrics in Prometheus's text format, for a token (or an OAuth cookie) with
    JupyterHub's ``read:metrics`` scope; without a hub, for the service's own token."""

    scopes = frozenset({SCOPE_METRICS})
    registry: CollectorRegistry

    # tornado calls initialize with the route's arguments: this route's is the registry
    def initialize(self, registry: CollectorRegistry) -> None:  # type: ignore[override]
        """Take the registry to read."""
        super().initialize()
        self.registry = registry

    async def authenticate(self) -> None:
        """Refuse a request with no valid token (401), or whose token lacks ``read:metrics`` (403).
        Any holder of the scope may read: a user, or a service such as Prometheus's."""
        if self.settings.get("standalone_token"):
            await super().authenticate()  # no hub: whoever has the service's token
            return
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            raise NotLoggedIn(
                f"not logged in: send a JupyterHub token with the {SCOPE_METRICS} scope "
                "as 'Authorization: token <token>'"
            )
        if not self.hub_auth.check_scopes(self.scopes, model):
            raise NotAllowed(
                f"{model.get('kind', 'user')} {model.get('name')} may not read the jobs service's metrics: "
                f"that takes JupyterHub's {SCOPE_METRICS} scope (admins have it; give others a role with it)"
            )
        self.current_user = model

    def get(self) -> None:
        """Answer with every metric, read now."""
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.registry))


def metrics_handlers(prefix: str, registry: CollectorRegistry) -> list[tuple[str, Any, dict[str, Any]]]:
    """The metrics' route under ``prefix`` (beside the API, not in it, as the hub's ``/hub/metrics``)."""
    return [(f"{prefix.rstrip('/')}/metrics", MetricsHandler, {"registry": registry})]
