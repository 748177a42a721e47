"""The gateway decoder on the profile table: blood pressure and thermometer readings, shared device clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from wardwatch.core.gatt import MedFloat
from wardwatch.core.gatt.blood_pressure import (
    BloodPressureMeasurement,
    BloodPressureStatus,
    PressureUnit,
    PulseRateRange,
    encode_blood_pressure_measurement,
)
from wardwatch.core.gatt.thermometer import (
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
    encode_temperature_measurement,
    encode_temperature_type,
)
from wardwatch.core.profiles import PROFILES, SIGNAL_ROLES, profile_for_role
from wardwatch.core.schema import UNITS, VALID_RANGES, DeviceRole, Quality, Signal, Vitals, decode
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder

CUFF = DeviceBinding(id="bp-1", patient="p-1", role=DeviceRole.BLOOD_PRESSURE_CUFF, name="Cuff 1")
THERMO = DeviceBinding(id="th-1", patient="p-1", role=DeviceRole.THERMOMETER, name="Thermo 1")
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[DurableQueue]:
    async with DurableQueue(tmp_path / "q.db") as q:
        yield q


async def queued(q: DurableQueue) -> list[Vitals]:
    await q.flush()
    out = []
    for m in await q.read_after(0, 10_000):
        message = decode(m.payload)
        assert isinstance(message, Vitals)
        out.append(message)
    return out


def decoder_for(q: DurableQueue, binding: DeviceBinding) -> DeviceDecoder:
    return DeviceDecoder(binding, Recorder(q, gateway="gw-01", ward="ward-a"), device_zone=UTC)


def test_every_profile_signal_has_a_unit_a_valid_range_and_one_role() -> None:
    for profile in PROFILES:
        for signal in profile.signals:
            assert signal in UNITS
            assert signal in VALID_RANGES
            assert SIGNAL_ROLES[signal] == profile.role
        assert profile_for_role(profile.role) is profile
    assert len({p.service for p in PROFILES}) == len(PROFILES)


async def test_blood_pressure_with_device_time_and_movement_flag(queue: DurableQueue) -> None:
    taken = datetime(2025, 12, 31, 22, 0, 0)  # stored on the cuff while the gateway was down
    m = BloodPressureMeasurement(
        MedFloat(88),
        MedFloat(52),
        MedFloat(64),
        timestamp=taken,
        pulse_rate=MedFloat(98),
        status=BloodPressureStatus.body_movement,
        pulse_rate_range=PulseRateRange.within_range,
    )
    decoder = decoder_for(queue, CUFF)
    assert decoder.handle(0x2A35, encode_blood_pressure_measurement(m), NOW_MS)
    systolic, diastolic, mean = await queued(queue)
    assert [v.signal for v in (systolic, diastolic, mean)] == [
        Signal.SYSTOLIC_BP,
        Signal.DIASTOLIC_BP,
        Signal.MEAN_ARTERIAL_PRESSURE,
    ]
    assert [v.samples[0].v for v in (systolic, diastolic, mean)] == [88.0, 52.0, 64.0]
    device_ms = int(taken.replace(tzinfo=UTC).timestamp() * 1000)
    assert systolic.samples[0].t == device_ms
    assert systolic.samples[0].q == (Quality.DEVICE_CLOCK, Quality.BODY_MOVEMENT)


async def test_blood_pressure_in_kpa_is_stored_in_mmhg(queue: DurableQueue) -> None:
    m = BloodPressureMeasurement(MedFloat(160, -1), MedFloat(107, -1), MedFloat(125, -1), unit=PressureUnit.kpa)
    decoder_for(queue, CUFF).handle(0x2A35, encode_blood_pressure_measurement(m), NOW_MS)
    systolic, diastolic, _mean = await queued(queue)
    assert systolic.samples[0].v == 120.0
    assert diastolic.samples[0].v == 80.3
    assert systolic.samples[0].t == NOW_MS


async def test_temperature_in_fahrenheit_with_an_unset_clock(queue: DurableQueue) -> None:
    m = TemperatureMeasurement(MedFloat(1010, -1), TemperatureUnit.fahrenheit, datetime(2000, 1, 1, 0, 5))
    decoder = decoder_for(queue, THERMO)
    assert decoder.handle(0x2A1C, encode_temperature_measurement(m), NOW_MS)
    (temperature,) = await queued(queue)
    assert temperature.signal == Signal.BODY_TEMPERATURE
    assert temperature.samples[0].v == 38.33
    assert (temperature.samples[0].t, temperature.samples[0].q) == (NOW_MS, (Quality.DEVICE_CLOCK_UNSET,))


async def test_read_once_values_are_kept_not_sampled(queue: DurableQueue) -> None:
    decoder = decoder_for(queue, THERMO)
    assert decoder.handle(0x2A1D, encode_temperature_type(TemperatureType.armpit), NOW_MS)
    assert decoder.values[0x2A1D] == TemperatureType.armpit
    assert await queued(queue) == []


async def test_implausible_temperature_is_malformed_not_queued(queue: DurableQueue) -> None:
    decoder = decoder_for(queue, THERMO)
    assert not decoder.handle(0x2A1C, encode_temperature_measurement(TemperatureMeasurement(MedFloat(95))), NOW_MS)
    assert not decoder.handle(0x2AFF, b"\x00", NOW_MS)
    assert decoder.malformed == 2
    assert await queued(queue) == []
