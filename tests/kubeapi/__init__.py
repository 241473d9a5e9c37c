"""A Kubernetes API emulator for tests: see server.py."""

from .server import KubeEmulator

__all__ = ["KubeEmulator"]
