"""Composite indexes for the divergence list: filter on one column, sort on another.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen here, like the types of 0001: a later change of the models must not
# change what this migration did.
FILTERS = ("status", "kind", "classification")
SORTS = ("last_seen", "hit_count")


def upgrade() -> None:
    for f in FILTERS:
        for s in SORTS:
            op.create_index(f"ix_divergence_{f}_{s}", "divergence", [f, s])


def downgrade() -> None:
    for f in FILTERS:
        for s in SORTS:
            op.drop_index(f"ix_divergence_{f}_{s}", table_name="divergence")
