"""The alerting service in-process for API tests: configurations (with or without a real mosquitto), the service
and its API running with users, a token each, calls as one of them, and an alarm raised without the engine."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.auth import Authenticator, Role
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.registry.identity import create_key_file
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import AlertingConfig, config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver, running_service
from wardwatch.core.schema import AlarmCategory, Priority
from wardwatch.core.servers import Mosquitto

PASSWORD = "correct horse battery"
WARD = "ward-a"
USERS = {"charge": Role.CHARGE_NURSE, "nurse": Role.NURSE, "viewer": Role.VIEWER, "root": Role.ADMIN}
NO_SPO2_DELAY = "[defaults]\nspo2_delay_s = 0.0\n"
FAST_PAGING = {"backoff_min_s": 0.01, "backoff_max_s": 0.05, "round_backoff_max_s": 0.1}


def webhook_ward(
    receiver: WebhookReceiver,
    destinations: Iterable[str] = ("nurse",),
    *,
    timeout_s: float = 60.0,
    failsafe: str = "nurse",
    **extra: Any,
) -> dict[str, Any]:
    """A ward's settings: each destination a webhook to ``receiver``'s ``/name``; a high alarm pages ``nurse`` and
    escalates after ``timeout_s``; ``extra`` adds ward settings (e.g. ``operator``)."""
    return {
        "destinations": {
            name: {"channels": [{"type": "webhook", "url": receiver.url(f"/{name}")}]} for name in destinations
        },
        "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": timeout_s}]}},
        "failsafe": failsafe,
        **extra,
    }


def api_config(
    tmp_path: Path, ward: dict[str, Any], *, api: Mapping[str, Any] | None = None, **extra: Any
) -> AlertingConfig:
    """A service for `WARD` (``ward``: its settings) without a broker: its API on a free loopback port with cheap
    password hashes (``api`` adds API settings, e.g. TLS); ``extra`` adds top-level settings (e.g. ``registry``)."""
    return config_from_mapping(
        {
            "database": str(tmp_path / "alerting.db"),
            "api": {"host": "127.0.0.1", "port": 0, "argon2_time_cost": 1, "argon2_memory_kib": 1024, **(api or {})},
            "wards": {WARD: ward},
            **extra,
        }
    )


def service_config(
    tmp_path: Path, mosquitto: Mosquitto, ward: dict[str, Any], *, rules: str = NO_SPO2_DELAY, **extra: Any
) -> AlertingConfig:
    """A service for `WARD` (``ward``: its settings) with an identity key, fast ticks, API on a free port and cheap
    password hashes, reading ``mosquitto`` without TLS; ``extra`` adds top-level settings (e.g. ``paging``)."""
    (tmp_path / "rules.toml").write_text(rules)
    key = tmp_path / "identity.key"
    create_key_file(key)
    return config_from_mapping(
        {
            "database": str(tmp_path / "alerting.db"),
            "rules": str(tmp_path / "rules.toml"),
            "tick_s": 0.2,
            "mqtt": {"host": mosquitto.host, "port": mosquitto.port, "tls": False},
            "api": {"port": 0, "argon2_time_cost": 1, "argon2_memory_kib": 1024},
            "registry": {"identity_key_file": str(key)},
            "wards": {WARD: ward},
            **extra,
        }
    )


@dataclass
class Running:
    """The service, its API and a token per user."""

    service: AlarmService
    base: str
    tokens: dict[str, str]
    http: aiohttp.ClientSession

    async def call(self, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def ok(self, user: str, method: str, path: str, body: Any = None) -> Any:
        """The answer of a call that must succeed (200 or 201)."""
        status, answer = await self.call(user, method, path, body)
        assert status in (200, 201), answer
        return answer

    async def metrics(self) -> str:
        async with self.http.get(self.base + "/metrics") as response:
            return await response.text()


def add_users(database: Path, users: Iterable[tuple[str, Role]] = USERS.items(), password: str = PASSWORD) -> None:
    """Accounts (cheap hashes) in the database the service opens."""
    with Store(database) as store:
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)
        for name, role in users:
            auth.add_user(name, role, password, 0)


async def log_in(
    http: aiohttp.ClientSession, base: str, names: Iterable[str], password: str = PASSWORD
) -> dict[str, str]:
    """A bearer token per user name, from the API's login."""
    tokens = {}
    for name in names:
        async with http.post(base + "/api/v1/login", json={"name": name, "password": password}) as response:
            assert response.status == 200, await response.text()
            tokens[name] = (await response.json())["token"]
    return tokens


@contextlib.asynccontextmanager
async def running(
    config: AlertingConfig, *, with_users: bool = True, source: ConditionSource | None = None
) -> AsyncIterator[Running]:
    """The whole service in-process (`running_service`) with `USERS` logged in (added first unless the database
    already has them)."""
    if with_users:
        add_users(config.database)
    async with running_service(config, source) as (service, port), aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{port}"
        yield Running(service, base, await log_in(http, base, USERS), http)


@contextlib.asynccontextmanager
async def serving_api(
    config: AlertingConfig, users: Mapping[str, Role] = USERS, password: str = PASSWORD
) -> AsyncIterator[tuple[AlarmService, int]]:
    """Store, service and API in-process (no broker, no engine) with ``users`` added: the service and the API's port."""
    async with contextlib.AsyncExitStack() as stack:
        store = stack.enter_context(Store(config.database))
        service = await stack.enter_async_context(AlarmService(config, store))
        port = await stack.enter_async_context(serve_api(service, config.api))
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)  # cheap hashes for tests
        for name, role in users.items():
            auth.add_user(name, role, password, 0)
        yield service, port


def raise_alarm(service: AlarmService, patient: str = "p-1") -> str:
    """A high SpO2 alarm for ``patient`` on `WARD`, as the engine would report it: its id."""
    service.on_conditions(
        [
            ConditionChange(
                patient=patient,
                ward=WARD,
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
