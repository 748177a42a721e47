"""Admission, kits, swaps, discharge and identity through the console's back end, against a real alerting API
(in process, with an identity key): the registry's own answers (201, 403, 409) reach the page, every change
needs the CSRF token, the identity travels only in bodies and each reveal is audited by the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.alerting.serving import PASSWORD, api_config, serving_api, webhook_ward

from wardwatch.alerting.auth import Role
from wardwatch.alerting.registry.identity import create_key_file
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.console.app import build_app
from wardwatch.console.config import AlertingSettings, ConsoleConfig

USERS = {"ann": Role.NURSE, "cat": Role.CHARGE_NURSE, "vic": Role.VIEWER, "adm": Role.ADMIN}
IDENTITY = {"name": "Margaret Oduya", "date_of_birth": "1948-03-02", "hospital_number": "943 476 5919"}


@dataclass
class Browser:
    """One user's cookie jar and CSRF token against the console."""

    base: str
    http: aiohttp.ClientSession
    csrf: str = ""

    async def call(self, method: str, path: str, body: Any = None, *, csrf: bool = True) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.csrf} if csrf and method == "POST" else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()


@dataclass
class Setup:
    service: AlarmService
    browsers: dict[str, Browser]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    key = tmp_path / "identity.key"
    create_key_file(key)
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        ward = webhook_ward(receiver, timeout_s=600)
        config = api_config(tmp_path, ward, registry={"identity_key_file": str(key)})
        service, api_port = await stack.enter_async_context(serving_api(config, USERS))
        await service.registry.register_gateway("ward-a", "gw-home-1", "flat 3", 2, "test", "fixture")
        console = ConsoleConfig(ward="ward-a", alerting=AlertingSettings(url=f"http://127.0.0.1:{api_port}"))
        runner = web.AppRunner(build_app(console), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        browsers: dict[str, Browser] = {}
        for name in USERS:
            jar = aiohttp.CookieJar(unsafe=True)  # keep cookies of 127.0.0.1, as a browser does
            browser = Browser(base, await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=jar)))
            status, session = await browser.call("POST", "/api/login", {"name": name, "password": PASSWORD})
            assert status == 200, session
            browser.csrf = session["csrf"]
            browsers[name] = browser
        yield Setup(service, browsers)


async def test_a_charge_nurse_admits_assigns_swaps_reveals_and_discharges(setup: Setup) -> None:
    cat = setup.browsers["cat"]
    status, answer = await cat.call("POST", "/api/registry/patients", {"reason": "referral", "identity": IDENTITY})
    assert status == 201, answer
    patient = answer["patient"]
    assert patient.startswith("p-")
    assert answer["has_identity"] is True
    assert "Margaret" not in str(answer)  # the page gets the pseudonym back, not the identity

    status, answer = await cat.call("GET", "/api/registry/gateways")
    assert status == 200
    assert [(g["gateway"], g["capacity"], g["bound"]) for g in answer["gateways"]] == [("gw-home-1", 2, 0)]
    three = [
        {"id": "plx-1", "role": "pulse_oximeter"},
        {"id": "hrs-1", "role": "heart_rate_strap"},
        {"id": "hrs-2", "role": "heart_rate_strap"},
    ]
    kit = {"gateway": "gw-home-1", "devices": three, "reason": "kit delivered"}
    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/kit", kit)
    assert status == 409  # two slots: the registry's own message reaches the page
    assert "over capacity" in answer["error"]
    assert "2 connection slots" in answer["error"]
    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/kit", {**kit, "devices": three[:2]})
    assert status == 200, answer
    assert {b["device"] for b in answer["bindings"]} == {"plx-1", "hrs-1"}
    swap = {"old_device": "plx-1", "new": {"id": "plx-2", "role": "pulse_oximeter"}, "reason": "battery failed"}
    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/swap", swap)
    assert status == 200, answer
    assert {b["device"] for b in answer["bindings"] if b["until"] is None} == {"plx-2", "hrs-1"}

    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/identity/reveal", {})
    assert (status, answer) == (200, {"patient": patient, "identity": IDENTITY})
    reads = [e for e in setup.service.store.audit_entries(patient=patient) if e.action == "identity_read"]
    assert [e.actor for e in reads] == ["cat"]

    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/discharge", {})
    assert status == 400  # a reason is required
    status, answer = await cat.call("POST", f"/api/registry/patients/{patient}/discharge", {"reason": "recovered"})
    assert status == 200, answer
    assert (answer["status"], answer["discharge_reason"]) == ("discharged", "recovered")
    actions = [e.action for e in setup.service.store.audit_entries(patient=patient)]
    for action in ("patient_admitted", "kit_assigned", "device_swapped", "identity_read", "patient_discharged"):
        assert action in actions


async def test_changes_need_the_csrf_token_and_a_role_the_registry_allows(setup: Setup) -> None:
    cat, ann = setup.browsers["cat"], setup.browsers["ann"]
    status, _ = await cat.call("POST", "/api/registry/patients", {"reason": "referral"}, csrf=False)
    assert status == 403
    status, answer = await ann.call("POST", "/api/registry/patients", {"reason": "referral"})
    assert status == 403, answer  # a nurse may not admit (the API's answer)
    status, answer = await cat.call("POST", "/api/registry/patients", {"reason": "x", "patient": "john.smith"})
    assert status == 400
    assert "patient" in answer["error"]
    assert setup.service.registry.patients("ward-a") == []


async def test_identity_is_for_clinical_roles_only(setup: Setup) -> None:
    row = await setup.service.registry.admit("ward-a", "cat", "referral", identity=None)
    patient = row.patient
    status, answer = await setup.browsers["ann"].call("POST", f"/api/registry/patients/{patient}/identity/reveal", {})
    assert status == 404
    assert "no identity" in answer["error"]
    reveal = f"/api/registry/patients/{patient}/identity/reveal"
    for name in ("vic", "adm"):
        status, answer = await setup.browsers[name].call("POST", reveal, {})
        assert status == 403, (name, answer)
    status, _ = await setup.browsers["vic"].call("GET", f"/api/registry/patients/{patient}")
    assert status == 200  # the devices and status: no identity
