"""Idempotency keys of applied finding batches.

Revision ID: 0013
Revises: 0012

``write_key``: one row per batch of findings the store applied, keyed by
the writer's token and batch number; a batch sent again after a lost
connection finds its key and changes nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_key",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_write_key_at", "write_key", ["at"])


def downgrade() -> None:
    op.drop_table("write_key")
