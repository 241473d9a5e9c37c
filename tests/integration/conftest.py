from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One real hub (and proxy) for a test module, from hub_config/ in local mode."""
    process = HubProcess(Path(tmp_path_factory.mktemp("hub"))).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def _restore_catalog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests may edit the running hub's catalog; put the shipped one back afterwards."""
    yield
    if "hub" in request.fixturenames:
        hub: HubProcess = request.getfixturevalue("hub")
        hub.catalog.write_text(SHIPPED_CATALOG.read_text())
