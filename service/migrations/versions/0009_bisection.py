"""A divergence keeps its bisection along the version tree.

Revision ID: 0009
Revises: 0008

``bisection`` is :meth:`engine.Bisection.to_dict` of the divergence's
reproducer on every version of the tree: each version's verdict and each
edge where the behaviour changes, with its rules and patches.  ``came_in``
and ``went`` list the edges (``parent->child``, comma-separated) where the
divergence's own defect or rule came in and went, for the list filter.
All three stay None until a minimizer or a triager bisects the record.

Plain ``ADD COLUMN`` on every backend (see 0007 on batch mode).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_COLUMNS = ("bisection", "came_in", "went")


def upgrade() -> None:
    op.add_column("divergence", sa.Column("bisection", sa.JSON(), nullable=True))
    op.add_column("divergence", sa.Column("came_in", sa.String(256), nullable=True))
    op.add_column("divergence", sa.Column("went", sa.String(256), nullable=True))


def downgrade() -> None:
    # Bisections are recomputed on demand: nothing a triager wrote is lost.
    for column in reversed(_COLUMNS):
        op.drop_column("divergence", column)
