"""Notification bytes -> queued vitals: values, quality flags, timestamps, sequence numbers, malformed bytes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from wardwatch.core import gatt
from wardwatch.core.gatt.blood_pressure import BloodPressureStatus
from wardwatch.core.profiles import blood_pressure_quality
from wardwatch.core.quality import plx_quality
from wardwatch.core.schema import AbsentReason, DeviceRole, DeviceStatus, Quality, Signal, Vitals, decode
from wardwatch.gateway.config import DeviceBinding
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder

STRAP = DeviceBinding(id="hr-1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, address="AA:BB:CC:DD:EE:01")
OXI = DeviceBinding(id="ox-1", patient="p-1", role=DeviceRole.PULSE_OXIMETER, name="Oxi 1")
NOW_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


async def queued(q: DurableQueue) -> list[Vitals]:
    await q.flush()
    out = []
    for m in await q.read_after(0, 10_000):
        message = decode(m.payload)
        assert isinstance(message, Vitals)
        assert m.topic.endswith(f"/{message.patient}/{message.device}/{message.signal}")
        out.append(message)
    return out


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[DurableQueue]:
    async with DurableQueue(tmp_path / "q.db") as q:
        yield q


def decoder_for(q: DurableQueue, binding: DeviceBinding = STRAP) -> DeviceDecoder:
    return DeviceDecoder(binding, Recorder(q, gateway="gw-01", ward="ward-a"), device_zone=UTC)


async def test_heart_rate_with_rr_intervals(queue: DurableQueue) -> None:
    decoder = decoder_for(queue)
    assert decoder.handle(gatt.HEART_RATE_MEASUREMENT, bytes.fromhex("1e4664003303 6603".replace(" ", "")), NOW_MS)
    hr, energy, rr = await queued(queue)
    assert (hr.signal, hr.seq, [(s.t, s.v, s.q) for s in hr.samples]) == (Signal.HEART_RATE, 0, [(NOW_MS, 70.0, ())])
    assert (energy.signal, energy.samples[0].v) == (Signal.ENERGY_EXPENDED, 100.0)
    assert rr.signal == Signal.RR_INTERVAL
    assert [s.v for s in rr.samples] == [0x0333 / 1024, 0x0366 / 1024]
    # Beats back-dated from reception: the last at reception, the one before an interval earlier.
    assert [s.t for s in rr.samples] == [NOW_MS - round(0x0366 * 1000 / 1024), NOW_MS]
    assert [hr.seq, energy.seq, rr.seq] == [0, 1, 2]
    assert (hr.patient, hr.device, hr.gateway) == ("p-1", "hr-1", "gw-01")


async def test_rr_timestamps_strictly_increase_across_notifications(queue: DurableQueue) -> None:
    decoder = decoder_for(queue)
    data = gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(60, None, None, (1024, 1024, 0)))
    decoder.handle(gatt.HEART_RATE_MEASUREMENT, data, NOW_MS)
    decoder.handle(gatt.HEART_RATE_MEASUREMENT, data, NOW_MS + 500)  # overlaps the first notification's beats
    decoder.handle(gatt.HEART_RATE_MEASUREMENT, data, NOW_MS + 500)  # same millisecond again
    times = [s.t for v in await queued(queue) if v.signal == Signal.RR_INTERVAL for s in v.samples]
    assert times == sorted(set(times))  # strictly increasing, no duplicates
    hr_times = [v.samples[0].t for v in await queued(queue) if v.signal == Signal.HEART_RATE]
    assert hr_times == [NOW_MS, NOW_MS + 500, NOW_MS + 501]


async def test_contact_lost_is_flagged(queue: DurableQueue) -> None:
    decoder = decoder_for(queue)
    decoder.handle(gatt.HEART_RATE_MEASUREMENT, gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(0, False)))
    (hr,) = await queued(queue)
    assert hr.samples[0].q == (Quality.CONTACT_LOST,)
    assert (hr.samples[0].v, hr.samples[0].absent) == (None, AbsentReason.UNAVAILABLE)  # not "0 bpm"


async def test_plx_continuous_with_status_flags_and_absent_values(queue: DurableQueue) -> None:
    decoder = decoder_for(queue, OXI)
    m = gatt.PlxContinuousMeasurement(
        gatt.MedFloat(95),
        gatt.MedFloat.absent(gatt.AbsentReason.nan),
        measurement_status=gatt.MeasurementStatus.early_estimated_data,
        device_sensor_status=gatt.DeviceSensorStatus.low_perfusion_detected | gatt.DeviceSensorStatus.sensor_displaced,
        pulse_amplitude_index=gatt.MedFloat(52, -1),
    )
    decoder.handle(gatt.PLX_CONTINUOUS_MEASUREMENT, gatt.encode_plx_continuous_measurement(m), NOW_MS)
    spo2, pr, pi = await queued(queue)
    flags = (Quality.EARLY_ESTIMATE, Quality.LOW_PERFUSION, Quality.SENSOR_DISPLACED)
    assert (spo2.signal, spo2.samples[0].v, spo2.samples[0].q) == (Signal.SPO2, 95.0, flags)
    assert (pr.signal, pr.samples[0].v, pr.samples[0].absent) == (Signal.PULSE_RATE, None, AbsentReason.NAN)
    assert (pi.signal, pi.samples[0].v) == (Signal.PERFUSION_INDEX, 5.2)
    assert {s.samples[0].t for s in (spo2, pr, pi)} == {NOW_MS}


def test_quality_mapping_covers_every_status_bit() -> None:
    assert plx_quality(None, None) == ()
    every_ms = gatt.MeasurementStatus(0xFFE0)
    every_dss = gatt.DeviceSensorStatus(0xFFFF)
    flags = plx_quality(every_ms, every_dss)
    assert set(flags) == set(Quality) - {
        Quality.CONTACT_LOST,
        Quality.DEVICE_CLOCK,
        Quality.DEVICE_CLOCK_UNSET,
        *blood_pressure_quality(BloodPressureStatus(0x27)),
    }
    assert list(flags) == sorted(flags, key=list(Quality).index)
    assert plx_quality(gatt.MeasurementStatus.validated_data, gatt.DeviceSensorStatus.signal_analysis_ongoing) == ()
    assert plx_quality(None, gatt.DeviceSensorStatus.sensor_unconnected_to_user) == (Quality.SENSOR_UNCONNECTED,)


async def test_spot_check_uses_a_valid_device_clock(queue: DurableQueue) -> None:
    decoder = decoder_for(queue, OXI)
    taken = datetime(2025, 12, 31, 23, 0, 0)
    m = gatt.PlxSpotCheckMeasurement(gatt.MedFloat(97), gatt.MedFloat(64), timestamp=taken)
    decoder.handle(gatt.PLX_SPOT_CHECK_MEASUREMENT, gatt.encode_plx_spot_check_measurement(m), NOW_MS)
    spo2, _pr = await queued(queue)
    assert spo2.samples[0].t == int(taken.replace(tzinfo=UTC).timestamp() * 1000)
    assert spo2.samples[0].q == (Quality.DEVICE_CLOCK,)


@pytest.mark.parametrize(
    ("timestamp", "clock_not_set"),
    [
        (datetime(2000, 1, 1), False),
        (datetime(2030, 1, 1), False),
        (datetime(2025, 12, 31), True),
        (None, True),
        # a clock 10 minutes fast (issue #18: at simulated speed, every oximeter's): a future stamp would make
        # the alarm engine drop the oximeter's next 10 minutes of continuous SpO2 and pulse rate as late
        (datetime(2026, 1, 1, 0, 10, 0), False),
        (datetime(2026, 1, 1, 0, 0, 3), False),
    ],
)
async def test_spot_check_falls_back_to_gateway_time_when_the_device_clock_is_not_valid(
    queue: DurableQueue, timestamp: datetime | None, clock_not_set: bool
) -> None:
    decoder = decoder_for(queue, OXI)
    m = gatt.PlxSpotCheckMeasurement(
        gatt.MedFloat(97), gatt.MedFloat(64), timestamp=timestamp, device_clock_not_set=clock_not_set
    )
    decoder.handle(gatt.PLX_SPOT_CHECK_MEASUREMENT, gatt.encode_plx_spot_check_measurement(m), NOW_MS)
    spo2, _ = await queued(queue)
    assert spo2.samples[0].t == NOW_MS
    assert spo2.samples[0].q == (Quality.DEVICE_CLOCK_UNSET,)


async def test_spot_check_without_timestamp_uses_gateway_time_unflagged(queue: DurableQueue) -> None:
    decoder = decoder_for(queue, OXI)
    m = gatt.PlxSpotCheckMeasurement(gatt.MedFloat(97), gatt.MedFloat(64))
    decoder.handle(gatt.PLX_SPOT_CHECK_MEASUREMENT, gatt.encode_plx_spot_check_measurement(m), NOW_MS)
    spo2, _ = await queued(queue)
    assert (spo2.samples[0].t, spo2.samples[0].q) == (NOW_MS, ())


async def test_battery_is_remembered_not_queued_as_vitals(queue: DurableQueue) -> None:
    decoder = decoder_for(queue)
    decoder.handle(gatt.BATTERY_LEVEL, bytes([42]))
    assert decoder.battery == 42
    assert await queued(queue) == []


@pytest.mark.parametrize(
    ("uuid16", "data"),
    [
        (gatt.HEART_RATE_MEASUREMENT, b""),
        (gatt.HEART_RATE_MEASUREMENT, b"\x10\x46\x01"),  # odd RR bytes
        (gatt.HEART_RATE_MEASUREMENT, b"\x01\xf4\x01"),  # 500 bpm: impossible
        (gatt.PLX_CONTINUOUS_MEASUREMENT, b"\x00\x65\x00\x3c\x00"),  # SpO2 101 %
        (gatt.PLX_CONTINUOUS_MEASUREMENT, b"\xff"),
        (gatt.PLX_SPOT_CHECK_MEASUREMENT, b"\x01\x5f\x00\x3c\x00"),  # timestamp flag without timestamp
        (gatt.BATTERY_LEVEL, b"\x65"),
    ],
)
async def test_malformed_bytes_are_counted_logged_once_and_skipped(
    queue: DurableQueue, uuid16: int, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    decoder = decoder_for(queue)
    caplog.set_level(logging.WARNING)
    # A unique device per case, so that the once-a-minute log of an earlier case does not hide this one.
    decoder.binding = DeviceBinding(id=f"d-{uuid16:x}-{data.hex()}", patient="p-1", role=STRAP.role, name="x")
    for _ in range(3):
        assert decoder.handle(uuid16, data) is False
    assert decoder.malformed == 3
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1
    good = gatt.encode_heart_rate_measurement(gatt.HeartRateMeasurement(70))
    assert decoder.handle(gatt.HEART_RATE_MEASUREMENT, good)  # the session goes on
    assert [v.seq for v in await queued(queue)] == [0]


async def test_device_status_has_its_own_sequence(queue: DurableQueue) -> None:
    recorder = Recorder(queue, gateway="gw-01", ward="ward-a")
    status = DeviceStatus(
        patient="p-1", device="hr-1", gateway="gw-01", t=NOW_MS, role=STRAP.role, connected=True, battery=80
    )
    queued = [recorder.device_status(status) for _ in range(3)]
    assert [s.seq if s is not None else None for s in queued] == [0, 1, 2]
    await queue.flush()
    messages = await queue.read_after(0, 10)
    assert [m.topic for m in messages] == ["wardwatch/v1/device/ward-a/gw-01/p-1/hr-1"] * 3


async def test_with_a_kit_each_sample_goes_out_under_the_patient_bound_at_its_time(queue: DurableQueue) -> None:
    """A swap at NOW_MS (p-1 until then, p-2 from then) and nothing bound before NOW_MS - 1000 (issue 12)."""
    from wardwatch.core.registry import KitDevice, kit_from_bindings
    from wardwatch.gateway.kit import KitState

    kit = KitState("ward-a", "gw-01", Path("unused"))
    kit.kit = kit_from_bindings(
        "ward-a",
        "gw-01",
        1,
        NOW_MS,
        [
            KitDevice(id="hr-1", patient="p-1", role=STRAP.role, since=NOW_MS - 1000, until=NOW_MS, name="h"),
            KitDevice(id="hr-1", patient="p-2", role=STRAP.role, since=NOW_MS, name="h"),
        ],
    )
    recorder = Recorder(queue, gateway="gw-01", ward="ward-a")
    recorder.patient_at = kit.patient_at
    decoder = DeviceDecoder(STRAP, recorder, device_zone=UTC)  # the session's binding still says p-1
    assert decoder.handle(gatt.HEART_RATE_MEASUREMENT, bytes.fromhex("0046"), NOW_MS - 2000)  # not bound yet
    # RR intervals of one notification straddle the swap: the earlier beat is p-1's, the later p-2's
    assert decoder.handle(gatt.HEART_RATE_MEASUREMENT, bytes.fromhex("104600020002"), NOW_MS + 100)
    status = DeviceStatus(patient="p-1", device="hr-1", gateway="gw-01", t=NOW_MS + 5, role=STRAP.role, connected=True)
    assert recorder.device_status(status) is not None
    assert recorder.device_status(msgspec.structs.replace(status, t=NOW_MS - 5000)) is None
    await queue.flush()
    decoded = [decode(m.payload) for m in await queue.read_after(0, 100)]
    vitals = [(m.signal, m.patient, [s.t for s in m.samples]) for m in decoded if isinstance(m, Vitals)]
    assert vitals == [
        (Signal.HEART_RATE, "p-2", [NOW_MS + 100]),
        (Signal.RR_INTERVAL, "p-1", [NOW_MS + 100 - 500]),
        (Signal.RR_INTERVAL, "p-2", [NOW_MS + 100]),
    ]
    assert [(m.patient, m.t) for m in decoded if isinstance(m, DeviceStatus)] == [("p-2", NOW_MS + 5)]
    assert recorder.unbound == 2  # the heart rate before the binding, and the early status
