"""Plain bleak against simulated devices over real ATT (bumble backend, in-process link)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from wardwatch.core import gatt
from wardwatch.core.errors import GattDecodeError
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import (
    BumbleBleakClient,
    BumbleBleakScanner,
    BumbleCentral,
    bleak_arguments,
)
from wardwatch.firmware_sim.devices import HeartRateStrap, PulseOximeter
from wardwatch.firmware_sim.model import OximeterTrack, StrapTrack, simulate
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.runner import running_scenario
from wardwatch.firmware_sim.scenario import Scenario, load_scenario, scenario_from_dict

U = gatt.sig_uuid


@pytest.fixture
def radio() -> SimRadio:
    return SimRadio()


@pytest.fixture
async def central(radio: SimRadio) -> AsyncIterator[BumbleCentral]:
    async with BumbleCentral(radio) as c, asyncio.timeout(60):
        yield c


def scanner_of(central: BumbleCentral) -> dict[str, Any]:
    """bleak's own ``backend=`` selection of the bumble scanner on ``central``."""
    return bleak_arguments(central).scanner_kwargs


def client_of(central: BumbleCentral) -> dict[str, Any]:
    """bleak's own ``backend=`` selection of the bumble client on ``central``."""
    return bleak_arguments(central).client_kwargs


def _scenario() -> Scenario:
    return load_scenario("out-of-range")


async def test_strap_notifications_reads_and_out_of_range(radio: SimRadio, central: BumbleCentral) -> None:
    scenario = _scenario()
    tracks = simulate(scenario)
    track = next(t for t in tracks if isinstance(t, StrapTrack))
    async with HeartRateStrap(track.device, radio) as strap:
        found = await BleakScanner.find_device_by_filter(
            lambda d, adv: adv.local_name == strap.name,
            timeout=5,
            service_uuids=[U(gatt.HEART_RATE_SERVICE)],
            **scanner_of(central),
        )
        assert found is not None
        assert found.address == strap.address
        disconnected = asyncio.Event()
        received: list[gatt.HeartRateMeasurement] = []

        def on_hr(_c: BleakGATTCharacteristic, data: bytearray) -> None:
            received.append(gatt.decode_heart_rate_measurement(data))

        async with BleakClient(
            **client_of(central),
            address_or_ble_device=found,
            disconnected_callback=lambda _c: disconnected.set(),
            timeout=5,
        ) as client:
            assert gatt.decode_battery_level(await client.read_gatt_char(U(gatt.BATTERY_LEVEL))).percent == 95
            info = {
                u: gatt.decode_device_information_string(await client.read_gatt_char(U(u)))
                for u in (
                    gatt.MANUFACTURER_NAME_STRING,
                    gatt.MODEL_NUMBER_STRING,
                    gatt.SERIAL_NUMBER_STRING,
                    gatt.FIRMWARE_REVISION_STRING,
                )
            }
            assert info[gatt.MANUFACTURER_NAME_STRING] == "wardwatch-sim"
            assert info[gatt.SERIAL_NUMBER_STRING] == track.device.id
            location = await client.read_gatt_char(U(gatt.BODY_SENSOR_LOCATION))
            assert gatt.decode_body_sensor_location(location) == gatt.BodySensorLocation.chest
            await client.start_notify(U(gatt.HEART_RATE_MEASUREMENT), on_hr)
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT)
            readings = [track.reading(i) for i in range(20)]
            for reading in readings:
                assert await strap.send(reading)
            await wait_for(lambda: len(received) == 20, 5)
            assert [(m.heart_rate, m.rr_ticks, m.sensor_contact) for m in received] == [
                (r.heart_rate, r.rr_ticks, r.contact) for r in readings
            ]
            # battery notification when the level changes
            battery: list[int] = []
            await client.start_notify(
                U(gatt.BATTERY_LEVEL), lambda _c, d: battery.append(gatt.decode_battery_level(d).percent)
            )
            await strap.wait_subscribed(gatt.BATTERY_LEVEL)
            await strap.set_battery(42)
            await wait_for(lambda: battery == [42], 5)
            # out of range: the link drops, bleak's disconnected_callback fires
            await strap.go_out_of_range()
            await asyncio.wait_for(disconnected.wait(), 5)
            assert not client.is_connected
            # not advertising while away: a scan does not find it
            assert await BleakScanner.find_device_by_address(strap.address, **scanner_of(central), timeout=0.5) is None
        await strap.come_back()
        again = await BleakScanner.find_device_by_address(strap.address, **scanner_of(central), timeout=5)
        assert again is not None
        async with BleakClient(**client_of(central), address_or_ble_device=again, timeout=5) as client:
            assert client.is_connected
        assert strap.connections_total == 2


async def test_oximeter_continuous_spot_check_features_and_racp(radio: SimRadio, central: BumbleCentral) -> None:
    track = next(t for t in simulate(_scenario()) if isinstance(t, OximeterTrack))
    assert len(track.spot_checks) >= 3
    async with PulseOximeter(track.device, radio) as plx:
        # spot-checks taken while nobody is connected are stored
        for spot in track.spot_checks[:3]:
            assert not await plx.spot_check(spot)
        assert len(plx.stored) == 3
        device = await BleakScanner.find_device_by_filter(
            lambda d, adv: True, timeout=5, service_uuids=[U(gatt.PULSE_OXIMETER_SERVICE)], **scanner_of(central)
        )
        assert device is not None
        async with BleakClient(**client_of(central), address_or_ble_device=device, timeout=5) as client:
            features = gatt.decode_plx_features(await client.read_gatt_char(U(gatt.PLX_FEATURES)))
            assert gatt.PlxFeatureFlags.measurement_storage_for_spot_check in features.features
            continuous: list[gatt.PlxContinuousMeasurement] = []
            spots: list[gatt.PlxSpotCheckMeasurement] = []
            racp: list[gatt.RacpMessage] = []
            await client.start_notify(
                U(gatt.PLX_CONTINUOUS_MEASUREMENT),
                lambda _c, d: continuous.append(gatt.decode_plx_continuous_measurement(d)),
            )
            await client.start_notify(
                U(gatt.PLX_SPOT_CHECK_MEASUREMENT),
                lambda _c, d: spots.append(gatt.decode_plx_spot_check_measurement(d)),
            )
            await client.start_notify(
                U(gatt.RECORD_ACCESS_CONTROL_POINT), lambda _c, d: racp.append(gatt.decode_racp(d))
            )
            await plx.wait_subscribed(gatt.RECORD_ACCESS_CONTROL_POINT)
            readings = [track.reading(i) for i in range(10)]
            for reading in readings:
                assert await plx.send(reading)
            await wait_for(lambda: len(continuous) == 10, 5)
            for reading, value in zip(readings, continuous, strict=True):
                assert value.spo2.value == reading.spo2
                assert value.pulse_rate.value == reading.pulse_rate
                assert value.measurement_status == reading.measurement_status
                assert value.device_sensor_status == reading.device_sensor_status
            # a live spot-check is an indication with the device's timestamp
            assert await plx.spot_check(track.spot_checks[3])
            await wait_for(lambda: len(spots) == 1, 5)
            assert spots[0].timestamp is not None
            assert spots[0].spo2.value == track.spot_checks[3].spo2
            # RACP: how many stored, then all of them, then delete
            await client.write_gatt_char(
                U(gatt.RECORD_ACCESS_CONTROL_POINT),
                gatt.encode_racp(gatt.RacpRequest.report_number_of_all_records()),
                True,
            )
            await wait_for(lambda: gatt.RacpNumberOfRecords(3) in racp, 5)
            await client.write_gatt_char(
                U(gatt.RECORD_ACCESS_CONTROL_POINT), gatt.encode_racp(gatt.RacpRequest.report_all_records()), True
            )
            done = gatt.RacpResponse(gatt.RacpOpcode.report_stored_records, gatt.RacpResponseCode.success)
            await wait_for(lambda: done in racp, 5)
            stored = spots[1:]
            assert [s.spo2.value for s in stored] == [r.spo2 for r in track.spot_checks[:3]]
            assert all(
                s.measurement_status is not None
                and gatt.MeasurementStatus.data_from_measurement_storage in s.measurement_status
                for s in stored
            )
            await client.write_gatt_char(
                U(gatt.RECORD_ACCESS_CONTROL_POINT), gatt.encode_racp(gatt.RacpRequest.delete_all_records()), True
            )
            await wait_for(lambda: plx.stored == [], 5)


async def test_busy_device_refuses_and_absent_device_times_out(radio: SimRadio, central: BumbleCentral) -> None:
    track = next(t for t in simulate(_scenario()) if isinstance(t, StrapTrack))
    async with HeartRateStrap(track.device, radio) as strap:
        await strap.set_busy(True)
        device = await BleakScanner.find_device_by_address(strap.address, **scanner_of(central), timeout=5)
        assert device is not None
        with pytest.raises(BleakError):
            async with BleakClient(**client_of(central), address_or_ble_device=device, timeout=5):
                pass
        assert strap.refused_total >= 1
        assert not strap.is_connected
        await strap.set_busy(False)
        async with BleakClient(**client_of(central), address_or_ble_device=device, timeout=5) as client:
            assert client.is_connected
    with pytest.raises(TimeoutError):
        async with BleakClient(**client_of(central), address_or_ble_device="C0:11:22:33:44:55", timeout=0.5):
            pass


async def test_malformed_bytes_reach_the_gateway_raw(radio: SimRadio, central: BumbleCentral) -> None:
    track = next(t for t in simulate(_scenario()) if isinstance(t, StrapTrack))
    async with HeartRateStrap(track.device, radio) as strap:
        device = await BleakScanner.find_device_by_address(strap.address, **scanner_of(central), timeout=5)
        assert device is not None
        raw: list[bytes] = []
        async with BleakClient(**client_of(central), address_or_ble_device=device, timeout=5) as client:
            await client.start_notify(U(gatt.HEART_RATE_MEASUREMENT), lambda _c, d: raw.append(bytes(d)))
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT)
            await strap.send_raw(gatt.HEART_RATE_MEASUREMENT, b"\x10\x48\x00")  # RR flag with an odd byte
            await wait_for(lambda: len(raw) == 1, 5)
        assert raw == [b"\x10\x48\x00"]
        with pytest.raises(GattDecodeError):
            gatt.decode_heart_rate_measurement(raw[0])


async def test_explicit_backend_without_patching(radio: SimRadio) -> None:
    track = next(t for t in simulate(_scenario()) if isinstance(t, StrapTrack))
    async with BumbleCentral(radio) as central, HeartRateStrap(track.device, radio) as strap:
        device = await BleakScanner.find_device_by_address(
            strap.address,
            timeout=5,
            backend=BumbleBleakScanner,
            bumble_central=central,  # type: ignore[call-arg]
        )
        assert device is not None
        async with BleakClient(device, backend=BumbleBleakClient, bumble_central=central, timeout=5) as client:
            assert client.backend_id == "BumbleBleakClient"
            assert gatt.decode_battery_level(await client.read_gatt_char(U(gatt.BATTERY_LEVEL))).percent == 95


def _tiny() -> Scenario:
    raw: dict[str, Any] = {
        "name": "tiny",
        "seed": 3,
        "duration": 40,
        "patients": [
            {
                "id": f"p-{i}",
                "devices": [
                    {"kind": "heart_rate_strap", "id": f"hrs-{i}"},
                    {"kind": "pulse_oximeter", "id": f"plx-{i}"},
                ],
                "events": [{"kind": "out_of_range", "at": 20, "duration": 5}],
            }
            for i in range(3)
        ],
    }
    return scenario_from_dict(raw)


async def test_live_scenario_many_devices_time_compressed(radio: SimRadio, central: BumbleCentral) -> None:
    """Six devices in one process at 10x: what bleak receives is what the model yields; drops and reconnects."""
    go = asyncio.Event()
    async with running_scenario(_tiny(), radio, speed=10.0, go=go, advertising_interval_ms=20) as live:
        clients: dict[str, BleakClient] = {}
        got: dict[str, list[bytes]] = {did: [] for did in live.devices}
        drops: dict[str, int] = dict.fromkeys(live.devices, 0)

        async def attach(did: str) -> None:
            dev = live.devices[did]
            uuid = gatt.HEART_RATE_MEASUREMENT if isinstance(dev, HeartRateStrap) else gatt.PLX_CONTINUOUS_MEASUREMENT

            def lost(_c: BleakClient, did: str = did) -> None:
                drops[did] += 1

            client = BleakClient(
                **client_of(central), address_or_ble_device=dev.address, disconnected_callback=lost, timeout=5
            )
            await client.connect()
            await client.start_notify(U(uuid), lambda _c, d: got[did].append(bytes(d)))
            clients[did] = client

        for did in live.devices:
            await attach(did)
        go.set()
        await wait_for(lambda: all(n == 1 for n in drops.values()), 15, what="out-of-range drops")
        await wait_for(lambda: all(d.is_advertising for d in live.devices.values()), 15, what="back in range")
        for did in live.devices:
            await attach(did)
        await asyncio.wait_for(live.done.wait(), 15)
        for track in live.tracks:
            did = track.device.id
            expected_indices = [i for i in range(track.seconds) if track.connected[i]]
            values: list[float | None]
            expected: list[float | None]
            if isinstance(track, StrapTrack):
                values = [gatt.decode_heart_rate_measurement(b).heart_rate for b in got[did]]
                expected = [track.reading(i).heart_rate for i in expected_indices]
            else:
                assert isinstance(track, OximeterTrack)
                values = [gatt.decode_plx_continuous_measurement(b).spo2.value for b in got[did]]
                expected = [track.reading(i).spo2 for i in expected_indices]
            # everything before the drop arrives in order; after reconnecting, a tail of the same stream
            before = int(track.connected.argmin())
            assert values[:before] == expected[:before]
            assert values[before:] == expected[len(expected) - (len(values) - before) :]
            assert len(values) > before + 5
        for client in clients.values():
            await client.disconnect()


async def test_tcp_hci_transport(radio: SimRadio) -> None:
    """The link's devices seen by a central in 'another process': over a TCP HCI transport."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    track = next(t for t in simulate(_scenario()) if isinstance(t, StrapTrack))
    async with (
        radio.expose(f"tcp-server:127.0.0.1:{port}"),
        HeartRateStrap(track.device, radio) as strap,
        BumbleCentral.over_transport(f"tcp-client:127.0.0.1:{port}") as central,
    ):
        device = await BleakScanner.find_device_by_address(strap.address, **scanner_of(central), timeout=5)
        assert device is not None
        async with BleakClient(**client_of(central), address_or_ble_device=device, timeout=5) as client:
            assert gatt.decode_battery_level(await client.read_gatt_char(U(gatt.BATTERY_LEVEL))).percent == 95
