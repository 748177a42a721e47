"""Test and benchmark helpers: a real webhook receiver and a scriptable condition source.

:class:`WebhookReceiver` is an aiohttp server on a free loopback port that records every page
POSTed to it (with arrival time and ``Idempotency-Key``), deduplicates on that key as a real
receiver should, and can be told to fail (HTTP 500) to exercise retries and fail-over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import msgspec
from aiohttp import web

from wardwatch.alerting.alarm_record import AlarmRecord
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.protocols import ConditionSource
from wardwatch.alerting.registry.registry import DeviceSpec, Registry, RegistryError
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.settings import AlertingConfig, config_from_mapping

if TYPE_CHECKING:
    from wardwatch.alerting.service import AlarmService

from wardwatch.core.schema import (
    AlarmCategory,
    AlarmState,
    DataGap,
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    Priority,
    Vitals,
)

FIXTURE_ACTOR: Final = "test-fixture"

Kit = tuple[str, Mapping[str, DeviceRole | str]]
"""(gateway, {device id: role}) of one patient."""


def bench_config(database: Path, ward: str = "ward-a") -> AlertingConfig:
    """A service for benchmarks: ``ward`` paging one MQTT destination, no API, its database at ``database``."""
    return config_from_mapping(
        {
            "database": str(database),
            "api": {"enabled": False},
            "wards": {
                ward: {
                    "destinations": {"desk": {"channels": [{"type": "mqtt"}]}},
                    "escalation": {"high": {"steps": [{"destination": "desk", "timeout_s": 60}]}},
                    "failsafe": "desk",
                }
            },
        }
    )


async def enrol_in_database(config: AlertingConfig, kits: Mapping[str, Kit], *, capacity: int = 64) -> None:
    """:func:`admit_with_kit` for each ``patient: (gateway, devices)``, written to ``config``'s database.

    For tests that run the service as a child process: call it before the service starts.
    """
    from wardwatch.alerting.app import open_store
    from wardwatch.alerting.service import AlarmService

    with open_store(config) as store:
        registry = AlarmService(config, store).registry  # not started: its registry writes the tables
        for patient, (gateway, devices) in kits.items():
            await admit_with_kit(registry, patient, gateway, devices, capacity=capacity)


async def admit_with_kit(
    registry: Registry,
    patient: str,
    gateway: str,
    devices: Mapping[str, DeviceRole | str],
    *,
    ward: str | None = None,
    capacity: int = 64,  # tests bind many patients through one gateway unless they test capacity
    since: int | None = 0,
    names: Mapping[str, str] | None = None,
) -> None:
    """Admit ``patient`` (that id) and bind ``devices`` (id -> role) through ``gateway``, registering it if new.

    For tests whose vitals would otherwise be refused by the provenance check. ``since`` defaults to 0
    (bound since the epoch), so samples stamped at fixed past times are accepted; ``None`` binds from now.
    Calling it again for an admitted patient only binds the devices not yet bound. ``names`` (device id ->
    advertised name) lets a real gateway find the devices by the kit it reads over MQTT.
    """
    ward = ward or registry.wards[0]
    if gateway not in {row["gateway"] for row in registry.gateways(ward)}:
        await registry.register_gateway(ward, gateway, "test home", capacity, FIXTURE_ACTOR, "test fixture")
    if not registry.issued(patient):
        await registry.admit(ward, FIXTURE_ACTOR, "test fixture", patient=patient)
    bound = {binding["device"] for binding in registry.bindings(patient) if binding["until"] is None}
    specs = [
        DeviceSpec(id=device, role=DeviceRole(role), name=(names or {}).get(device))
        for device, role in devices.items()
        if device not in bound
    ]
    if specs:
        try:
            await registry.assign_kit(patient, gateway, specs, FIXTURE_ACTOR, "test fixture", since=since)
        except RegistryError as exc:
            raise AssertionError(f"test fixture could not bind {list(devices)} to {patient}: {exc.message}") from None


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver accepted."""

    path: str
    idempotency_key: str | None
    body: dict[str, Any]
    received_ns: int  # time.time_ns() at arrival
    duplicate: bool


@dataclass
class WebhookReceiver:
    """A webhook endpoint on ``127.0.0.1``; ``url(path)`` gives its address. An async context manager."""

    fail_status: int | None = None  # answer every request with this status while set
    requests: list[Received] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _keys: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/page") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time_ns()
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="failing on purpose")
        body: dict[str, Any] = msgspec.json.decode(await request.read())
        key = request.headers.get("Idempotency-Key")
        duplicate = key is not None and key in self._keys
        if key is not None:
            self._keys.add(key)
        self.requests.append(Received(request.path, key, body, now, duplicate))
        self._arrived.set()
        return web.json_response({"status": "duplicate" if duplicate else "accepted"}, status=202)

    def unique(self, path: str | None = None) -> list[Received]:
        """Accepted requests that were not duplicates (optionally only to ``path``)."""
        return [r for r in self.requests if not r.duplicate and (path is None or r.path == path)]


class ScriptedSource:
    """A :class:`~wardwatch.alerting.service.ConditionSource` with a fixed threshold rule, for tests.

    ``spo2_low`` raises when an SpO2 sample is below ``limit`` and clears when one is at or above
    it; no delay, no hysteresis (the real engine has both). ``pushed`` collects condition changes
    injected with :meth:`push`, returned at the next call.
    """

    def __init__(self, limit: float = 90.0) -> None:
        self.limit = limit
        self._active: set[tuple[str, str]] = set()
        self._pending: list[ConditionChange] = []
        self.rules: RuleSet | None = None

    def push(self, change: ConditionChange) -> None:
        """Emit ``change`` at the next call."""
        self._pending.append(change)

    def _take(self) -> list[ConditionChange]:
        pending, self._pending = self._pending, []
        return pending

    def on_vitals(self, message: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Threshold on SpO2."""
        from wardwatch.core.schema import AlarmCategory, Priority, Signal

        changes = self._take()
        if message.signal != Signal.SPO2:
            return changes
        for sample in message.samples:
            if sample.v is None:
                continue
            key = (ward, message.patient)
            low = sample.v < self.limit
            if low != (key in self._active):
                if low:
                    self._active.add(key)
                else:
                    self._active.discard(key)
                changes.append(
                    ConditionChange(
                        patient=message.patient,
                        ward=ward,
                        rule="spo2_low",
                        category=AlarmCategory.PHYSIOLOGICAL,
                        priority=Priority.HIGH,
                        active=low,
                        t=sample.t,
                        value=sample.v,
                        text=f"SpO2 {sample.v:g} % below {self.limit:g} %" if low else "",
                    )
                )
        return changes

    def on_device_status(self, message: DeviceStatus, ward: str) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_data_gap(self, message: DataGap, ward: str) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_gateway_status(self, msg: GatewayStatus) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def set_rules(self, rules: RuleSet) -> None:
        """Record the rule set pushed by the service (thresholds changed through the API)."""
        self.rules = rules


class DelegatingSource:
    """A :class:`ConditionSource` that hands every call to ``engine``; a test subclasses it and overrides only the
    calls it records, slows or breaks."""

    def __init__(self, engine: ConditionSource) -> None:
        self.engine = engine

    def on_vitals(self, msg: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.on_vitals(msg, ward)

    def on_device_status(self, msg: DeviceStatus, ward: str) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.on_device_status(msg, ward)

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.on_gateway_availability(ward, gateway, online, t)

    def on_data_gap(self, msg: DataGap, ward: str) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.on_data_gap(msg, ward)

    def on_gateway_status(self, msg: GatewayStatus) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.on_gateway_status(msg)

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        """Feed the engine."""
        return self.engine.tick(now_ms)

    def set_rules(self, rules: RuleSet) -> None:
        """Thresholds changed through the API: pass them on."""
        self.engine.set_rules(rules)


@contextlib.asynccontextmanager
async def running_alerting(
    config: AlertingConfig, source: ConditionSource | None = None, *, timeout: float = 20.0
) -> AsyncIterator[tuple[AlarmService, int | None]]:
    """The whole service in-process (``app.run``) until the block ends; yields the service and its API port (None
    when ``[api] enabled = false``).

    A service that fails to start raises what stopped it; one that stops by itself inside the block fails the test.
    """
    from wardwatch.alerting.app import run

    started: asyncio.Future[tuple[AlarmService, int | None]] = asyncio.get_running_loop().create_future()

    def ready(service: AlarmService, port: int | None) -> None:
        started.set_result((service, port))

    task = asyncio.create_task(run(config, source=source, ready=ready))
    try:
        waiting: list[asyncio.Future[Any]] = [task, started]
        done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises what stopped the service
        assert started in done, "the service did not start"
        yield started.result()
        assert not task.done(), "the service stopped by itself"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def running_service(
    config: AlertingConfig, source: ConditionSource | None = None, *, timeout: float = 20.0
) -> AsyncIterator[tuple[AlarmService, int]]:
    """:func:`running_alerting` with its API: yields the service and the API's port."""
    async with running_alerting(config, source, timeout=timeout) as (service, port):
        assert port is not None, "the service runs without its API: give it [api] port = 0"
        yield service, port


def open_alarm_record(ward: str, patient: str, t: int, *, alarm_id: str | None = None) -> AlarmRecord:
    """An active medium ``spo2_low`` alarm of ``patient`` started at ``t`` (boards, benchmarks, tests)."""
    return AlarmRecord(
        alarm_id=alarm_id or f"a-{patient}",
        dedup_key=f"{ward}/{patient}/spo2_low",
        patient=patient,
        ward=ward,
        rule="spo2_low",
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=Priority.MEDIUM,
        state=AlarmState.ACTIVE,
        started=t,
        updated=t,
        value=86.0,
        text="SpO2 86 % below 90 %",
    )
