"""The cuff and thermometer scenario files, played on bumble through the real gateway, mosquitto and alerting.

``hypotension`` and ``fever`` (time-compressed: every time divided by ``COMPRESS``) runs its cuff and thermometer as
simulated BLE peripherals (the runner's ``play``: readings on their schedule, kept on the device while
the gateway is away); the unmodified gateway catches each short window and alerting pages through a
webhook. The hypotension episode pages ``bp_low`` and the fever ``temp_high``; the low reading taken with
body movement, the loose-cuff one and the low-grade temperature do not; nothing else pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Final

import msgspec
import pytest
from tests.gateway.harness import FAST_BLE, READY_TIMEOUT, paging_alerting_config, running_gateway

from wardwatch.alerting.testing import WebhookReceiver, admit_with_kit, running_alerting
from wardwatch.core.config import MqttSettings
from wardwatch.core.schema import DeviceRole
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.groundtruth import ground_truth
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.runner import running_scenario
from wardwatch.firmware_sim.scenario import Scenario, load_scenario
from wardwatch.firmware_sim.spot_check import SpotCheckDevice
from wardwatch.firmware_sim.spot_track import SpotTrack
from wardwatch.gateway.config import DeviceBinding, GatewayConfig, QueueSettings

pytestmark = pytest.mark.slow

COMPRESS: Final = 40.0  # scenario times divided by this: a cuff reading every 30 s instead of 20 min
SPEED: Final = 10.0  # and played 10 times faster than real time: a reading every 3 s
TIMEOUT: Final = 30.0
GATEWAY: Final = "gw-spot"
BLE: Final = msgspec.structs.replace(FAST_BLE, scan_window_s=0.3, seen_ttl_s=2.0, backoff_max_s=0.3)


def compressed(scenario: Scenario, factor: float) -> Scenario:
    """The scenario with every time (schedule, events, duration) divided by ``factor``."""
    patients = []
    for patient in scenario.patients:
        devices = [
            msgspec.structs.replace(
                d, spot_check_every=d.spot_check_every / factor, first_reading=d.first_reading / factor
            )
            for d in patient.devices
        ]
        events = [
            msgspec.structs.replace(
                e, at=e.at / factor, duration=e.duration / factor, onset=e.onset / factor, recovery=e.recovery / factor
            )
            for e in patient.events
        ]
        patients.append(msgspec.structs.replace(patient, devices=devices, events=events, gateway=GATEWAY))
    return msgspec.structs.replace(scenario, patients=patients, duration=scenario.duration / factor, ward="ward-a")


@pytest.mark.parametrize(("name", "rule"), [("hypotension", "bp_low"), ("fever", "temp_high")])
async def test_the_scenario_pages_its_episode_once_and_no_artefact_or_low_grade_reading_does(
    tmp_path: Path, mosquitto: Mosquitto, name: str, rule: str
) -> None:
    scenario = compressed(load_scenario(name), COMPRESS)
    (patient,) = scenario.patients
    radio = SimRadio()
    go = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        receiver = await stack.enter_async_context(WebhookReceiver())
        live = await stack.enter_async_context(
            running_scenario(scenario, radio, speed=SPEED, go=go, advertising_interval_ms=50, start_delay=0.5)
        )
        spot = {t.device.id: t for t in live.tracks if isinstance(t, SpotTrack)}
        cuff = next(t for t in spot.values() if t.device.kind == "blood_pressure_cuff")
        moved = [r.values[0] for r in cuff.readings if r.movement]
        if name == "hypotension":
            assert len(moved) == 1
            assert moved[0] < 90  # low enough to page, were it not flagged

        alerting = paging_alerting_config(tmp_path, mosquitto, receiver)
        service, _ = await stack.enter_async_context(running_alerting(alerting, timeout=READY_TIMEOUT))
        devices = {did: str(t.device.kind) for did, t in spot.items()}
        names = {did: live.devices[did].name for did in spot}
        await admit_with_kit(service.registry, patient.id, GATEWAY, devices, names=names)
        central = await stack.enter_async_context(BumbleCentral(radio))
        selected = bleak_arguments(central)
        bindings = tuple(
            DeviceBinding(id=did, patient=patient.id, role=DeviceRole(kind), name=names[did])
            for did, kind in devices.items()
        )
        config = GatewayConfig(
            gateway_id=GATEWAY,
            ward="ward-a",
            mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False, keepalive_s=5),
            devices=bindings,
            ble=BLE,
            queue=QueueSettings(path=tmp_path / "queue.sqlite3", commit_interval_s=0.05),
            status_interval_s=0.5,
        )
        await stack.enter_async_context(running_gateway(config, selected))
        go.set()
        await asyncio.wait_for(live.done.wait(), scenario.duration / SPEED + TIMEOUT)
        for did in spot:
            device = live.devices[did]
            assert isinstance(device, SpotCheckDevice)
            await device.wait_delivered(TIMEOUT)
            assert device.delivered_total == len(spot[did].readings)  # stored ones too: none lost

        key = f"ward-a/{patient.id}/{rule}"
        await wait_for(lambda: any(r.body["dedup_key"] == key for r in receiver.unique()), TIMEOUT, what=f"{rule} page")
        truth = ground_truth(scenario, live.tracks)
        (episode,) = [e for e in truth if e.should_page]
        assert episode.event == name
        texts = [r.body["text"] for r in receiver.unique()]
        assert all(f"{value:.0f} mmHg" not in text for value in moved for text in texts)  # movement paged nobody
        assert {r.body["dedup_key"] for r in receiver.unique()} == {key}  # and nothing else paged
