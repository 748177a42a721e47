"""The audit chain anchored outside the database (finding 8 of issue 11): a key, row MACs, a signed head.

Each attack runs as someone who can write the database file but not read the key: they drop the
append-only triggers, then re-hash the chain with the project's own ``chain_hash`` or cut its tail.
``GET /api/v1/audit/verify`` must say so (on the code before the anchor it said ``intact: true``).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.app import open_store
from wardwatch.alerting.audit import KEY_ENV, AuditAnchor, AuditAnchorError, AuditEntry, chain_hash
from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, config_from_mapping
from wardwatch.alerting.store import Store, audit_head_file, audit_key_file

PASSWORD = "correct horse battery"


def config_for(tmp_path: Path) -> AlertingConfig:
    return config_from_mapping(
        {
            "database": str(tmp_path / "db" / "alerting.db"),
            "audit_key_file": str(tmp_path / "secrets" / "audit.key"),
            "api": {"host": "127.0.0.1", "port": 0, "argon2_time_cost": 1, "argon2_memory_kib": 1024},
            "wards": {
                "ward-a": {
                    "destinations": {"desk": {"channels": [{"type": "webhook", "url": "http://127.0.0.1:9/desk"}]}},
                    "escalation": {"high": {"steps": [{"destination": "desk", "timeout_s": 60}]}},
                    "failsafe": "desk",
                }
            },
        }
    )


def fill(store: Store, n: int = 6) -> None:
    for i in range(n):
        store.audit(AuditEntry(t=1_700_000_000_000 + i, actor="nurse-ann", action="acknowledge", reason=f"r{i}"))


def tamper(database: Path, sql: str, *args: Any) -> None:
    """Write the database as an attacker would: without the triggers that keep the audit log append-only."""
    db = sqlite3.connect(database)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("DROP TRIGGER audit_no_delete")
    db.execute(sql, args)
    db.commit()
    db.close()


def rehash_from(database: Path, seq: int, reason: str) -> None:
    """Edit row ``seq`` and recompute the sha256 chain from there with the project's own ``chain_hash``."""
    tamper(database, "UPDATE audit SET reason = ? WHERE seq = ?", reason, seq)
    db = sqlite3.connect(database)
    rows = db.execute(
        "SELECT seq, t, actor, action, alarm_id, patient, ward, reason, details, prev_hash FROM audit ORDER BY seq"
    ).fetchall()
    prev = None
    for r in rows:
        entry = AuditEntry(
            t=r[1],
            actor=r[2],
            action=r[3],
            alarm_id=r[4],
            patient=r[5],
            ward=r[6],
            reason=r[7],
            details=msgspec.json.decode(r[8]),
        )
        if r[0] >= seq:
            assert prev is not None
            new = chain_hash(prev, entry, r[0])
            db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, new, r[0]))
            prev = new
        else:
            prev = db.execute("SELECT hash FROM audit WHERE seq = ?", (r[0],)).fetchone()[0]
    db.commit()
    db.close()


@pytest.fixture
def verify(tmp_path: Path) -> tuple[AlertingConfig, Callable[[], Awaitable[dict[str, Any]]]]:
    """``verify()`` calls ``GET /api/v1/audit/verify`` of a fresh service on the database as it is then."""
    config = config_for(tmp_path)

    async def call() -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            store = stack.enter_context(open_store(config))
            auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)
            if store.user("auditor") is None:
                auth.add_user("auditor", Role.ADMIN, PASSWORD, 0)
            service = await stack.enter_async_context(AlarmService(config, store))
            port = await stack.enter_async_context(serve_api(service, config.api))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            base = f"http://127.0.0.1:{port}"
            async with http.post(f"{base}/api/v1/login", json={"name": "auditor", "password": PASSWORD}) as r:
                token = (await r.json())["token"]
            async with http.get(f"{base}/api/v1/audit/verify", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
                body: dict[str, Any] = await r.json()
                return body

    return config, call


async def test_verify_detects_a_rehashed_chain(
    verify: tuple[AlertingConfig, Callable[[], Awaitable[dict[str, Any]]]],
) -> None:
    config, call = verify
    with open_store(config) as store:
        fill(store)
    assert (await call())["intact"] is True
    rehash_from(config.database, 3, "nothing to see")
    body = await call()
    assert body["intact"] is False
    assert body["broken_at_seq"] == 3
    assert "MAC" in body["problem"]


async def test_verify_detects_a_truncated_tail(
    verify: tuple[AlertingConfig, Callable[[], Awaitable[dict[str, Any]]]],
) -> None:
    config, call = verify
    with open_store(config) as store:
        fill(store)
    head = (await call())["head_seq"]  # the login and the fill, at least
    tamper(config.database, "DELETE FROM audit WHERE seq > ?", head - 2)
    body = await call()
    assert body["intact"] is False
    assert body["broken_at_seq"] == head - 1
    assert "tail" in body["problem"]


def test_a_forged_or_missing_checkpoint_is_found(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with open_store(config) as store:
        fill(store)
        head_file = audit_head_file(config.database)
        other = AuditAnchor(b"k" * 32, head_file)  # a key that is not the audit key
        other.write_head(3, "0" * 64, 1)
        check = store.check_audit()
        assert not check.intact
        assert "not signed" in str(check.problem)
        head_file.unlink()
        check = store.check_audit()
        assert not check.intact
        assert "missing" in str(check.problem)
    with open_store(config) as store:  # reopened without its checkpoint: the chain itself records that
        assert store.audit_entries()[-1].action == "audit_anchor_missing"


def test_the_key_is_created_private_and_outside_the_database(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    with open_store(config):
        pass
    key = tmp_path / "secrets" / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.parent != config.database.parent
    key.chmod(0o644)
    with pytest.raises(AuditAnchorError, match="chmod 600"):
        open_store(config)


def test_the_key_may_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, os.urandom(32).hex())
    with Store(tmp_path / "a.db") as store:
        fill(store)
        assert store.check_audit().intact
    assert not audit_key_file(tmp_path / "a.db").exists()
    monkeypatch.setenv(KEY_ENV, os.urandom(32).hex())  # another key: every MAC is wrong
    with Store(tmp_path / "a.db") as store:
        assert not store.check_audit().intact


def test_an_existing_unanchored_log_is_anchored_from_its_next_entry(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        fill(store, 3)
    db = sqlite3.connect(tmp_path / "a.db")  # as written before the key existed: no MACs, no checkpoint
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET mac = NULL")
    db.commit()
    db.close()
    audit_head_file(tmp_path / "a.db").unlink()
    with Store(tmp_path / "a.db") as store:
        fill(store, 2)
        check = store.check_audit()
        assert check.intact, check.problem
        assert check.anchored_from_seq == 4
