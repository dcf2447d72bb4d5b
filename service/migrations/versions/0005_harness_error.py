"""Harness errors get their own table.

Revision ID: 0005
Revises: 0004

A run that raised an exception which is no modelled kernel report ends in
``Verdict.HARNESS``: a defect of foliodiff, not a finding about a kernel.
Such runs are kept apart from the divergences, one row per signature with
its hits (see :class:`service.models.HarnessError`).  The list view sorts on
``last_seen`` (the default) and ``hit_count``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "harness_error",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(512), nullable=False),
        sa.Column("signature_id", sa.String(16), nullable=False),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("exception", sa.String(128), nullable=False),
        sa.Column("op", sa.String(32), nullable=True),
        sa.Column("op_index", sa.Integer(), nullable=True),
        sa.Column("function", sa.String(128), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("stack", sa.JSON(), nullable=False),
        sa.Column("program_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.Integer(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hit_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_harness_error"),
        sa.UniqueConstraint("signature_id", name="uq_harness_error_signature_id"),
        sa.ForeignKeyConstraint(["program_id"], ["program.id"],
                                name="fk_harness_error_program_id_program"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"],
                                name="fk_harness_error_campaign_id_campaign"))
    op.create_index("ix_harness_error_last_seen", "harness_error", ["last_seen"])
    op.create_index("ix_harness_error_hit_count", "harness_error", ["hit_count"])


def downgrade() -> None:
    op.drop_table("harness_error")
