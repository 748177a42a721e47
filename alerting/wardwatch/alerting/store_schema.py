"""The alerting store's own tables (SQLite DDL, ``CREATE ... IF NOT EXISTS``: the store's way of migrating)."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1

# alarms resolved by hand while their condition lasted, still watched (manager: a new alarm opens at recheck_at);
# the same text in the partial index and the query, so SQLite uses the index (a few rows, not every resolved alarm)
WATCHED: Final = "state = 'resolved' AND json_extract(CAST(record AS TEXT), '$.recheck_at') IS NOT NULL"

SCHEMA: Final = f"""
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
CREATE INDEX IF NOT EXISTS alarms_watched ON alarms (updated) WHERE {WATCHED};
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
