"""Blood Pressure Measurement (0x2A35), Intermediate Cuff Pressure (0x2A36), Feature (0x2A49)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import AbsentReason, MedFloat
from wardwatch.core.gatt.blood_pressure import (
    BloodPressureFeature,
    BloodPressureMeasurement,
    BloodPressureStatus,
    IntermediateCuffPressure,
    PressureUnit,
    PulseRateRange,
    decode_blood_pressure_feature,
    decode_blood_pressure_measurement,
    decode_intermediate_cuff_pressure,
    encode_blood_pressure_feature,
    encode_blood_pressure_measurement,
    encode_intermediate_cuff_pressure,
)


def test_full_measurement_with_status_bits() -> None:
    data = bytes.fromhex("1e 7800 5000 5a00 e807050f0c1e00 4800 01 2300".replace(" ", ""))
    m = decode_blood_pressure_measurement(data)
    assert (m.systolic.value, m.diastolic.value, m.mean_arterial_pressure.value) == (120.0, 80.0, 90.0)
    assert m.unit == PressureUnit.mmhg
    assert m.timestamp == datetime(2024, 5, 15, 12, 30, 0)
    assert m.pulse_rate == MedFloat(72, 0)
    assert m.user_id == 1
    assert m.status == BloodPressureStatus.body_movement | BloodPressureStatus.cuff_too_loose | (
        BloodPressureStatus.improper_position
    )
    assert m.pulse_rate_range == PulseRateRange.within_range
    assert encode_blood_pressure_measurement(m) == data


def test_status_bit_positions_and_pulse_rate_range() -> None:
    base = bytes.fromhex("10 7800 5000 5a00".replace(" ", ""))
    for raw, status, pr_range in (
        (0x0001, BloodPressureStatus.body_movement, PulseRateRange.within_range),
        (0x0002, BloodPressureStatus.cuff_too_loose, PulseRateRange.within_range),
        (0x0004, BloodPressureStatus.irregular_pulse, PulseRateRange.within_range),
        (0x0008, BloodPressureStatus(0), PulseRateRange.above_upper_limit),
        (0x0010, BloodPressureStatus(0), PulseRateRange.below_lower_limit),
        (0x0020, BloodPressureStatus.improper_position, PulseRateRange.within_range),
    ):
        m = decode_blood_pressure_measurement(base + raw.to_bytes(2, "little"))
        assert (m.status, m.pulse_rate_range) == (status, pr_range)


def test_kpa_is_converted_to_mmhg_on_request() -> None:
    m = decode_blood_pressure_measurement(bytes.fromhex("01 a0f0 abf0 00f0".replace(" ", "")))
    assert m.unit == PressureUnit.kpa
    assert m.systolic == MedFloat(160, -1)
    assert m.in_mmhg(m.systolic) == pytest.approx(120.0, abs=0.1)


def test_intermediate_cuff_pressure_ignores_unused_fields() -> None:
    m = decode_intermediate_cuff_pressure(bytes.fromhex("00 9600 ff07 ff07".replace(" ", "")))
    assert m == IntermediateCuffPressure(MedFloat(150, 0))
    assert encode_intermediate_cuff_pressure(m) == bytes.fromhex("009600ff07ff07")


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "empty"),
        ("20 7800 5000 5a00", "reserved flag bits"),
        ("00 7800 5000", "truncated"),
        ("00 7800 5000 5a00 00", "trailing"),
        ("10 7800 5000 5a00 4000", "reserved bits 6-15"),
        ("10 7800 5000 5a00 1800", "reserved pulse-rate range"),
        ("00 88ff 5000 5a00", "negative"),
        ("02 7800 5000 5a00 00000100000000", "timestamp"),
    ],
)
def test_malformed_measurement(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=problem):
        decode_blood_pressure_measurement(bytes.fromhex(hex_.replace(" ", "")))


def test_feature() -> None:
    assert decode_blood_pressure_feature(b"\x03\x00") == (
        BloodPressureFeature.body_movement_detection | BloodPressureFeature.cuff_fit_detection
    )
    with pytest.raises(GattDecodeError, match="reserved"):
        decode_blood_pressure_feature(b"\x00\x02")
    with pytest.raises(GattEncodeError):
        encode_blood_pressure_feature(BloodPressureFeature(0x200))


def test_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match="both"):
        encode_blood_pressure_measurement(
            BloodPressureMeasurement(MedFloat(1), MedFloat(1), MedFloat(1), status=BloodPressureStatus(0))
        )
    with pytest.raises(GattEncodeError, match="negative"):
        encode_blood_pressure_measurement(BloodPressureMeasurement(MedFloat(-1), MedFloat(1), MedFloat(1)))


_absent = st.sampled_from(list(AbsentReason)).map(MedFloat.absent)
pressures = st.one_of(st.builds(MedFloat, st.integers(0, 2045), st.integers(-8, 7)), _absent)
timestamps = st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda ts: ts.replace(microsecond=0)
)
statuses = st.integers(0, 0x27).map(lambda raw: BloodPressureStatus(raw & 0x27))


@st.composite
def measurements(draw: st.DrawFn) -> BloodPressureMeasurement:
    has_status = draw(st.booleans())
    return BloodPressureMeasurement(
        draw(pressures),
        draw(pressures),
        draw(pressures),
        draw(st.sampled_from(list(PressureUnit))),
        draw(st.none() | timestamps),
        draw(st.none() | pressures),
        draw(st.none() | st.integers(0, 255)),
        draw(statuses) if has_status else None,
        draw(st.sampled_from(list(PulseRateRange))) if has_status else None,
    )


@given(measurements())
def test_measurement_round_trip(m: BloodPressureMeasurement) -> None:
    assert decode_blood_pressure_measurement(encode_blood_pressure_measurement(m)) == m


@given(measurements())
def test_intermediate_round_trip(m: BloodPressureMeasurement) -> None:
    icp = IntermediateCuffPressure(
        m.systolic, m.unit, m.timestamp, m.pulse_rate, m.user_id, m.status, m.pulse_rate_range
    )
    assert decode_intermediate_cuff_pressure(encode_intermediate_cuff_pressure(icp)) == icp


@given(st.integers(0, 0x1FF).map(BloodPressureFeature))
def test_feature_round_trip(f: BloodPressureFeature) -> None:
    assert decode_blood_pressure_feature(encode_blood_pressure_feature(f)) == f
