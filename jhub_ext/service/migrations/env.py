"""Alembic's environment for the jobs database: run on the connection the store hands over."""

from alembic import context

from jhub_ext.service.store import Base

connection = context.config.attributes["connection"]
# batch mode: SQLite alters tables by copying them, and later migrations must work there too
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
