"""Shared fixtures: paths, free ports, and catalog text."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HUB_CONFIG = ROOT / "hub_config"
SHIPPED_CATALOG = HUB_CONFIG / "profiles.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def shipped_catalog_text() -> str:
    return SHIPPED_CATALOG.read_text()
