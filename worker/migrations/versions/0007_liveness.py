"""liveness: worker heartbeats, stuck compensations

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stuck_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("stuck_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_contacts_stuck",
            ["stuck_since"],
            unique=False,
            sqlite_where=sa.text("stuck_since IS NOT NULL"),
            postgresql_where=sa.text("stuck_since IS NOT NULL"),
        )
    op.create_table(
        "worker_heartbeats",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_heartbeats")),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_stuck")
        batch_op.drop_column("stuck_since")
        batch_op.drop_column("stuck_reason")
