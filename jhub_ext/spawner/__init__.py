"""JupyterHub spawners that serve the profile catalog's menu."""

from .local import LocalProfileSpawner
from .profiles import ProfileChoiceError, ProfileMenuMixin

__all__ = ["LocalProfileSpawner", "ProfileChoiceError", "ProfileMenuMixin"]
