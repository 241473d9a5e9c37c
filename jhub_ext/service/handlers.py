"""The REST API under ``/services/jobs/api/``: parse, authorise, call the manager, serialise."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import yaml
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import httpclient, iostream, web

from jhub_ext.core.jobs.errors import (
    Conflict,
    Invalid,
    NoSuchJob,
    NotAllowed,
    NotLoggedIn,
    Refusal,
    TooLarge,
    TooMany,
    Unavailable,
)
from jhub_ext.core.jobs.model import JobSpecError, parse_name
from jhub_ext.service.bodies import BoundedBody
from jhub_ext.service.manager import Caller, JobManager
from jhub_ext.service.usage import UsageQuery

SCOPE_USE = "custom:jobs:use"
SCOPE_ADMIN = "custom:jobs:admin"
#: users of the service (their own jobs) and its admins (everyone's)
USERS = frozenset({SCOPE_USE, SCOPE_ADMIN})
#: the first bytes of a ``follow`` stream (see :class:`LogsHandler`)
BOM = "\ufeff"
#: how often a quiet ``follow`` stream checks whether its reader is still there
FOLLOW_CHECK_SECONDS = 2.0
#: how long a client should wait before trying again when the hub or the cluster does not answer
UNAVAILABLE_RETRY_SECONDS = 10
DEFAULT_PAGE = 200
MAX_PAGE = 1000
#: The one place where the domain's refusals become HTTP statuses.
STATUS_OF: dict[type[Refusal], int] = {
    Invalid: 400,
    NotLoggedIn: 401,
    NotAllowed: 403,
    NoSuchJob: 404,
    Conflict: 409,
    TooLarge: 413,
    TooMany: 429,
    Unavailable: 503,
}


def status_of(refusal: Refusal) -> int:
    """The HTTP status of a refusal: its kind's, or its nearest kind's (a refusal may be a more
    particular one, such as a full quota's)."""
    return next(STATUS_OF[kind] for kind in type(refusal).__mro__ if kind in STATUS_OF)


class DuplicateKey(ValueError):
    """A JSON object names one key twice: which value was meant is unknowable, so neither is taken."""

    def __init__(self, key: str):
        self.key = key[:70]
        super().__init__(key)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict, refusing a key given twice (at any depth)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key)
        result[key] = value
    return result


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, read from the packaged ``openapi.yaml``."""
    text = resources.files("jhub_ext.service").joinpath("openapi.yaml").read_text("utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


class APIHandler(HubOAuthenticated, BoundedBody):
    """Token (or OAuth cookie) authentication, scopes, and JSON errors for every API route.

    Request bodies are bounded as :class:`BoundedBody` says.
    """

    caller: Caller
    #: the caller needs one of these scopes; every handler declares its own
    scopes: frozenset[str] = USERS

    @property
    def manager(self) -> JobManager:
        """The service's :class:`JobManager`, shared by every request."""
        return self.settings["jobs_manager"]  # type: ignore[no-any-return]

    def set_default_headers(self) -> None:
        """Mark every answer as uncached JSON that a browser must not sniff into something else."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")  # a log is never run as a script

    async def prepare(self) -> None:
        """Refuse oversized bodies, then authenticate the caller and check they may use the jobs service.

        Sets ``self.caller`` from the standalone token or from the hub's user model (its scopes and groups).
        A refusal is answered once the request has been read to its end (see
        :meth:`BoundedBody.refuse_after_body`), so the connection stays open for the next request.
        """
        super().prepare()
        if self.body_too_large:
            return
        try:
            await self.authenticate()
        except (Refusal, web.HTTPError) as refused:
            self.refuse_after_body(refused)

    async def authenticate(self) -> None:
        """Set ``self.caller``, or refuse: not logged in (401), or not allowed to use the service (403)."""
        standalone = self.settings.get("standalone_token")
        if standalone:  # no hub (Binder, a laptop): one user, one token
            sent = self.request.headers.get("Authorization", "").partition(" ")[2]
            if not sent or not hmac.compare_digest(sent, standalone):
                raise NotLoggedIn(
                    "send the service's token as 'Authorization: token <token>' ($JHUB_EXT_TOKEN)"
                )
            self.caller = Caller(self.settings["standalone_user"], frozenset(), admin=False)
            return
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            raise NotLoggedIn("not logged in: send a JupyterHub token as 'Authorization: token <token>'")
        scopes = set(model.get("scopes") or ())
        allowed = self.hub_scopes is None or self.hub_auth.check_scopes(self.hub_scopes, model)
        if not allowed or not scopes & self.scopes:
            raise NotAllowed(f"{model.get('kind', 'user')} {model.get('name')} may not use the jobs service")
        if model.get("kind", "user") != "user":
            raise NotAllowed("the jobs service runs jobs for users; use a user's token")
        groups = model.get("groups")
        if groups is None and self.manager.hub is not None:
            groups = await self.manager.hub.groups(model["name"])
        self.caller = Caller(model["name"], frozenset(groups or ()), SCOPE_ADMIN in scopes)
        self.current_user = model

    def owner(self) -> str:
        """Whose jobs the request is about: the ``user`` argument (admins only), else the caller."""
        return self.manager.owner_for(self.caller, self.get_argument("user", None))

    def whole_number(self, name: str, fallback: int, low: int, high: int) -> int:
        """Query argument ``name`` as an integer in ``low``..``high``, ``fallback`` if absent; else a 400."""
        text = self.get_argument(name, None)
        if text is None:
            return fallback
        if not (text.isascii() and text.isdigit() and len(text) <= 12) or not low <= int(text) <= high:
            raise Invalid(f"{name} must be a whole number from {low} to {high}", name)
        return int(text)

    def check_job_name(self, name: str) -> str:
        """``name`` if it is a valid job name; a 404 otherwise, since no job can have it."""
        try:
            return parse_name(name)
        except JobSpecError:
            raise NoSuchJob(f"there is no job '{name[:70]}'; list your jobs with GET jobs", "name") from None

    def json_body(self, hint: str) -> Any:
        """The request's body, parsed as JSON (a key given twice refused); else a 400 with ``hint``."""
        try:
            return json.loads(bytes(self.body), object_pairs_hook=_unique_keys)
        except DuplicateKey as e:
            raise Invalid(f"'{e.key}' is given twice in the body; give it once", e.key) from None
        except ValueError:
            raise Invalid(f"the body is not JSON; {hint}", "body") from None
        except RecursionError:
            raise Invalid("the body is nested too deeply; send a flat JSON object", "body") from None

    def reply(self, body: Any, status: int = 200) -> None:
        """Finish the request with ``body`` as JSON and the given status."""
        self.set_status(status)
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer a failure as ``{"error": ..., "field": ...}`` JSON; a 503 if the hub or cluster was down."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if unavailable(error):
            error = Unavailable(
                "the hub or the cluster is not answering just now; nothing was changed, try again shortly",
                retry_after=UNAVAILABLE_RETRY_SECONDS,
            )
        if isinstance(error, Refusal):
            self.set_status(status_of(error))
            body = error.to_json()
            if error.retry_after:
                self.set_header("Retry-After", str(error.retry_after))
        elif isinstance(error, web.HTTPError):
            body = {"error": error.log_message or self._reason, "field": None}
        else:
            body = {"error": "the jobs service failed; an admin can see why in its log", "field": None}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Log refusals and outages briefly and only real failures with a traceback."""
        if unavailable(value):
            self.log.warning("%s %s: unavailable: %r", self.request.method, self.request.path, value)
        elif isinstance(value, Refusal):
            status = status_of(value)
            self.log.info("%s %s refused (%d): %s", self.request.method, self.request.path, status, value)
        else:
            super().log_exception(typ, value, tb)

    @property
    def log(self) -> Any:
        """The jobs service's own logger, so refusals and failures land in its log."""
        return self.settings["jobs_log"]


def unavailable(error: BaseException | None) -> bool:
    """Whether ``error`` says the hub or the cluster did not answer (a 503 for the client), not a bug."""
    if isinstance(error, TimeoutError | ConnectionError | httpclient.HTTPClientError):
        return True
    status = getattr(error, "status", None)  # the Kubernetes client's ApiException
    return isinstance(status, int) and (status >= 500 or status == 429)


class JobsHandler(APIHandler):
    """``GET jobs`` lists; ``POST jobs`` submits."""

    scopes = USERS

    async def get(self) -> None:
        """List the caller's jobs (an admin: anyone's), newest first, a page at a time."""
        limit = self.whole_number("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        offset = self.whole_number("offset", 0, 0, 10**9)
        jobs, total = self.manager.list_jobs(self.caller, self.get_argument("user", None), limit, offset)
        following = offset + len(jobs)
        self.reply(
            {
                "jobs": [job.to_json(self.caller.admin) for job in jobs],
                "total": total,
                "next": following if following < total else None,
            }
        )

    async def post(self) -> None:
        """Submit the JSON body as a new job and answer 201 with the job (202 if it waits in the queue)."""
        body = self.json_body("send a JSON object with name, kind and command")
        job = await self.manager.submit(self.caller, body)
        self.reply(job.to_json(self.caller.admin), status=202 if job.queued else 201)


class JobHandler(APIHandler):
    """``GET jobs/<name>`` shows one job; ``DELETE jobs/<name>`` removes it."""

    scopes = USERS

    async def get(self, name: str) -> None:
        """Answer with the named job."""
        job = self.manager.job(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json(self.caller.admin))

    async def delete(self, name: str) -> None:
        """Delete the named job (stopping it first) and answer 204."""
        await self.manager.delete(self.caller, self.owner(), self.check_job_name(name))
        self.set_status(204)
        self.finish()


class StopHandler(APIHandler):
    """``POST jobs/<name>/stop`` stops a job."""

    scopes = USERS

    async def post(self, name: str) -> None:
        """Stop the named job and answer with its new state."""
        job = await self.manager.stop(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json(self.caller.admin))


class RestartHandler(APIHandler):
    """``POST jobs/<name>/restart`` starts a job again from the top."""

    scopes = USERS

    async def post(self, name: str) -> None:
        """Restart the named job and answer with its new state."""
        job = await self.manager.restart(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json(self.caller.admin), status=202 if job.queued else 200)


class LogsHandler(APIHandler):
    """``GET jobs/<name>/logs`` sends a job's output as plain text, optionally following it."""

    scopes = USERS
    gone: asyncio.Event

    def initialize(self) -> None:
        """Start each request with an empty body buffer, and its reader present."""
        super().initialize()
        self.gone = asyncio.Event()

    async def get(self, name: str) -> None:
        """Stream the named job's output (all, or the last ``tail`` lines); ``follow=1`` keeps it going."""
        # a job's output is text written by whoever ran it: never a page a browser should render
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        follow = self.get_argument("follow", "0") in ("1", "true")
        lines = self.whole_number("tail", -1, 0, 10**7)
        tail = None if lines < 0 else lines
        chunks = self.manager.logs(self.caller, self.owner(), self.check_job_name(name), follow, tail)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if not follow:
            async for chunk in chunks:
                self.write(chunk)
            return
        with self.manager.follow_slot(self.caller):
            try:
                # The reader knows at once that it is following: a proxy sends the headers on only with
                # the first bytes of the body, so those are the byte order mark, which decoders of
                # UTF-8 text drop (TextDecoder, "utf-8-sig", jhub_ext.client), as it marks the encoding.
                self.write(BOM)
                await self.flush()
                await self.follow(chunks)
            except iostream.StreamClosedError:
                return  # the reader went away: free the stream
            finally:
                await aclose(chunks)

    async def follow(self, chunks: AsyncIterator[str]) -> None:
        """Send each chunk as it comes until the job ends, or until the reader has gone.

        A quiet job writes nothing for a long time, so the stream does not wait for the next chunk to
        find out that its reader has gone: tornado reports a closed connection at once
        (:meth:`on_connection_close`), and every :data:`FOLLOW_CHECK_SECONDS` the stream checks.
        """
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            while not self.gone.is_set():
                following = asyncio.ensure_future(anext(chunks))
                while not following.done():
                    await asyncio.wait(
                        {following, gone}, timeout=FOLLOW_CHECK_SECONDS, return_when=asyncio.FIRST_COMPLETED
                    )
                    stream = getattr(self.request.connection, "stream", None)
                    if self.gone.is_set() or stream is None or stream.closed():
                        following.cancel()
                        await asyncio.gather(following, return_exceptions=True)
                        self.gone.set()
                        return
                try:
                    chunk = following.result()
                except StopAsyncIteration:
                    return
                self.write(chunk)
                await self.flush()
        finally:
            gone.cancel()

    def on_connection_close(self) -> None:
        """The reader has gone (a ``follow`` stream stops waiting for the job)."""
        self.gone.set()
        super().on_connection_close()


async def aclose(chunks: AsyncIterator[str]) -> None:
    """Close an async generator of chunks (ending the backend's follow), whatever it is."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


class ProfilesHandler(APIHandler):
    """``GET profiles`` lists the hardware profiles the caller may run jobs on."""

    scopes = USERS

    async def get(self) -> None:
        """Answer with the job and scraper profiles open to the caller's groups, and the catalog currency."""
        catalog = self.manager.catalog
        profiles = [
            {**p.to_json(), "availability": None}
            for p in catalog.profiles
            if p.allows(self.caller.groups) and {"job", "scraper"} & {k.value for k in p.kinds}
        ]
        self.reply({"profiles": profiles, "currency": catalog.currency})


class UsageHandler(APIHandler):
    """``GET usage`` answers what servers and jobs cost: JSON, or CSV with ``format=csv``."""

    scopes = USERS

    async def get(self) -> None:
        """Answer the usage the query asks for (see :meth:`JobManager.usage_report`)."""
        fields = ("user", "group", "profile", "since", "until", "by")
        query = UsageQuery(**{name: self.get_argument(name, None) for name in fields})
        answer = self.get_argument("format", "json")
        if answer not in ("json", "csv"):
            raise Invalid("format must be json (the default) or csv", "format")
        report = self.manager.usage_report(self.caller, query)
        if answer == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", 'attachment; filename="usage.csv"')
            self.finish(report.to_csv())
            return
        self.reply(report.to_json())


class QuotaHandler(APIHandler):
    """``GET quota`` shows the caller's group quotas: their limits and how much is in use."""

    scopes = USERS

    async def get(self) -> None:
        """Answer with the limits and current use of each quota the caller's groups have."""
        self.reply({"groups": await self.manager.quota(self.caller)})


class SettingsHandler(APIHandler):
    """``GET settings`` shows, ``PUT settings`` replaces, whom to tell what about the caller's jobs."""

    scopes = USERS

    async def get(self) -> None:
        """Answer with the caller's settings (an admin may name a user)."""
        self.reply(self.manager.notify_settings(self.caller, self.get_argument("user", None)))

    async def put(self) -> None:
        """Check and save the JSON body as the caller's settings, and answer with them."""
        body = self.json_body('send a JSON object such as {"notify": {"email": "you@example.org"}}')
        self.reply(self.manager.save_notify_settings(self.caller, self.get_argument("user", None), body))


class OAuthCallbackHandler(HubOAuthCallbackHandler, BoundedBody):
    """The hub's OAuth callback (the dashboard's log-in), with bodies bounded like the API's."""


class NotFoundHandler(BoundedBody):
    """Any other path: a JSON 404 (and a 413 for an oversized body, as everywhere)."""

    def prepare(self) -> None:
        """Bound the body; then, whatever the method, answer that nothing is here."""
        super().prepare()
        if not self.body_too_large:
            setattr(self, (self.request.method or "get").lower(), self._not_found)

    def _not_found(self, *args: str) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": f"there is nothing at {self.request.path[:200]}", "field": None}))


class OpenAPIHandler(BoundedBody):
    """``GET openapi.json`` serves the API's description, with no login needed."""

    def get(self) -> None:
        """Answer with the OpenAPI document as JSON."""
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(openapi_document()))


def api_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
    """The API's routes under ``prefix``, as tornado ``(pattern, handler)`` pairs."""
    api = f"{prefix.rstrip('/')}/api"
    name = r"([^/]+)"
    return [
        (f"{api}/jobs", JobsHandler),
        (f"{api}/jobs/{name}", JobHandler),
        (f"{api}/jobs/{name}/logs", LogsHandler),
        (f"{api}/jobs/{name}/stop", StopHandler),
        (f"{api}/jobs/{name}/restart", RestartHandler),
        (f"{api}/profiles", ProfilesHandler),
        (f"{api}/quota", QuotaHandler),
        (f"{api}/settings", SettingsHandler),
        (f"{api}/usage", UsageHandler),
        (f"{api}/openapi.json", OpenAPIHandler),
    ]
