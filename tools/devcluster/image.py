"""The "image" the node agent runs every container in: the users' Python environment.

No container runtime exists here, so images are not pulled: as root, containers run as the pod's
``runAsUser`` in the environment of :mod:`jhub_ext.local.userenv`, with the current jhub_ext
source overlaid per cluster start.
"""

from __future__ import annotations

from pathlib import Path

from jhub_ext.local.userenv import UserEnvironment as NodeImage
from jhub_ext.local.userenv import user_environment

__all__ = ["NodeImage", "node_image"]


def node_image(directory: Path) -> NodeImage:
    """The environment containers run in."""
    return user_environment(directory / "image-overlay")
