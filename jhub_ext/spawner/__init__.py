"""JupyterHub spawners that serve the profile catalog's menu.

``jhub_ext.spawner.LocalProfileSpawner`` (local processes) and
``jhub_ext.spawner.kube.ProfileKubeSpawner`` (Kubernetes pods; imported only when used,
so local mode never loads the Kubernetes client).
"""

from .local import LocalProfileSpawner
from .profiles import ProfileChoiceError, ProfileMenuMixin

__all__ = ["LocalProfileSpawner", "ProfileChoiceError", "ProfileMenuMixin"]
