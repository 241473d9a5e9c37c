"""Jobs may wait in their group's queue: which group's, and since when (first in, first out).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable ``jobs.queue`` and ``jobs.queued`` columns (None: not queued)."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("queue", sa.String(255), nullable=True))
        batch.add_column(sa.Column("queued", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_jobs_queued", ["queued"])


def downgrade() -> None:
    """Drop ``jobs.queue`` and ``jobs.queued``."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_queued")
        batch.drop_column("queued")
        batch.drop_column("queue")
