"""A full adapter says so (issue #18): more bound devices than connection slots, end to end.

Simulated wearables (bumble, through the simulator's bleak backend) -> an unmodified gateway whose
adapter has 2 slots for 4 bound devices -> real mosquitto. The gateway lists the 2 devices waiting
for a slot in its status message and metrics and logs the shortage once; the messages it published,
fed to the real alarm engine and alarm manager, make exactly one operator alarm ("gateway gw-01 over
capacity: 2 devices not connected") and no per-device "no data" alarm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.gateway.harness import FAST_BLE, running_gateway

from wardwatch.alerting.capacity import OVER_CAPACITY
from wardwatch.alerting.engine import Engine
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import AlarmManager, SendPage
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.settings import WardConfig
from wardwatch.core import gatt
from wardwatch.core.config import MqttSettings
from wardwatch.core.schema import (
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    Vitals,
    VitalsBatch,
    WireMessage,
    decode,
)
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.devices import HeartRateStrap, PulseOximeter, SimulatedDevice, make_device
from wardwatch.firmware_sim.model import HeartRateReading, OximeterReading
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import DeviceBinding, GatewayConfig, QueueSettings
from wardwatch.gateway.metrics import gateway_registry

pytestmark = pytest.mark.slow

TIMEOUT = 20.0
WARD = "ward-a"
GATEWAY = "gw-01"
SLOTS = 2
SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., Any]  # tests/gateway/conftest.py: collecting()

BLE = msgspec.structs.replace(FAST_BLE, max_connections=SLOTS)


def spec(n: int) -> DeviceSpec:
    strap = n % 2 == 0
    kind = DeviceKind.HEART_RATE_STRAP if strap else DeviceKind.PULSE_OXIMETER
    prefix = "hrs" if strap else "plx"
    return DeviceSpec(kind=kind, id=f"{prefix}-{n // 2}", name=f"{prefix.upper()} {n}", serial=f"SN{n:04d}")


def binding(device: SimulatedDevice) -> DeviceBinding:
    strap = device.spec.kind == DeviceKind.HEART_RATE_STRAP
    role = DeviceRole.HEART_RATE_STRAP if strap else DeviceRole.PULSE_OXIMETER
    return DeviceBinding(id=device.spec.id, patient=f"p-{device.spec.id[-1]}", role=role, address=device.address)


async def send(device: SimulatedDevice, i: int) -> None:
    if isinstance(device, HeartRateStrap):
        await device.send(HeartRateReading(index=i, t_ms=0, heart_rate=72, contact=True, rr_ticks=(850,), battery=90))
    else:
        assert isinstance(device, PulseOximeter)
        await device.send(
            OximeterReading(
                index=i,
                t_ms=0,
                spo2=97,
                pulse_rate=72,
                pai_tenths=40,
                measurement_status=gatt.MeasurementStatus(0),
                device_sensor_status=gatt.DeviceSensorStatus(0),
                battery=90,
            )
        )


@asynccontextmanager
async def full_gateway(settings: MqttSettings, tmp_path: Path) -> AsyncIterator[tuple[Gateway, list[SimulatedDevice]]]:
    """Four simulated devices (two patients) bound to a gateway with two connection slots."""
    radio = SimRadio()
    async with contextlib.AsyncExitStack() as stack:
        devices = [
            await stack.enter_async_context(make_device(spec(n), radio, advertising_interval_ms=50)) for n in range(4)
        ]
        central = await stack.enter_async_context(BumbleCentral(radio))
        selected = bleak_arguments(central)
        config = GatewayConfig(
            gateway_id=GATEWAY,
            ward=WARD,
            mqtt=settings,
            devices=tuple(binding(d) for d in devices),
            ble=BLE,
            queue=QueueSettings(path=tmp_path / "queue.sqlite3", commit_interval_s=0.05),
            status_interval_s=0.5,
        )
        async with running_gateway(config, selected, capacity_settle_s=3.0) as gateway:
            yield gateway, devices


async def stream(gateway: Gateway, devices: list[SimulatedDevice], stop: asyncio.Event) -> None:
    """Connected devices send a reading every 0.2 s (the waiting ones have no central to send to)."""
    i = 0
    by_id = {d.spec.id: d for d in devices}
    while not stop.is_set():
        for session in gateway.sessions:
            if session.connected:
                await send(by_id[session.binding.id], i)
        i += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await stop.wait()


def metrics(gateway: Gateway) -> dict[str, float]:
    text = generate_latest(gateway_registry(gateway)).decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def received(sub: Any) -> list[WireMessage]:
    return [decode(m.payload) for m in sub.messages if m.payload.startswith(b"{")]


def replay(messages: list[WireMessage], rules: RuleSet) -> list[ConditionChange]:
    """The published messages through the alarm engine, in arrival order, ticking at each message's time."""
    engine = Engine(rules)
    out: list[ConditionChange] = []
    for message in messages:
        if isinstance(message, GatewayStatus):
            t = message.t
            out += engine.on_gateway_status(message)
        elif isinstance(message, DeviceStatus):
            t = message.t
            out += engine.on_device_status(message, WARD)
        elif isinstance(message, Vitals | VitalsBatch):
            for vitals in message.vitals() if isinstance(message, VitalsBatch) else [message]:
                t = vitals.samples[-1].t
                out += engine.on_vitals(vitals, WARD)
        else:
            continue
        out += engine.tick(t)
    return out


async def test_a_full_adapter_reports_waiting_devices_logs_once_and_makes_one_operator_alarm(
    mosquitto: Mosquitto,
    tmp_path: Path,
    settings_for: SettingsFor,
    collect: Collect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wardwatch.gateway")
    settings = settings_for(mosquitto)
    stop = asyncio.Event()
    async with (
        collect(settings, "wardwatch/v1/#") as sub,
        full_gateway(settings, tmp_path) as (gateway, devices),
    ):
        streaming = asyncio.create_task(stream(gateway, devices, stop))
        await wait_for(
            lambda: len(gateway.waiting_for_slot()) == 2 and sum(s.connected for s in gateway.sessions) == SLOTS,
            TIMEOUT,
            what="two devices connected, two waiting for a slot",
        )
        waiting = gateway.waiting_for_slot()

        def status_lists_them() -> bool:
            return any(isinstance(m, GatewayStatus) and m.waiting_for_slot == waiting for m in received(sub))

        await wait_for(status_lists_them, TIMEOUT, what="a gateway status listing the waiting devices")

        def logged() -> list[str]:
            return [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]

        await wait_for(lambda: bool(logged()), TIMEOUT, what="the capacity log line")
        values = metrics(gateway)

        def listed_for_a_while() -> bool:  # 16 status periods (8 s): past the 5 s silence threshold below
            return sum(isinstance(m, GatewayStatus) and m.waiting_for_slot == waiting for m in received(sub)) >= 16

        await wait_for(listed_for_a_while, TIMEOUT, what="sixteen statuses listing the waiting devices")
        stop.set()
        await streaming
        messages = received(sub)
        lines = logged()

        # a connected device leaves: its slot goes to one that was waiting
        leaver = next(d for d in devices if d.spec.id not in waiting)
        await leaver.go_out_of_range()
        await wait_for(
            lambda: (
                len(gateway.waiting_for_slot()) == 1
                and any(s.connected for s in gateway.sessions if s.binding.id in waiting)
            ),
            TIMEOUT,
            what="a waiting device connected in the freed slot",
        )

    # the status message
    status = next(m for m in messages if isinstance(m, GatewayStatus) and m.waiting_for_slot == waiting)
    assert status.connection_slots == SLOTS
    links = {link.device: link for link in status.devices}
    assert {d for d, link in links.items() if link.never_connected} == set(waiting)
    assert all(not links[d].connected for d in waiting)
    # the device statuses of the waiting devices say why they send nothing
    reasons = {m.device: m.reason for m in messages if isinstance(m, DeviceStatus) and m.device in waiting}
    assert reasons == dict.fromkeys(waiting, "waiting_for_slot")
    # the metrics
    assert values["wardwatch_gateway_connection_slots"] == SLOTS
    assert values["wardwatch_gateway_devices_waiting_for_slot"] == 2
    assert values["wardwatch_gateway_devices_never_connected"] == 2
    assert values["wardwatch_gateway_devices_connected"] == SLOTS
    # the log line: once, with the reason
    assert len(lines) == 1, lines
    assert lines[0].startswith("2 bound devices cannot connect: all 2 connection slots are in use")
    assert all(device in lines[0] for device in waiting)

    # what alerting makes of it: one operator alarm, no device "no data" (silence threshold cut to its
    # 5 s minimum so that the waiting devices were silent longer than it during the run)
    changes = replay(messages, RuleSet({"device_silent_s": 5.0}))
    raised = [c for c in changes if c.active]
    assert [(c.patient, c.rule) for c in raised] == [(GATEWAY, OVER_CAPACITY)], raised
    assert raised[0].text.startswith("gateway gw-01 over capacity: 2 devices not connected")
    ward = msgspec.convert(
        {
            "destinations": {n: {"channels": [{"type": "mqtt"}]} for n in ("nurse", "desk", "operator")},
            "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": 60}]}},
            "failsafe": "desk",
            "operator": "operator",
        },
        WardConfig,
    )
    manager = AlarmManager({WARD: ward_policy(WARD, ward)})
    pages = [a.page for c in changes for a in manager.on_condition(c, c.t) if isinstance(a, SendPage)]
    assert [(p.destination, p.patient) for p in pages] == [("operator", GATEWAY)]
