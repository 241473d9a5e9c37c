"""Fixtures of the unit tests of the jobs service: a real store and a manager over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from jhub_ext.admission.lock import QuotaLock
from jhub_ext.core.catalog.reload import CatalogSource
from jhub_ext.service.manager import JobManager
from jhub_ext.service.store import Base, JobStore

from ..pgserver import postgres_server
from .managers import CATALOG, FakeBackend, Make


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    s = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    yield s
    s.close()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def make(tmp_path: Path, store: JobStore, backend: FakeBackend) -> Make:
    path = tmp_path / "profiles.yaml"
    path.write_text(CATALOG)
    catalog = CatalogSource(path)

    def build(hub: Any = None, **options: Any) -> JobManager:
        options.setdefault("quota_lock", QuotaLock(tmp_path / "locks"))
        return JobManager(store, backend, catalog, hub, **options)

    return build


@pytest.fixture
def manager(make: Make) -> JobManager:
    return make()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """A store on SQLite (the default) and on a real PostgreSQL server, emptied after the test."""
    if request.param == "sqlite":
        s = JobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    else:
        s = JobStore(request.getfixturevalue("postgres_url"))
    yield s
    Base.metadata.drop_all(s.engine)
    with s.engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
    s.close()
