"""The jobs service: a JupyterHub managed service named ``jobs`` at ``/services/jobs/``.

Started by the hub (see ``hub_config/jupyterhub_config.py``) as
``python -m jhub_ext.service.app``; it reads the hub's ``JUPYTERHUB_*`` variables for its
address, prefix and token. Every setting of its own is a trait (``--help-all`` lists them, with
help and an example; ``hub_config/jobs_config.py`` sets them), and these environment variables
are documented shortcuts for their defaults:

- ``JHUB_EXT_CATALOG``: the profile catalog (the same file as the hub's).
- ``JHUB_EXT_JOBS_DB_URL``: the jobs database (default ``sqlite:///jobs.sqlite``).
- ``JHUB_EXT_JOBS_DIR``: where the local backend keeps job directories (default ``jobs``).
- ``JHUB_EXT_JOBS_BACKEND``: ``kubernetes`` runs jobs as Kubernetes workloads in
  ``$JHUB_EXT_NAMESPACE``; anything else, as local processes.
- ``JHUB_EXT_JOBS_CONFIG``: a traitlets config file (``c.JobsService...``), such as
  ``hub_config/jobs_config.py``.
- ``JHUB_EXT_QUOTA_LOCK_DIR``: per-group quota locks shared with the hub (local mode).
- ``JHUB_EXT_STANDALONE_TOKEN``: run without a hub (Binder, a laptop): every request must carry
  this token, and all jobs belong to ``$JHUB_EXT_STANDALONE_USER`` (default: ``$USER``).
- ``JHUB_EXT_JOBS_BIND_IP``: the address to listen on.
- ``JHUB_EXT_HUB_PID``: set by the hub that starts the service; the service then ends when that
  process does, however it ends (see :mod:`jhub_ext.local.tied`).

Started by the hub, the process first becomes a keeper of the service's socket (see
:mod:`jhub_ext.service.keeper`) and serves from a child it restarts at once, so the port never
comes free while the hub runs (``c.JobsService.keep_socket`` turns this off).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Integer, List, Type, Unicode, default
from traitlets.config import Application
from traitlets.config.loader import PyFileConfigLoader

from jhub_ext.admission.lock import QuotaLock
from jhub_ext.core.catalog import CatalogError
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.events import Events, resolve_observers
from jhub_ext.core.jobs.backend import JobBackend
from jhub_ext.core.jobs.model import Limits
from jhub_ext.core.settings import env_default
from jhub_ext.local.backend import LocalJobBackend
from jhub_ext.local.tied import die_with_parent
from jhub_ext.service import keeper
from jhub_ext.service.bodies import READ_BODY_BYTES
from jhub_ext.service.dashboard import dashboard_handlers
from jhub_ext.service.handlers import NotFoundHandler, OAuthCallbackHandler, api_handlers
from jhub_ext.service.hubapi import HubClient
from jhub_ext.service.manager import JobManager
from jhub_ext.service.metrics import ServiceMetrics, metrics_handlers
from jhub_ext.service.notify import JobNotifications, QuietWatcher
from jhub_ext.service.reconcile import keep_reconciling
from jhub_ext.service.store import JobStore
from jhub_ext.service.usage import ServerUsage, settle_jobs


class JobsService(Application):
    """The jobs service as a traitlets application: its configuration, and running the web server."""

    name = "jhub-ext-jobs"
    description = "Run researchers' scrapers, batch jobs and scheduled jobs for JupyterHub."

    catalog_path = Unicode(
        config=True,
        help="""
        The profile catalog (YAML): the same file as the hub's, re-read when it changes.
        Default: $JHUB_EXT_CATALOG, else ``profiles.yaml``.

        Example::

            c.JobsService.catalog_path = "/etc/jupyterhub/profiles.yaml"
        """,
    )
    db_url = Unicode(
        config=True,
        help="""
        SQLAlchemy URL of the jobs database (SQLite or PostgreSQL); its schema is upgraded on start.
        Default: $JHUB_EXT_JOBS_DB_URL, else ``sqlite:///jobs.sqlite``.

        Example::

            c.JobsService.db_url = "postgresql+psycopg://jobs@db/jobs"
        """,
    )
    backend_class = Type(
        klass=JobBackend,
        config=True,
        help="""
        Where jobs run: ``LocalJobBackend`` (local processes) or ``KubernetesJobBackend``.
        Default: Kubernetes when $JHUB_EXT_JOBS_BACKEND is ``kubernetes``, else local.

        Example::

            c.JobsService.backend_class = "jhub_ext.local.backend.LocalJobBackend"
        """,
    )
    event_observers: List[Any] = List(
        config=True,
        help="""
        Who else hears of what happens to jobs (submitted, waiting and why, started, restarted,
        ended and why, deleted): functions or classes taking one
        :class:`jhub_ext.core.events.Event`, plain or async, or their import strings. They run after
        the service has recorded the event, in this order; one that fails is logged and skipped.

        Example::

            c.JobsService.event_observers = ["mysite.events.notify_on_end"]
        """,
    )
    submits_per_minute = Integer(
        30,
        config=True,
        help="""
        Most job submissions and restarts per user per minute; more are answered 429 with Retry-After.

        Example::

            c.JobsService.submits_per_minute = 30
        """,
    )
    actions_per_minute = Integer(
        120,
        config=True,
        help="""
        Most stops and deletes per user per minute; more are answered 429 with Retry-After.

        Example::

            c.JobsService.actions_per_minute = 120
        """,
    )
    follows_per_user = Integer(
        5,
        config=True,
        help="""
        Most ``logs?follow=1`` streams one user may keep open at once.

        Example::

            c.JobsService.follows_per_user = 5
        """,
    )
    max_live_runs = Integer(
        1,
        config=True,
        help="""
        Most runs of one scheduled job alive at once. Above 1, a job with ``concurrency_policy: allow``
        may ask for up to this many (``max_live_runs``); each live run counts against the group quota.

        Example::

            c.JobsService.max_live_runs = 3
        """,
    )
    reconcile_seconds = Float(
        60.0,
        config=True,
        help="""
        How often the service makes its records and the backend agree (also once at start-up): a job
        whose work disappeared ends failed, saying so; work no record knows is deleted. See
        ``jhub_ext/service/reconcile.py``.

        Example::

            c.JobsService.reconcile_seconds = 60
        """,
    )
    queue_seconds = Float(
        10.0,
        config=True,
        help="""
        How often the service tries the queued jobs again, besides whenever a job ends: servers
        stopping in the hub and a quota an admin raised free room too. See
        ``jhub_ext/service/queue.py``. Each pass is also the budget pass: members of a group whose
        monthly budget reached ``warn_at`` or 100 % are told (once each), and a spent budget with
        ``stop_running: true`` has its group's running jobs and servers stopped (each once, the
        servers through the hub), so such work runs at most this long past the budget.

        Example::

            c.JobsService.queue_seconds = 10
        """,
    )
    usage_seconds = Float(
        30.0,
        config=True,
        help="""
        How often the service reads the hub's running servers for the usage ledger: a server's run is
        charged from the hub's own start time, and up to when it is first seen gone.

        Example::

            c.JobsService.usage_seconds = 30
        """,
    )
    orphan_grace_seconds = Float(
        120.0,
        config=True,
        help="""
        How old a record or an object must be before the reconciler acts on it (a submission's
        record and its objects are made one after the other).

        Example::

            c.JobsService.orphan_grace_seconds = 120
        """,
    )
    quota_lock_dir = Unicode(
        config=True,
        help="""
        A directory shared with the hub (local mode), holding the per-group quota locks, so that a
        spawn and a submit never both take the last of a quota. Empty: locks within this process
        only. Default: $JHUB_EXT_QUOTA_LOCK_DIR.

        Example::

            c.JobsService.quota_lock_dir = "/srv/jhub/locks"
        """,
    )

    standalone_token = Unicode(
        config=True,
        help="""
        Run without a hub (Binder, a laptop): every request must carry this token, and all jobs
        belong to ``standalone_user``. Empty: behind a hub. Default: $JHUB_EXT_STANDALONE_TOKEN.

        Example::

            c.JobsService.standalone_token = "a-long-random-string"
        """,
    )

    _default_standalone_token = env_default("standalone_token", "JHUB_EXT_STANDALONE_TOKEN")

    standalone_user = Unicode(
        config=True,
        help="""
        Without a hub: whose jobs these are. Default: $JHUB_EXT_STANDALONE_USER, else $USER.

        Example::

            c.JobsService.standalone_user = "researcher"
        """,
    )

    @default("standalone_user")
    def _default_standalone_user(self) -> str:
        return os.environ.get("JHUB_EXT_STANDALONE_USER") or os.environ.get("USER") or "researcher"

    bind_ip = Unicode(
        config=True,
        help="""
        The address to listen on. Empty: the host of the service URL the hub gives
        ($JUPYTERHUB_SERVICE_URL). Default: $JHUB_EXT_JOBS_BIND_IP.

        Example::

            c.JobsService.bind_ip = "0.0.0.0"
        """,
    )

    _default_bind_ip = env_default("bind_ip", "JHUB_EXT_JOBS_BIND_IP")

    keep_socket = Bool(
        True,
        config=True,
        help="""
        Hold the listening socket in a small parent process and serve from a child that is started
        again at once if it ends unasked (see ``jhub_ext.service.keeper``): the port never comes
        free, and requests wait instead of failing while the child restarts.

        Example::

            c.JobsService.keep_socket = False
        """,
    )

    def address(self) -> tuple[str, int]:
        """Where the service listens: ``bind_ip`` (else the host of the hub's service URL), and the port."""
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        return self.bind_ip or url.hostname or "127.0.0.1", url.port or 80

    _default_quota_lock_dir = env_default("quota_lock_dir", "JHUB_EXT_QUOTA_LOCK_DIR")

    @default("backend_class")
    def _default_backend_class(self) -> type[JobBackend]:
        if os.environ.get("JHUB_EXT_JOBS_BACKEND") == "kubernetes":
            from jhub_ext.kubernetes.backend import KubernetesJobBackend

            return KubernetesJobBackend
        return LocalJobBackend

    _default_catalog_path = env_default("catalog_path", "JHUB_EXT_CATALOG", "profiles.yaml")
    _default_db_url = env_default("db_url", "JHUB_EXT_JOBS_DB_URL", "sqlite:///jobs.sqlite")

    def load_admin_config(self, path: str) -> None:
        """Read the admin's ``jobs_config.py``. A broken file is reported and skipped (the service
        starts with the settings it had), so an edit cannot take job submission down."""
        try:
            config = PyFileConfigLoader(path, log=self.log).load_config()
            JobsService(config=config)  # every value checked before any is used
        except Exception as e:
            self.log.critical(
                "Ignoring %s, which cannot be used (fix it and restart the service): %s", path, e
            )
            return
        self.update_config(config)

    @staticmethod
    def service_prefix() -> str:
        """The service's URL path under the hub (``/services/jobs/``)."""
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jobs/")

    @staticmethod
    def month_costs(manager: JobManager) -> dict[str, float]:
        """What each group of the catalog has spent this month (UTC), for the metrics."""
        return manager.ledger.reader.month_spend(manager.catalog.groups)

    def make_app(self, manager: JobManager, metrics: ServiceMetrics | None = None) -> web.Application:
        """The tornado application: the API, the OAuth callback and the dashboard under the service prefix."""
        prefix = self.service_prefix()
        metrics = metrics or ServiceMetrics(manager.store, manager.backend)
        handlers = [
            *api_handlers(prefix),
            *metrics_handlers(prefix, metrics.registry),
            (f"{prefix}oauth_callback", OAuthCallbackHandler),
            *dashboard_handlers(prefix),
        ]
        return web.Application(
            handlers,
            jobs_manager=manager,
            jobs_prefix=prefix,
            standalone_token=self.standalone_token or None,
            standalone_user=self.standalone_user,
            jobs_log=self.log,
            cookie_secret=os.urandom(32),
            # Token requests need no XSRF token; HubOAuth checks it on cookie-authenticated actions.
            xsrf_cookies=False,
            default_handler_class=NotFoundHandler,
            log_function=metrics.log_request,  # the requests' latency, and the access log
        )

    async def run(self) -> None:
        """Start the backend and serve the API and dashboard until SIGTERM or SIGINT, then shut down.

        Exits at once if the catalog cannot be used. Jobs keep running; the next start re-adopts them.
        """
        try:
            catalog = CatalogSource.shared(self.catalog_path)
        except CatalogError as e:
            self.log.critical(
                "The profile catalog cannot be used, so the jobs service will not start:\n%s", e
            )
            sys.exit(1)
        store = JobStore(self.db_url)
        backend = self.backend_class(parent=self, log=self.log)
        hub = None
        if self.standalone_token:
            self.log.info("Standalone mode: no hub; one user, one token")
        elif os.environ.get("JUPYTERHUB_API_URL") and os.environ.get("JUPYTERHUB_API_TOKEN"):
            hub = HubClient(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"])
        notifications = JobNotifications(parent=self)
        notifier = notifications.notifier(
            lambda user, name: manager.settings_for(user, name), self.service_prefix()
        )
        observers = resolve_observers(self.event_observers, "c.JobsService.event_observers")
        metrics = ServiceMetrics(
            store,
            backend,
            cost=lambda: self.month_costs(manager),
            currency=lambda: catalog.current().currency,
            notifications=lambda: dataclasses.asdict(notifier.counts),
        )
        manager = JobManager(
            store,
            backend,
            catalog,
            hub,
            self.submits_per_minute,
            actions_per_minute=self.actions_per_minute,
            follows_per_user=self.follows_per_user,
            limits=Limits(max_live_runs=self.max_live_runs),
            quota_lock=QuotaLock(self.quota_lock_dir or None),
            events=Events([metrics, *observers, notifier]),
            webhook_prefixes=tuple(notifications.webhook_prefixes),
            mail=bool(notifications.smtp_host),
        )
        manager.on_budget = lambda user, state: notifier.budget(
            user, state, catalog.current().currency, manager.clock()
        )
        await backend.start()
        settle_jobs(manager.ledger, manager.job_usage)  # what ran or ended while the service was away
        await notifier.start()
        quiet = QuietWatcher(notifier, manager.watched_scrapers, interval=notifications.quiet_check_seconds)
        quiet.start()
        tasks = [
            keep_reconciling(manager, self.reconcile_seconds, self.orphan_grace_seconds),
            manager.queue.keep_dispatching(self.queue_seconds),
        ]
        if hub is not None:
            servers = ServerUsage(manager.ledger, hub, catalog.current, self.usage_seconds)
            tasks.append(servers.keep_reading())
        running = [asyncio.create_task(task) for task in tasks]
        # every handler streams and bounds its body (handlers.BoundedBody); this bounds any other
        server = HTTPServer(self.make_app(manager, metrics), max_body_size=READ_BODY_BYTES)
        host, port = self.address()
        if (inherited := keeper.inherited_socket()) is not None:
            server.add_sockets([inherited])
        else:
            server.listen(port, host)
        self.log.info("Jobs service listening on %s:%s", host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        server.stop()
        await quiet.stop()
        await notifier.stop()
        await backend.shutdown()  # jobs keep running; the next start re-adopts them
        store.close()

    def start(self) -> None:
        """Run the service until it is told to stop."""
        asyncio.run(self.run())


def main(argv: list[str] | None = None) -> None:
    """Start the jobs service from the command line and ``$JHUB_EXT_JOBS_CONFIG``: as the keeper
    of its socket and a child that serves on it, where the hub started it (``keep_socket``)."""
    served_by_keeper = keeper.LISTEN_FD in os.environ
    if served_by_keeper:  # killed with its keeper, as the service was before it had one
        die_with_parent(os.getppid(), signal.SIGKILL)
    elif hub := os.environ.get("JHUB_EXT_HUB_PID"):
        die_with_parent(int(hub))  # a hub stopped at any moment takes its service with it
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    app = JobsService.instance()
    app.initialize(argv)
    if path := os.environ.get("JHUB_EXT_JOBS_CONFIG"):
        app.load_admin_config(path)
    if not served_by_keeper and app.keep_socket and os.environ.get("JUPYTERHUB_SERVICE_URL"):
        command = [sys.executable, "-m", "jhub_ext.service.app", *(sys.argv[1:] if argv is None else argv)]
        sys.exit(keeper.keep(*app.address(), command, os.environ))
    app.start()


if __name__ == "__main__":
    main()
