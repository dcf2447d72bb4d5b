"""A divergence keeps its minimized program's own run beside the original's.

Revision ID: 0007
Revises: 0006

A divergence stored its original program's two outcomes and detail, and
its minimized program as the reproducer: the detail said "allowed 42" where
the reproducer's run says "allowed 1", and its operation indices named
operations the minimized program no longer has.  The minimized program's
two outcomes (rows of ``outcome``, like the originals), its detail and the
operation where its runs parted now have columns of their own; the
original's stay where they were.  Divergences minimized before this
migration keep None there: their minimized run was never recorded, and the
views say so rather than show the original's as the reproducer's.

On SQLite the columns are added with ``ALTER TABLE ... ADD COLUMN``, which
takes an inline ``REFERENCES``: batch mode would recreate the divergence
table, and dropping the old one under ``PRAGMA foreign_keys = ON`` deletes
its triage events and notes (ON DELETE CASCADE) and its search triggers.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OUTCOMES = ("minimized_outcome_a_id", "minimized_outcome_b_id")


def _fk(column: str) -> str:
    # The models' naming convention (service.models.NAMING).
    return f"fk_divergence_{column}_outcome"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for column in _OUTCOMES:
            op.execute(f"ALTER TABLE divergence ADD COLUMN {column} INTEGER "
                       f"CONSTRAINT {_fk(column)} REFERENCES outcome (id)")
    else:
        for column in _OUTCOMES:
            op.add_column("divergence", sa.Column(column, sa.Integer(), nullable=True))
            op.create_foreign_key(_fk(column), "divergence", "outcome", [column], ["id"])
    op.add_column("divergence", sa.Column("minimized_first_op", sa.Integer(), nullable=True))
    op.add_column("divergence", sa.Column("minimized_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    # Dropping the columns would lose every minimized run stored since.
    raise NotImplementedError("0007 stores minimized runs; restore a backup to go back to 0006")
