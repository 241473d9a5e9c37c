"""The profile menu's spawner shell, the same on both platforms: :class:`ProfileMenuMixin`.

The spawners are :class:`jhub_ext.local.spawner.LocalProfileSpawner` (local processes) and
:class:`jhub_ext.kubernetes.spawner.ProfileKubeSpawner` (Kubernetes pods). Their old paths
(``jhub_ext.spawner.LocalProfileSpawner``, ``jhub_ext.spawner.kube`` and ``jhub_ext.spawner.local``)
work until the next release (see :mod:`jhub_ext.moved`).
"""

from typing import Any

from jhub_ext.spawner.profiles import ProfileChoiceError, ProfileMenuMixin

__all__ = ["ProfileChoiceError", "ProfileMenuMixin"]


def __getattr__(name: str) -> Any:
    if name == "LocalProfileSpawner":
        from jhub_ext.moved import moved_attribute

        return moved_attribute(__name__, name, "jhub_ext.local.spawner")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
