"""The REST API under ``/services/jobs/api/``: parse, authorise, call the manager, serialise."""

from __future__ import annotations

import hmac
import json
from importlib import resources
from typing import Any

import yaml
from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from .manager import Caller, JobManager, Refused
from .model import JobSpecError, parse_name

SCOPE_USE = "custom:jobs:use"
SCOPE_ADMIN = "custom:jobs:admin"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PAGE = 200
MAX_PAGE = 1000


def openapi_document() -> dict[str, Any]:
    text = resources.files("jhub_ext.jobs").joinpath("openapi.yaml").read_text("utf-8")
    return yaml.safe_load(text)  # type: ignore[no-any-return]


class APIHandler(HubOAuthenticated, web.RequestHandler):
    """Token (or OAuth cookie) authentication, scopes, and JSON errors for every API route."""

    caller: Caller

    @property
    def manager(self) -> JobManager:
        return self.settings["jobs_manager"]  # type: ignore[no-any-return]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")  # a log is never run as a script

    async def prepare(self) -> None:
        standalone = self.settings.get("standalone_token")
        if standalone:  # no hub (Binder, a laptop): one user, one token
            sent = self.request.headers.get("Authorization", "").partition(" ")[2]
            if not sent or not hmac.compare_digest(sent, standalone):
                raise Refused(
                    401, "send the service's token as 'Authorization: token <token>' ($JHUB_EXT_TOKEN)"
                )
            self.caller = Caller(self.settings["standalone_user"], frozenset(), admin=False)
            return
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            raise Refused(401, "not logged in: send a JupyterHub token as 'Authorization: token <token>'")
        scopes = set(model.get("scopes") or ())
        allowed = self.hub_scopes is None or self.hub_auth.check_scopes(self.hub_scopes, model)
        if not allowed or not scopes & {SCOPE_USE, SCOPE_ADMIN}:
            raise Refused(
                403, f"{model.get('kind', 'user')} {model.get('name')} may not use the jobs service"
            )
        if model.get("kind", "user") != "user":
            raise Refused(403, "the jobs service runs jobs for users; use a user's token")
        groups = model.get("groups")
        if groups is None and self.manager.hub is not None:
            groups = await self.manager.hub.groups(model["name"])
        self.caller = Caller(model["name"], frozenset(groups or ()), SCOPE_ADMIN in scopes)
        self.current_user = model

    def owner(self) -> str:
        return self.manager.owner_for(self.caller, self.get_argument("user", None))

    def whole_number(self, name: str, fallback: int, low: int, high: int) -> int:
        text = self.get_argument(name, None)
        if text is None:
            return fallback
        if not text.isdigit() or not low <= int(text) <= high:
            raise Refused(400, f"{name} must be a whole number from {low} to {high}", name)
        return int(text)

    def check_job_name(self, name: str) -> str:
        try:
            return parse_name(name)
        except JobSpecError:
            raise Refused(
                404, f"there is no job '{name[:70]}'; list your jobs with GET jobs", "name"
            ) from None

    def reply(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, Refused):
            self.set_status(error.status)
            body = error.to_json()
        elif isinstance(error, web.HTTPError):
            body = {"error": error.log_message or self._reason, "field": None}
        else:
            body = {"error": "the jobs service failed; an admin can see why in its log", "field": None}
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, Refused):
            self.log.info(
                "%s %s refused (%d): %s", self.request.method, self.request.path, value.status, value
            )
        else:
            super().log_exception(typ, value, tb)

    @property
    def log(self) -> Any:
        return self.settings["jobs_log"]


class JobsHandler(APIHandler):
    async def get(self) -> None:
        limit = self.whole_number("limit", DEFAULT_PAGE, 1, MAX_PAGE)
        offset = self.whole_number("offset", 0, 0, 10**9)
        jobs, total = self.manager.list_jobs(self.caller, self.get_argument("user", None), limit, offset)
        following = offset + len(jobs)
        self.reply(
            {
                "jobs": [job.to_json() for job in jobs],
                "total": total,
                "next": following if following < total else None,
            }
        )

    async def post(self) -> None:
        if len(self.request.body) > MAX_BODY_BYTES:
            raise Refused(
                413, f"the request is larger than {MAX_BODY_BYTES // 1024} KiB; ship less code", "files"
            )
        try:
            body = json.loads(self.request.body or b"")
        except ValueError:
            raise Refused(
                400, "the body is not JSON; send a JSON object with name, kind and command", "body"
            ) from None
        job = await self.manager.submit(self.caller, body)
        self.reply(job.to_json(), status=201)


class JobHandler(APIHandler):
    async def get(self, name: str) -> None:
        job = self.manager.job(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json())

    async def delete(self, name: str) -> None:
        await self.manager.delete(self.caller, self.owner(), self.check_job_name(name))
        self.set_status(204)
        self.finish()


class StopHandler(APIHandler):
    async def post(self, name: str) -> None:
        job = await self.manager.stop(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json())


class RestartHandler(APIHandler):
    async def post(self, name: str) -> None:
        job = await self.manager.restart(self.caller, self.owner(), self.check_job_name(name))
        self.reply(job.to_json())


class LogsHandler(APIHandler):
    async def get(self, name: str) -> None:
        # a job's output is text written by whoever ran it: never a page a browser should render
        self.set_header("Content-Security-Policy", "default-src 'none'; sandbox")
        follow = self.get_argument("follow", "0") in ("1", "true")
        tail = self.whole_number("tail", -1, 0, 10**7)
        tail = None if tail < 0 else tail
        chunks = self.manager.logs(self.caller, self.owner(), self.check_job_name(name), follow, tail)
        first = True
        async for chunk in chunks:
            if first:
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                first = False
            self.write(chunk)
            if follow:
                await self.flush()
        if first:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish()


class ProfilesHandler(APIHandler):
    async def get(self) -> None:
        catalog = self.manager.catalog
        profiles = [
            {**p.to_json(), "availability": None}
            for p in catalog.profiles
            if p.allows(self.caller.groups) and {"job", "scraper"} & {k.value for k in p.kinds}
        ]
        self.reply({"profiles": profiles, "currency": catalog.currency})


class QuotaHandler(APIHandler):
    async def get(self) -> None:
        self.reply({"groups": await self.manager.quota(self.caller)})


class OpenAPIHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(openapi_document()))


def api_handlers(prefix: str) -> list[tuple[str, type[web.RequestHandler]]]:
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
        (f"{api}/openapi.json", OpenAPIHandler),
    ]
