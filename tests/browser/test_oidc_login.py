"""Logging in through a real OpenID Connect provider (Ory Hydra, tests/oidc.py) in Chromium.

The provider's groups claim decides everything the hub does with a user: which profiles the
spawn menu offers, who is a hub admin, who may log in at all, and, as tokens are refreshed, that
the hub's groups follow changes made at the provider.

The hub is the real one from hub_config/ in local mode, configured by its JHUB_EXT_OAUTH_*
variables; JUPYTERHUB_CRYPT_KEY makes it keep the provider's tokens (auth_state), so that it can
refresh them.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from jhub_ext.hub.login import forbidden_message

from ..hubprocess import HubProcess
from ..oidc import CLIENT_SCOPES, HydraUnavailable, OAuthClient, OIDCProvider, hydra_binary

pytestmark = pytest.mark.browser

#: at the provider: name -> password and groups (the hub allows researchers and gpu, admins hub-admins)
USERS: dict[str, dict[str, Any]] = {
    "rita": {"password": "rita-secret", "groups": ["researchers"]},
    "gina": {"password": "gina-secret", "groups": ["researchers", "gpu"]},
    "ada": {"password": "ada-secret", "groups": ["hub-admins"]},
    "olaf": {"password": "olaf-secret", "groups": ["students"]},
    "carl": {"password": "carl-secret", "groups": ["researchers"]},
}
#: the provider's access tokens live this long, so the hub must use its refresh token soon
ACCESS_TTL = 4
#: and the hub asks the provider again about a user once its last check is this old
REFRESH_AGE = 2
GPU_PROFILE = ".jhub-ext-profile[data-slug=gpu-a100]"


@pytest.fixture(scope="module")
def hydra() -> Path:
    """Hydra's binary, built on first use; without one these tests cannot run at all."""
    try:
        return hydra_binary()
    except HydraUnavailable as e:
        pytest.skip(
            f"the OIDC provider (Ory Hydra) could not be built, so there is none to log in through: {e}"
        )


@pytest.fixture(scope="module")
def provider(hydra: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    with OIDCProvider(
        tmp_path_factory.mktemp("oidc"), USERS, access_ttl=f"{ACCESS_TTL}s", hydra=hydra
    ) as idp:
        yield idp


@pytest.fixture(scope="module")
def oidc_hub(provider: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    hub = HubProcess(Path(tmp_path_factory.mktemp("oidc-hub")))
    callback = f"{hub.url}/hub/oauth_callback"
    client = provider.register_client(callback)
    hub.env.update(
        {
            "JHUB_EXT_OAUTH_CLIENT_ID": client.client_id,
            "JHUB_EXT_OAUTH_CLIENT_SECRET": client.client_secret,
            "JHUB_EXT_OAUTH_AUTHORIZE_URL": provider.authorize_url,
            "JHUB_EXT_OAUTH_TOKEN_URL": provider.token_url,
            "JHUB_EXT_OAUTH_USERDATA_URL": provider.userinfo_url,
            "JHUB_EXT_OAUTH_CALLBACK_URL": callback,
            "JHUB_EXT_OAUTH_ADMIN_GROUPS": "hub-admins",
            "JHUB_EXT_OAUTH_ALLOWED_GROUPS": "researchers,gpu",
            "JHUB_EXT_OAUTH_REFRESH_AGE": str(REFRESH_AGE),
            "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
        }
    )
    hub.start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def page_for(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) per user: ``page_for("rita")``."""
    contexts: list[Any] = []

    def new_page(_user: str) -> Any:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        return page

    yield new_page
    for context in contexts:
        context.close()


def sign_in(page: Any, hub: HubProcess, provider: OIDCProvider, user: str) -> Any:
    """The hub's login button, the provider's form: the hub's answer at its OAuth callback."""
    page.goto(f"{hub.url}/hub/login")
    page.click("text=Sign in with")
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(f"{provider.app.url}/login"), page.url  # at the provider's own page
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user]["password"])
    with page.expect_response(lambda response: "/hub/oauth_callback" in response.url) as callback:
        page.click("#sign-in")
    page.wait_for_load_state()
    return callback.value


def log_in(page: Any, hub: HubProcess, provider: OIDCProvider, user: str) -> None:
    callback = sign_in(page, hub, provider, user)
    assert callback.status == 302, f"{user}: {callback.status} at {callback.url}\n{hub.log()[-3000:]}"


def hub_api(page: Any, hub: HubProcess, path: str) -> Any:
    """GET the hub's REST API with the page's login cookie (and XSRF token), as the hub's pages do."""
    page.goto(f"{hub.url}/hub/home")
    xsrf = page.evaluate("window.jhdata.xsrf_token")
    response = page.request.get(f"{hub.url}/hub/api{path}", headers={"X-XSRFToken": xsrf})
    assert response.ok, f"{response.status} {response.text()}"
    return response.json()


def spawn_menu(page: Any, hub: HubProcess) -> list[str]:
    page.goto(f"{hub.url}/hub/spawn")
    page.wait_for_selector(".jhub-ext-profile")
    return [
        str(slug)
        for slug in page.locator(".jhub-ext-profile").evaluate_all("els => els.map(e => e.dataset.slug)")
    ]


def test_the_groups_claim_decides_the_spawn_menu(
    oidc_hub: HubProcess, provider: OIDCProvider, page_for: Any
) -> None:
    gina = page_for("gina")
    log_in(gina, oidc_hub, provider, "gina")
    assert "gpu-a100" in spawn_menu(gina, oidc_hub)
    assert "1 × NVIDIA-A100-SXM4-80GB GPU" in gina.locator(GPU_PROFILE).inner_text()
    model = hub_api(gina, oidc_hub, "/user")
    assert model["name"] == "gina"  # the preferred_username claim
    assert sorted(model["groups"]) == ["gpu", "researchers"]
    assert model["admin"] is False

    rita = page_for("rita")
    log_in(rita, oidc_hub, provider, "rita")
    assert spawn_menu(rita, oidc_hub) == ["small", "large-memory"]
    assert rita.locator(GPU_PROFILE).count() == 0
    assert hub_api(rita, oidc_hub, "/user")["groups"] == ["researchers"]


def test_a_member_of_the_admin_group_is_a_hub_admin(
    oidc_hub: HubProcess, provider: OIDCProvider, page_for: Any
) -> None:
    ada = page_for("ada")
    log_in(ada, oidc_hub, provider, "ada")
    model = hub_api(ada, oidc_hub, "/user")
    assert model["admin"] is True
    assert model["groups"] == ["hub-admins"]
    response = ada.goto(f"{oidc_hub.url}/hub/admin")
    assert response.status == 200
    assert "/hub/admin" in ada.url

    rita = page_for("rita")
    log_in(rita, oidc_hub, provider, "rita")
    assert rita.goto(f"{oidc_hub.url}/hub/admin").status == 403


def test_a_user_outside_the_allowed_groups_is_refused(
    oidc_hub: HubProcess, provider: OIDCProvider, page_for: Any
) -> None:
    olaf = page_for("olaf")
    assert sign_in(olaf, oidc_hub, provider, "olaf").status == 403
    # JupyterHub's error page, saying why and what to do (the groups, the identity provider)
    assert olaf.locator(".error h1").inner_text().startswith("403 : ")
    assert forbidden_message(["gpu", "hub-admins", "researchers"]) in olaf.locator(".error p").inner_text()
    assert "not in any of them" in olaf.locator(".error p").inner_text()
    # and no session: the hub sends olaf back to its login page
    olaf.goto(f"{oidc_hub.url}/hub/home")
    assert "/hub/login" in olaf.url


def test_groups_changed_at_the_provider_reach_the_hub_when_tokens_refresh(
    oidc_hub: HubProcess, provider: OIDCProvider, page_for: Any
) -> None:
    carl = page_for("carl")
    log_in(carl, oidc_hub, provider, "carl")
    assert "gpu-a100" not in spawn_menu(carl, oidc_hub)
    assert hub_api(carl, oidc_hub, "/user")["groups"] == ["researchers"]
    refreshes_before = refreshes(provider, "carl")

    provider.set_groups("carl", ["researchers", "gpu"])
    # Once the access token has expired, the hub's next auth refresh (at most REFRESH_AGE seconds
    # old) finds userinfo refusing it and uses the refresh token; the provider answers with new claims.
    time.sleep(ACCESS_TTL + 1)
    assert "gpu-a100" in spawn_menu(carl, oidc_hub), (
        "carl's new group did not reach the hub: it must keep the provider's tokens and refresh them "
        "(GenericOAuthenticator enable_auth_state, auth_refresh_age, scope offline_access)\n"
        + oidc_hub.log()[-3000:]
    )
    assert sorted(hub_api(carl, oidc_hub, "/user")["groups"]) == ["gpu", "researchers"]
    assert refreshes(provider, "carl") > refreshes_before, provider.token_hook_calls

    provider.set_groups("carl", ["researchers"])
    time.sleep(ACCESS_TTL + 1)
    assert "gpu-a100" not in spawn_menu(carl, oidc_hub)
    assert hub_api(carl, oidc_hub, "/user")["groups"] == ["researchers"]


def refreshes(provider: OIDCProvider, subject: str) -> int:
    return sum(
        1
        for call in provider.token_hook_calls
        if call["subject"] == subject and "refresh_token" in call["grant_types"]
    )


# --- the provider on its own: what Hydra does on refresh, with and without the token hook ------------


def code_flow(provider: OIDCProvider, client: OAuthClient, user: str) -> dict[str, Any]:
    """The authorization-code flow as a browser and a client would do it, with ``requests``: tokens."""
    with requests.Session() as browser:
        page = browser.get(
            provider.authorize_url,
            params={
                "response_type": "code",
                "client_id": client.client_id,
                "redirect_uri": client.redirect_uri,
                "scope": CLIENT_SCOPES,
                "state": secrets.token_urlsafe(16),
            },
            timeout=10,
        )
        page.raise_for_status()
        challenge = re.search(r'name="login_challenge" value="([^"]+)"', page.text)
        assert challenge is not None, page.text
        response = browser.post(
            f"{provider.app.url}/login",
            data={
                "login_challenge": challenge.group(1),
                "username": user,
                "password": USERS[user]["password"],
            },
            allow_redirects=False,
            timeout=10,
        )
        while not response.headers["Location"].startswith(client.redirect_uri):
            assert response.is_redirect, f"{response.status_code} {response.text}"
            response = browser.get(response.headers["Location"], allow_redirects=False, timeout=10)
        code = parse_qs(urlparse(response.headers["Location"]).query)["code"][0]
    return token_request(provider, client, {"grant_type": "authorization_code", "code": code})


def token_request(provider: OIDCProvider, client: OAuthClient, data: dict[str, str]) -> dict[str, Any]:
    response = requests.post(
        provider.token_url,
        data={
            **data,
            "redirect_uri": client.redirect_uri,
            "client_id": client.client_id,
            "client_secret": client.client_secret,
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def userinfo(provider: OIDCProvider, tokens: dict[str, Any]) -> dict[str, Any]:
    response = requests.get(
        provider.userinfo_url, headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize("token_hook", [True, False], ids=["with-token-hook", "hydra-alone"])
def test_refreshed_tokens_carry_the_current_groups_only_through_the_token_hook(
    hydra: Path, tmp_path: Path, token_hook: bool
) -> None:
    with OIDCProvider(tmp_path, USERS, hydra=hydra, token_hook=token_hook) as idp:
        client = idp.register_client("http://127.0.0.1:9/callback")
        tokens = code_flow(idp, client, "rita")
        assert "refresh_token" in tokens  # offline_access was granted
        info = userinfo(idp, tokens)
        assert (info["sub"], info["preferred_username"], info["groups"]) == ("rita", "rita", ["researchers"])

        idp.set_groups("rita", ["researchers", "gpu"])
        assert userinfo(idp, tokens)["groups"] == ["researchers"]  # an issued token keeps its claims
        refreshed = token_request(
            idp, client, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        )
        # Hydra by itself copies the first consent's claims into refreshed tokens; the hook renews them
        expected = ["researchers", "gpu"] if token_hook else ["researchers"]
        assert userinfo(idp, refreshed)["groups"] == expected

        idp.remove_user("rita")
        response = requests.post(
            idp.token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refreshed["refresh_token"],
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            },
            timeout=10,
        )
        # with the hook, a user the provider no longer knows gets no new tokens
        assert (response.status_code == 200) is not token_hook, response.text
