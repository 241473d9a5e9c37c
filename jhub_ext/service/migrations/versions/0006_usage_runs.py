"""The usage ledger: every server and job run, its owner, groups, profile, cost per hour and times;
and the budget levels each group's members were told of.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the ``usage_runs`` and ``budget_notices`` tables."""
    op.create_table(
        "usage_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("subject", sa.String(8), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("profile", sa.String(63), nullable=True),
        sa.Column("cost_per_hour", sa.Float(), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_usage_runs_user", "usage_runs", ["user"])
    op.create_index("ix_usage_runs_started", "usage_runs", ["started"])
    op.create_index("ix_usage_runs_ended", "usage_runs", ["ended"])
    op.create_table(
        "budget_notices",
        sa.Column("group", sa.String(255), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("level", sa.String(8), nullable=False),
    )


def downgrade() -> None:
    """Drop ``budget_notices`` and ``usage_runs``."""
    op.drop_table("budget_notices")
    op.drop_table("usage_runs")
