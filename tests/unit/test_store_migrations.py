"""The jobs database's schema is versioned with Alembic: an existing database is upgraded on start
and keeps every job; the migrations and the models describe the same schema."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from jhub_ext.core.jobs.model import JobStatus, parse_submission
from jhub_ext.service.store import Base, JobStore, migrations

BEFORE_MIGRATIONS = Path(__file__).parent / "data" / "jobs-store-before-migrations.sql"


def head() -> str:
    with create_engine("sqlite://").connect() as connection:
        revision = ScriptDirectory.from_config(migrations(connection)).get_current_head()
    assert revision is not None
    return revision


def revision_of(store: JobStore) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_a_database_of_the_release_before_migrations_is_upgraded_and_keeps_every_job(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as connection:
        connection.executescript(BEFORE_MIGRATIONS.read_text())
    store = JobStore(f"sqlite:///{path}")
    try:
        assert revision_of(store) == head()
        jobs = {(job.user, job.name): job for job in store.list_jobs()}
        expected = [("alice", "news"), ("alice", "nightly"), ("bob", "train"), ("jürgen", "crawl")]
        assert sorted(jobs) == expected
        train = jobs[("bob", "train")]
        assert (train.status, train.exit_code, train.message) == (JobStatus.FAILED, 3, "exited with code 3")
        assert train.spec["env"] == {"SEED": "1"} and train.profile == "gpu-a100"
        assert parse_submission(train.spec).deadline_seconds == 3600  # a stored spec still parses
        assert store.log_tail("bob", "train") == "epoch 1\nTraceback ...\n"
        assert jobs[("alice", "nightly")].spec["timezone"] == "Europe/Berlin"
        assert jobs[("alice", "news")].status is JobStatus.RUNNING
        assert [a["action"] for a in store.audit("jürgen")] == ["submit", "stop"]
        unfinished = {name for (_, name), (status, _, _) in store.states().items() if not status.finished}
        assert unfinished == {"news", "nightly"}
        # and it goes on working: a new job, a status change
        store.create("carol", parse_submission({"name": "x", "kind": "batch", "command": ["true"]}), "small")
        store.set_status("alice", "news", JobStatus.STOPPED, actor="alice")
        assert store.count_jobs() == 5
    finally:
        store.close()
    again = JobStore(f"sqlite:///{path}")  # a second start finds nothing to do
    try:
        assert revision_of(again) == head() and again.count_jobs() == 5
    finally:
        again.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrations_make_exactly_the_models_schema(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    sqlite = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    url = sqlite if backend == "sqlite" else request.getfixturevalue("postgres_url")
    store = JobStore(url)
    try:
        with store.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == [], "a model changed without a migration (alembic revision --autogenerate)"
        tables = {"jobs", "audit", "user_settings", "usage_runs", "budget_notices", "alembic_version"}
        assert set(inspect(store.engine).get_table_names()) == tables
    finally:
        Base.metadata.drop_all(store.engine)
        with store.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        store.close()


def test_a_database_made_by_create_all_on_postgresql_is_adopted(request: pytest.FixtureRequest) -> None:
    """The release before migrations made its tables with ``create_all``: on PostgreSQL too, the
    service adopts them as the baseline instead of failing to create them again."""
    engine = create_engine(request.getfixturevalue("postgres_url"))
    Base.metadata.create_all(engine)
    with sqlite3.connect(":memory:") as before:
        before.executescript(BEFORE_MIGRATIONS.read_text())
        then = {row[1] for row in before.execute("PRAGMA table_info(jobs)")}
        tables_then = {
            row[0] for row in before.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    added_since = [column.name for column in Base.metadata.tables["jobs"].columns if column.name not in then]
    assert added_since  # (image, reason, detail, ...)
    with engine.begin() as connection:
        # what that release's create_all made: today's tables less the tables and columns added since
        for table in Base.metadata.sorted_tables:
            if table.name not in tables_then:
                table.drop(connection)
        for column in added_since:
            connection.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        connection.execute(
            Base.metadata.tables["jobs"]
            .insert()
            .values(
                user="alice",
                name="old",
                kind="batch",
                profile="small",
                groups=[],
                usage={},
                spec={"name": "old", "kind": "batch", "command": ["true"]},
                status="succeeded",
                restarts=0,
                created=datetime.now(UTC),
                log_tail="",
            )
        )
    engine.dispose()
    store = JobStore(request.getfixturevalue("postgres_url"))
    try:
        assert revision_of(store) == head()
        (old,) = store.list_jobs()
        assert (old.user, old.name, old.status) == ("alice", "old", JobStatus.SUCCEEDED)
    finally:
        Base.metadata.drop_all(store.engine)
        with store.engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        store.close()
