"""Outcomes move to their own table, compressed; an index for signature search.

Revision ID: 0003
Revises: 0002

A divergence row carried its two outcomes as JSON, about 2 KiB of its
~2.3 KiB: every list page, count and signature search read them.  They now
live once per content in ``outcome`` (zlib of the compact JSON, keyed by the
sha256 of that JSON) and a divergence points at two of them.  Stored
outcomes are moved, not dropped.

The single-column indexes on status and kind are prefixes of the (filter,
sort) indexes of 0002 and go.  So do the classification indexes: the store
keeps unexpected divergences only (intended ones are counted on their
campaign), so that filter needs no index.  The engine pair gets its own
(engine_a, engine_b, sort) pair, so that filtering on it walks one index in
order instead of sorting every row of the pair.

Signature search gets a trigram index: an FTS5 table over the signatures on
SQLite (external content, kept by triggers; case-sensitive, so GLOB can use
it), a ``pg_trgm`` GIN index on PostgreSQL (LIKE uses it).  Neither is in
the models (see ``service.models.SEARCH_OBJECTS``).  A later migration that
recreates the divergence table on SQLite must create the triggers again.
"""

from __future__ import annotations

import hashlib
import json
import zlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SORTS = ("last_seen", "hit_count")
_BATCH = 1000


def _pack(value: object) -> tuple[str, bytes]:
    text = json.dumps(value, separators=(",", ":")).encode()
    return hashlib.sha256(text).hexdigest(), zlib.compress(text, 6)


def _move_outcomes(bind: sa.Connection) -> None:
    """Pack every stored outcome into ``outcome`` and point its divergence at it."""
    meta = sa.MetaData()
    div = sa.Table("divergence", meta, sa.Column("id", sa.Integer), sa.Column("outcome_a", sa.JSON),
                   sa.Column("outcome_b", sa.JSON), sa.Column("outcome_a_id", sa.Integer),
                   sa.Column("outcome_b_id", sa.Integer))
    out = sa.Table("outcome", meta, sa.Column("id", sa.Integer), sa.Column("sha256", sa.String),
                   sa.Column("packed", sa.LargeBinary))
    ids: dict[str, int] = {}
    last = 0
    while True:
        rows = bind.execute(sa.select(div.c.id, div.c.outcome_a, div.c.outcome_b)
                            .where(div.c.id > last).order_by(div.c.id).limit(_BATCH)).all()
        if not rows:
            return
        updates = []
        for rid, a, b in rows:
            pair = []
            for value in (a, b):
                sha, packed = _pack(value)
                if sha not in ids:
                    ids[sha] = bind.execute(sa.insert(out).values(sha256=sha, packed=packed)
                                            .returning(out.c.id)).scalar_one()
                pair.append(ids[sha])
            updates.append({"r": rid, "a": pair[0], "b": pair[1]})
        bind.execute(sa.update(div).where(div.c.id == sa.bindparam("r"))
                     .values(outcome_a_id=sa.bindparam("a"), outcome_b_id=sa.bindparam("b")),
                     updates)
        last = rows[-1][0]


def upgrade() -> None:
    op.create_table(
        "outcome",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("packed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outcome"),
        sa.UniqueConstraint("sha256", name="uq_outcome_sha256"))
    with op.batch_alter_table("divergence") as batch:
        batch.add_column(sa.Column("outcome_a_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("outcome_b_id", sa.Integer(), nullable=True))
    _move_outcomes(op.get_bind())
    for column in ("status", "kind", "classification"):
        op.drop_index(f"ix_divergence_{column}", table_name="divergence")
    for s in SORTS:
        op.drop_index(f"ix_divergence_classification_{s}", table_name="divergence")
    op.drop_index("ix_divergence_engine_a_engine_b", table_name="divergence")
    with op.batch_alter_table("divergence") as batch:
        batch.drop_column("outcome_a")
        batch.drop_column("outcome_b")
        for side in ("a", "b"):
            batch.alter_column(f"outcome_{side}_id", existing_type=sa.Integer(), nullable=False)
            batch.create_foreign_key(f"fk_divergence_outcome_{side}_id_outcome", "outcome",
                                     [f"outcome_{side}_id"], ["id"])
    for s in SORTS:
        op.create_index(f"ix_divergence_engine_a_engine_b_{s}", "divergence",
                        ["engine_a", "engine_b", s])
    _signature_search(op.get_bind().dialect.name)


def _signature_search(dialect: str) -> None:
    if dialect == "sqlite":
        op.execute("CREATE VIRTUAL TABLE divergence_fts USING fts5(signature, "
                   "content='divergence', content_rowid='id', "
                   "tokenize='trigram case_sensitive 1')")
        op.execute("INSERT INTO divergence_fts(divergence_fts) VALUES ('rebuild')")
        remove = ("INSERT INTO divergence_fts(divergence_fts, rowid, signature) "
                  "VALUES ('delete', old.id, old.signature);")
        add = "INSERT INTO divergence_fts(rowid, signature) VALUES (new.id, new.signature);"
        op.execute(f"CREATE TRIGGER divergence_fts_ai AFTER INSERT ON divergence BEGIN {add} END")
        op.execute(f"CREATE TRIGGER divergence_fts_ad AFTER DELETE ON divergence BEGIN {remove} END")
        op.execute("CREATE TRIGGER divergence_fts_au AFTER UPDATE OF signature ON divergence "
                   f"BEGIN {remove} {add} END")
    elif dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_divergence_signature_trgm ON divergence "
                   "USING gin (signature gin_trgm_ops)")


def downgrade() -> None:
    raise NotImplementedError("0003 moves outcomes; restore a backup to go back to 0002")
