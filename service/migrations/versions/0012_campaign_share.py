"""The shares of a fleet campaign, each run by one worker at a time.

Revision ID: 0012
Revises: 0011

``campaign_share``: one row per (campaign, share): the generation of the
worker that took it last (writes of an older one are refused), where its
source goes on from, the seconds it has fuzzed and its counts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_share",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(),
                  sa.ForeignKey("campaign.id", ondelete="CASCADE",
                                name="fk_campaign_share_campaign_id_campaign"), nullable=False),
        sa.Column("share", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("position", sa.JSON(), nullable=True),
        sa.Column("elapsed", sa.Float(), nullable=False),
        sa.Column("execs", sa.Integer(), nullable=False),
        sa.Column("coverage", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(300), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("campaign_id", "share", name="uq_campaign_share_campaign_id_share"),
    )


def downgrade() -> None:
    op.drop_table("campaign_share")
