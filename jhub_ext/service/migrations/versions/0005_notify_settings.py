"""Notifications: each user's settings, and a job's own given at submit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the ``user_settings`` table and the nullable ``jobs.notify`` column (None: its owner's)."""
    op.create_table(
        "user_settings",
        sa.Column("user", sa.String(255), primary_key=True),
        sa.Column("notify", sa.JSON(), nullable=False),
        sa.Column("updated", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("notify", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop ``jobs.notify`` and ``user_settings``."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("notify")
    op.drop_table("user_settings")
