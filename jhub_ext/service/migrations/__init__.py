"""Alembic migrations of the jobs database (see :func:`jhub_ext.service.store.upgrade_schema`)."""
