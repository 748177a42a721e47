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
from tests.alerting.serving import PASSWORD, api_config, log_in, raise_alarm, serving_api, webhook_ward

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.engine.news2 import Observed, Param, score_news2
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.registry.identity import create_key_file
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.schema import AlarmCategory, DeviceRole, DeviceStatus, Priority
from wardwatch.core.servers import make_ca_and_server_cert
from wardwatch.core.waiting import wait_for

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


def alerting_config(tmp_path: Path, receiver: WebhookReceiver, api: dict[str, Any]) -> AlertingConfig:
    key = tmp_path / "identity.key"
    if not key.exists():
        create_key_file(key)
    ward = webhook_ward(receiver, ("nurse", "desk"), failsafe="desk")
    return api_config(tmp_path, ward, api=api, registry={"identity_key_file": str(key)})


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        service, port = await stack.enter_async_context(serving_api(alerting_config(tmp_path, receiver, {}), USERS))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        base = f"http://127.0.0.1:{port}"
        yield Api(base, http, service, receiver, await log_in(http, base, USERS))


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
        _, port = await stack.enter_async_context(serving_api(config, users={}))
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


async def test_resolving_while_the_condition_lasts_says_when_it_realarms(api: Api) -> None:
    alarm_id = raise_alarm(api.service)
    status, body = await api.call("POST", f"/api/v1/alarms/{alarm_id}/resolve", "ann", json={"reason": "called"})
    assert (status, body["state"], body["condition_still_present"]) == (200, "resolved", True)
    assert body["realarm_at"] == body["resolved_at"] + 3_600_000  # the ward's max_silence_s (default)
    assert "still present" in body["notice"]
    assert "60 min" in body["notice"]
    status, body = await api.call("GET", f"/api/v1/alarms/{alarm_id}", "vic")
    assert (body["state"], body["realarm_at"]) == ("resolved", body["resolved_at"] + 3_600_000)
    # the condition cleared (latched, unacknowledged high): resolved as before, nothing watched
    other = raise_alarm(api.service, "p-2")
    cleared = ConditionChange("p-2", "ward-a", "spo2_low", AlarmCategory.PHYSIOLOGICAL, Priority.HIGH, False, 1)
    api.service.on_conditions([cleared])
    status, body = await api.call("POST", f"/api/v1/alarms/{other}/resolve", "ann", json={"reason": "seen"})
    assert (status, body["condition_still_present"], body["realarm_at"]) == (200, False, None)


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
        ("/api/v1/patients/p-1/observations?limit=\u00b2", "limit"),  # str.isdigit() took it, int() did not: 500
        ("/api/v1/patients/p-1/observations?limit=0", "limit"),
        ("/api/v1/patients/p-1/notes?limit=\u0661", "limit"),  # an Arabic-Indic digit
        ("/api/v1/patients/p-1/devices?limit=+5", "limit"),
        ("/api/v1/wards/ward-a/handover?hours=49", "hours"),
        ("/api/v1/registry/patients?status=gone", "status"),
        ("/api/v1/registry/gateways?ward=Ward%0A", "ward"),
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


def strict(schema: Any) -> Any:
    """``schema`` with every object closed (``additionalProperties: false`` where it names its properties), so a
    field the type does not declare fails validation too."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    return closed


async def check_answers(api: Api, calls: list[tuple[str, str, str, str | None, Any]]) -> list[int]:
    """Make each call (method, path template, url, user, body); its status must be one the served document declares
    for the operation and its JSON answer must validate against that response's schema, objects closed. Returns
    the statuses."""
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    status, document = await api.call("GET", "/api/v1/openapi.json")
    assert status == 200
    components = strict(document["components"])
    statuses = []
    for method, template, url, user, body in calls:
        status, answer = await api.call(method.upper(), url, user, **({"json": body} if body is not None else {}))
        declared = document["paths"][template][method]["responses"]
        assert str(status) in declared, (method, url, status, answer)
        schema = strict(declared[str(status)]["content"]["application/json"]["schema"])
        validator = Draft202012Validator({**schema, "components": components})
        problems = [e.message for e in validator.iter_errors(answer)]
        assert problems == [], (method, url, status, problems)
        statuses.append(status)
    return statuses


def test_every_operation_declares_the_content_of_its_answers() -> None:
    from wardwatch.alerting.api import OPENAPI

    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                schemas = [media.get("schema") for media in answer.get("content", {}).values()]
                assert schemas, (method, path, status)
                assert all(schemas), (method, path, status)


def test_route_modules_agree_on_the_component_schemas_they_share() -> None:
    """The document merges each route module's components by name: a name two modules define differently would
    silently replace one of them."""
    from wardwatch.alerting import api

    seen: dict[str, Any] = {}
    for name, schemas in vars(api).items():
        if name.endswith("_SCHEMAS") and name != "_SCHEMAS":
            for component, schema in schemas.items():
                assert seen.setdefault(component, schema) == schema, (name, component)


async def test_responses_match_the_types_the_openapi_document_declares(api: Api) -> None:
    """Each JSON answer validates against the response schema generated from its type (issue 16)."""
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
    await check_answers(api, calls)


async def test_registry_observation_note_device_and_handover_answers_match_their_declared_types(api: Api) -> None:
    """The registry's, observations', notes', device history's and handover's answers, errors included, validate
    against the schemas their operations declare (issue 16)."""
    now = api.service.clock.now_ms()
    alarm_id = raise_alarm(api.service)
    registry, patient = "/api/v1/registry", "/api/v1/patients/p-9"
    oximeter = {"id": "ox-9", "role": "pulse_oximeter", "address": "AA:BB:CC:DD:EE:09"}
    strap = {"id": "hr-9", "role": "heart_rate_strap", "name": "Polar H10 9"}
    identity = {"name": "Ann Example", "date_of_birth": "1950-01-02", "hospital_number": "H123"}
    observation = {"taken_at": now, "respiration": 18, "spo2": 95, "supplemental_o2": False, "consciousness": "A"}
    gateway_body = {"gateway": "gw-01", "capacity": 4, "reason": "new home", "home": "Flat 1"}
    admit_body = {"reason": "referred", "patient": "p-9", "identity": identity}
    statuses = await check_answers(
        api,
        [
            ("post", registry + "/gateways", registry + "/gateways", "cat", gateway_body),
            ("get", registry + "/gateways", registry + "/gateways?ward=ward-a", "vic", None),
            ("post", registry + "/patients", registry + "/patients", "cat", admit_body),
            ("post", registry + "/patients", registry + "/patients", "cat", admit_body),  # 409: admitted already
            ("get", registry + "/patients", registry + "/patients?status=admitted", "vic", None),
            ("get", registry + "/patients", registry + "/patients?status=gone", "vic", None),  # 400
            (
                "post",
                registry + "/patients/{patient}/kit",
                registry + "/patients/p-9/kit",
                "cat",
                {"gateway": "gw-01", "devices": [oximeter, strap], "reason": "kit"},
            ),
            ("get", registry + "/gateways/{gateway}/kit", registry + "/gateways/gw-01/kit", "vic", None),
            ("get", registry + "/gateways/{gateway}/kit", registry + "/gateways/gw-09/kit", "vic", None),  # 404
            (
                "post",
                registry + "/patients/{patient}/swap",
                registry + "/patients/p-9/swap",
                "cat",
                {"old_device": "ox-9", "new": {**oximeter, "id": "ox-10"}, "reason": "flat battery"},
            ),
            ("get", registry + "/patients/{patient}", registry + "/patients/p-9", "vic", None),
            ("get", registry + "/patients/{patient}", registry + "/patients/p-404", "vic", None),  # 404
            (
                "put",
                registry + "/patients/{patient}/identity",
                registry + "/patients/p-9/identity",
                "ann",
                {"identity": {**identity, "phone": "0100 000"}, "reason": "new phone"},
            ),
            ("get", registry + "/patients/{patient}/identity", registry + "/patients/p-9/identity", "ann", None),
            ("get", registry + "/patients/{patient}/identity", registry + "/patients/p-9/identity", "vic", None),  # 403
        ],
    )
    assert statuses == [200, 200, 201, 409, 200, 400, 200, 200, 404, 200, 200, 404, 200, 200, 403]
    source = {Param.SPO2: Observed(97, now, "device"), Param.PULSE: Observed(80, now, "device")}
    fresh = dict.fromkeys(Param, 3_600_000)
    api.service.observations.score_source = lambda p, t: score_news2(source, t, fresh) if p == "p-9" else None
    api.service.handover.scores.sample(now)  # NEWS2 0 logged
    source[Param.RESPIRATION] = Observed(25, now, "nurse")  # 3 points: the handover's "NEWS2 rose"
    devices = api.service.handover.devices
    for connected, battery in ((True, 90), (False, 15)):
        status = DeviceStatus(
            patient="p-9",
            device="ox-10",
            gateway="gw-01",
            t=now,
            role=DeviceRole.PULSE_OXIMETER,
            connected=connected,
            battery=battery,
            reason=None if connected else "out_of_range",
        )
        devices.on_device_status("ward-a", status)
    devices.on_gateway_availability("ward-a", "gw-01", False, now)
    await api.call("POST", f"/api/v1/alarms/{alarm_id}/acknowledge", "ann", json={"reason": "at the bedside"})
    await api.call("POST", f"/api/v1/alarms/{alarm_id}/resolve", "ann", json={"reason": "probe reseated"})
    observations, news2 = patient + "/observations", patient + "/news2"
    statuses = await check_answers(
        api,
        [
            ("post", "/api/v1/patients/{patient}/observations", observations, "ann", observation),
            ("post", "/api/v1/patients/{patient}/observations", observations, "ann", {"taken_at": now}),  # 422
            ("get", "/api/v1/patients/{patient}/observations", observations + "?limit=5", "vic", None),
            ("get", "/api/v1/patients/{patient}/observations", observations + "?limit=\u00b2", "vic", None),  # 400
            ("get", "/api/v1/patients/{patient}/news2", news2, "vic", None),
            ("get", "/api/v1/patients/{patient}/news2", "/api/v1/patients/p-404/news2", "vic", None),  # 404
            ("post", "/api/v1/patients/{patient}/notes", patient + "/notes", "ann", {"text": "settled, sleeping"}),
            ("get", "/api/v1/patients/{patient}/notes", patient + "/notes?limit=10", "vic", None),
            ("get", "/api/v1/patients/{patient}/notes", "/api/v1/patients/p-404/notes", "vic", None),  # 404
            ("get", "/api/v1/patients/{patient}/devices", patient + "/devices", "vic", None),
            ("get", "/api/v1/wards/{ward}/handover", "/api/v1/wards/ward-a/handover?hours=2", "vic", None),
            ("get", "/api/v1/wards/{ward}/handover", "/api/v1/wards/ward-z/handover", "vic", None),  # 404
            (
                "post",
                registry + "/patients/{patient}/discharge",
                registry + "/patients/p-9/discharge",
                "cat",
                {"reason": "home"},
            ),
            ("post", "/api/v1/patients/{patient}/notes", patient + "/notes", "ann", {"text": "too late"}),  # 409
        ],
    )
    assert statuses == [201, 422, 200, 400, 200, 404, 201, 200, 404, 200, 200, 404, 200, 409]
