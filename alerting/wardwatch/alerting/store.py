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
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import msgspec

from wardwatch.alerting.audit import (
    GENESIS,
    SYSTEM_ACTOR,
    AuditAnchor,
    AuditBreak,
    AuditEntry,
    sealed,
    verify_chain,
)
from wardwatch.alerting.errors import AlertingError
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.core.schema import Page, decode

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    alarm_id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    ward TEXT NOT NULL,
    patient TEXT NOT NULL,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    started INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_state ON alarms (state, ward);
CREATE INDEX IF NOT EXISTS alarms_started ON alarms (started);
CREATE TABLE IF NOT EXISTS outbox (
    page_id TEXT PRIMARY KEY,
    alarm_id TEXT NOT NULL,
    ward TEXT NOT NULL,
    destination TEXT NOT NULL,
    step INTEGER NOT NULL,
    created INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    channel TEXT,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS outbox_alarm ON outbox (alarm_id);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    t INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    alarm_id TEXT,
    patient TEXT,
    ward TEXT,
    reason TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT
);
CREATE INDEX IF NOT EXISTS audit_alarm ON audit (alarm_id);
CREATE INDEX IF NOT EXISTS audit_t ON audit (t);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('session', 'machine', 'break_glass')),
    created INTEGER NOT NULL,
    expires INTEGER,
    hard_expires INTEGER
);
CREATE TABLE IF NOT EXISTS thresholds (
    patient TEXT PRIMARY KEY,
    overrides TEXT NOT NULL,
    updated INTEGER NOT NULL,
    actor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS patient_days (
    patient TEXT NOT NULL,
    ward TEXT NOT NULL,
    day INTEGER NOT NULL,
    PRIMARY KEY (patient, day)
);
"""

_DAY_MS: Final = 86_400_000

_record_encoder: Final = msgspec.json.Encoder()
_record_decoder: Final = msgspec.json.Decoder(AlarmRecord)
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


class StoreError(AlertingError):
    """The alerting database cannot be opened or is inconsistent."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """A queued page and its delivery state."""

    page: Page
    status: str
    attempts: int
    channel: str | None
    delivered_at: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class UserRow:
    """A person's account (password stored as an argon2 hash)."""

    name: str
    role: str
    password_hash: str
    created: int
    disabled: bool


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A session or machine token, stored by its SHA-256 hash only."""

    token_hash: str
    name: str
    role: str
    kind: str
    created: int
    expires: int | None
    hard_expires: int | None


class Store:
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

    # -- audit ----------------------------------------------------------------------------------

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

    # -- users and tokens -----------------------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str, t: int) -> None:
        """Create a user; raise :class:`StoreError` if the name is taken."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                    (name, role, password_hash, t),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"user {name!r} exists already") from None

    def set_user(
        self, name: str, *, role: str | None = None, password_hash: str | None = None, disabled: bool | None = None
    ) -> bool:
        """Change a user's role, password or disabled flag; False if there is no such user."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE users SET role = COALESCE(?, role), password_hash = COALESCE(?, password_hash),"
                " disabled = COALESCE(?, disabled) WHERE name = ?",
                (role, password_hash, None if disabled is None else int(disabled), name),
            )
            if disabled:
                self._db.execute("DELETE FROM tokens WHERE name = ? AND kind = 'session'", (name,))
            return bool(cursor.rowcount)

    def user(self, name: str) -> UserRow | None:
        """A user by name."""
        row = self._db.execute(
            "SELECT name, role, password_hash, created, disabled FROM users WHERE name = ?", (name,)
        ).fetchone()
        return UserRow(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    def users(self) -> list[UserRow]:
        """All users."""
        rows = self._db.execute("SELECT name, role, password_hash, created, disabled FROM users ORDER BY name")
        return [UserRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows.fetchall()]

    def add_token(self, token: TokenRow) -> None:
        """Store a token (by hash)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens (token_hash, name, role, kind, created, expires, hard_expires)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token.token_hash,
                    token.name,
                    token.role,
                    token.kind,
                    token.created,
                    token.expires,
                    token.hard_expires,
                ),
            )

    def token(self, token_hash: str) -> TokenRow | None:
        """A token by its hash."""
        row = self._db.execute(
            "SELECT token_hash, name, role, kind, created, expires, hard_expires FROM tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        return TokenRow(*row) if row else None

    def extend_token(self, token_hash: str, expires: int) -> None:
        """Slide a session's idle expiry."""
        with self._lock:
            self._db.execute("UPDATE tokens SET expires = ? WHERE token_hash = ?", (expires, token_hash))

    def delete_token(self, token_hash: str) -> None:
        """Revoke a token."""
        with self._lock:
            self._db.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))

    def delete_tokens(self, name: str, kind: str) -> int:
        """Revoke every token of ``kind`` belonging to ``name`` (e.g. break-glass at logout); return how many."""
        with self._lock:
            return self._db.execute("DELETE FROM tokens WHERE name = ? AND kind = ?", (name, kind)).rowcount

    def purge_expired_tokens(self, now: int) -> int:
        """Delete expired tokens; return how many."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM tokens WHERE (expires IS NOT NULL AND expires <= ?)"
                " OR (hard_expires IS NOT NULL AND hard_expires <= ?)",
                (now, now),
            )
            return cursor.rowcount

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


class _Transaction:
    """What one write transaction appended to the audit chain (for the head checkpoint)."""

    __slots__ = ("first_keyed_seq", "head", "last_before")

    def __init__(self, first_keyed_seq: int) -> None:
        self.first_keyed_seq = first_keyed_seq
        self.head: tuple[int, str] | None = None
        self.last_before = 0  # newest sequence number before this transaction appended


def _macs_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii"))


def _decode_page(payload: bytes) -> Page:
    message = decode(payload)
    if not isinstance(message, Page):
        raise StoreError(f"outbox row holds a {type(message).__name__}, not a page")
    return message
