"""Alembic migrations of the jobs database (see :func:`jhub_ext.jobs.store.upgrade_schema`)."""
