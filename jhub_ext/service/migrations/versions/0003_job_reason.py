"""Jobs say why they wait or ended: a stable reason code, and the platform's own words for admins.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable ``jobs.reason`` and ``jobs.detail`` columns (None: none known)."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop ``jobs.reason`` and ``jobs.detail``."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("detail")
        batch.drop_column("reason")
