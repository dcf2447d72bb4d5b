"""Divergences regrouped by cause.

Revision ID: 0008
Revises: 0007

Data losses and broken invariants used to be signed with the operation in
which an oracle noticed them, so one kernel bug was stored once per
operation that could notice it.  They are signed now with the kernel
decision that lost the data or broke the invariant
(:mod:`engine.execution.provenance`).  This migration replays each stored
data loss, invariant and leak (its minimized program if it has one) and
signs it anew:

- the first record of each new signature (lowest id) takes it, keeping its
  triage state, history, notes and hits;
- every other record that now shares it keeps its old signature and hits,
  and is marked a duplicate of that first one, with a triage event that
  says which cause merged them (``author`` is this migration); a record
  already triaged as invalid or intended keeps its state and gets the
  event as a note only;
- a record whose replay no longer shows its divergence (the model changed
  since it was stored) is left as it was.

What it merged is also logged (``alembic.runtime.migration``).
Downgrade keeps the new signatures and the duplicates: nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

AUTHOR = "migration 0008"
_KINDS = ("data_loss", "invariant", "leak")
log = logging.getLogger("alembic.runtime.migration")


def _new_signature(program_json: str, engine_a: str, engine_b: str, kind: str) -> str | None:
    from engine import UnknownEngineError, differential, parse_program
    try:
        report = differential(parse_program(json.loads(program_json)), engine_a, engine_b)
    except (UnknownEngineError, ValueError) as exc:
        log.warning("0008: cannot replay on %s,%s: %s", engine_a, engine_b, exc)
        return None
    same = [d for d in report.unexpected if d.kind.value == kind]
    return same[0].signature if same else None


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT d.id, d.signature, d.seq, d.kind, d.engine_a, d.engine_b, d.status, "
        "COALESCE(pm.json, po.json) AS program FROM divergence d "
        "JOIN program po ON po.id = d.original_program_id "
        "LEFT JOIN program pm ON pm.id = d.minimized_program_id "
        "WHERE d.kind IN ('data_loss', 'invariant', 'leak') ORDER BY d.id")).fetchall()
    groups: dict[tuple[str, int], list[tuple[int, str, str]]] = {}
    for row in rows:
        sig = _new_signature(row.program, row.engine_a, row.engine_b, row.kind)
        if sig is None:
            log.info("0008: #%d (%s) no longer reproduces: left as it was", row.id, row.signature)
            continue
        groups.setdefault((sig, row.seq), []).append((row.id, row.signature, row.status))
    now = datetime.now(UTC)
    for (sig, _seq), members in groups.items():
        first_id, first_old, _ = members[0]
        sid = hashlib.sha1(sig.encode()).hexdigest()[:16]
        if sig != first_old:
            bind.execute(sa.text("UPDATE divergence SET signature = :s, signature_id = :i "
                                 "WHERE id = :d"), {"s": sig, "i": sid, "d": first_id})
        for did, old, status in members[1:]:
            note = f"merged by {AUTHOR} into #{first_id}: same cause {sig} (was {old})"
            log.info("0008: #%d -> duplicate of #%d (%s)", did, first_id, sig)
            moved = status in ("new", "confirmed")
            bind.execute(sa.text(
                "INSERT INTO triage_event (divergence_id, from_status, to_status, note, author, at) "
                "VALUES (:d, :f, :t, :n, :a, :at)"),
                {"d": did, "f": status, "t": "duplicate" if moved else status, "n": note,
                 "a": AUTHOR, "at": now})
            if moved:
                bind.execute(sa.text("UPDATE divergence SET status = 'duplicate', "
                                     "duplicate_of = :o WHERE id = :d"),
                             {"o": first_id, "d": did})


def downgrade() -> None:
    # The new signatures and the duplicates stay: undoing them would drop triage.
    pass
