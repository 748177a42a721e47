"""The store's write transaction and its hash-chained, MAC'd audit log: append, read back, check.

Every write is one ``BEGIN IMMEDIATE`` transaction; audit entries it appends are sealed into the chain
(:mod:`wardwatch.alerting.audit`) and the signed head checkpoint is advanced after ``COMMIT``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from wardwatch.alerting.audit import GENESIS, SYSTEM_ACTOR, AuditAnchor, AuditBreak, AuditEntry, sealed, verify_chain

_json_decoder: Final = msgspec.json.Decoder()
_log = logging.getLogger(__name__)


def audit_key_file(database: Path) -> Path:
    """Where the audit key lives by default: beside the database, never inside it."""
    return database.with_name(database.name + ".audit-key")


def audit_head_file(database: Path) -> Path:
    """Where the signed head checkpoint of the audit chain lives by default."""
    return database.with_name(database.name + ".audit-head")


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """What :meth:`Store.check_audit` found."""

    intact: bool
    broken_at_seq: int | None  # first sequence number that is wrong or missing
    problem: str | None  # what is wrong, for people
    entries: int
    head_seq: int  # newest entry in the database
    anchored_from_seq: int | None  # entries from here on carry a MAC (older ones predate the key)


class _AuditChain:
    """The write transaction and the audit log of :class:`~wardwatch.alerting.store.Store` (its base)."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    anchor: AuditAnchor
    _first_keyed_seq: int

    def _anchor_head(self) -> int:
        """The first sequence number that carries a MAC; creates the checkpoint on first use of the key."""
        with self._write() as tx:
            head = self.anchor.read_head()
            if head is not None:
                return head.first_keyed_seq
            seq, last = self._last()
            keyed = self._db.execute("SELECT MIN(seq) FROM audit WHERE mac IS NOT NULL").fetchone()[0]
            if keyed is None:
                tx.first_keyed_seq = seq + 1
                tx.head = (seq, last)
                return seq + 1
            # MAC'd rows but no checkpoint: it was deleted. Say so in the chain itself, and go on.
            _log.error(
                "the audit head checkpoint %s is missing although the audit log is anchored: a deleted tail "
                "before this start cannot be ruled out; this is recorded in the audit log",
                self.anchor.head_file,
            )
            tx.first_keyed_seq = int(keyed)
            problem = AuditEntry(
                t=time.time_ns() // 1_000_000,
                actor=SYSTEM_ACTOR,
                action="audit_anchor_missing",
                details={"head_file": str(self.anchor.head_file)},
            )
            self._append_audit(tx, [problem])
            return int(keyed)

    @contextlib.contextmanager
    def _write(self) -> Iterator[_Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``: writers of every process queue here).

        If it appended to the audit log, the head checkpoint is written after ``COMMIT`` (a crash in
        between leaves the checkpoint behind the chain, which is fine; ahead of it would look like a
        cut tail), and only ever forward (:meth:`AuditAnchor.advance_head`).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            tx = _Transaction(getattr(self, "_first_keyed_seq", 0))
            try:
                yield tx
                breaks = self._breaks_since(tx) if tx.head is not None else ()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            if tx.head is not None:
                try:
                    self.anchor.advance_head(tx.head[0], tx.head[1], tx.first_keyed_seq, breaks)
                except OSError as exc:  # committed: the next append writes a newer checkpoint
                    _log.error("cannot write the audit head checkpoint %s: %s", self.anchor.head_file, exc)

    def _breaks_since(self, tx: _Transaction) -> tuple[AuditBreak, ...]:
        """The checkpoint's breaks, plus one if its entry has gone or changed (a cut or rewritten tail)."""
        head = self.anchor.read_head()
        if head is None:
            return ()
        if head.seq == 0 or not self.anchor.head_is_genuine(head):
            return head.breaks
        row = self._db.execute("SELECT hash FROM audit WHERE seq = ?", (head.seq,)).fetchone()
        if row is not None and row[0] == head.hash:
            return head.breaks
        first = min(head.seq, tx.last_before + 1)
        problem = f"entries {first}..{head.seq} had been removed or replaced: the tail of the audit log was cut"
        _log.error("audit log: %s", problem)
        return (*head.breaks, AuditBreak(seq=first, problem=problem))

    def _last(self) -> tuple[int, str]:
        """Sequence number and hash of the newest audit entry, read inside the current transaction."""
        row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def _append_audit(self, tx: _Transaction, entries: Iterable[AuditEntry]) -> None:
        seq, prev = self._last()
        tx.last_before = seq
        appended = False
        for entry in entries:
            seq += 1
            done = sealed(entry, seq, prev)
            appended = True
            self._db.execute(
                "INSERT INTO audit (seq, t, actor, action, alarm_id, patient, ward, reason, details, prev_hash, hash,"
                " mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    done.seq,
                    done.t,
                    done.actor,
                    done.action,
                    done.alarm_id,
                    done.patient,
                    done.ward,
                    done.reason,
                    msgspec.json.encode(done.details).decode(),
                    done.prev_hash,
                    done.hash,
                    self.anchor.mac(done.hash),
                ),
            )
            prev = done.hash
        if appended:
            tx.head = (seq, prev)

    def audit_entries(
        self,
        *,
        since: int | None = None,
        alarm_id: str | None = None,
        patient: str | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Audit entries in order, filtered."""
        where = ["seq > ?"]
        args: list[Any] = [after_seq]
        if since is not None:
            where.append("t >= ?")
            args.append(since)
        if alarm_id is not None:
            where.append("alarm_id = ?")
            args.append(alarm_id)
        if patient is not None:
            where.append("patient = ?")
            args.append(patient)
        sql = (
            "SELECT seq, t, actor, action, alarm_id, patient, ward, reason, details, prev_hash, hash FROM audit"  # noqa: S608 - only placeholders are interpolated
            f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        )
        rows = self._db.execute(sql, [*args, limit]).fetchall()
        return [
            AuditEntry(
                seq=r[0],
                t=r[1],
                actor=r[2],
                action=r[3],
                alarm_id=r[4],
                patient=r[5],
                ward=r[6],
                reason=r[7],
                details=_json_decoder.decode(r[8]),
                prev_hash=r[9],
                hash=r[10],
            )
            for r in rows
        ]

    def verify_audit(self) -> int | None:
        """First broken (or missing) sequence number of the audit chain, or ``None`` if intact."""
        return self.check_audit().broken_at_seq

    def check_audit(self) -> AuditCheck:
        """Check the hash chain, every row's MAC (the key is outside the database) and the signed head.

        Finds an edited row, a chain re-hashed from an edited row (its MACs do not match), rows
        removed from the middle or the tail (the checkpoint points past them), and a forged checkpoint.
        """
        first_keyed = self._first_keyed_seq
        after, prev, count = 0, GENESIS, 0
        while True:
            rows = self._db.execute(
                "SELECT seq, hash, mac FROM audit WHERE seq > ? ORDER BY seq LIMIT 5000", (after,)
            ).fetchall()
            if not rows:
                break
            batch = self.audit_entries(after_seq=after, limit=len(rows))
            broken = verify_chain(batch, prev)
            if broken is None:
                expected = after + 1
                for entry in batch:
                    if entry.seq != expected:
                        broken = expected
                        break
                    expected += 1
            if broken is not None:
                return self._broken(broken, "the hash chain is broken (a row was edited or removed)", count)
            for seq, hash_hex, mac in rows:
                if seq >= first_keyed and (mac is None or not _macs_equal(mac, self.anchor.mac(hash_hex))):
                    problem = "a row's MAC does not match: the chain was rewritten without the audit key"
                    return self._broken(seq, problem, count)
            count += len(rows)
            after, prev = batch[-1].seq, batch[-1].hash
        with self._write():  # the checkpoint and the newest row, consistent with concurrent writers
            head = self.anchor.read_head()
            last_seq, _ = self._last()
            at_head = None if head is None else self._db.execute("SELECT hash FROM audit WHERE seq = ?", (head.seq,))
            head_row = None if at_head is None else at_head.fetchone()
        if head is None:
            return self._broken(last_seq + 1, f"the audit head checkpoint {self.anchor.head_file} is missing", count)
        if not self.anchor.head_is_genuine(head):
            return self._broken(head.seq, "the audit head checkpoint is not signed with the audit key", count)
        if head.breaks:
            first = head.breaks[0]
            return self._broken(first.seq, first.problem, count)
        if last_seq < head.seq:
            problem = (
                f"entries {last_seq + 1}..{head.seq} had been removed or replaced: the tail of the audit log was cut"
            )
            return self._broken(last_seq + 1, problem, count)
        if head.seq > 0 and (head_row is None or head_row[0] != head.hash):
            return self._broken(head.seq, "the entry at the signed head checkpoint was replaced", count)
        return AuditCheck(True, None, None, count, last_seq, first_keyed)

    def _broken(self, seq: int, problem: str, entries: int) -> AuditCheck:
        last_seq, _ = self._last()
        return AuditCheck(False, seq, problem, entries, last_seq, self._first_keyed_seq)


class _Transaction:
    """What one write transaction appended to the audit chain (for the head checkpoint)."""

    __slots__ = ("first_keyed_seq", "head", "last_before")

    def __init__(self, first_keyed_seq: int) -> None:
        self.first_keyed_seq = first_keyed_seq
        self.head: tuple[int, str] | None = None
        self.last_before = 0  # newest sequence number before this transaction appended


def _macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii"))
