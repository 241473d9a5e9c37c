"""Joining the configuration jhub_ext is loaded into, such as the Zero to JupyterHub chart's.

The chart's ``jupyterhub_config.py`` runs first and sets services (its idle culler), roles, the
spawner's environment, image pull secrets and the admin's ``hub.config`` pass-through; ours runs
after it (``hub.extraConfig``). Everything here *adds* to what is there, so the chart's settings and
the admin's values keep working: nothing is replaced that someone else set.

Pure functions over a traitlets :class:`~traitlets.config.Config` and plain values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from traitlets.config import Config
from traitlets.config.loader import LazyConfigValue

#: the authenticator the chart configures when the admin names none (anyone in, any password)
CHART_DEFAULT_AUTHENTICATOR = "dummy"


class ConfigConflict(ValueError):
    """Our configuration and the one it joins ask for contradictory things."""


def configured(section: Config, name: str, default: Any = None) -> Any:
    """The value someone set for ``name`` in ``section``, else ``default``; a lazy one (``.append``
    on an unset list) is applied to an empty value of ``default``'s type."""
    value = section.get(name, default)
    if isinstance(value, LazyConfigValue):
        return value.get_value(type(default)() if default is not None else [])
    return value


def set_default(section: Config, name: str, value: Any) -> None:
    """Set ``name`` only where nobody (the chart, the admin's values) set it before."""
    if name not in section:
        section[name] = value


def with_service(services: Iterable[Mapping[str, Any]], service: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``services`` with ``service`` added; a service of the same name already there is a conflict."""
    merged = [dict(s) for s in services]
    if any(s.get("name") == service["name"] for s in merged):
        raise ConfigConflict(
            f"a JupyterHub service named {service['name']!r} is configured already (hub.services in the "
            f"chart's values?); jhub_ext's jobs service needs that name: remove or rename the other one"
        )
    return [*merged, dict(service)]


def with_roles(
    roles: Iterable[Mapping[str, Any]], added: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``roles`` with ``added`` joined in: a role of the same name (the admin's ``user`` role, say) gets
    the union of both's scopes, users, groups and services, so neither side loses a grant."""
    merged = [dict(r) for r in roles]
    by_name = {r["name"]: r for r in merged}
    for role in added:
        existing = by_name.get(role["name"])
        if existing is None:
            merged.append(dict(role))
            by_name[role["name"]] = merged[-1]
            continue
        for key in ("scopes", "users", "groups", "services"):
            if key in role or key in existing:
                existing[key] = sorted({*existing.get(key, ()), *role.get(key, ())})
    return merged


def merged_environment(config: Config, sections: Iterable[str]) -> dict[str, Any]:
    """The spawner environment in force, as the most specific of ``sections`` (most general first)
    that sets one sees it: the chart sets ``KubeSpawner.environment`` from ``singleuser.extraEnv``."""
    environment: dict[str, Any] = {}
    for name in sections:
        environment.update(configured(config[name], "environment", {}) if name in config else {})
    return environment


def admins(config: Config) -> tuple[set[str], set[str]]:
    """The hub admins' user names and groups, as any configured authenticator section names them
    (``Authenticator.admin_users``, ``GenericOAuthenticator.admin_groups``, ...)."""
    users: set[str] = set()
    groups: set[str] = set()
    for name, section in config.items():
        if name.endswith("Authenticator") and isinstance(section, Config):
            users |= set(configured(section, "admin_users", ()) or ())
            groups |= set(configured(section, "admin_groups", ()) or ())
    return users, groups


def pull_secret_names(secrets: Iterable[Any]) -> list[str]:
    """Image pull secrets as names, whether given as names or as ``{"name": ...}`` references."""
    return [s["name"] if isinstance(s, Mapping) else str(s) for s in secrets]


def admin_chose_authenticator(chart_authenticator: str | None) -> bool:
    """Whether the admin's values name a real authenticator (``hub.config.JupyterHub.authenticator_class``),
    not the chart's default that lets anyone in."""
    return bool(chart_authenticator) and chart_authenticator != CHART_DEFAULT_AUTHENTICATOR


RESTRICTED_HINT = (
    "set singleuser.cloudMetadata.blockWithIptables: false in the chart's values (hub_config/values.yaml "
    "does): the init container it adds runs privileged as root, which the namespace's 'restricted' Pod "
    "Security refuses, so no server could start; the NetworkPolicies block the metadata server instead"
)


def privileged_init_containers(containers: Iterable[Any]) -> list[str]:
    """Names of init containers that ask for root or privilege (the chart's iptables one, say)."""
    found = []
    for container in containers:
        c = container if isinstance(container, Mapping) else _as_dict(container)
        security = c.get("securityContext") or c.get("security_context") or {}
        if not isinstance(security, Mapping):
            security = _as_dict(security)
        run_as = security.get("runAsUser", security.get("run_as_user"))
        if security.get("privileged") or run_as == 0:
            found.append(str(c.get("name")))
    return found


def _as_dict(obj: Any) -> dict[str, Any]:
    """A kubernetes client model as a dict with its Python attribute names (``to_dict``), else empty."""
    to_dict = getattr(obj, "to_dict", None)
    return to_dict() if callable(to_dict) else {}
