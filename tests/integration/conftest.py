from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..hubprocess import HubProcess


@pytest.fixture(autouse=True)
def _restore_catalog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests may edit the running hub's catalog; put the one it started with back afterwards."""
    yield
    if "hub" in request.fixturenames:
        hub: HubProcess = request.getfixturevalue("hub")
        if hub.catalog.read_text() != hub.initial_catalog:
            hub.catalog.write_text(hub.initial_catalog)
