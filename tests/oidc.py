"""A real OpenID Connect provider for tests: Ory Hydra, with a login-and-consent app of our own.

Hydra (built from its Go module by ``scripts/build-hydra.sh``) runs as ``hydra serve all --dev`` on
free loopback ports with an in-memory database (``DSN=memory``), and sends browsers to the tornado
app below to log in and consent. The app knows the test's users (``{name: {"password": ...,
"groups": [...]}}``, changeable while it runs, e.g. ``provider.set_groups("alice", ["gpu"])``),
accepts a correct password through Hydra's admin API, and grants every requested scope, putting
``preferred_username``, ``email`` and ``groups`` into the ID token's claims, which Hydra's userinfo
endpoint also returns. Nothing is remembered, so each login and consent reads the users' current
groups.

Refreshing a token re-reads them too. Hydra 2.3 does not: a refresh copies the claims of the
consent the first token came from. Only its token hook (``oauth2.token_hook``, called for every
token request) can replace them, so Hydra is configured to call the app's ``/token-hook``, which
answers with the subject's current claims (or refuses, 403, for a user no longer known).

    with OIDCProvider(tmp_path, {"alice": {"password": "pw", "groups": ["researchers"]}}) as idp:
        client = idp.register_client("http://127.0.0.1:8000/hub/oauth_callback")
        ... idp.authorize_url, idp.token_url, idp.userinfo_url, client.client_id ...
        idp.set_groups("alice", ["researchers", "gpu"])
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import html
import json
import os
import re
import secrets
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests
import tornado.httpclient
import tornado.httpserver
import tornado.web
from devcluster.rest import poll as wait_for

from .conftest import ROOT, free_port

BUILD_SCRIPT = ROOT / "scripts" / "build-hydra.sh"
#: the scopes registered clients may ask for (``offline_access``: a refresh token)
CLIENT_SCOPES = "openid profile email groups offline_access"


class HydraUnavailable(RuntimeError):
    """Hydra's binary is not built and could not be built here; the message says why."""


def hydra_binary(build: bool = True) -> Path:
    """The pinned Hydra binary; built first (minutes, once) unless ``build`` is false.

    ``$JHUB_EXT_HYDRA`` names a ready binary instead. Raises :class:`HydraUnavailable` with the
    build's own last words when it cannot be built.
    """
    if override := os.environ.get("JHUB_EXT_HYDRA"):
        return Path(override)
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), *([] if build else ["--dir"])],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        last = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise HydraUnavailable(f"scripts/build-hydra.sh failed (exit {result.returncode}):\n{last}")
    binary = Path(result.stdout.strip().splitlines()[-1]) / "hydra"
    if build and not os.access(binary, os.X_OK):
        raise HydraUnavailable(f"scripts/build-hydra.sh succeeded but {binary} is not there")
    return binary


@dataclass(frozen=True)
class OAuthClient:
    """An OAuth2 client registered at the provider."""

    client_id: str
    client_secret: str
    redirect_uri: str


class OIDCProvider:
    """Hydra and the login-and-consent app, on free loopback ports (a context manager).

    ``users``: ``{name: {"password": ..., "groups": [...], "email": ... (optional)}}``.
    ``access_ttl``, ``id_ttl``, ``refresh_ttl`` (the tokens' lifetimes) and ``refresh_grace`` (how
    long a used refresh token still works) are Hydra durations (``"5s"``, ``"1h"``); a short
    access-token lifetime makes relying parties refresh soon. ``token_hook=False`` leaves Hydra's
    own refresh behaviour (the first consent's claims, kept).
    """

    def __init__(
        self,
        workdir: Path,
        users: dict[str, dict[str, Any]],
        *,
        access_ttl: str = "1h",
        id_ttl: str = "1h",
        refresh_ttl: str = "720h",
        refresh_grace: str = "0s",
        token_hook: bool = True,
        hydra: Path | None = None,
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = hydra
        self.public_port = free_port()
        self.admin_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.public_port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.issuer = f"{self.public_url}/"
        self.app = LoginConsentApp(users, self.admin_url)
        self.ttl = {
            "access_token": access_ttl,
            "id_token": id_ttl,
            "refresh_token": refresh_ttl,
        }
        self.rotation_grace_period = refresh_grace
        self.token_hook = token_hook
        self.config_path = self.workdir / "hydra.json"
        self.log_path = self.workdir / "hydra.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.session = requests.Session()

    # --- the endpoints a relying party is configured with ------------------------------------------
    @property
    def authorize_url(self) -> str:
        return f"{self.public_url}/oauth2/auth"

    @property
    def token_url(self) -> str:
        return f"{self.public_url}/oauth2/token"

    @property
    def userinfo_url(self) -> str:
        return f"{self.public_url}/userinfo"

    # --- users, changeable while the provider runs -------------------------------------------------
    def set_groups(self, name: str, groups: list[str]) -> None:
        """The groups ``name`` has from now on (the next consent or token refresh says so)."""
        self.app.set_groups(name, groups)

    def set_user(self, name: str, password: str, groups: list[str]) -> None:
        self.app.set_user(name, password, groups)

    def remove_user(self, name: str) -> None:
        """The user can no longer log in, and refreshing their tokens is refused."""
        self.app.remove_user(name)

    # --- life cycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> OIDCProvider:
        binary = self.binary or hydra_binary()
        self.app.start()
        config = {
            "dsn": "memory",
            "log": {"level": "info", "format": "text"},
            "sqa": {"opt_out": True},
            "serve": {
                "public": {"host": "127.0.0.1", "port": self.public_port},
                "admin": {"host": "127.0.0.1", "port": self.admin_port},
                "cookies": {"same_site_mode": "Lax"},
            },
            "urls": {
                "self": {"issuer": self.issuer, "public": f"{self.public_url}/"},
                "login": f"{self.app.url}/login",
                "consent": f"{self.app.url}/consent",
                "logout": f"{self.app.url}/logout",
            },
            "secrets": {"system": [secrets.token_hex(32)]},
            "ttl": self.ttl,
            "oauth2": {
                "grant": {"refresh_token": {"rotation_grace_period": self.rotation_grace_period}},
                **({"token_hook": f"{self.app.url}/token-hook"} if self.token_hook else {}),
            },
        }
        self.config_path.write_text(json.dumps(config, indent=2))
        # Hydra reads settings from the environment too (DSN, URLS_SELF_ISSUER...): give it none
        env = {key: os.environ[key] for key in ("PATH", "HOME", "TMPDIR") if key in os.environ}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(binary), "serve", "all", "--dev", "--sqa-opt-out", "--config", str(self.config_path)],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"hydra exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                return all(
                    self.session.get(f"{url}/health/ready", timeout=2).status_code == 200
                    for url in (self.public_url, self.admin_url)
                )
            except requests.ConnectionError:
                return False

        try:
            wait_for(ready, timeout, "hydra to be ready", interval=0.2)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.app.stop()
        self.session.close()

    def __enter__(self) -> OIDCProvider:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- the admin API -----------------------------------------------------------------------------
    def register_client(
        self, redirect_uri: str, name: str = "jhub_ext tests", auth_method: str = "client_secret_post"
    ) -> OAuthClient:
        """A confidential client for the authorization-code flow with refresh tokens, allowed
        ``openid profile email groups offline_access``. It authenticates at the token endpoint by
        ``auth_method``: ``client_secret_post`` (what OAuthenticator does by default) or
        ``client_secret_basic`` (OAuthenticator's ``basic_auth``)."""
        secret = secrets.token_urlsafe(32)
        response = self.session.post(
            f"{self.admin_url}/admin/clients",
            json={
                "client_name": name,
                "client_secret": secret,
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "scope": CLIENT_SCOPES,
                "token_endpoint_auth_method": auth_method,
            },
            timeout=10,
        )
        if response.status_code != 201:
            raise RuntimeError(f"hydra refused the client: {response.status_code} {response.text}")
        body = response.json()
        return OAuthClient(body["client_id"], body.get("client_secret") or secret, redirect_uri)

    @property
    def token_hook_calls(self) -> list[dict[str, Any]]:
        """What Hydra asked the token hook so far: ``{"subject", "grant_types", "answer"}`` each."""
        return self.app.token_hook_calls


class LoginConsentApp:
    """Hydra's login and consent UI, and its token hook, for the test's users, in a thread of its own."""

    def __init__(self, users: dict[str, dict[str, Any]], admin_url: str):
        self._users = copy.deepcopy(users)
        self._lock = threading.Lock()
        self.admin_url = admin_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token_hook_calls: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.http: tornado.httpclient.AsyncHTTPClient | None = None

    # --- users -------------------------------------------------------------------------------------
    def set_groups(self, name: str, groups: list[str]) -> None:
        with self._lock:
            self._users[name]["groups"] = list(groups)

    def set_user(self, name: str, password: str, groups: list[str]) -> None:
        with self._lock:
            self._users[name] = {"password": password, "groups": list(groups)}

    def remove_user(self, name: str) -> None:
        with self._lock:
            self._users.pop(name, None)

    def check_password(self, name: str, password: str) -> bool:
        with self._lock:
            user = self._users.get(name)
        return user is not None and hmac.compare_digest(str(user["password"]), password)

    def claims(self, name: str, scopes: list[str]) -> dict[str, Any] | None:
        """The ID-token claims ``name`` has now, for the scopes granted; None for an unknown user."""
        with self._lock:
            user = copy.deepcopy(self._users.get(name))
        if user is None:
            return None
        claims: dict[str, Any] = {}
        if "profile" in scopes:
            claims["preferred_username"] = name
            claims["name"] = name
        if "email" in scopes:
            claims["email"] = user.get("email", f"{name}@example.org")
            claims["email_verified"] = True
        if "groups" in scopes:
            claims["groups"] = list(user.get("groups", []))
        return claims

    # --- the server, in its own thread and event loop ----------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="oidc-login-consent", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the login-and-consent app did not start: {self._error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported to start(), which waits for it
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        application = tornado.web.Application(
            [
                (r"/login", LoginHandler, {"app": self}),
                (r"/consent", ConsentHandler, {"app": self}),
                (r"/logout", LogoutHandler, {"app": self}),
                (r"/token-hook", TokenHookHandler, {"app": self}),
            ]
        )
        server = tornado.httpserver.HTTPServer(application)
        server.listen(self.port, address="127.0.0.1")
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.stop()
            await server.close_all_connections()
            self.http.close()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        self._thread = None

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Call Hydra's admin API: the status and the decoded JSON answer."""
        assert self.http is not None
        response = await self.http.fetch(
            f"{self.admin_url}{path}",
            method=method,
            body=json.dumps(body) if body is not None else ("" if method in ("POST", "PUT") else None),
            headers={"Content-Type": "application/json"},
            raise_error=False,
        )
        text = response.body.decode() if response.body else ""
        return response.code, json.loads(text) if text else None


class _Handler(tornado.web.RequestHandler):
    def initialize(self, app: LoginConsentApp) -> None:
        self.app = app

    def check_xsrf_cookie(self) -> None:  # the test's own app; Hydra's challenges protect the flow
        return None

    async def admin_ok(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        status, answer = await self.app.admin(method, path, body)
        if status == 410 and isinstance(answer, dict) and answer.get("redirect_to"):
            self.redirect(answer["redirect_to"])  # a request already handled: Hydra says where to go
            return None
        if status != 200:
            raise tornado.web.HTTPError(502, f"hydra's admin API answered {status}: {answer}")
        return answer


def _login_form(challenge: str, error: str = "") -> str:
    notice = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Test identity provider: sign in</title></head>
<body>
<h1>Test identity provider</h1>
{notice}
<form method="post" action="/login">
  <input type="hidden" name="login_challenge" value="{html.escape(challenge)}">
  <label>Username <input name="username" autocomplete="username"></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button type="submit" id="sign-in">Sign in</button>
</form>
</body></html>"""


class LoginHandler(_Handler):
    async def get(self) -> None:
        challenge = self.get_argument("login_challenge")
        request = await self.admin_ok(
            "GET", f"/admin/oauth2/auth/requests/login?login_challenge={quote(challenge)}"
        )
        if request is None:
            return
        if request.get("skip"):  # Hydra knows the user already (we never ask it to remember, though)
            await self._accept(challenge, request["subject"])
            return
        self.write(_login_form(challenge))

    async def post(self) -> None:
        challenge = self.get_argument("login_challenge")
        username = self.get_argument("username", "")
        if not self.app.check_password(username, self.get_argument("password", "")):
            self.set_status(401)
            self.write(_login_form(challenge, "Wrong username or password."))
            return
        await self._accept(challenge, username)

    async def _accept(self, challenge: str, subject: str) -> None:
        answer = await self.admin_ok(
            "PUT",
            f"/admin/oauth2/auth/requests/login/accept?login_challenge={quote(challenge)}",
            {"subject": subject, "remember": False},
        )
        if answer is not None:
            self.redirect(answer["redirect_to"])


class ConsentHandler(_Handler):
    async def get(self) -> None:
        challenge = self.get_argument("consent_challenge")
        query = f"?consent_challenge={quote(challenge)}"
        request = await self.admin_ok("GET", f"/admin/oauth2/auth/requests/consent{query}")
        if request is None:
            return
        scopes = list(request.get("requested_scope") or [])
        claims = self.app.claims(request["subject"], scopes)
        if claims is None:  # removed between login and consent
            answer = await self.admin_ok(
                "PUT",
                f"/admin/oauth2/auth/requests/consent/reject{query}",
                {"error": "access_denied", "error_description": "unknown user"},
            )
        else:
            answer = await self.admin_ok(
                "PUT",
                f"/admin/oauth2/auth/requests/consent/accept{query}",
                {
                    "grant_scope": scopes,
                    "grant_access_token_audience": list(request.get("requested_access_token_audience") or []),
                    "remember": False,
                    "session": {"id_token": claims},
                },
            )
        if answer is not None:
            self.redirect(answer["redirect_to"])


class LogoutHandler(_Handler):
    async def get(self) -> None:
        challenge = self.get_argument("logout_challenge")
        answer = await self.admin_ok(
            "PUT", f"/admin/oauth2/auth/requests/logout/accept?{urlencode({'logout_challenge': challenge})}"
        )
        if answer is not None:
            self.redirect(answer["redirect_to"])


class TokenHookHandler(_Handler):
    """Hydra's ``oauth2.token_hook``: the subject's current claims for every token it issues."""

    async def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        session = (body.get("session") or {}).get("id_token") or {}
        subject = session.get("subject") or (session.get("id_token_claims") or {}).get("sub") or ""
        request = body.get("request") or {}
        claims = self.app.claims(subject, list(request.get("granted_scopes") or []))
        self.app.token_hook_calls.append(
            {
                "subject": subject,
                "grant_types": list(request.get("grant_types") or []),
                "answer": claims,
            }
        )
        if claims is None:
            self.set_status(403)  # Hydra refuses the token (access_denied)
            return
        self.write({"session": {"id_token": claims, "access_token": {}}})


def log_in_over_http(hub_url: str, username: str, password: str) -> requests.Session:
    """A browser-like session logged in to the hub at ``hub_url`` through the provider's form (the
    hub's OAuth login, the provider's sign-in page, consent, back to the hub's callback)."""
    session = requests.Session()
    page = session.get(f"{hub_url}/hub/oauth_login", timeout=30)
    page.raise_for_status()
    match = re.search(r'name="login_challenge" value="([^"]+)"', page.text)
    if match is None:
        raise AssertionError(f"no sign-in form at {page.url}:\n{page.text[:2000]}")
    signed_in = session.post(
        page.url.split("?", 1)[0],
        data={"login_challenge": html.unescape(match.group(1)), "username": username, "password": password},
        timeout=30,
    )
    signed_in.raise_for_status()
    return session
