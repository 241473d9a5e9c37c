"""Jobs remember the image they were submitted to run in (the notebook's), so a restart uses it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable ``jobs.image`` column (None: the profile's default image)."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("image", sa.String(512), nullable=True))


def downgrade() -> None:
    """Drop ``jobs.image``."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("image")
