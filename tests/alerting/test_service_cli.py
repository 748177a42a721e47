"""``wardwatch alerting`` subcommands: users and machine tokens (the service itself runs in test_service)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.cli import main
from wardwatch.alerting.store import Store

CONFIG = """
database = "{db}"
[wards.ward-a]
failsafe = "desk"
[wards.ward-a.destinations.desk]
channels = [{{ type = "mqtt" }}]
[wards.ward-a.escalation.high]
steps = [{{ destination = "desk", timeout_s = 60 }}]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "alerting.toml"
    path.write_text(CONFIG.format(db=tmp_path / "alerting.db"))
    return path


def test_user_add_list_disable(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WW_ALERTING_PASSWORD", "a long enough password")
    assert main(["user", "add", "ann", "--role", "nurse", "--config", str(config)]) == 0
    assert main(["user", "add", "ann", "--role", "nurse", "--config", str(config)]) == 1  # unique user ids
    assert main(["user", "list", "--config", str(config)]) == 0
    assert "ann\tnurse" in capsys.readouterr().out
    with Store(config.parent / "alerting.db") as store:
        auth = Authenticator(store)
        token, _ = auth.login("ann", "a long enough password", 0)
        principal = auth.authenticate(token, 1)
        assert principal is not None
        assert principal.role is Role.NURSE
        assert [e.action for e in store.audit_entries()] == ["user_added"]
    assert main(["user", "disable", "ann", "--config", str(config)]) == 0
    with Store(config.parent / "alerting.db") as store:
        assert Authenticator(store).authenticate(token, 2) is None  # disabling ends sessions


def test_short_password_is_refused(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WW_ALERTING_PASSWORD", "short")
    assert main(["user", "add", "bob", "--role", "viewer", "--config", str(config)]) == 1


def test_token_create(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "dashboard", "--role", "viewer", "--ttl-days", "30", "--config", str(config)]) == 0
    token = capsys.readouterr().out.strip()
    with Store(config.parent / "alerting.db") as store:
        principal = Authenticator(store).authenticate(token, 1)
        assert principal is not None
        assert (principal.name, principal.role, principal.kind) == ("dashboard", Role.VIEWER, "machine")


def test_missing_config_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("WARDWATCH_CONFIG", raising=False)
    assert main(["run"]) == 1
    assert "--config" in capsys.readouterr().err


def test_audit_verify(config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WW_ALERTING_PASSWORD", "a long enough password")
    assert main(["user", "add", "ann", "--role", "nurse", "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["audit", "verify", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["intact"] is True
    head = config.parent / "alerting.db.audit-head"
    head.write_bytes(head.read_bytes().replace(b'"seq":1', b'"seq":9'))  # claims entries that are not there
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert json.loads(capsys.readouterr().out)["intact"] is False
