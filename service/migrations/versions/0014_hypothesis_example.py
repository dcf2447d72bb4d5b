"""A fleet campaign's Hypothesis example database, shared by its workers.

Revision ID: 0014
Revises: 0013

``hypothesis_example``: values Hypothesis saved under a key, once per
(campaign, sha1 of key and value).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hypothesis_example",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(),
                  sa.ForeignKey("campaign.id", ondelete="CASCADE",
                                name="fk_hypothesis_example_campaign_id_campaign"),
                  nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("digest", sa.String(40), nullable=False),
        sa.UniqueConstraint("campaign_id", "digest",
                            name="uq_hypothesis_example_campaign_id_digest"),
    )
    op.create_index("ix_hypothesis_example_campaign_id_key", "hypothesis_example",
                    ["campaign_id", "key"])


def downgrade() -> None:
    op.drop_table("hypothesis_example")
