"""Persistence of the alerting service in SQLite (WAL): alarms, page outbox, audit, users, tokens, thresholds.

Several writers are safe: the service and the admin commands (``wardwatch alerting user add`` while
the service runs). Every write is one ``BEGIN IMMEDIATE`` transaction, and the audit chain's last
sequence number and hash are read inside it, never cached. With WAL and ``synchronous=normal`` (the default) a committed
transaction survives a crash or kill of the process (what the restart tests check), but the last
ones may be lost on power failure; ``full`` syncs every commit (one fsync each).

Alarm state changes, the pages they cause and their audit entries are written in one transaction
(:meth:`Store.commit`), before any page is delivered: the outbox. A page's id is its idempotency key
(alarm, escalation round, step), inserted with ``INSERT OR IGNORE``, so a page is queued at most
once; it is marked delivered with the channel and time, and a restart redelivers only what is still
pending. The audit table is append-only: triggers abort any UPDATE or DELETE, and rows are
hash-chained (:mod:`wardwatch.alerting.audit`); every row also carries a MAC made with a key kept
outside the database, and the chain's head is checkpointed (signed) to a file beside the key at
every append, so a re-hashed chain or a cut tail is found by :meth:`Store.check_audit`.

Modules: this one (opening, alarms, outbox, thresholds, patient-days), :mod:`~wardwatch.alerting.store_audit`
(the write transaction and the audit log), :mod:`~wardwatch.alerting.store_accounts` (users and tokens),
:mod:`~wardwatch.alerting.store_schema` (the tables).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from wardwatch.alerting.audit import AuditAnchor, AuditEntry
from wardwatch.alerting.errors import StoreError
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.alerting.store_accounts import TokenRow, UserRow, _AccountTables
from wardwatch.alerting.store_audit import AuditCheck, _AuditChain, audit_head_file, audit_key_file
from wardwatch.alerting.store_schema import SCHEMA as _SCHEMA
from wardwatch.alerting.store_schema import SCHEMA_VERSION, WATCHED
from wardwatch.core.schema import Page, decode

__all__ = [
    "SCHEMA_VERSION",
    "AuditCheck",
    "OutboxEntry",
    "Store",
    "StoreError",
    "TokenRow",
    "UserRow",
    "audit_head_file",
    "audit_key_file",
]

_DAY_MS: Final = 86_400_000

_record_encoder: Final = msgspec.json.Encoder()
_record_decoder: Final = msgspec.json.Decoder(AlarmRecord)
_json_decoder: Final = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A queued page and its delivery state."""

    page: Page
    status: str
    attempts: int
    channel: str | None
    delivered_at: int | None
    last_error: str | None


class Store(_AccountTables, _AuditChain):
    """The alerting database. Use as a context manager: ``with Store(path) as store: ...``."""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: str = "normal",
        anchor: AuditAnchor | None = None,
    ) -> None:
        """Open (creating if needed) the database at ``path``.

        ``anchor``: the audit key and head checkpoint; by default ``<path>.audit-key`` (created with
        mode 0600 when missing, or ``$WW_ALERTING_AUDIT_KEY``) and ``<path>.audit-head``.
        """
        if synchronous not in ("normal", "full"):
            raise StoreError(f"synchronous must be 'normal' or 'full', not {synchronous!r}")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(audit)")}
            if "mac" not in columns:  # a database from before the audit key
                self._db.execute("ALTER TABLE audit ADD COLUMN mac TEXT")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open alerting database {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self.anchor = anchor or AuditAnchor.load(audit_key_file(self.path), audit_head_file(self.path))
        self._first_keyed_seq = self._anchor_head()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database (and the audit head checkpoint)."""
        self._db.close()
        self.anchor.close()

    # -- transactions ---------------------------------------------------------------------------

    def commit(
        self,
        records: Iterable[AlarmRecord] = (),
        pages: Iterable[Page] = (),
        audit: Iterable[AuditEntry] = (),
    ) -> list[Page]:
        """Persist alarm records, queue pages and append audit entries atomically.

        Returns the pages newly queued (a page whose id is already in the outbox is not queued again).
        """
        queued: list[Page] = []
        with self._write() as tx:
            for record in records:
                self._db.execute(
                    "INSERT INTO alarms (alarm_id, dedup_key, ward, patient, rule, state, started, updated, record)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (alarm_id) DO UPDATE SET"
                    " state = excluded.state, updated = excluded.updated, record = excluded.record",
                    (
                        record.alarm_id,
                        record.dedup_key,
                        record.ward,
                        record.patient,
                        record.rule,
                        str(record.state),
                        record.started,
                        record.updated,
                        _record_encoder.encode(record),
                    ),
                )
            for page in pages:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (page_id, alarm_id, ward, destination, step, created, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        page.page_id,
                        page.alarm_id,
                        page.ward,
                        page.destination,
                        page.step,
                        page.t,
                        msgspec.json.encode(page),
                    ),
                )
                if cursor.rowcount:
                    queued.append(page)
            self._append_audit(tx, audit)
        return queued

    def audit(self, *entries: AuditEntry) -> None:
        """Append audit entries on their own."""
        self.commit(audit=entries)

    # -- other modules' tables (the registry) ------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection, for reads of another module's tables (writes go through :meth:`transaction`)."""
        return self._db

    def add_schema(self, script: str) -> None:
        """Create another module's tables (``CREATE ... IF NOT EXISTS``: the store's way of migrating)."""
        with self._lock:
            self._db.executescript(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[tuple[sqlite3.Connection, list[AuditEntry]]]:
        """One write transaction: the connection, and a list whose audit entries are appended in it too."""
        with self._write() as tx:
            audit: list[AuditEntry] = []
            yield self._db, audit
            self._append_audit(tx, audit)

    # -- alarms ---------------------------------------------------------------------------------

    def open_alarms(self) -> list[AlarmRecord]:
        """Every alarm not resolved (to restore the manager after a restart)."""
        rows = self._db.execute("SELECT record FROM alarms WHERE state != 'resolved'").fetchall()
        return [_record_decoder.decode(row[0]) for row in rows]

    def watched_alarms(self) -> list[AlarmRecord]:
        """Alarms resolved by hand whose condition is still watched (``recheck_at`` set; index ``alarms_watched``)."""
        # INDEXED BY: without it SQLite picks alarms_state (state = 'resolved' is most rows) and decodes them all
        sql = f"SELECT record FROM alarms INDEXED BY alarms_watched WHERE {WATCHED}"  # noqa: S608 - a constant
        rows = self._db.execute(sql).fetchall()
        return [_record_decoder.decode(row[0]) for row in rows]

    def alarms(
        self, *, states: Sequence[str] = (), ward: str | None = None, patient: str | None = None, limit: int = 500
    ) -> list[AlarmRecord]:
        """Alarms filtered by state(s), ward and patient, newest first."""
        where: list[str] = []
        args: list[Any] = []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += list(states)
        if ward is not None:
            where.append("ward = ?")
            args.append(ward)
        if patient is not None:
            where.append("patient = ?")
            args.append(patient)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self._db.execute(
            f"SELECT record FROM alarms {clause} ORDER BY started DESC LIMIT ?",  # noqa: S608 - placeholders only
            [*args, limit],
        ).fetchall()
        return [_record_decoder.decode(row[0]) for row in rows]

    def alarm(self, alarm_id: str) -> AlarmRecord | None:
        """One alarm by id, open or resolved."""
        row = self._db.execute("SELECT record FROM alarms WHERE alarm_id = ?", (alarm_id,)).fetchone()
        return _record_decoder.decode(row[0]) if row else None

    def alarms_since(self, since: int) -> list[AlarmRecord]:
        """Alarms that started at or after ``since`` (for burden metrics)."""
        rows = self._db.execute("SELECT record FROM alarms WHERE started >= ?", (since,)).fetchall()
        return [_record_decoder.decode(row[0]) for row in rows]

    # -- outbox ---------------------------------------------------------------------------------

    def pending_pages(self) -> list[Page]:
        """Pages queued and not yet delivered or cancelled, oldest first."""
        rows = self._db.execute("SELECT payload FROM outbox WHERE status = 'pending' ORDER BY created, page_id")
        return [_decode_page(row[0]) for row in rows.fetchall()]

    def outbox(self, alarm_id: str | None = None) -> list[OutboxEntry]:
        """Outbox rows (all, or one alarm's), oldest first."""
        sql = "SELECT payload, status, attempts, channel, delivered_at, last_error FROM outbox"
        rows = (
            self._db.execute(sql + " WHERE alarm_id = ? ORDER BY created, page_id", (alarm_id,))
            if alarm_id is not None
            else self._db.execute(sql + " ORDER BY created, page_id")
        ).fetchall()
        return [OutboxEntry(_decode_page(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]

    def mark_delivered(self, page_id: str, channel: str, t: int, attempts: int, audit: AuditEntry) -> bool:
        """Record delivery (and its audit entry); False if the page was no longer pending."""
        with self._write() as tx:
            cursor = self._db.execute(
                "UPDATE outbox SET status = 'delivered', channel = ?, delivered_at = ?, attempts = ?"
                " WHERE page_id = ? AND status = 'pending'",
                (channel, t, attempts, page_id),
            )
            if cursor.rowcount:
                self._append_audit(tx, [audit])
        return bool(cursor.rowcount)

    def mark_attempt(self, page_id: str, attempts: int, error: str) -> None:
        """Record failed delivery attempts so far."""
        with self._lock:
            self._db.execute(
                "UPDATE outbox SET attempts = ?, last_error = ? WHERE page_id = ?", (attempts, error, page_id)
            )

    def mark_cancelled(self, page_id: str, audit: AuditEntry) -> None:
        """Stop trying to deliver a page whose alarm was acknowledged, silenced or resolved meanwhile."""
        with self._write() as tx:
            cursor = self._db.execute(
                "UPDATE outbox SET status = 'cancelled' WHERE page_id = ? AND status = 'pending'", (page_id,)
            )
            if cursor.rowcount:
                self._append_audit(tx, [audit])

    def pages_since(self, since: int) -> list[tuple[str, str, int, str]]:
        """(alarm_id, status, created, destination) of pages created at or after ``since``."""
        rows = self._db.execute(
            "SELECT alarm_id, status, created, destination FROM outbox WHERE created >= ?", (since,)
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    # -- thresholds and patient-days ------------------------------------------------------------

    def thresholds(self, patient: str) -> dict[str, Any] | None:
        """A patient's threshold overrides, if any were set."""
        row = self._db.execute("SELECT overrides FROM thresholds WHERE patient = ?", (patient,)).fetchone()
        if row is None:
            return None
        overrides: dict[str, Any] = _json_decoder.decode(row[0])
        return overrides

    def all_thresholds(self) -> dict[str, dict[str, Any]]:
        """Every patient's overrides (to push into the engine at start-up)."""
        rows = self._db.execute("SELECT patient, overrides FROM thresholds").fetchall()
        return {r[0]: _json_decoder.decode(r[1]) for r in rows}

    def set_thresholds(self, patient: str, overrides: dict[str, Any], actor: str, t: int, audit: AuditEntry) -> None:
        """Replace a patient's overrides, with its audit entry, atomically."""
        with self._write() as tx:
            self._db.execute(
                "INSERT INTO thresholds (patient, overrides, updated, actor) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (patient) DO UPDATE SET overrides = excluded.overrides,"
                " updated = excluded.updated, actor = excluded.actor",
                (patient, msgspec.json.encode(overrides).decode(), t, actor),
            )
            self._append_audit(tx, [audit])

    def note_patient_days(self, seen: Iterable[tuple[str, str, int]]) -> None:
        """Record (patient, ward, t) as monitored on the UTC day of ``t`` (for pages per patient-day)."""
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO patient_days (patient, ward, day) VALUES (?, ?, ?)",
                [(patient, ward, t // _DAY_MS) for patient, ward, t in seen],
            )

    def patient_days(self, since: int, ward: str | None = None) -> int:
        """Number of monitored patient-days since ``since`` (partial days count as one)."""
        if ward is None:
            row = self._db.execute("SELECT COUNT(*) FROM patient_days WHERE day >= ?", (since // _DAY_MS,))
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM patient_days WHERE day >= ? AND ward = ?", (since // _DAY_MS, ward)
            )
        return int(row.fetchone()[0])


def _decode_page(payload: bytes) -> Page:
    message = decode(payload)
    if not isinstance(message, Page):
        raise StoreError(f"outbox row holds a {type(message).__name__}, not a page")
    return message
