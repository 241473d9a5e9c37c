"""Shared fixtures: paths, free ports, and catalog text."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real hub (and proxy, and jobs service) for a test module, from hub_config/ in local mode."""
    from .hubprocess import HubProcess

    process = HubProcess(Path(tmp_path_factory.mktemp("hub"))).start()
    try:
        yield process
    finally:
        process.stop()
