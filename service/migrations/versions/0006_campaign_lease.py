"""Campaign leases; coverage in the stats snapshots.

Revision ID: 0006
Revises: 0005

A campaign row holds the lease of the process that runs it (host, pid, a
random token, the time of its last heartbeat), so that a second runner of
the same campaign is refused while the first is alive (see
:meth:`service.store.Store.take_lease`).  A stats snapshot holds the
campaign's coverage and what it counts (``features`` or ``edges``, see
:class:`fuzz.sources.CoverageUnit`); snapshots stored before have neither:
NULL, unknown, never a 0 that pretends.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("campaign") as batch:
        batch.add_column(sa.Column("lease_host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("lease_token", sa.String(32), nullable=True))
        batch.add_column(sa.Column("lease_heartbeat", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("stats_snapshot") as batch:
        batch.add_column(sa.Column("coverage", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("coverage_unit", sa.String(8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stats_snapshot") as batch:
        batch.drop_column("coverage_unit")
        batch.drop_column("coverage")
    with op.batch_alter_table("campaign") as batch:
        batch.drop_column("lease_heartbeat")
        batch.drop_column("lease_token")
        batch.drop_column("lease_pid")
        batch.drop_column("lease_host")
