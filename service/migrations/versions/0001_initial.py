"""Initial schema: campaigns, stats snapshots, programs, divergences, triage events, notes.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

Types are spelled out here, not imported from :mod:`service.models`, so this
migration keeps creating the same schema when the models move on.  Enum
columns are plain strings as long as their longest value; timestamps are
stored in UTC.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CAMPAIGN_STATUS = 8     # "finished"
TRIAGE_STATUS = 9       # "confirmed", "duplicate"
KIND = 9                # "data_loss", "invariant"
CLASSIFICATION = 10     # "unexpected"


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _at(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "campaign",
        _id(),
        sa.Column("engine_a", sa.String(32), nullable=False),
        sa.Column("engine_b", sa.String(32), nullable=False),
        sa.Column("fuzzer", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(CAMPAIGN_STATUS), nullable=False),
        sa.Column("intended", sa.JSON(), nullable=False),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_campaign"))
    op.create_index("ix_campaign_status", "campaign", ["status"])

    op.create_table(
        "program",
        _id(),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_program"),
        sa.UniqueConstraint("sha256", name="uq_program_sha256"))

    op.create_table(
        "divergence",
        _id(),
        sa.Column("signature", sa.String(512), nullable=False),
        sa.Column("signature_id", sa.String(16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("engine_a", sa.String(32), nullable=False),
        sa.Column("engine_b", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(KIND), nullable=False),
        sa.Column("classification", sa.String(CLASSIFICATION), nullable=False),
        sa.Column("field", sa.String(256), nullable=False),
        sa.Column("function", sa.String(128), nullable=True),
        sa.Column("first_op", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        _at("first_seen"),
        _at("last_seen"),
        sa.Column("hit_count", sa.Integer(), nullable=False),
        sa.Column("original_program_id", sa.Integer(), nullable=False),
        sa.Column("minimized_program_id", sa.Integer(), nullable=True),
        sa.Column("outcome_a", sa.JSON(), nullable=False),
        sa.Column("outcome_b", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(TRIAGE_STATUS), nullable=False),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("reopened_from", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_divergence"),
        sa.UniqueConstraint("signature_id", "seq", name="uq_divergence_signature_id_seq"),
        sa.ForeignKeyConstraint(["original_program_id"], ["program.id"],
                                name="fk_divergence_original_program_id_program"),
        sa.ForeignKeyConstraint(["minimized_program_id"], ["program.id"],
                                name="fk_divergence_minimized_program_id_program"),
        sa.ForeignKeyConstraint(["duplicate_of"], ["divergence.id"],
                                name="fk_divergence_duplicate_of_divergence"),
        sa.ForeignKeyConstraint(["reopened_from"], ["divergence.id"],
                                name="fk_divergence_reopened_from_divergence"))
    # The list filters and sorts of the triage API.
    for columns in (["status"], ["kind"], ["classification"], ["engine_a", "engine_b"],
                    ["last_seen"], ["hit_count"]):
        op.create_index("ix_divergence_" + "_".join(columns), "divergence", columns)

    op.create_table(
        "stats_snapshot",
        _id(),
        sa.Column("campaign_id", sa.Integer(), nullable=False),
        sa.Column("t", sa.Float(), nullable=False),
        sa.Column("execs", sa.Integer(), nullable=False),
        sa.Column("exec_per_s", sa.Float(), nullable=False),
        sa.Column("corpus_size", sa.Integer(), nullable=False),
        sa.Column("signatures", sa.JSON(), nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("id", name="pk_stats_snapshot"),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaign.id"], ondelete="CASCADE",
                                name="fk_stats_snapshot_campaign_id_campaign"))
    op.create_index("ix_stats_snapshot_campaign_id_t", "stats_snapshot", ["campaign_id", "t"])

    op.create_table(
        "triage_event",
        _id(),
        sa.Column("divergence_id", sa.Integer(), nullable=False),
        sa.Column("from_status", sa.String(TRIAGE_STATUS), nullable=True),
        sa.Column("to_status", sa.String(TRIAGE_STATUS), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("id", name="pk_triage_event"),
        sa.ForeignKeyConstraint(["divergence_id"], ["divergence.id"], ondelete="CASCADE",
                                name="fk_triage_event_divergence_id_divergence"))
    op.create_index("ix_triage_event_divergence_id", "triage_event", ["divergence_id"])

    op.create_table(
        "note",
        _id(),
        sa.Column("divergence_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        _at("at"),
        sa.PrimaryKeyConstraint("id", name="pk_note"),
        sa.ForeignKeyConstraint(["divergence_id"], ["divergence.id"], ondelete="CASCADE",
                                name="fk_note_divergence_id_divergence"))
    op.create_index("ix_note_divergence_id", "note", ["divergence_id"])


def downgrade() -> None:
    for table in ("note", "triage_event", "stats_snapshot", "divergence", "program", "campaign"):
        op.drop_table(table)
