from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..conftest import SHIPPED_CATALOG
from ..hubprocess import HubProcess


@pytest.fixture(autouse=True)
def _restore_catalog(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests may edit the running hub's catalog; put the shipped one back afterwards."""
    yield
    if "hub" in request.fixturenames:
        hub: HubProcess = request.getfixturevalue("hub")
        hub.catalog.write_text(SHIPPED_CATALOG.read_text())
