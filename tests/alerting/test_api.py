"""The HTTP API: authentication, role checks, clinician actions with audit, thresholds, burden, TLS."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.schema import AlarmCategory, Priority
from wardwatch.core.servers import make_ca_and_server_cert
from wardwatch.core.waiting import wait_for

PASSWORD = "correct horse battery"
USERS = {"vic": Role.VIEWER, "ann": Role.NURSE, "cat": Role.CHARGE_NURSE, "root": Role.ADMIN}


@dataclass
class Api:
    base: str
    http: aiohttp.ClientSession
    service: AlarmService
    receiver: WebhookReceiver
    tokens: dict[str, str]

    async def call(self, method: str, path: str, user: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as response:
            return response.status, await response.json(content_type=None)


def alerting_config(tmp_path: Path, receiver: WebhookReceiver, api: dict[str, Any]) -> Any:
    return config_from_mapping(
        {
            "database": str(tmp_path / "alerting.db"),
            "api": {"host": "127.0.0.1", "port": 0, "argon2_time_cost": 1, "argon2_memory_kib": 1024, **api},
            "wards": {
                "ward-a": {
                    "destinations": {
                        "nurse": {"channels": [{"type": "webhook", "url": receiver.url("/nurse")}]},
                        "desk": {"channels": [{"type": "webhook", "url": receiver.url("/desk")}]},
                    },
                    "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": 60}]}},
                    "failsafe": "desk",
                }
            },
        }
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        config = alerting_config(tmp_path, receiver, {})
        store = stack.enter_context(Store(config.database))
        service = await stack.enter_async_context(AlarmService(config, store))
        port = await stack.enter_async_context(serve_api(service, config.api))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)  # cheap hashes for tests
        for name, role in USERS.items():
            auth.add_user(name, role, PASSWORD, 0)
        result = Api(f"http://127.0.0.1:{port}", http, service, receiver, {})
        for name in USERS:
            status, body = await result.call("POST", "/api/v1/login", json={"name": name, "password": PASSWORD})
            assert status == 200, body
            result.tokens[name] = body["token"]
        yield result


def raise_alarm(service: AlarmService, patient: str = "p-1") -> str:
    service.on_conditions(
        [
            ConditionChange(
                patient=patient,
                ward="ward-a",
                rule="spo2_low",
                category=AlarmCategory.PHYSIOLOGICAL,
                priority=Priority.HIGH,
                active=True,
                t=1_700_000_000_000,
                value=85.0,
                text="SpO2 85 % below 90 %",
            )
        ]
    )
    (record,) = [r for r in service.manager.open_alarms() if r.patient == patient]
    return record.alarm_id


async def test_unauthenticated_and_bad_credentials_are_refused(api: Api) -> None:
    assert (await api.call("GET", "/api/v1/alarms"))[0] == 401
    api.tokens["forged"] = "wwt_not-a-real-token"
    assert (await api.call("GET", "/api/v1/alarms", "forged"))[0] == 401
    status, _ = await api.call("POST", "/api/v1/login", json={"name": "ann", "password": "wrong password!"})
    assert status == 401
    status, _ = await api.call("POST", "/api/v1/login", json={"name": "nobody", "password": PASSWORD})
    assert status == 401
    assert (await api.call("GET", "/healthz"))[0] == 200
    assert (await api.call("GET", "/api/v1/nothing-here", "root"))[0] == 404
    assert (await api.call("GET", "/api/v1/openapi.json"))[1]["openapi"] == "3.1.0"


async def test_viewer_lists_but_cannot_acknowledge(api: Api) -> None:
    alarm_id = raise_alarm(api.service)
    status, body = await api.call("GET", "/api/v1/alarms?state=active&ward=ward-a", "vic")
    assert status == 200
    assert [a["alarm_id"] for a in body["alarms"]] == [alarm_id]
    status, _ = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "vic", json={"reason": "x"})
    assert status == 403
    assert (await api.call("GET", "/api/v1/audit", "ann"))[0] == 403  # nurses do not read the audit log


async def test_nurse_acknowledges_silences_resolves_with_audit(api: Api) -> None:
    alarm_id = raise_alarm(api.service)
    path = f"/api/v1/alarms/{alarm_id}"
    assert (await api.call("POST", path + "/acknowledge", "ann", json={}))[0] == 400  # a reason is required
    status, body = await api.call("POST", path + "/acknowledge", "ann", json={"reason": "at bedside"})
    assert (status, body["state"], body["actor"]) == (200, "acknowledged", "ann")
    status, body = await api.call("POST", path + "/silence", "ann", json={"reason": "probe reseated", "minutes": 5})
    assert (status, body["state"]) == (200, "silenced")
    status, body = await api.call("POST", path + "/resolve", "ann", json={"reason": "SpO2 recovered"})
    assert (status, body["state"]) == (200, "resolved")
    assert (await api.call("POST", path + "/resolve", "ann", json={"reason": "again"}))[0] == 404
    status, body = await api.call("GET", f"/api/v1/audit?alarm_id={alarm_id}", "cat")
    assert status == 200
    actions = [(e["action"], e["actor"], e["reason"]) for e in body["entries"]]
    assert ("acknowledge", "ann", "at bedside") in actions
    assert ("silence", "ann", "probe reseated") in actions
    assert ("resolve", "ann", "SpO2 recovered") in actions
    assert all(e["t"] > 0 and e["hash"] for e in body["entries"])
    status, body = await api.call("GET", "/api/v1/audit/verify", "cat")
    assert (body["intact"], body["broken_at_seq"]) == (True, None)
    status, body = await api.call("GET", f"{path}", "vic")
    assert body["state"] == "resolved"
    assert body["page_log"][0]["destination"] == "nurse"


async def test_thresholds_need_charge_nurse_and_are_audited(api: Api) -> None:
    path = "/api/v1/patients/p-1/thresholds"
    body = {"overrides": {"spo2_low": 88}, "reason": "COPD, target 88-92"}
    assert (await api.call("PUT", path, "ann", json=body))[0] == 403
    status, result = await api.call("PUT", path, "cat", json=body)
    assert status == 200, result
    assert result["effective"]["spo2_low"] == 88
    status, result = await api.call("PUT", path, "cat", json={"overrides": {"spo2_low": 86}, "reason": "review"})
    assert result["old"] == {"spo2_low": 88}
    status, result = await api.call("PUT", path, "cat", json={"overrides": {"no_such_rule": 1}, "reason": "typo"})
    assert status == 400
    status, result = await api.call("GET", path, "vic")
    assert (status, result["overrides"]) == (200, {"spo2_low": 86})
    entries = api.service.store.audit_entries(patient="p-1")
    changes = [e.details for e in entries if e.action == "thresholds_set"]
    assert changes == [{"old": {}, "new": {"spo2_low": 88}}, {"old": {"spo2_low": 88}, "new": {"spo2_low": 86}}]


async def test_admin_manages_users_and_machine_tokens(api: Api) -> None:
    new_user = {"name": "dr-bo", "role": "doctor", "password": PASSWORD}
    assert (await api.call("POST", "/api/v1/users", "cat", json=new_user))[0] == 403
    assert (await api.call("POST", "/api/v1/users", "root", json=new_user))[0] == 201
    status, body = await api.call("POST", "/api/v1/tokens", "root", json={"name": "dashboard", "role": "viewer"})
    assert status == 201
    api.tokens["dashboard"] = body["token"]
    assert (await api.call("GET", "/api/v1/alarms", "dashboard"))[0] == 200
    assert (await api.call("GET", "/api/v1/metrics/burden", "dashboard"))[0] == 200
    assert api.service.store.token(body["token"]) is None  # stored hashed only
    status, body = await api.call("GET", "/api/v1/users", "root")
    assert {u["name"] for u in body["users"]} == {*USERS, "dr-bo"}


async def test_sessions_expire_when_idle(tmp_path: Path) -> None:
    with Store(tmp_path / "a.db") as store:
        auth = Authenticator(
            store, session_ttl_ms=1000, session_max_ms=10_000, argon2_time_cost=1, argon2_memory_kib=1024
        )
        auth.add_user("ann", Role.NURSE, PASSWORD, 0)
        token, expires = auth.login("ann", PASSWORD, 0)
        assert expires == 1000
        assert auth.authenticate(token, 900) is not None  # use slides the idle expiry to 1900
        assert auth.authenticate(token, 1800) is not None
        assert auth.authenticate(token, 2900) is None  # idle too long: logged off
        token, _ = auth.login("ann", PASSWORD, 0)
        for now in range(500, 10_000, 500):
            assert auth.authenticate(token, now) is not None
        assert auth.authenticate(token, 10_000) is None  # hard limit


async def test_burden_metrics_after_acknowledgement(api: Api) -> None:
    alarm_id = raise_alarm(api.service, "p-2")
    api.service.note_patient("p-2", "ward-a", api.service.clock.now_ms())
    await wait_for(lambda: bool(api.receiver.unique()), 10, what="page delivered")
    await wait_for(lambda: not api.service.store.pending_pages(), 10, what="delivery recorded")
    await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann", json={"reason": "seen"})
    status, body = await api.call("GET", "/api/v1/metrics/burden?since=0", "vic")
    assert status == 200
    rule = body["by_rule"]["spo2_low"]
    assert (rule["alarms"], rule["pages"], rule["acknowledged_fraction"]) == (1, 1, 1.0)
    assert body["patient_days"] == 1
    assert rule["pages_per_patient_day"] == 1.0
    assert rule["time_to_acknowledge_s"]["median"] is not None


async def test_api_over_tls(tmp_path: Path) -> None:
    tls = make_ca_and_server_cert(tmp_path / "tls")
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        config = alerting_config(tmp_path, receiver, {"tls_cert": str(tls.server_cert), "tls_key": str(tls.server_key)})
        store = stack.enter_context(Store(config.database))
        service = await stack.enter_async_context(AlarmService(config, store))
        port = await stack.enter_async_context(serve_api(service, config.api))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        context = ssl.create_default_context(cafile=str(tls.ca_cert))
        async with http.get(f"https://127.0.0.1:{port}/api/v1/alarms", ssl=context) as response:
            assert response.status == 401
        async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=context) as response:
            assert response.status == 200


async def test_break_glass_grants_audited_emergency_rights(api: Api) -> None:
    alarm_id = raise_alarm(api.service)
    assert (await api.call("POST", "/api/v1/break-glass", "vic", json={}))[0] == 400  # a reason is required
    status, body = await api.call("POST", "/api/v1/break-glass", "vic", json={"reason": "ward nurse unreachable"})
    assert (status, body["role"]) == (200, "doctor")
    api.tokens["vic-glass"] = body["token"]
    status, body = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "vic-glass", json={"reason": "ok"})
    assert (status, body["actor"]) == (200, "vic (break-glass)")
    entries = api.service.store.audit_entries()
    assert ("break_glass", "vic", "ward nurse unreachable") in [(e.action, e.actor, e.reason) for e in entries]
    assert ("acknowledge", "vic (break-glass)") in [(e.action, e.actor) for e in entries]
    status, body = await api.call("POST", "/api/v1/tokens", "root", json={"name": "robot", "role": "viewer"})
    api.tokens["robot"] = body["token"]
    assert (await api.call("POST", "/api/v1/break-glass", "robot", json={"reason": "x"}))[0] == 403


async def test_repeated_failed_logins_lock_the_name_out(api: Api) -> None:
    for _ in range(5):
        status, _ = await api.call("POST", "/api/v1/login", json={"name": "ann", "password": "not her password"})
        assert status == 401
    status, _ = await api.call("POST", "/api/v1/login", json={"name": "ann", "password": PASSWORD})
    assert status == 401  # locked out even with the right password
    status, _ = await api.call("POST", "/api/v1/login", json={"name": "cat", "password": PASSWORD})
    assert status == 200  # other names are not affected
    failed = [e for e in api.service.store.audit_entries() if e.action == "login_failed"]
    assert len(failed) == 6
