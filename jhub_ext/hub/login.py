"""Who may log in to the hub: the chart's configured authenticator, an OIDC provider, or demo users."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from traitlets.config import Config

from jhub_ext.hub import chart


def configure_login(
    c: Config, env: Mapping[str, str], in_cluster: bool, chart_value: Callable[[str], Any]
) -> tuple[set[str], set[str]]:
    """Who may log in; returns the hub admins' users and groups (who also administer everyone's jobs).

    In order: the authenticator the chart's values name (``hub.config``, read with ``chart_value``),
    untouched; else an OAuth2/OIDC provider from ``JHUB_EXT_OAUTH_*``; else the demo users, which a
    hub in a cluster refuses unless ``JHUB_EXT_ALLOW_DEMO_USERS=1``.
    """
    oauth_urls = ("JHUB_EXT_OAUTH_AUTHORIZE_URL", "JHUB_EXT_OAUTH_TOKEN_URL", "JHUB_EXT_OAUTH_USERDATA_URL")
    if env.get("JHUB_EXT_OAUTH_CLIENT_ID") and not all(env.get(name) for name in oauth_urls):
        missing = ", ".join(name for name in oauth_urls if not env.get(name))
        sys.exit(
            f"jhub_ext: JHUB_EXT_OAUTH_CLIENT_ID is set but {missing} is not; "
            "set it to your provider's endpoint"
        )
    if chart.admin_chose_authenticator(chart_value("hub.config.JupyterHub.authenticator_class")):
        pass  # configured the chart's way (hub.config.GenericOAuthenticator, ...): the admin's, untouched
    elif env.get("JHUB_EXT_OAUTH_CLIENT_ID"):
        _oauth_from_environment(c, env)
    elif in_cluster and env.get("JHUB_EXT_ALLOW_DEMO_USERS") != "1":
        sys.exit(
            "jhub_ext: this hub runs in a cluster but no login is configured, so it will not start: "
            "the demo users' passwords are known (and the chart's default authenticator lets anyone in "
            "with any password). Configure the team's identity provider in the chart's values "
            "(hub.config.JupyterHub.authenticator_class: generic-oauth and hub.config.GenericOAuthenticator; "
            "see docs/how-to/install-on-kubernetes.md, 'Your site's values'). For a short private trial "
            "only, set hub.extraEnv "
            'JHUB_EXT_ALLOW_DEMO_USERS: "1".'
        )
    else:
        if in_cluster:
            print(
                "jhub_ext: WARNING: JHUB_EXT_ALLOW_DEMO_USERS=1: the demo users (admin is a hub admin) log "
                "in with a known password. Configure an identity provider before anyone else can reach it.",
                file=sys.stderr,
            )
        c.JupyterHub.authenticator_class = "jhub_ext.hub.demoauth.DemoAuthenticator"
        c.DemoAuthenticator.password = env.get("JHUB_EXT_DEMO_PASSWORD") or "demo"
        demo_users = {"alice": ["researchers"], "bob": ["researchers", "gpu"]}
        c.DemoAuthenticator.users = (
            json.loads(env["JHUB_EXT_DEMO_USERS"]) if env.get("JHUB_EXT_DEMO_USERS") else demo_users
        )
        c.Authenticator.admin_users = {"admin"}
    return chart.admins(c)


def _oauth_from_environment(c: Config, env: Mapping[str, str]) -> None:
    """Any OAuth2/OIDC provider, from ``JHUB_EXT_OAUTH_*``. Its groups claim becomes the user's
    JupyterHub groups at every login (and refresh), so the provider's groups decide the profiles."""
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = env["JHUB_EXT_OAUTH_CLIENT_ID"]
    c.GenericOAuthenticator.client_secret = env.get("JHUB_EXT_OAUTH_CLIENT_SECRET", "")
    c.GenericOAuthenticator.authorize_url = env["JHUB_EXT_OAUTH_AUTHORIZE_URL"]
    c.GenericOAuthenticator.token_url = env["JHUB_EXT_OAUTH_TOKEN_URL"]
    c.GenericOAuthenticator.userdata_url = env["JHUB_EXT_OAUTH_USERDATA_URL"]
    if env.get("JHUB_EXT_OAUTH_CALLBACK_URL"):
        c.GenericOAuthenticator.oauth_callback_url = env["JHUB_EXT_OAUTH_CALLBACK_URL"]
    # offline_access: a refresh token, with which the hub renews the user's groups (below)
    c.GenericOAuthenticator.scope = ["openid", "profile", "email", "groups", "offline_access"]
    c.GenericOAuthenticator.username_claim = env.get("JHUB_EXT_OAUTH_USERNAME_CLAIM", "preferred_username")
    c.GenericOAuthenticator.manage_groups = True
    c.GenericOAuthenticator.auth_state_groups_key = (
        f"oauth_user.{env.get('JHUB_EXT_OAUTH_GROUPS_CLAIM', 'groups')}"
    )
    allowed_groups = {g for g in env.get("JHUB_EXT_OAUTH_ALLOWED_GROUPS", "").split(",") if g}
    admin_groups = {g for g in env.get("JHUB_EXT_OAUTH_ADMIN_GROUPS", "").split(",") if g}
    c.GenericOAuthenticator.admin_groups = admin_groups
    if allowed_groups:
        c.GenericOAuthenticator.allowed_groups = allowed_groups | admin_groups
        c.GenericOAuthenticator.custom_403_message = forbidden_message(sorted(allowed_groups | admin_groups))
    else:
        c.GenericOAuthenticator.allow_all = True
    # With the provider's tokens kept (encrypted), a request at least JHUB_EXT_OAUTH_REFRESH_AGE seconds
    # after the last check, and every spawn, asks the provider again: userinfo with the access token,
    # or once that has expired, the refresh token; the answer's groups claim replaces the groups.
    if env.get("JUPYTERHUB_CRYPT_KEY"):
        c.GenericOAuthenticator.enable_auth_state = True
        c.GenericOAuthenticator.refresh_pre_spawn = True
        c.GenericOAuthenticator.auth_refresh_age = int(env.get("JHUB_EXT_OAUTH_REFRESH_AGE", "300"))
    else:
        print(
            "jhub_ext: WARNING: JUPYTERHUB_CRYPT_KEY is not set, so the provider's tokens are not kept: "
            "groups changed at the provider reach the hub only when a user logs in again.",
            file=sys.stderr,
        )


def forbidden_message(groups: list[str]) -> str:
    """What a user outside the allowed groups reads: why, and who can change it."""
    return (
        f"You are signed in, but this hub is for members of the group(s) {', '.join(groups)} at the "
        "team's identity provider, and you are not in any of them. Ask whoever manages those groups "
        "to add you, then sign in again."
    )
