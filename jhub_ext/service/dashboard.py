"""The jobs dashboard at ``/services/jobs/``: pages for people, logged in with JupyterHub OAuth.

Server-rendered with autoescaping; the page's script inserts everything from the API as text.
Actions go through the same API as scripts, authenticated by the OAuth cookie and checked
against the page's XSRF token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web

from jhub_ext.core.jobs.errors import NotAllowed, Refusal
from jhub_ext.core.usage import By, month_bounds, month_spend, month_words, spend
from jhub_ext.service.handlers import USERS, APIHandler, status_of
from jhub_ext.service.store import JobRecord

_templates = Environment(
    loader=PackageLoader("jhub_ext.service", "templates"), autoescape=select_autoescape(default=True)
)


def _age(since: datetime, now: datetime) -> str:
    seconds = max(0, int((now - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


class PageHandler(APIHandler):
    """Like the API, but a visitor without a session is sent to log in, and answers are HTML."""

    scopes = USERS

    def set_default_headers(self) -> None:
        """Mark every page as uncached HTML that may load only its own scripts and styles."""
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'self'"
        )

    async def prepare(self) -> None:
        """Send a visitor without a hub session to log in; otherwise authenticate them as the API does."""
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            self.redirect(self.get_login_url())
            return
        await super().prepare()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer a failure with the error page, saying why when the service refused."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = str(error) if isinstance(error, Refusal) else self._reason
        if isinstance(error, Refusal):
            self.set_status(status_of(error))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(self.page("error.html", message=message))

    def page(self, template: str, **namespace: Any) -> str:
        """Render ``template`` with the prefixes, the caller and the XSRF token every page needs."""
        prefix = self.settings["jobs_prefix"]
        namespace.setdefault("section", "jobs")
        return _templates.get_template(template).render(
            prefix=prefix,
            hub_prefix=self.hub_auth.hub_prefix,
            user=self.caller.name if hasattr(self, "caller") else "",
            admin=getattr(getattr(self, "caller", None), "admin", False),
            xsrf_token=self.xsrf_token.decode() if isinstance(self.xsrf_token, bytes) else self.xsrf_token,
            **namespace,
        )

    def view(self, job: JobRecord, now: datetime) -> dict[str, Any]:
        """A job as a page shows it: the API fields plus its age, cost so far and creation time."""
        body = job.to_json(self.caller.admin)
        catalog = self.manager.catalog
        profile = catalog.profile(job.profile) if job.profile else None
        hours = 0.0
        if job.started is not None:
            hours = ((job.finished or now) - job.started).total_seconds() / 3600
        cost = (profile.cost_per_hour if profile else 0.0) * hours
        body.update(
            age=_age(job.created, now),
            cost=f"{catalog.currency}{cost:.2f}",
            created=f"{job.created:%Y-%m-%d %H:%M} UTC",
        )
        return body


class JobsPage(PageHandler):
    """The dashboard's front page: a table of the caller's jobs (an admin may pick a user, or everyone)."""

    async def get(self) -> None:
        """Render the job list for the ``user`` argument (the caller by default)."""
        requested = self.get_argument("user", None)
        jobs, _ = self.manager.list_jobs(self.caller, requested, limit=500)
        now = datetime.now(UTC)
        owner = "*" if requested == "*" else self.manager.owner_for(self.caller, requested)
        users = self.manager.store.users() if self.caller.admin else []
        self.finish(self.page("jobs.html", jobs=[self.view(j, now) for j in jobs], owner=owner, users=users))


class JobPage(PageHandler):
    """One job's page: its details, output and actions."""

    async def get(self, name: str) -> None:
        """Render the named job's page."""
        job = self.manager.job(self.caller, self.owner(), self.check_job_name(name))
        self.finish(self.page("job.html", job=self.view(job, datetime.now(UTC))))


class SettingsPage(PageHandler):
    """The caller's notification settings, as a form the page's script reads and saves through the API."""

    async def get(self) -> None:
        """Render the form; the script fills it from ``GET api/settings``."""
        self.finish(
            self.page(
                "settings.html",
                section="settings",
                events=NOTIFY_WORDS,
                webhooks=self.manager.webhook_prefixes,
                email=self.manager.mail,
            )
        )


class UsagePage(PageHandler):
    """What the caller's servers and jobs cost, per day, as a chart the page's script draws from
    ``GET api/usage`` (their groups' totals too; everyone's and by user for admins)."""

    async def get(self) -> None:
        """Render the page; the script asks the API."""
        catalog = self.manager.catalog
        groups = sorted(catalog.groups if self.caller.admin else self.caller.groups & catalog.groups)
        currency = catalog.currency
        self.finish(self.page("usage.html", section="usage", groups=groups, currency=currency))


class AdminPage(PageHandler):
    """For hub admins: each group's spend and budget this month, the biggest spenders and the queue."""

    async def get(self) -> None:
        """Render the page (403 for anyone but an admin)."""
        if not self.caller.admin:
            raise NotAllowed("only hub admins may see the admin page", "user")
        now = self.manager.clock()  # the ledger's and the budgets' now
        catalog = self.manager.catalog
        month_start, _ = month_bounds(now)
        runs = self.manager.ledger.runs(since=month_start, until=now)
        spent = month_spend(runs, catalog.groups, now=now)
        budgets = {s.group: s for s in self.manager.budgets(frozenset(catalog.groups), now)}
        queued = self.manager.store.queued_jobs()
        groups = [
            {
                "group": group,
                "spent": spent[group],
                "budget": budgets.get(group),
                "queued": sum(job.queue == group for job in queued),
            }
            for group in sorted(catalog.groups)
        ]
        spenders = sorted(
            (row.to_json() for row in spend(runs, now=now, since=month_start, by=By.USER)),
            key=lambda row: -row["cost"],
        )[:10]
        self.finish(
            self.page(
                "admin.html",
                section="admin",
                month=month_words(now),
                currency=catalog.currency,
                groups=groups,
                spenders=spenders,
                queued=queued,
            )
        )


#: the events a user may be told of, in the settings form's words
NOTIFY_WORDS = (
    ("succeeded", "finished successfully"),
    ("failed", "failed"),
    ("restarted", "was restarted after it stopped unexpectedly"),
    ("quiet", "is a scraper that printed nothing for its --quiet-after"),
)


def dashboard_handlers(prefix: str) -> list[Any]:
    """The dashboard's routes under ``prefix``: the job list, job pages and static files."""
    static = str(resources.files("jhub_ext.service").joinpath("static"))
    return [
        (prefix, JobsPage),
        (f"{prefix}jobs/([^/]+)", JobPage),
        (f"{prefix}settings", SettingsPage),
        (f"{prefix}usage", UsagePage),
        (f"{prefix}admin", AdminPage),
        (f"{prefix}static/(.*)", web.StaticFileHandler, {"path": static}),
    ]
