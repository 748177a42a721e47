"""The alerting store: outbox idempotency, alarm persistence, append-only hash-chained audit."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest

from wardwatch.alerting.audit import AuditEntry, verify_chain
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.alerting.store import Store
from wardwatch.core.schema import AlarmCategory, AlarmState, Page, Priority


def record(state: AlarmState = AlarmState.ACTIVE) -> AlarmRecord:
    return AlarmRecord(
        alarm_id="a-1",
        dedup_key="ward-a/p-1/spo2_low",
        patient="p-1",
        ward="ward-a",
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=Priority.HIGH,
        state=state,
        started=1000,
        updated=1000,
        next_step_at=61_000,
    )


def page(step: int = 0) -> Page:
    return Page(
        page_id=f"a-1.r0.s{step}",
        alarm_id="a-1",
        dedup_key="ward-a/p-1/spo2_low",
        patient="p-1",
        ward="ward-a",
        priority=Priority.HIGH,
        destination="primary-nurse",
        step=step,
        t=1000,
        text="SpO2 84 %",
    )


def entry(action: str, t: int = 1) -> AuditEntry:
    return AuditEntry(t=t, actor="nurse-ann", action=action, alarm_id="a-1", reason="why", details={"k": [1, 2]})


def test_outbox_queues_a_page_id_once_and_tracks_delivery(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        assert store.commit([record()], [page()], [entry("alarm_active")]) == [page()]
        assert store.commit([], [page()]) == []  # same idempotency key: not queued again
        assert store.pending_pages() == [page()]
        delivered = AuditEntry(t=2, actor="system", action="page_delivered")
        assert store.mark_delivered(page().page_id, "webhook:0", 2000, 1, delivered)
        assert not store.mark_delivered(page().page_id, "webhook:0", 2001, 1, delivered)
        assert store.pending_pages() == []
        (row,) = store.outbox("a-1")
        assert (row.status, row.channel, row.delivered_at) == ("delivered", "webhook:0", 2000)


def test_open_alarms_survive_reopening(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        store.commit([record()])
    with Store(tmp_path / "a.db") as store:
        assert store.open_alarms() == [record()]
        store.commit([record(AlarmState.RESOLVED)])
        assert store.open_alarms() == []
        assert [r.state for r in store.alarms(states=["resolved"])] == [AlarmState.RESOLVED]


def test_audit_is_append_only(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        store.audit(entry("acknowledge"))
    db = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit SET reason = 'edited'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")
    db.close()


def test_audit_hash_chain_detects_tampering(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        store.audit(entry("acknowledge", 1), entry("silence", 2))
    with Store(tmp_path / "a.db") as store:  # the chain continues across restarts
        store.audit(entry("resolve", 3))
        entries = store.audit_entries()
        assert [e.seq for e in entries] == [1, 2, 3]
        assert store.verify_audit() is None
        forged = [entries[0], msgspec.structs.replace(entries[1], reason="nothing to see"), entries[2]]
        assert verify_chain(forged) == 2


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    """Finding 1 (issue 11): a second process's append made the first one's cached seq collide (IntegrityError)."""
    with Store(tmp_path / "a.db") as service, Store(tmp_path / "a.db") as admin:
        for i in range(5):
            service.audit(entry("acknowledge", 2 * i))
            admin.audit(entry("user_added", 2 * i + 1))
        service.commit([record()], [page()], [entry("alarm_active", 99)])
        assert [e.seq for e in service.audit_entries()] == list(range(1, 12))
        assert service.check_audit().intact
        assert admin.check_audit().intact
