"""The profile menu, shared by every jhub_ext spawner.

:class:`ProfileMenuMixin` gives a JupyterHub spawner the catalog's menu through
JupyterHub's public hooks only: ``options_form`` (a callable), ``options_from_form``
and ``apply_user_options``. Concrete spawners implement :meth:`apply_selection` to turn
a validated choice into their own settings (process limits, pod resources).

The form uses KubeSpawner's field names (``profile`` carries the slug, and options are
``profile-option-{slug}--{option}``), so ``user_options`` look the same in both modes:
``{"profile": "small", "image": "scipy"}``.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from tornado import web
from traitlets import List, Unicode, default
from traitlets.config import LoggingConfigurable

from jhub_ext.admission.budget import LedgerReader
from jhub_ext.admission.lock import QuotaLock, QuotaLockTimeout
from jhub_ext.admission.reservations import JobReservations
from jhub_ext.admission.reserve import reserving
from jhub_ext.core.catalog import Catalog, Kind
from jhub_ext.core.catalog.ledger import UsageSource
from jhub_ext.core.catalog.quota import QuotaExceeded, Usage, Workload
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.core.catalog.selection import (
    PROFILE_FIELD,
    Selection,
    SelectionError,
    preselect,
    resolve_selection,
)
from jhub_ext.core.events import Event, Events, Happened, Subject, resolve_observers
from jhub_ext.core.usage import BudgetVerdict
from jhub_ext.spawner.servers import STATE_KEY, HubServers, ServerRecord

OPTION_PREFIX = "profile-option-"
#: where the hub's settings keep the observers of server events, made once
EVENTS_KEY = "jhub_ext_server_events"

_templates = Environment(
    loader=PackageLoader("jhub_ext.spawner", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


@functools.cache
def shared_quota_lock(directory: str) -> QuotaLock:
    """One lock per directory for the whole hub, so that concurrent spawns wait for each other."""
    return QuotaLock(directory or None)


class ProfileChoiceError(web.HTTPError):
    """A refused choice: HTTP 400 for the REST API, a readable line on the spawn form."""

    def __init__(self, message: str, status_code: int = 400, retry_after: int | None = None):
        super().__init__(status_code, "%s", message)
        self.jupyterhub_message = message
        # JupyterHub sets an exception's ``headers`` on its answer, the spawn form's and the API's
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}


class ProfileMenuMixin(LoggingConfigurable):
    """Profile menu, server-side validation, last-choice pre-selection and group quotas."""

    catalog_path = Unicode(
        "profiles.yaml",
        config=True,
        help="""
        Path of the profile catalog (YAML), relative to the hub's working directory.

        The file is re-read when it changes, for the next spawn; an invalid edit is
        ignored (the last valid catalog keeps serving) and shown to admins on the
        spawn page. Check a file with ``jhub-ext validate-catalog PATH``.

        Example::

            c.LocalProfileSpawner.catalog_path = "/etc/jupyterhub/profiles.yaml"
        """,
    )

    jobs_db_url = Unicode(
        "",
        config=True,
        help="""
        The jobs service's database, so that group quotas count jobs (each by what it reserved when
        it was submitted, as the service counts them) as well as servers. Empty: servers only (in
        Kubernetes mode, jobs' pods are then counted).

        Example::

            c.LocalProfileSpawner.jobs_db_url = "sqlite:////srv/jhub/jobs/jobs.sqlite"
        """,
    )
    event_observers: List[Any] = List(
        config=True,
        help="""
        Who hears of what happens to servers (submitted once admitted, started, ended): functions or
        classes taking one :class:`jhub_ext.core.events.Event`, plain or async, or their import
        strings, called in this order; one that fails is logged and skipped.

        Example::

            c.ProfileKubeSpawner.event_observers = ["mysite.events.count_servers"]
        """,
    )
    quota_lock_dir = Unicode(
        "",
        config=True,
        help="""
        A directory shared with the jobs service (local mode), holding per-group quota locks, so that
        a spawn and a job submission never both take the last of a group's quota. Empty: spawns
        wait for each other within the hub only.

        Example::

            c.LocalProfileSpawner.quota_lock_dir = "/srv/jhub/locks"
        """,
    )

    _usage: Usage | None = None
    _resolved: tuple[Catalog, dict[str, Any], Selection] | None = None
    # provided by the JupyterHub spawner this is mixed into
    user: Any
    db: Any
    orm_spawner: Any
    name: str
    _log_name: str

    # --- the catalog ------------------------------------------------------------------------

    @property
    def catalog_source(self) -> CatalogSource:
        """The catalog file's loader, shared by every spawner reading the same ``catalog_path``."""
        return CatalogSource.shared(self.catalog_path)

    @property
    def catalog(self) -> Catalog:
        """The catalog to use now: the file's if it changed and is valid, else the last good one."""
        return self.catalog_source.current()

    @property
    def user_groups(self) -> frozenset[str]:
        """The names of the user's JupyterHub groups, which decide their profiles and quotas."""
        return frozenset(group.name for group in self.user.groups)

    # --- the form -----------------------------------------------------------------------------

    @default("options_form")
    def _default_options_form(self) -> Any:
        # JupyterHub calls options_form(spawner): dispatch to the spawner's own (maybe async) method.
        return lambda spawner: spawner.render_profile_form()

    def render_profile_form(self) -> str:
        """The menu: profiles this user's groups allow, with resources and cost, last choice selected."""
        catalog = self.catalog
        groups = self.user_groups
        profiles = catalog.visible_to(groups, Kind.SERVER)
        selected = preselect(catalog, self.user_options, groups, Kind.SERVER)
        problem = self.catalog_source.error if self.user.admin else None
        return _templates.get_template("profile_form.html").render(
            profiles=[p.to_json() for p in profiles],
            availability={p.slug: self.profile_availability(p.slug) for p in profiles},
            selected=selected.to_user_options() if selected else {},
            currency=catalog.currency,
            catalog_problem=problem,
            isolation_note=self.isolation_note() if self.user.admin else None,
            catalog_problem_since=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(problem.since))
            if problem
            else None,
            catalog_path=self.catalog_path,
            option_prefix=OPTION_PREFIX,
            budget_notices=self.budget_notices(catalog),
        )

    def budget_notices(self, catalog: Catalog) -> list[dict[str, str]]:
        """The budgets of the user's groups at their warning level or spent, in words, for the menu."""
        verdict = self.budget_verdict(catalog)
        if verdict is None:
            return []
        said = verdict.message(catalog.currency)
        return [
            {
                "level": state.level.value,
                "message": said if state is verdict.deciding and said else state.summary(catalog.currency),
            }
            for state in verdict.notices
        ]

    def isolation_note(self) -> str | None:
        """What admins should know about how far users are kept apart; None when they are."""
        return None

    def profile_availability(self, slug: str) -> str | None:
        """A short note on whether this profile can start now; spawners with capacity data override it."""
        return None

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return self.profile_options_from_form

    def profile_options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, str]:
        """Form fields to ``user_options``, refusing a choice the user may not make."""
        slug = (formdata.get(PROFILE_FIELD) or [""])[0]
        options = {PROFILE_FIELD: slug} if slug else {}
        prefix = f"{OPTION_PREFIX}{slug}--"
        for key, values in formdata.items():
            if key.startswith(prefix) and values:
                options[key[len(prefix) :]] = values[0]
        self.resolve(options)  # refuse early, so the form comes back with the message
        return options

    # --- applying a choice --------------------------------------------------------------------

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return lambda spawner, user_options: spawner.apply_profile_options(user_options)

    def resolve(self, user_options: Any) -> Selection:
        """The profile and options ``user_options`` pick for this user, or a :class:`ProfileChoiceError`.

        A spawn from the form resolves its options when the form is read and again when they are
        applied: the second time gets the kept :class:`Selection` (same options, same catalog).
        """
        catalog = self.catalog
        kept = self._resolved
        if kept is not None and kept[0] is catalog and kept[1] == user_options:
            return kept[2]
        try:
            selection = resolve_selection(catalog, user_options, self.user_groups, Kind.SERVER)
        except SelectionError as e:
            raise ProfileChoiceError(str(e)) from None
        self._resolved = (catalog, dict(user_options), selection)
        return selection

    async def apply_profile_options(self, user_options: dict[str, Any]) -> None:
        """Validate ``user_options`` again (they may come from the REST API), check quotas, apply."""
        await self.before_admission()
        selection = self.resolve(user_options)
        usage = Usage.of(selection.profile, Kind.SERVER)
        catalog = self.catalog
        self.check_budgets(catalog)
        # This server's hub record exists already, so a start that checks after this one counts it.
        try:
            lock = shared_quota_lock(self.quota_lock_dir)
            sources, owner = self.usage_sources(), self.user.name
            async with reserving(lock, catalog, self.user_groups, usage, recorded=sources, owner=owner):
                pass  # counted: its record is the hub's, made before the spawn began
        except QuotaExceeded as e:
            raise ProfileChoiceError(str(e), status_code=403) from None
        except QuotaLockTimeout as e:
            raise ProfileChoiceError(str(e), status_code=503, retry_after=10) from None
        self.user_options = selection.to_user_options()
        self._usage = usage
        await self.publish(Happened.SUBMITTED)
        self.log.info(
            "Starting %s with profile %s (%s)",
            self._log_name,
            selection.profile.slug,
            selection.profile.resources.summary(),
        )
        self.apply_selection(selection)

    def budget_verdict(self, catalog: Catalog) -> BudgetVerdict | None:
        """What the budgets of the user's groups say about a new server now; None where none applies
        (no ledger is read then)."""
        if not self.jobs_db_url or not self.user_groups & catalog.budgets.keys():
            return None
        return LedgerReader.at(self.jobs_db_url).verdict(catalog, self.user_groups, Kind.SERVER)

    def check_budgets(self, catalog: Catalog) -> None:
        """Refuse a server that a spent monthly budget of the user's groups stops (the catalog's
        ``budgets``; see :mod:`jhub_ext.admission.budget`), saying which and until when."""
        verdict = self.budget_verdict(catalog)
        if verdict is not None and not verdict.starts:
            raise ProfileChoiceError(
                verdict.message(catalog.currency) or "a budget is spent", status_code=403
            )

    # --- lifecycle events: the seam observers subscribe to (jhub_ext.core.events) -----------------

    async def start(self) -> Any:
        """Start the server (the platform's spawner does), then publish that it started."""
        started = await super().start()  # type: ignore[misc]
        await self.publish(Happened.STARTED)
        return started

    async def stop(self, now: bool = False) -> None:
        """Stop the server (the platform's spawner does), then publish that it ended."""
        await super().stop(now=now)  # type: ignore[misc]
        await self.publish(Happened.ENDED)

    async def publish(self, happened: Happened) -> None:
        """Tell the configured observers what happened to this server."""
        if not self.event_observers:
            return
        profile = (self.user_options or {}).get("profile")
        event = Event(
            Subject.SERVER,
            happened,
            self.user.name,
            self.name,
            profile=profile,
            groups=self.user_groups,
            detail={"options": dict(self.user_options or {})},
        )
        await self.server_events().publish(event)

    def server_events(self) -> Events:
        """The configured observers, made once per hub (a class among them is made once, so it
        keeps what it counts) and kept in the hub's settings, which every user shares."""
        settings = getattr(self.user, "settings", None)
        shared = settings if isinstance(settings, dict) else self.__dict__
        events = shared.get(EVENTS_KEY)
        if not isinstance(events, Events):
            setting = f"c.{type(self).__name__}.event_observers"
            events = shared[EVENTS_KEY] = Events(resolve_observers(self.event_observers, setting))
        return events

    def apply_selection(self, selection: Selection) -> None:
        """Turn a validated selection into this spawner's settings."""
        raise NotImplementedError

    # --- admission: the platform's hooks ------------------------------------------------------------

    async def before_admission(self) -> None:
        """Refuse a start the platform cannot make now (a :class:`ProfileChoiceError`), before the
        choice is checked and counted; nothing to refuse here."""

    def usage_sources(self) -> list[UsageSource]:
        """What the quota check counts, read while the quota locks are held: the hub's records of
        servers (counted by :meth:`count_servers`), and the jobs service's records of jobs."""
        servers = HubServers(self.db, self.orm_spawner, self.count_servers)
        if not self.jobs_db_url:
            return [servers]
        return [servers, JobReservations.at(self.jobs_db_url)]

    def count_servers(
        self, records: list[ServerRecord], catalog: Catalog, groups: frozenset[str]
    ) -> list[Workload]:
        """What the servers the hub records (not this one) count: what each reserved, here."""
        return [record.workload for record in records]

    def get_state(self) -> dict[str, Any]:
        """The spawner's state, plus the quota usage this server counts, so it survives a hub restart."""
        state: dict[str, Any] = super().get_state()  # type: ignore[misc]
        if self._usage is not None:
            state[STATE_KEY] = self._usage.to_json()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the spawner's state, and with it the quota usage this server counts."""
        super().load_state(state)  # type: ignore[misc]
        recorded = state.get(STATE_KEY)
        if isinstance(recorded, dict):
            self._usage = Usage(**recorded)

    def clear_state(self) -> None:
        """Forget the spawner's state and this server's quota usage once it has stopped."""
        super().clear_state()  # type: ignore[misc]
        self._usage = None
