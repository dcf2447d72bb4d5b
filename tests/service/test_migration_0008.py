"""Migration 0008 on a real SQLite file and a real PostgreSQL database: data
losses and invariants stored under the operation that noticed them are
regrouped by cause, each record keeping its triage state and history.

The programs are minimized v6.14,v6.15 findings (tests/data/causes): three
losses through the reclaim PMD discard's restore, noticed in reclaim, in
mprotect and by a fault, and two of v6.15's batch restore past the VMA,
noticed in reclaim and in fork; stored as an older foliodiff signed them.
"""

from __future__ import annotations

import hashlib
import pathlib
from datetime import UTC, datetime
from importlib import import_module

import sqlalchemy as sa

from engine import load_any
from fuzz.records import PackedOutcome
from service.models import TriageStatus
from service.store import Store, upgrade

T0 = datetime(2025, 3, 1, tzinfo=UTC)
CAUSES = pathlib.Path(__file__).parent.parent / "data" / "causes"
BEFORE = import_module("service.migrations.versions.0008_group_by_cause").down_revision
PMD_RESTORE = "discard_anon_folio_pmd_locked<unmap_huge_pmd_locked<try_to_unmap_one"

#: (program, kind, the signature an older foliodiff stored)
STORED = [
    ("pmd-restore-loss-noticed-in-reclaim", "data_loss", "data_loss|mm.data|shrink_folio_list"),
    ("pmd-restore-loss-noticed-in-mprotect", "data_loss", "data_loss|mm.data|mprotect_fixup"),
    ("pmd-restore-loss-noticed-by-fault", "data_loss", "data_loss|mm.data|handle_mm_fault"),
    ("batch-restore-vma-write-in-reclaim", "invariant",
     "invariant|mm.pte.page_table_check.vma_write|shrink_folio_list"),
    ("batch-restore-vma-write-in-fork", "invariant",
     "invariant|mm.pte.page_table_check.vma_write|copy_page_range"),
    # a program that no longer loses anything: left as it was
    ("../../../corpus/h1-clean-mthp-reclaim", "data_loss", "data_loss|mm.data|gone"),
]


def _old_store(url: str) -> list[int]:
    engine = sa.create_engine(url)
    upgrade(engine, BEFORE)
    meta = sa.MetaData()
    meta.reflect(engine, only=["program", "divergence", "outcome", "triage_event"])
    t = meta.tables
    ids = []
    with engine.begin() as conn:
        packed = PackedOutcome.pack({"verdict": "ok", "state": {}, "crash": None})
        outcome = conn.execute(sa.insert(t["outcome"]).values(
            sha256=packed.sha256, packed=packed.packed).returning(t["outcome"].c.id)).scalar_one()
        for n, (name, kind, sig) in enumerate(STORED):
            text = load_any(str(CAUSES / f"{name}.json")).to_json(indent=None)
            pid = conn.execute(sa.insert(t["program"]).values(
                sha256=hashlib.sha256(text.encode()).hexdigest(), json=text)
                .returning(t["program"].c.id)).scalar_one()
            sig = f"v6.14..v6.15|{sig}"
            ids.append(conn.execute(sa.insert(t["divergence"]).values(
                signature=sig, signature_id=hashlib.sha1(sig.encode()).hexdigest()[:16], seq=0,
                engine_a="v6.14", engine_b="v6.15", kind=kind, classification="unexpected",
                field="f", function=None, first_op=None, detail="", first_seen=T0,
                last_seen=T0, hit_count=n + 1, original_program_id=pid,
                minimized_program_id=None, outcome_a_id=outcome, outcome_b_id=outcome,
                status="confirmed" if n == 0 else "new", duplicate_of=None, reopened_from=None)
                .returning(t["divergence"].c.id)).scalar_one())
        conn.execute(sa.insert(t["triage_event"]).values(
            divergence_id=ids[0], from_status="new", to_status="confirmed", note="seen it",
            author="ann", at=T0))
    engine.dispose()
    return ids


def test_stored_findings_regroup_by_cause_keeping_triage(url: str) -> None:
    ids = _old_store(url)
    store = Store.open(url)                 # migrates to the newest revision
    loss = [store.get_divergence(i) for i in ids[:3]]
    assert loss[0].signature == f"v6.14..v6.15|cause|{PMD_RESTORE}"
    assert loss[0].status is TriageStatus.CONFIRMED and loss[0].hit_count == 1
    assert [e.note for e in store.history(ids[0])] == ["seen it"]
    for d in loss[1:]:
        assert d.status is TriageStatus.DUPLICATE and d.duplicate_of == ids[0]
        assert d.signature.endswith("|mm.data|mprotect_fixup") or d.signature.endswith(
            "|mm.data|handle_mm_fault")            # kept: the record is not rewritten
        [event] = store.history(d.id)
        assert event.author == "migration 0008" and PMD_RESTORE in event.note
    first, fork = store.get_divergence(ids[3]), store.get_divergence(ids[4])
    assert first.signature == "v6.14..v6.15|cause|set_ptes<ttu_lazyfree<try_to_unmap_one"
    assert fork.status is TriageStatus.DUPLICATE and fork.duplicate_of == ids[3]
    gone = store.get_divergence(ids[5])
    assert gone.signature == "v6.14..v6.15|data_loss|mm.data|gone"
    assert gone.status is TriageStatus.NEW
    # the regrouped signature is found by the signature search (the FTS triggers)
    items, total = store.list_divergences(text="discard_anon_folio_pmd_locked")
    assert total == 1 and items[0].id == ids[0]
    store.close()
