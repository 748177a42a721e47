"""The HTTP API: authentication, role checks, clinician actions with audit, thresholds, burden, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.audit import AuditEntry
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
    assert (await api.call("POST", "/api/v1/break-glass", "ann", json={}))[0] == 400  # a reason is required
    assert (await api.call("POST", "/api/v1/break-glass", "ann", json={"reason": "   "}))[0] == 400  # a real one
    status, body = await api.call("POST", "/api/v1/break-glass", "ann", json={"reason": "charge nurse unreachable"})
    assert (status, body["role"]) == (200, "doctor")
    api.tokens["ann-glass"] = body["token"]
    status, body = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann-glass", json={"reason": "ok"})
    assert (status, body["actor"]) == (200, "ann (break-glass)")
    assert (await api.call("GET", "/api/v1/audit", "ann-glass"))[0] == 200  # doctor rights
    entries = api.service.store.audit_entries()
    assert ("break_glass", "ann", "charge nurse unreachable") in [(e.action, e.actor, e.reason) for e in entries]
    assert ("acknowledge", "ann (break-glass)") in [(e.action, e.actor) for e in entries]
    status, body = await api.call("POST", "/api/v1/tokens", "root", json={"name": "robot", "role": "viewer"})
    api.tokens["robot"] = body["token"]
    assert (await api.call("POST", "/api/v1/break-glass", "robot", json={"reason": "x"}))[0] == 403


# -- issue 11: findings 2, 4, 5, 6, 7, 9 ------------------------------------------------------------


async def login_from(api: Api, address: str, name: str, password: str) -> tuple[int, Any]:
    """Log in from another loopback address (another workstation, as far as the API can tell)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.post(api.base + "/api/v1/login", json={"name": name, "password": password}) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"sensor_off_s": 1e306}, "sensor_off_s"),  # finding 2: saved despite a 500, then broke every message
        ({"spo2_delay_s": 1e12}, "spo2_delay_s"),  # finding 2: accepted, switched the SpO2 rule off in effect
        ({"spo2_low": 88, "hr_high_delay_s": -1}, "hr_high_delay_s"),
        ({"news2_enabled": 1}, "news2_enabled"),
        ({"trend_window_min": 30.5}, "trend_window_min"),
    ],
)
async def test_out_of_range_thresholds_are_refused_naming_the_field_and_not_saved(
    api: Api, overrides: dict[str, Any], field: str
) -> None:
    path = "/api/v1/patients/p-d05/thresholds"
    status, body = await api.call("PUT", path, "cat", json={"overrides": overrides, "reason": "test"})
    assert status == 400, body
    assert field in body["error"]
    assert api.service.store.thresholds("p-d05") is None
    assert api.service.rules.patient_overrides("p-d05") == {}
    assert not [e for e in api.service.store.audit_entries() if e.action == "thresholds_set"]


async def test_infinite_threshold_is_refused(api: Api) -> None:
    raw = b'{"overrides": {"sensor_off_s": 1e999}, "reason": "overflow"}'  # JSON's way to say infinity
    status, body = await api.call("PUT", "/api/v1/patients/p-1/thresholds", "cat", data=raw)
    assert status == 400
    assert "overrides" in body["error"]
    assert api.service.store.thresholds("p-1") is None


async def test_thresholds_are_applied_to_the_engine_before_they_are_saved(api: Api) -> None:
    seen: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    def engine(rules: Any) -> None:  # records what the engine got and what was saved at that moment
        seen.append((rules.patient_overrides("p-1"), api.service.store.thresholds("p-1")))

    api.service.rules_hooks.append(engine)
    path = "/api/v1/patients/p-1/thresholds"
    status, _ = await api.call("PUT", path, "cat", json={"overrides": {"spo2_low": 88}, "reason": "COPD"})
    assert status == 200
    assert seen == [({"spo2_low": 88}, None)]  # applied first, saved after
    assert api.service.store.thresholds("p-1") == {"spo2_low": 88}

    def failing_engine(rules: Any) -> None:
        if rules.patient_overrides("p-1").get("spo2_low") == 86:
            raise OverflowError("the engine cannot take this")

    api.service.rules_hooks.append(failing_engine)
    status, body = await api.call("PUT", path, "cat", json={"overrides": {"spo2_low": 86}, "reason": "review"})
    assert status == 400  # never "500 but saved"
    assert "nothing was changed" in body["error"]
    assert api.service.store.thresholds("p-1") == {"spo2_low": 88}
    assert api.service.rules.patient_overrides("p-1") == {"spo2_low": 88}
    assert seen[-1][0] == {"spo2_low": 88}  # the engine got the previous rules back
    changes = [e.details["new"] for e in api.service.store.audit_entries() if e.action == "thresholds_set"]
    assert changes == [{"spo2_low": 88}]


async def test_password_verification_runs_off_the_event_loop_and_unknown_names_are_not_hashed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from wardwatch.alerting import auth

    threads: list[int] = []
    real_verify = auth.verify_password

    def verify(password_hash: str, password: str) -> bool:
        threads.append(threading.get_ident())
        return real_verify(password_hash, password)

    monkeypatch.setattr(auth, "verify_password", verify)
    for i in range(4):  # finding 4: unknown names were hashed too, on the event loop
        status, _ = await login_from(api, "127.0.0.3", f"nobody-{i}", PASSWORD)
        assert status == 401
    assert threads == []
    status, _ = await login_from(api, "127.0.0.3", "ann", PASSWORD)
    assert status == 200
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


async def test_failed_logins_slow_the_client_but_never_lock_the_nurse_out(api: Api) -> None:
    status, body = await login_from(api, "127.0.0.2", "ann", PASSWORD)  # her workstation, as every shift
    assert status == 200, body
    # finding 5: six wrong passwords locked "ann" out for 15 minutes, for everyone
    guesses = [login_from(api, "127.0.0.5", "ann", f"guess {i}") for i in range(12)]
    statuses = [status for status, _ in await asyncio.gather(*guesses)]
    assert set(statuses) <= {401, 429}
    assert 429 in statuses  # the guessing client is throttled ...
    status, body = await login_from(api, "127.0.0.2", "ann", PASSWORD)
    assert status == 200, body  # ... the nurse at her own workstation is not
    flood = [login_from(api, "127.0.0.6", f"random-{i}", "whatever password") for i in range(30)]
    assert 429 in {status for status, _ in await asyncio.gather(*flood)}  # refused early, neither hashed nor audited
    failed = [e for e in api.service.store.audit_entries(limit=10_000) if e.action == "login_failed"]
    assert len(failed) < 12 + 30
    status, _ = await login_from(api, "127.0.0.2", "ann", PASSWORD)
    assert status == 200


def test_login_guard_pauses_grow_with_failures_and_reset_on_success() -> None:
    from wardwatch.alerting.auth import LoginGuard, LoginLimits, LoginThrottledError

    guard = LoginGuard(LoginLimits(client_rate_per_s=1000, client_burst=1000, free_failures=3, delay_max_s=8))
    now = 0.0
    pauses: list[float] = []
    for _ in range(7):
        guard.admit("10.0.0.9", now)
        guard.finish("10.0.0.9", False, now)
        try:
            guard.admit("10.0.0.9", now)
        except LoginThrottledError as paused:
            pauses.append(paused.retry_after_s)
            now += paused.retry_after_s
        else:
            pauses.append(0)
            guard.finish("10.0.0.9", False, now)  # that attempt failed too (the second failure)
    assert pauses == [0, 1, 2, 4, 8, 8, 8]  # from the third failure: a pause that doubles, capped
    guard.admit("10.0.0.7", now)  # another client is not affected
    guard.finish("10.0.0.7", True, now)
    guard.admit("10.0.0.9", now)
    guard.finish("10.0.0.9", True, now)
    guard.admit("10.0.0.9", now)  # a successful login clears the client's failures
    guard.finish("10.0.0.9", False, now)
    guard.admit("10.0.0.9", now + 0.001)
    strict = LoginGuard(LoginLimits(client_rate_per_s=1, client_burst=2))
    for _ in range(2):
        strict.admit("c", 0.0)
        strict.finish("c", False, 0.0)
    with pytest.raises(LoginThrottledError) as throttled:
        strict.admit("c", 0.0)
    assert throttled.value.retry_after_s == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["ann\n", "ann\x00", "a\u202enn", "ann\r\nroot", "Ann", "a" * 65, " ann"])
async def test_login_names_are_validated_before_hashing_or_auditing(api: Api, name: str) -> None:
    status, body = await api.call("POST", "/api/v1/login", json={"name": name, "password": PASSWORD})
    assert status == 400, body
    actors = [e.actor for e in api.service.store.audit_entries(limit=10_000)]
    assert name not in actors
    assert all(a.isprintable() and a.isascii() for a in actors)


async def test_break_glass_only_for_clinicians_never_chained_and_ended_by_logout(api: Api) -> None:
    reason = {"reason": "patient deteriorating, doctor not answering"}
    for user in ("vic", "root"):  # finding 6: a viewer took doctor rights
        status, body = await api.call("POST", "/api/v1/break-glass", user, json=reason)
        assert status == 403, body
    status, body = await api.call("POST", "/api/v1/break-glass", "ann", json=reason)
    assert status == 200
    expires_in_ms = body["expires"] - api.service.clock.now_ms()
    assert 0 < expires_in_ms <= 30 * 60_000  # short-lived
    api.tokens["glass"] = body["token"]
    status, body = await api.call("POST", "/api/v1/break-glass", "glass", json=reason)
    assert status == 403  # no break-glass from a break-glass token
    assert (
        await api.call(
            "PUT",
            "/api/v1/patients/p-1/thresholds",
            "glass",
            json={"overrides": {"spo2_low": 88}, "reason": "emergency"},
        )
    )[0] == 200
    status, body = await api.call("POST", "/api/v1/logout", "ann")
    assert (status, body["break_glass_ended"]) == (200, 1)
    assert (await api.call("GET", "/api/v1/alarms", "glass"))[0] == 401  # logging out ended it
    actions = [(e.action, e.actor) for e in api.service.store.audit_entries()]
    assert ("break_glass_refused", "vic") in actions
    assert ("break_glass_refused", "ann (break-glass)") in actions
    assert ("break_glass", "ann") in actions


async def test_acknowledging_a_latched_high_alarm_whose_condition_cleared_resolves_it_audited_once(api: Api) -> None:
    alarm_id = raise_alarm(api.service)
    api.service.on_conditions(
        [
            ConditionChange(
                patient="p-1",
                ward="ward-a",
                rule="spo2_low",
                category=AlarmCategory.PHYSIOLOGICAL,
                priority=Priority.HIGH,
                active=False,
                t=1_700_000_030_000,
                value=95.0,
                text="",
            )
        ]
    )
    status, body = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann", json={"reason": "seen"})
    assert (status, body["state"], body["actor"]) == (200, "resolved", "ann")  # finding 7: was a 500
    entries = api.service.store.audit_entries(alarm_id=alarm_id)
    assert [(e.action, e.actor, e.reason) for e in entries if e.actor == "ann"] == [("acknowledge", "ann", "seen")]
    assert api.service.store.alarm(alarm_id).state == "resolved"  # type: ignore[union-attr]
    for action, body in [("acknowledge", {}), ("silence", {"minutes": 1}), ("resolve", {})]:
        status, _ = await api.call(
            "POST", f"/api/v1/alarms/{alarm_id}/{action}", "ann", json={"reason": "again", **body}
        )
        assert status == 404


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("/api/v1/audit?since=99999999999999999999999", "since"),
        ("/api/v1/audit?after_seq=-99999999999999999999999", "after_seq"),
        ("/api/v1/audit?after_seq=9223372036854775808", "after_seq"),
        ("/api/v1/audit?limit=1e3", "limit"),
        ("/api/v1/metrics/burden?since=99999999999999999999999", "since"),
        ("/api/v1/metrics/burden?until=-1", "until"),
        ("/api/v1/alarms?limit=x", "limit"),
        ("/api/v1/alarms?patient=P%0A1", "patient"),
        ("/api/v1/patients/p-1/thresholds?ward=nowhere", "ward"),
    ],
)
async def test_bad_query_parameters_are_400_naming_the_parameter(api: Api, query: str, parameter: str) -> None:
    status, body = await api.call("GET", query, "root")  # finding 9: OverflowError gave 500
    assert status == 400, body
    assert body["error"].startswith(parameter)


async def test_audit_limit_is_clamped(api: Api) -> None:
    for i in range(3):
        api.service.store.audit(AuditEntry(t=i, actor="system", action="test"))
    status, body = await api.call("GET", "/api/v1/audit?limit=-1", "cat")  # finding 9: returned everything
    assert (status, len(body["entries"])) == (200, 1)
    status, body = await api.call("GET", "/api/v1/audit?limit=99999999999999", "cat")
    assert status == 200
    assert len(body["entries"]) == len(api.service.store.audit_entries(limit=10_000)) - 1  # minus this read's entry


def test_threshold_overrides_in_the_openapi_document_are_bounded_choices() -> None:
    """A Literal setting (profile, news2_scale) was documented as a 2-million-value enum, which made
    client generators and schemathesis run out of memory."""
    from wardwatch.alerting.api import OPENAPI

    overrides = OPENAPI["components"]["schemas"]["ThresholdsBody"]["properties"]["overrides"]["properties"]
    assert overrides["profile"] == {"enum": ["virtual-ward", "arrhythmia"]}
    assert overrides["news2_scale"] == {"enum": [1, 2]}
    assert all(len(schema.get("enum", ())) <= 10 for schema in overrides.values())


async def test_openapi_document_is_valid_openapi_3_1(api: Api) -> None:
    from openapi_spec_validator import validate

    from wardwatch.alerting.api import OPENAPI

    validate(json.loads(json.dumps(OPENAPI)))  # finding 9: path parameters undeclared, #/$defs/Role unresolvable
    status, served = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    validate(served)
    acknowledge = served["paths"]["/api/v1/alarms/{alarm_id}/acknowledge"]["post"]
    assert {"name": "alarm_id", "in": "path", "required": True}.items() <= acknowledge["parameters"][0].items()
    assert served["components"]["schemas"]["UserBody"]["properties"]["role"] == {"$ref": "#/components/schemas/Role"}
    (ward,) = [
        p for p in served["paths"]["/api/v1/patients/{patient}/thresholds"]["put"]["parameters"] if p["name"] == "ward"
    ]
    assert ward["schema"]["enum"] == ["ward-a"]


@pytest.mark.parametrize("reason", ["   ", "seen\x00", "seen \u202eneeS", "\x1b[2Jcleared"])
async def test_reasons_must_be_readable_text(api: Api, reason: str) -> None:
    alarm_id = raise_alarm(api.service)
    status, body = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann", json={"reason": reason})
    assert status == 400, body
    assert not [e for e in api.service.store.audit_entries(alarm_id=alarm_id) if e.action == "acknowledge"]
    status, _ = await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann", json={"reason": "seen\nok"})
    assert status == 200


def test_login_guard_serves_clinicians_first_and_budgets_everyone_else() -> None:
    from wardwatch.alerting.auth import LoginGuard, LoginLimits, LoginThrottledError

    guard = LoginGuard(
        LoginLimits(client_rate_per_s=1000, client_burst=1000, free_failures=100, verify_rate_per_s=0.5, verify_burst=1)
    )

    def verify(client: str, now: float, succeeds: bool) -> int:
        guard.admit(client, now)
        verifying = False
        try:
            priority = guard.start_verification(client, now)
            verifying = True
            return priority
        finally:
            if verifying:
                guard.end_verification()
            guard.finish(client, succeeds, now)

    assert verify("ward-pc", 0.0, True) == 0  # a new address: ordinary priority, outside the budget (no failures)
    assert verify("guesser", 0.0, False) == 0  # a name's first try is not budgeted either ...
    assert verify("guesser", 0.0, False) == 1  # ... after a failure it is: the budget (one verification, 0.5/s) ...
    with pytest.raises(LoginThrottledError):  # ... is spent ...
        verify("guesser", 0.0, False)
    assert verify("ward-pc", 0.0, False) == -1  # ... but a workstation that logged in lately goes first, typo or not
    assert verify("ward-pc", 0.0, False) == -1
    assert verify("guesser", 2.0, False) == 3  # refilled: served, after three failures already (the refused one too)
    with pytest.raises(LoginThrottledError):
        verify("guesser", 2.5, False)
    assert verify("ward-pc", 2.5, True) == -1
    for t in (3.0, 3.0, 3.0):  # three typos in a row: the workstation is no longer trusted
        verify("ward-pc", t, False)
    with pytest.raises(LoginThrottledError):
        verify("ward-pc", 3.0, False)


async def test_responses_match_the_types_the_openapi_document_declares(api: Api) -> None:
    """Each JSON answer validates against the response schema generated from its type (issue 16)."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    status, document = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    alarm_id = raise_alarm(api.service)
    other = raise_alarm(api.service, "p-2")
    calls = [
        ("get", "/healthz", "/healthz", None, None),
        ("get", "/api/v1/alarms", "/api/v1/alarms", "cat", None),
        ("get", "/api/v1/alarms/{alarm_id}", f"/api/v1/alarms/{alarm_id}", "cat", None),
        (
            "post",
            "/api/v1/alarms/{alarm_id}/silence",
            f"/api/v1/alarms/{other}/silence",
            "ann",
            {"reason": "x", "minutes": 5},
        ),
        (
            "post",
            "/api/v1/alarms/{alarm_id}/acknowledge",
            f"/api/v1/alarms/{alarm_id}/acknowledge",
            "ann",
            {"reason": "seen"},
        ),
        ("post", "/api/v1/alarms/{alarm_id}/resolve", f"/api/v1/alarms/{alarm_id}/resolve", "ann", {"reason": "ok"}),
        ("get", "/api/v1/alarms/{alarm_id}", "/api/v1/alarms/nope", "cat", None),
        (
            "put",
            "/api/v1/patients/{patient}/thresholds",
            "/api/v1/patients/p-1/thresholds",
            "root",
            {"overrides": {"spo2_low": 88}, "reason": "COPD"},
        ),
        ("get", "/api/v1/patients/{patient}/thresholds", "/api/v1/patients/p-1/thresholds", "root", None),
        ("get", "/api/v1/audit", "/api/v1/audit", "cat", None),
        ("get", "/api/v1/audit/verify", "/api/v1/audit/verify", "root", None),
        ("get", "/api/v1/metrics/burden", "/api/v1/metrics/burden", "root", None),
        ("get", "/api/v1/users", "/api/v1/users", "root", None),
        ("post", "/api/v1/users", "/api/v1/users", "root", {"name": "dee", "role": "doctor", "password": PASSWORD}),
        ("post", "/api/v1/tokens", "/api/v1/tokens", "root", {"name": "bot", "role": "viewer"}),
        ("post", "/api/v1/login", "/api/v1/login", None, {"name": "ann", "password": PASSWORD}),
        ("post", "/api/v1/break-glass", "/api/v1/break-glass", "ann", {"reason": "crash call"}),
        ("get", "/api/v1/users", "/api/v1/users", "ann", None),
        ("post", "/api/v1/logout", "/api/v1/logout", "vic", None),
    ]
    for method, template, url, user, body in calls:
        status, answer = await api.call(method.upper(), url, user, **({"json": body} if body is not None else {}))
        declared = document["paths"][template][method]["responses"]
        assert str(status) in declared, (method, url, status, answer)
        schema = declared[str(status)]["content"]["application/json"]["schema"]
        validator = Draft202012Validator({**schema, "components": document["components"]})
        problems = [e.message for e in validator.iter_errors(answer)]
        assert problems == [], (method, url, status, problems)
