"""Module paths that moved when the package was regrouped by platform, kept for one release.

Configuration files name classes by their module path (``c.JupyterHub.spawner_class``,
``c.JobsService.backend_class``) and commands name modules (``python -m jhub_ext.jobs.app``). Each
old module warns once, naming the new path, and hands out the new module's names.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: old module -> new module (the table docs/explanation/architecture.md shows)
MOVED = {
    "jhub_ext.spawner.kube": "jhub_ext.kubernetes.spawner",
    "jhub_ext.spawner.local": "jhub_ext.local.spawner",
    "jhub_ext.backends.kubernetes": "jhub_ext.kubernetes.backend",
    "jhub_ext.backends.local": "jhub_ext.local.backend",
    "jhub_ext.jobs.app": "jhub_ext.service.app",
    "jhub_ext.demo_auth": "jhub_ext.hub.demoauth",
}


def reexport(old: str, namespace: dict[str, Any]) -> None:
    """Warn that module ``old`` moved, and put the new module's public names in ``namespace``."""
    old = "jhub_ext.jobs.app" if old == "__main__" else old  # the one old module run as a command
    new = MOVED[old]
    warnings.warn(
        f"{old} moved to {new} in jhub_ext 0.2: use the new path (the old one goes in the next release)",
        FutureWarning,
        stacklevel=3,
    )
    module = importlib.import_module(new)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    namespace.update({name: getattr(module, name) for name in names})


def moved_attribute(package: str, name: str, module: str) -> Any:
    """``package.name``, which now lives in ``module`` (warns as :func:`reexport` does)."""
    warnings.warn(
        f"{package}.{name} moved to {module}.{name} in jhub_ext 0.2: use the new path "
        "(the old one goes in the next release)",
        FutureWarning,
        stacklevel=3,
    )
    return getattr(importlib.import_module(module), name)
