"""Spot-check wearables end to end: a BP cuff and a thermometer on bumble -> the real gateway -> mosquitto
-> ingest (InfluxDB) and alerting (the engine, paging to a webhook).

The devices sleep between readings, wake to deliver what they stored and say goodbye; the gateway
catches each short window. Readings taken while the gateway was down arrive with the device's own
timestamps. A hypotensive reading pages; a lower one taken with body movement does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.gateway.harness import FAST_BLE, READY_TIMEOUT, paging_alerting_config, running_gateway

from wardwatch.alerting.testing import WebhookReceiver, admit_with_kit, running_alerting
from wardwatch.core.config import MqttSettings
from wardwatch.core.schema import DeviceRole, Quality, Signal
from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.firmware_sim.spot_check import BloodPressureCuff, Thermometer
from wardwatch.gateway.ble import Radio
from wardwatch.gateway.config import BleSettings, DeviceBinding, GatewayConfig, QueueSettings
from wardwatch.ingest.testing import DATABASE, ingest_config, running_ingest

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
WARD = "ward-a"
PATIENT = "p-7"
BLE = msgspec.structs.replace(FAST_BLE, scan_window_s=0.5, seen_ttl_s=2.0)


def gateway_config(mosquitto: Mosquitto, tmp_path: Path, devices: list[DeviceBinding]) -> GatewayConfig:
    return GatewayConfig(
        gateway_id="gw-07",
        ward=WARD,
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False, keepalive_s=5),
        devices=tuple(devices),
        ble=BLE,
        queue=QueueSettings(path=tmp_path / "queue.sqlite3", commit_interval_s=0.05),
        status_interval_s=0.5,
    )


async def influx_values(influxd: Influxd, signal: Signal) -> list[tuple[int, float]]:
    """(ms, value) of the patient's stored ``signal`` points, oldest first."""
    where = f"\"signal\" = '{signal}' AND \"patient\" = '{PATIENT}'"
    query = f'SELECT "value" FROM "raw"."vitals" WHERE {where}'  # noqa: S608 (test code, trusted names)
    try:
        result = await influxd.query(query, db=DATABASE)
    except Exception:  # database not made yet
        return []
    series = result["results"][0].get("series")
    return [(row[0] // 1_000_000, row[1]) for row in series[0]["values"]] if series else []


def local_ms(moment: dt.datetime) -> int:
    return int(moment.astimezone().timestamp() * 1000)


async def test_cuff_and_thermometer_end_to_end(tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    radio = SimRadio()
    cuff_spec = DeviceSpec(kind=DeviceKind.BLOOD_PRESSURE_CUFF, id="bpc-7", storage_capacity=50)
    thermo_spec = DeviceSpec(kind=DeviceKind.THERMOMETER, id="thm-7")
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        alerting = paging_alerting_config(tmp_path, mosquitto, receiver)
        cuff = await stack.enter_async_context(BloodPressureCuff(cuff_spec, radio, advertising_interval_ms=50))
        thermo = await stack.enter_async_context(Thermometer(thermo_spec, radio, advertising_interval_ms=50))

        # the gateway is down: the patient takes readings anyway; the devices keep them
        now = dt.datetime.now().replace(microsecond=0)
        stored_at = [now - dt.timedelta(hours=3 - i) for i in range(3)]
        for i, at in enumerate(stored_at):
            await cuff.take_reading(122 + i, 78, 70, at=at)
        await thermo.take_reading(36.8, at=stored_at[0])
        assert len(cuff.stored) == 3
        assert cuff.is_advertising

        central = await stack.enter_async_context(BumbleCentral(radio))
        selected = bleak_arguments(central)
        await stack.enter_async_context(running_ingest(ingest_config(mosquitto, influxd)))
        service, _ = await stack.enter_async_context(running_alerting(alerting, timeout=READY_TIMEOUT))
        # admitted with the cuff and thermometer as the kit (the registry publishes it to ingest and the gateway)
        await admit_with_kit(
            service.registry,
            PATIENT,
            "gw-07",
            {"bpc-7": "blood_pressure_cuff", "thm-7": "thermometer"},
            names={"bpc-7": cuff.name, "thm-7": thermo.name},
        )
        bindings = [
            DeviceBinding(id="bpc-7", patient=PATIENT, role=DeviceRole.BLOOD_PRESSURE_CUFF, name=cuff.name),
            DeviceBinding(id="thm-7", patient=PATIENT, role=DeviceRole.THERMOMETER, name=thermo.name),
        ]
        await stack.enter_async_context(running_gateway(gateway_config(mosquitto, tmp_path, bindings), selected))

        # the gateway comes up, catches the short windows and takes every stored reading
        await cuff.wait_delivered(TIMEOUT)
        await thermo.wait_delivered(TIMEOUT)
        await wait_for(lambda: not cuff.is_connected, TIMEOUT, what="the cuff let go / went back to sleep")

        async def stored_systolic() -> bool:
            return len(await influx_values(influxd, Signal.SYSTOLIC_BP)) >= 3

        await wait_for(stored_systolic, TIMEOUT, what="stored systolic readings in InfluxDB")
        systolic = await influx_values(influxd, Signal.SYSTOLIC_BP)
        assert systolic == [(local_ms(at), 122.0 + i) for i, at in enumerate(stored_at)]
        temperatures = await influx_values(influxd, Signal.BODY_TEMPERATURE)
        assert temperatures == [(local_ms(stored_at[0]), 36.8)]

        # live: a very low reading with body movement (no page), then a hypotensive valid one (page)
        await cuff.take_reading(70, 40, 110, movement=True)
        await cuff.wait_delivered(TIMEOUT)
        await cuff.take_reading(84, 50, 96)
        await cuff.wait_delivered(TIMEOUT)
        await thermo.take_reading(37.1)
        await thermo.wait_delivered(TIMEOUT)

        def bp_pages() -> list[dict[str, Any]]:
            return [r.body for r in receiver.unique() if "bp_low" in r.body["dedup_key"]]

        await wait_for(lambda: bool(bp_pages()), TIMEOUT, what="a hypotension page")
        (page,) = bp_pages()
        assert page["patient"] == PATIENT
        assert "84 mmHg" in page["text"]
        assert all("70 mmHg" not in r.body["text"] for r in receiver.unique())

        async def all_stored() -> bool:
            return (
                len(await influx_values(influxd, Signal.SYSTOLIC_BP)) == 5
                and len(await influx_values(influxd, Signal.BODY_TEMPERATURE)) == 2
            )

        await wait_for(all_stored, TIMEOUT, what="every reading in InfluxDB")
        assert cuff.connections_total >= 3  # one short window per wake-up
        assert not [r for r in receiver.unique() if "temp_" in r.body["dedup_key"] or "silent" in r.body["dedup_key"]]


async def test_a_sleeping_spot_check_device_does_not_trip_the_scan_stall_watchdog() -> None:
    """Scans that hear nothing while only a sleeping cuff is wanted must not power-cycle the adapter
    (which would drop every connected strap and oximeter); a silent adapter while a strap is wanted does."""
    recoveries: list[float] = []

    async def recover() -> None:
        recoveries.append(asyncio.get_running_loop().time())

    settings = BleSettings(scan_window_s=0.05, scan_stall_scans=2, operation_timeout_s=3.0)
    async with BumbleCentral(SimRadio()) as central:
        selected = bleak_arguments(central)
        radio = Radio(
            settings, recover=recover, client_kwargs=selected.client_kwargs, scanner_kwargs=selected.scanner_kwargs
        )
        cuff = DeviceBinding(id="bpc-1", patient=PATIENT, role=DeviceRole.BLOOD_PRESSURE_CUFF, name="WW-BPC-bpc-1")
        strap = DeviceBinding(id="hrs-1", patient=PATIENT, role=DeviceRole.HEART_RATE_STRAP, name="WW-HRS-hrs-1")
        for _ in range(4):
            assert await radio.find(cuff) is None
        assert (radio.scans, radio.recoveries, recoveries) == (4, 0, [])
        for _ in range(2):
            assert await radio.find(strap) is None
        assert radio.recoveries == len(recoveries) == 1


async def test_many_stored_readings_from_a_cuff_with_an_unset_clock(
    tmp_path: Path, mosquitto: Mosquitto, collect: Any
) -> None:
    """40 readings stored (capacity 30: the oldest 10 overwritten) on a cuff whose clock was never set: the 30
    kept arrive in order, stamped with the gateway's time and flagged device_clock_unset, with no gap in seq;
    the gateway sets the clock, and the next reading carries the device's (now right) time."""
    radio = SimRadio()
    spec = DeviceSpec(kind=DeviceKind.BLOOD_PRESSURE_CUFF, id="bpc-8", clock="unset", storage_capacity=30)
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False, keepalive_s=5)
    async with contextlib.AsyncExitStack() as stack:
        cuff = await stack.enter_async_context(BloodPressureCuff(spec, radio, advertising_interval_ms=50))
        for i in range(40):
            await cuff.take_reading(100 + i, 70, 60)
        assert (len(cuff.stored), cuff.overwritten_total) == (30, 10)
        central = await stack.enter_async_context(BumbleCentral(radio))
        selected = bleak_arguments(central)
        sub = await stack.enter_async_context(collect(settings, "wardwatch/v1/vitals/#"))
        binding = DeviceBinding(id="bpc-8", patient=PATIENT, role=DeviceRole.BLOOD_PRESSURE_CUFF, name=cuff.name)
        gateway = await stack.enter_async_context(
            running_gateway(gateway_config(mosquitto, tmp_path, [binding]), selected)
        )
        await cuff.wait_delivered(TIMEOUT)

        def systolic() -> list[Any]:
            return [s for v in sub.vitals() if v.signal == Signal.SYSTOLIC_BP for s in v.samples]

        await wait_for(lambda: len(systolic()) >= 30, TIMEOUT, what="30 systolic readings")
        readings = systolic()
        assert [s.v for s in readings] == [float(110 + i) for i in range(30)]
        assert {s.q for s in readings} == {(Quality.DEVICE_CLOCK_UNSET,)}
        times = [s.t for s in readings]
        assert times == sorted(set(times))  # gateway time, strictly increasing per series
        seqs = sorted({v.seq for v in sub.vitals()})
        assert seqs == list(range(len(seqs)))

        # the gateway set the cuff's clock (Current Time) when it connected: new readings carry the right time
        assert cuff.clock_writes >= 1
        assert gateway.sessions[0].clock_writes >= 1
        taken = await cuff.take_reading(150, 81, 66)
        await cuff.wait_delivered(TIMEOUT)
        await wait_for(lambda: len(systolic()) >= 31, TIMEOUT, what="the reading after the clock was set")
        (latest,) = [s for s in systolic() if s.v == 150.0]
        assert latest.q == (Quality.DEVICE_CLOCK,)
        assert taken.timestamp is not None
        assert latest.t == local_ms(taken.timestamp)
        assert abs(latest.t - time.time() * 1000) < 60_000


async def test_a_hypotensive_reading_stored_hours_ago_is_a_late_notice_not_a_hypotension_page(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The cuff kept a reading of 84 mmHg taken 3 h ago while the gateway was down: when it arrives, alerting
    (by its own clock) sends the low-priority late-reading notice, never the hypotension page of "now". The
    reading arrives within alerting's first second: its clock must be set before the first message (found so)."""
    radio = SimRadio()
    spec = DeviceSpec(kind=DeviceKind.BLOOD_PRESSURE_CUFF, id="bpc-9")
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        alerting = paging_alerting_config(tmp_path, mosquitto, receiver)
        cuff = await stack.enter_async_context(BloodPressureCuff(spec, radio, advertising_interval_ms=50))
        taken = dt.datetime.now().replace(microsecond=0) - dt.timedelta(hours=3)
        await cuff.take_reading(84, 52, 96, at=taken)
        central = await stack.enter_async_context(BumbleCentral(radio))
        selected = bleak_arguments(central)
        service, _ = await stack.enter_async_context(running_alerting(alerting, timeout=READY_TIMEOUT))
        kit = {"bpc-9": "blood_pressure_cuff"}
        await admit_with_kit(service.registry, PATIENT, "gw-07", kit, names={"bpc-9": cuff.name})
        binding = DeviceBinding(id="bpc-9", patient=PATIENT, role=DeviceRole.BLOOD_PRESSURE_CUFF, name=cuff.name)
        await stack.enter_async_context(running_gateway(gateway_config(mosquitto, tmp_path, [binding]), selected))
        await cuff.wait_delivered(TIMEOUT)

        def late_pages() -> list[dict[str, Any]]:
            return [r.body for r in receiver.unique() if r.body["dedup_key"].endswith("/bp_low_late")]

        await wait_for(lambda: bool(late_pages()), TIMEOUT, what="the late-reading notice")
        (notice,) = late_pages()
        assert notice["priority"] == "low"
        assert "late reading: systolic BP 84 mmHg" in notice["text"]
        assert "taken 3 h 00 min ago" in notice["text"]
        assert [r.body["dedup_key"] for r in receiver.unique()] == [notice["dedup_key"]]  # no bp_low page
