"""Stored programs move to format 2: each format-1 schedule is read on one engine.

Revision ID: 0004
Revises: 0003

A format-1 schedule names global step numbers, which mean different places
on different engines (issue 13): the same stored program preempted two
different interleavings on the two engines of its divergence.  Format 2
names places (:class:`engine.Preemption`), and a format-1 schedule
becomes one by being read on one engine (:func:`engine.upgrade_program`):
on that engine the upgraded program runs exactly as the stored one did.

Which engine reads a program: the ``engine_a`` of each divergence that
references it (as original or minimized program), else that of each
campaign that keeps it as an intended-rule sample (``campaign.intended``:
``{rule: {"count": n, "samples": [program_id, ...]}}``), else
:data:`engine.DEFAULT_READING`.  A program its references read on
different engines becomes one row per reading, and every reference points
at the reading of its own engine; the row itself keeps the first reading
(divergences by id, then campaigns by id).  The text is the program's
compact JSON as :func:`fuzz.records.records_from_report` writes it, and the
``sha256`` that of the text, as the store computes it.  Programs that
upgrade to the same text become one row (``sha256`` is unique): every
reference moves to it and the other row goes.

Each divergence whose program was upgraded gets a note (author
``migration``) with what the upgrade did: which engine's reading its
schedule keeps, and the operations it dropped (a DMA or unpin through a pin
no longer held, which format 2 refuses).  A format-1 program the upgrade
refuses, or a program of neither format, is left as it is: a warning on the
``foliodiff.migrations`` logger names it, and each divergence referencing it
gets a note saying so.  No row is lost.

There is no downgrade: places cannot be turned back into step numbers.
"""

# No ``from __future__ import annotations``: alembic loads this file without
# putting it in sys.modules, where dataclasses cannot resolve string annotations.
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from engine import DEFAULT_READING, upgrade_program

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

AUTHOR = "migration"
# Program rows per batch: a batch's ids go in two IN lists of one query, and
# SQLite before 3.32 allowed 999 host parameters.
_BATCH = 400
log = logging.getLogger("foliodiff.migrations")


@dataclass
class _Ref:
    """One reference to a program: a divergence's original or minimized program,
    or a sample of a campaign's intended rule."""

    reading: str
    divergence: int | None = None     # divergence id, with role "original" or "minimized"
    role: str = ""
    campaign: int | None = None       # campaign id, for a sample


@dataclass
class _Run:
    """What the migration did, for the notes it writes at the end."""

    notes: dict[int, list[str]] = field(default_factory=dict)   # divergence id -> lines
    moved: dict[tuple[int, str], int] = field(default_factory=dict)   # (old id, reading) -> id
    owner: dict[str, int] = field(default_factory=dict)        # sha256 -> program id


def _tables() -> dict[str, sa.Table]:
    # Frozen here, like the types of 0001: only the columns this migration uses.
    meta = sa.MetaData()
    return {
        "program": sa.Table("program", meta, sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("sha256", sa.String(64)), sa.Column("json", sa.Text)),
        "divergence": sa.Table("divergence", meta, sa.Column("id", sa.Integer, primary_key=True),
                               sa.Column("engine_a", sa.String(32)),
                               sa.Column("original_program_id", sa.Integer),
                               sa.Column("minimized_program_id", sa.Integer)),
        "campaign": sa.Table("campaign", meta, sa.Column("id", sa.Integer, primary_key=True),
                             sa.Column("engine_a", sa.String(32)),
                             sa.Column("intended", sa.JSON)),
        "note": sa.Table("note", meta, sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("divergence_id", sa.Integer),
                         sa.Column("author", sa.String(128)), sa.Column("text", sa.Text),
                         sa.Column("at", sa.DateTime(timezone=True))),
    }


def _load(text: str) -> dict[str, Any] | None:
    """A stored program text as a JSON object (None: not one)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _sample_refs(bind: sa.Connection, t: dict[str, sa.Table]) -> dict[int, list[_Ref]]:
    """Program id -> the campaigns that keep it as an intended-rule sample."""
    refs: dict[int, list[_Ref]] = {}
    for cid, engine_a, intended in bind.execute(
            sa.select(t["campaign"].c.id, t["campaign"].c.engine_a, t["campaign"].c.intended)
            .order_by(t["campaign"].c.id)):
        for entry in (intended or {}).values():
            pids = entry.get("samples") if isinstance(entry, dict) else None
            for pid in pids if isinstance(pids, list) else []:
                refs.setdefault(pid, []).append(_Ref(engine_a, campaign=cid))
    return refs


def _divergence_refs(bind: sa.Connection, t: dict[str, sa.Table],
                     ids: list[int]) -> dict[int, list[_Ref]]:
    """Program id -> the divergences that reference it, by divergence id."""
    d = t["divergence"]
    refs: dict[int, list[_Ref]] = {}
    wanted = set(ids)
    for did, engine_a, original, minimized in bind.execute(
            sa.select(d.c.id, d.c.engine_a, d.c.original_program_id, d.c.minimized_program_id)
            .where(d.c.original_program_id.in_(ids) | d.c.minimized_program_id.in_(ids))
            .order_by(d.c.id)):
        for role, pid in (("original", original), ("minimized", minimized)):
            if pid in wanted:
                refs.setdefault(pid, []).append(_Ref(engine_a, divergence=did, role=role))
    return refs


def _place(bind: sa.Connection, t: dict[str, sa.Table], run: _Run, pid: int, rewritten: bool,
           text: str) -> tuple[int, bool]:
    """The row that holds program @text: one that already does, else row @pid
    rewritten (unless it was already, for another reading), else a new row.

    Return: (its id, whether row @pid now holds it).
    """
    p = t["program"]
    sha = hashlib.sha256(text.encode()).hexdigest()
    if sha not in run.owner:
        found = bind.execute(sa.select(p.c.id).where(p.c.sha256 == sha)).scalar()
        if found is not None:
            run.owner[sha] = found
        elif not rewritten:
            bind.execute(sa.update(p).where(p.c.id == pid).values(sha256=sha, json=text))
            run.owner[sha] = pid
            return pid, True
        else:
            run.owner[sha] = bind.execute(sa.insert(p).values(sha256=sha, json=text)
                                          .returning(p.c.id)).scalar_one()
    return run.owner[sha], False


def _upgrade_one(bind: sa.Connection, t: dict[str, sa.Table], run: _Run, pid: int,
                 data: dict[str, Any], refs: list[_Ref]) -> None:
    """Upgrade format-1 program row @pid, once per reading its @refs ask for."""
    readings = list(dict.fromkeys(r.reading for r in refs)) or [DEFAULT_READING]
    upgrades = {}
    for reading in readings:
        try:
            upgrades[reading] = upgrade_program(data, reading)
        except Exception as exc:  # noqa: BLE001 - whatever refuses it, the row must stay
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("migration 0004: program #%d left in format 1, as it was: read on %s: %s",
                        pid, reading, reason)
            for r in refs:
                if r.divergence is not None:
                    run.notes.setdefault(r.divergence, []).append(
                        f"{r.role} program #{pid} is left in format 1, as it was: format 2 "
                        f"refuses it (read on {reading}): {reason}")
            return
    d = t["divergence"]
    kept = False
    where: dict[str, int] = {}
    for reading, up in upgrades.items():
        where[reading], now_kept = _place(bind, t, run, pid, kept,
                                          up.program.to_json(indent=None))
        kept = kept or now_kept
        run.moved[(pid, reading)] = where[reading]
    for r in refs:
        if r.divergence is None:
            continue
        new = where[r.reading]
        if new != pid:
            bind.execute(sa.update(d).where(d.c.id == r.divergence)
                         .values({f"{r.role}_program_id": new}))
        run.notes.setdefault(r.divergence, []).append(
            f"{r.role} program #{pid} is now #{new} in format 2: {upgrades[r.reading].note}")
    if not kept:
        # Every reference now points at a row that held the same program already.
        bind.execute(sa.delete(t["program"]).where(t["program"].c.id == pid))


def _repoint_samples(bind: sa.Connection, t: dict[str, sa.Table], run: _Run) -> None:
    """Each campaign's samples point at the reading of the campaign's engine_a."""
    c = t["campaign"]
    for cid, engine_a, intended in bind.execute(
            sa.select(c.c.id, c.c.engine_a, c.c.intended).order_by(c.c.id)).all():
        changed = False
        out = {}
        for rule, entry in (intended or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("samples"), list):
                out[rule] = entry
                continue
            samples = [run.moved.get((pid, engine_a), pid) for pid in entry["samples"]]
            # Two samples that became one program are one sample.
            samples = list(dict.fromkeys(samples))
            changed = changed or samples != entry["samples"]
            out[rule] = {**entry, "samples": samples}
        if changed:
            bind.execute(sa.update(c).where(c.c.id == cid).values(intended=out))


def upgrade() -> None:
    bind = op.get_bind()
    t = _tables()
    p = t["program"]
    run = _Run()
    samples = _sample_refs(bind, t)
    last = 0
    while True:
        rows = bind.execute(sa.select(p.c.id, p.c.json).where(p.c.id > last)
                            .order_by(p.c.id).limit(_BATCH)).all()
        if not rows:
            break
        last = rows[-1][0]
        old: dict[int, dict[str, Any]] = {}
        for pid, text in rows:
            data = _load(text)
            version = data.get("version") if data is not None else None
            if version == 1:
                old[pid] = data
            elif version != 2:
                log.warning("migration 0004: program #%d is of neither format (version %r): "
                            "left as it was", pid, version)
        if not old:
            continue
        refs = _divergence_refs(bind, t, list(old))
        for pid, data in old.items():
            _upgrade_one(bind, t, run, pid, data, refs.get(pid, []) + samples.get(pid, []))
    _repoint_samples(bind, t, run)
    now = datetime.now(UTC)
    if run.notes:
        bind.execute(sa.insert(t["note"]), [
            {"divergence_id": did, "author": AUTHOR, "at": now,
             "text": "Stored programs moved to program format 2 (migration 0004): "
                     + "; ".join(sorted(lines, key=lambda line: not line.startswith("original")))}
            for did, lines in sorted(run.notes.items())])


def downgrade() -> None:
    raise NotImplementedError(
        "0004 rewrote format-1 schedules (global step numbers) as places read on one engine; "
        "step numbers cannot be recomputed from places: restore a backup to go back to 0003")
