"""A campaign's shared corpus: the inputs its workers kept, on any machine.

Revision ID: 0011
Revises: 0010

``corpus_entry``: one input per (campaign, sha1 of its bytes), with the
behaviour features it showed and the worker share that kept it first, and
whether a merge pruned it.  Workers push with ``INSERT … ON CONFLICT DO
NOTHING`` and pull by id.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "corpus_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(),
                  sa.ForeignKey("campaign.id", ondelete="CASCADE",
                                name="fk_corpus_entry_campaign_id_campaign"), nullable=False),
        sa.Column("sha1", sa.String(40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pruned", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("campaign_id", "sha1", name="uq_corpus_entry_campaign_id_sha1"),
    )


def downgrade() -> None:
    op.drop_table("corpus_entry")
