"""Logins through the console at shift change (issue 13): the console forwards each browser's address to the
alerting API, which trusts it from the console only (``[api] trusted_proxies``), so nurses logging in
through one console are throttled one by one, never together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.console.app import build_app
from wardwatch.console.config import AlertingSettings, ConsoleConfig, InfluxSettings

PASSWORD = "correct horse battery"
NURSES = [f"nurse-{i:02d}" for i in range(20)]


@dataclass
class Ward:
    console: str  # the console's base URL
    service: AlarmService


@pytest.fixture
async def ward(tmp_path: Path) -> AsyncIterator[Ward]:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        config = config_from_mapping(
            {
                "database": str(tmp_path / "alerting.db"),
                "api": {
                    "host": "127.0.0.1",
                    "port": 0,
                    "argon2_time_cost": 1,
                    "argon2_memory_kib": 1024,
                    "trusted_proxies": ["127.0.0.1"],  # the console connects from there, as `wardwatch up` sets it
                },
                "wards": {
                    "ward-a": {
                        "destinations": {"nurse": {"channels": [{"type": "webhook", "url": receiver.url("/n")}]}},
                        "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": 600}]}},
                        "failsafe": "nurse",
                    }
                },
            }
        )
        store = stack.enter_context(Store(config.database))
        service = await stack.enter_async_context(AlarmService(config, store))
        api_port = await stack.enter_async_context(serve_api(service, config.api))
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)
        for name in NURSES:
            auth.add_user(name, Role.NURSE, PASSWORD, 0)
        console_config = ConsoleConfig(
            ward="ward-a", alerting=AlertingSettings(url=f"http://127.0.0.1:{api_port}"), influx=InfluxSettings()
        )
        runner = web.AppRunner(build_app(console_config), access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield Ward(f"http://127.0.0.1:{runner.addresses[0][1]}", service)


async def log_in(ward: Ward, browser: str, name: str, password: str = PASSWORD) -> int:
    """Log in to the console from the browser at loopback address ``browser`` (a workstation or tablet)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(browser, 0))) as http,
        http.post(ward.console + "/api/login", json={"name": name, "password": password}) as response,
    ):
        return response.status


def audited_clients(ward: Ward, action: str) -> dict[str, set[str]]:
    clients: dict[str, set[str]] = {}
    for entry in ward.service.store.audit_entries(limit=10_000):
        if entry.action == action:
            clients.setdefault(entry.actor, set()).add(entry.details["client"])
    return clients


async def test_twenty_nurses_logging_in_at_once_through_the_console_are_not_throttled(ward: Ward) -> None:
    browsers = [f"127.0.0.{10 + i}" for i in range(len(NURSES))]
    statuses = await asyncio.gather(*(log_in(ward, b, n) for b, n in zip(browsers, NURSES, strict=True)))
    assert statuses == [200] * len(NURSES)
    # the audit names each nurse's own browser, not the console's address
    assert audited_clients(ward, "login") == {n: {b} for b, n in zip(browsers, NURSES, strict=True)}


async def test_one_nurses_wrong_passwords_through_the_console_never_delay_another_nurse(ward: Ward) -> None:
    typos = [await log_in(ward, "127.0.0.40", "nurse-00", f"wrong password {i}") for i in range(10)]
    assert set(typos) <= {401, 429}
    assert 429 in typos  # she is slowed down ...
    assert await log_in(ward, "127.0.0.41", "nurse-01") == 200  # ... her colleague at another tablet is not
    assert await log_in(ward, "127.0.0.40", "nurse-02") == 200  # ... nor one at the same workstation
    assert audited_clients(ward, "login_failed") == {"nurse-00": {"127.0.0.40"}}
