"""Conformance results on real kernels, and the API's background conformance jobs.

Revision ID: 0010
Revises: 0009

``conformance_result``: one scenario on one real kernel (catalogue entry or
image file, named by package version or image hash), against its engine,
with the verdict and the differing fields.  ``conformance_job``: a run of a
stored divergence that the API queued and a separate process runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conformance_job",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("divergence_id", sa.Integer(),
                  sa.ForeignKey("divergence.id", ondelete="CASCADE",
                                name="fk_conformance_job_divergence_id_divergence"), nullable=False),
        sa.Column("kernels", sa.JSON(), nullable=False),
        sa.Column("timeout", sa.Float(), nullable=False),
        sa.Column("status", sa.String(7), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_conformance_job_divergence_id", "conformance_job", ["divergence_id"])
    op.create_index("ix_conformance_job_status", "conformance_job", ["status"])
    op.create_table(
        "conformance_result",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("job_id", sa.Integer(),
                  sa.ForeignKey("conformance_job.id", ondelete="CASCADE",
                                name="fk_conformance_result_job_id_conformance_job"), nullable=True),
        sa.Column("divergence_id", sa.Integer(),
                  sa.ForeignKey("divergence.id", ondelete="CASCADE",
                                name="fk_conformance_result_divergence_id_divergence"), nullable=True),
        sa.Column("scenario", sa.String(256), nullable=False),
        sa.Column("program_id", sa.Integer(),
                  sa.ForeignKey("program.id", name="fk_conformance_result_program_id_program"),
                  nullable=False),
        sa.Column("kernel", sa.String(256), nullable=False),
        sa.Column("kernel_version", sa.String(128), nullable=False),
        sa.Column("package", sa.String(256), nullable=False),
        sa.Column("uname", sa.String(128), nullable=True),
        sa.Column("engine", sa.String(32), nullable=False),
        sa.Column("plugin", sa.JSON(), nullable=True),
        sa.Column("verdict", sa.String(15), nullable=False),
        sa.Column("differences", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("observed", sa.JSON(), nullable=True),
        sa.Column("sides", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_conformance_result_job_id", "conformance_result", ["job_id"])
    op.create_index("ix_conformance_result_divergence_id", "conformance_result", ["divergence_id"])
    op.create_index("ix_conformance_result_created_at", "conformance_result", ["created_at"])
    op.create_index("ix_conformance_result_scenario_kernel", "conformance_result",
                    ["scenario", "kernel", "id"])


def downgrade() -> None:
    op.drop_table("conformance_result")
    op.drop_table("conformance_job")
