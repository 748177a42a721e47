"""Logins behind a trusted proxy (the console): the forwarded client address is believed only from
``[api] trusted_proxies``, and throttling and the audit go by it (issue 13: a ward at shift change)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
import pytest

from wardwatch.alerting.api import serve_api
from wardwatch.alerting.auth import Authenticator, LoginGuard, LoginLimits, LoginThrottledError, Role
from wardwatch.alerting.proxies import TrustedProxies
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.errors import ConfigError

PASSWORD = "correct horse battery"
PROXY = "127.0.0.9"  # the console, as far as these tests go
SPOOFER = "127.0.0.7"


@dataclass
class Api:
    base: str
    service: AlarmService


def _config(tmp_path: Path, receiver: WebhookReceiver, trusted: list[str]) -> dict[str, object]:
    return {
        "database": str(tmp_path / "alerting.db"),
        "api": {
            "host": "127.0.0.1",
            "port": 0,
            "argon2_time_cost": 1,
            "argon2_memory_kib": 1024,
            "trusted_proxies": trusted,
        },
        "wards": {
            "ward-a": {
                "destinations": {"nurse": {"channels": [{"type": "webhook", "url": receiver.url("/nurse")}]}},
                "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": 600}]}},
                "failsafe": "nurse",
            }
        },
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        config = config_from_mapping(_config(tmp_path, receiver, [PROXY, "10.20.0.0/16"]))
        store = stack.enter_context(Store(config.database))
        service = await stack.enter_async_context(AlarmService(config, store))
        port = await stack.enter_async_context(serve_api(service, config.api))
        auth = Authenticator(store, argon2_time_cost=1, argon2_memory_kib=1024)
        auth.add_user("ann", Role.NURSE, PASSWORD, 0)
        yield Api(f"http://127.0.0.1:{port}", service)


async def login(api: Api, peer: str, forwarded_for: str | None, name: str = "ann") -> int:
    """Log in from loopback address ``peer``, claiming ``forwarded_for`` as the client."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(peer, 0))) as http,
        http.post(api.base + "/api/v1/login", json={"name": name, "password": PASSWORD}, headers=headers) as response,
    ):
        return response.status


def login_clients(api: Api) -> list[str]:
    return [e.details["client"] for e in api.service.store.audit_entries(limit=10_000) if e.action == "login"]


async def test_a_client_not_trusted_is_throttled_by_its_own_address_whatever_it_forwards(api: Api) -> None:
    statuses = [await login(api, SPOOFER, f"198.51.100.{i}") for i in range(11)]
    assert statuses[:10] == [200] * 10
    assert statuses[10] == 429  # the burst of 10 per address: a new X-Forwarded-For each time did not help
    assert set(login_clients(api)) == {SPOOFER}  # the audit names the real address, not the claimed ones


async def test_the_trusted_proxy_forwards_each_clients_own_address(api: Api) -> None:
    statuses = [await login(api, PROXY, f"198.51.100.{i}") for i in range(11)]
    assert statuses == [200] * 11  # eleven browsers behind the console: none throttled by the others
    assert login_clients(api) == [f"198.51.100.{i}" for i in range(11)]
    # hops appended by the trusted proxies count; what the client wrote before them does not
    assert await login(api, PROXY, "203.0.113.66, 198.51.100.200, 10.20.3.4") == 200
    assert login_clients(api)[-1] == "198.51.100.200"
    assert await login(api, PROXY, None) == 200  # the proxy itself, forwarding nobody
    assert login_clients(api)[-1] == PROXY


async def test_the_forwarded_header_of_rfc_7239_is_read_too(api: Api) -> None:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(PROXY, 0))) as http,
        http.post(
            api.base + "/api/v1/login",
            json={"name": "ann", "password": PASSWORD},
            headers={"Forwarded": 'for="[2001:db8::7]:4711";proto=https, for=192.0.2.60:5000'},
        ) as response,
    ):
        assert response.status == 200
    assert login_clients(api) == ["192.0.2.60"]


def test_the_client_is_the_rightmost_hop_not_trusted() -> None:
    trusted = TrustedProxies(["10.0.0.5", "10.1.0.0/16"])
    assert trusted.client("10.0.0.5", ["192.0.2.1"]) == "192.0.2.1"
    assert trusted.client("10.0.0.5", ["6.6.6.6", "192.0.2.1", "10.1.2.3"]) == "192.0.2.1"
    assert trusted.client("192.0.2.9", ["10.0.0.5", "192.0.2.1"]) == "192.0.2.9"  # not trusted: its own address
    assert trusted.client("10.0.0.5", ["not-an-address"]) == "10.0.0.5"
    assert TrustedProxies().client("10.0.0.5", ["192.0.2.1"]) == "10.0.0.5"  # empty (default): nobody trusted


def test_a_wrong_trusted_proxy_entry_stops_the_configuration_with_what_to_write(tmp_path: Path) -> None:
    with pytest.raises((ConfigError, msgspec.ValidationError), match=r"api.trusted_proxies: 'console' is not"):
        config_from_mapping({"database": str(tmp_path / "a.db"), "api": {"trusted_proxies": ["console"]}, "wards": {}})


def test_one_names_failures_never_delay_another_name_from_the_same_address() -> None:
    guard = LoginGuard(LoginLimits())
    now = 0.0
    for _ in range(10):  # a nurse mistypes ten times at the shared workstation
        try:
            guard.admit("ward-pc", now, "ann")
        except LoginThrottledError:
            continue
        guard.finish("ward-pc", False, now, "ann")
    with pytest.raises(LoginThrottledError):
        guard.admit("ward-pc", now, "ann")  # she is paused ...
    guard.admit("ward-pc", now, "bob")  # ... her colleague at the same workstation is not
    assert guard.start_verification("ward-pc", now, "bob") == 0  # nor budgeted
    guard.end_verification()
    guard.finish("ward-pc", True, now, "bob")
    failures = 0
    why = ""
    for i in range(40):  # guessing across names from one address (one a second) pauses the address
        try:
            guard.admit("guesser", now, f"name-{i}")
        except LoginThrottledError as paused:
            why = str(paused)
            break
        guard.finish("guesser", False, now, f"name-{i}")
        failures += 1
        now += 1.0
    else:
        pytest.fail("40 failures across names from one address were never paused")
    assert why.startswith("too many failed logins from this address")
    # from the 20th failure a pause of 1 s (over by the next second), then 2 s
    assert failures == LoginLimits().address_free_failures + 1
