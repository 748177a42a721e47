"""Pulse Oximeter: PLX Continuous (0x2A5F), Spot-Check (0x2A5E), Features (0x2A60)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    AbsentReason,
    DeviceSensorStatus,
    MeasurementStatus,
    MedFloat,
    PlxContinuousMeasurement,
    PlxFeatureFlags,
    PlxFeatures,
    PlxSpotCheckMeasurement,
    decode_plx_continuous_measurement,
    decode_plx_features,
    decode_plx_spot_check_measurement,
    encode_plx_continuous_measurement,
    encode_plx_features,
    encode_plx_spot_check_measurement,
    flag_names,
)

F = MedFloat


def test_status_bit_positions() -> None:
    """Positions as in Infineon/bless cy_ble_plxs.h (checked via the code search)."""
    assert MeasurementStatus.measurement_ongoing == 1 << 5
    assert MeasurementStatus.fully_qualified_data == 1 << 8
    assert MeasurementStatus.questionable_measurement_detected == 1 << 14
    assert MeasurementStatus.invalid_measurement_detected == 1 << 15
    assert DeviceSensorStatus.extended_display_update_ongoing == 1 << 0
    assert DeviceSensorStatus.low_perfusion_detected == 1 << 5
    assert DeviceSensorStatus.sensor_interference_detected == 1 << 10
    assert DeviceSensorStatus.sensor_unconnected_to_user == 1 << 11
    assert DeviceSensorStatus.sensor_disconnected == 1 << 15
    assert PlxFeatureFlags.multiple_bonds == 1 << 7
    assert len(MeasurementStatus) == 11
    assert len(DeviceSensorStatus) == 16


# --- Continuous ----------------------------------------------------------------------------------


def test_continuous_reference_example() -> None:
    m = decode_plx_continuous_measurement(bytes.fromhex("105f003c0034f0"))
    assert m == PlxContinuousMeasurement(F(95, 0), F(60, 0), pulse_amplitude_index=F(52, -1))
    assert m.spo2.value == 95.0
    assert m.pulse_rate.value == 60.0
    assert m.pulse_amplitude_index is not None
    assert m.pulse_amplitude_index.value == pytest.approx(5.2)
    assert encode_plx_continuous_measurement(m) == bytes.fromhex("105f003c0034f0")


def test_continuous_with_status_fields() -> None:
    data = bytes.fromhex("1c61004800800000080034f0")
    m = decode_plx_continuous_measurement(data)
    assert m.spo2 == F(97, 0)
    assert m.pulse_rate == F(72, 0)
    assert m.measurement_status == MeasurementStatus.validated_data
    assert m.device_sensor_status == DeviceSensorStatus.sensor_unconnected_to_user
    assert flag_names(m.device_sensor_status) == ["sensor_unconnected_to_user"]
    assert m.spo2_fast is None
    assert encode_plx_continuous_measurement(m) == data


def test_continuous_all_fields() -> None:
    data = bytes.fromhex("1f6100480060004a006200460000400300000a00")
    m = decode_plx_continuous_measurement(data)
    assert (m.spo2_fast, m.pulse_rate_fast, m.spo2_slow, m.pulse_rate_slow) == (F(96), F(74), F(98), F(70))
    assert m.measurement_status == MeasurementStatus.questionable_measurement_detected
    assert m.device_sensor_status == (
        DeviceSensorStatus.extended_display_update_ongoing | DeviceSensorStatus.equipment_malfunction_detected
    )
    assert m.pulse_amplitude_index == F(10)
    assert encode_plx_continuous_measurement(m) == data


def test_continuous_nan_spo2_is_absent() -> None:
    m = decode_plx_continuous_measurement(bytes.fromhex("00ff073c00"))
    assert m.spo2.value is None
    assert m.spo2.absent_reason is AbsentReason.nan
    assert m.pulse_rate.value == 60.0


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "empty"),
        ("205f003c00", "reserved flag bits 5-7 set (flags=0x20)"),
        ("e05f003c00", "reserved flag bits 5-7 set (flags=0xe0)"),
        ("005f003c", "truncated: flags 0x00 needs 5 bytes, got 4"),
        ("105f003c00", "truncated: flags 0x10 needs 7 bytes, got 5"),
        ("005f003c0000", "1 trailing byte(s): flags 0x00 is 5 bytes, got 6"),
        ("0065003c00", "SpO2 101 % outside 0..100"),
        ("00ff0f3c00", "SpO2 -1 % outside 0..100"),
        ("005f00ff0f", "pulse rate -1 is negative"),
        ("015f003c0065003c00", "SpO2 fast 101 % outside 0..100"),
        ("025f003c005f00ff0f", "pulse rate slow -1 is negative"),
        ("105f003c00ff0f", "pulse amplitude index -1 is negative"),
        ("045f003c000100", "measurement status: reserved bits 0-4 set (0x0001)"),
        ("085f003c00000001", "device and sensor status: reserved bits 16-23 set (0x010000)"),
    ],
)
def test_continuous_malformed(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=r"PLX Continuous Measurement \(0x2A5F\)") as info:
        decode_plx_continuous_measurement(bytes.fromhex(hex_))
    assert problem in str(info.value)


# --- Spot-check ----------------------------------------------------------------------------------


def test_spot_check_with_timestamp() -> None:
    data = bytes.fromhex("0162004b00e807050f0c1e00")
    m = decode_plx_spot_check_measurement(data)
    assert m == PlxSpotCheckMeasurement(F(98), F(75), timestamp=datetime(2024, 5, 15, 12, 30, 0))
    assert encode_plx_spot_check_measurement(m) == data


def test_spot_check_all_fields_and_clock_not_set() -> None:
    data = bytes.fromhex("1f62004b00e807021d173b3b200010000034f0")
    m = decode_plx_spot_check_measurement(data)
    assert m.timestamp == datetime(2024, 2, 29, 23, 59, 59)  # leap day
    assert m.measurement_status == MeasurementStatus.measurement_ongoing
    assert m.device_sensor_status == DeviceSensorStatus.poor_signal_detected
    assert m.pulse_amplitude_index == F(52, -1)
    assert m.device_clock_not_set is True
    assert encode_plx_spot_check_measurement(m) == data


def test_spot_check_minimal() -> None:
    m = decode_plx_spot_check_measurement(bytes.fromhex("1062000008"))
    assert m.device_clock_not_set
    assert m.pulse_rate.absent_reason is AbsentReason.nres
    assert m.timestamp is None


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "empty"),
        ("206200 4b00", "reserved flag bits 5-7 set"),
        ("01 6200 4b00 e8070d010000", "truncated: flags 0x01 needs 12 bytes, got 11"),
        ("01 6200 4b00 e8070d01000000", "invalid timestamp 2024-13-01 00:00:00: month must be in 1..12"),
        ("01 6200 4b00 e807021e000000", "invalid timestamp 2024-02-30 00:00:00: day is out of range for month"),
        ("01 6200 4b00 e707021d000000", "invalid timestamp 2023-02-29 00:00:00: day is out of range"),
        ("01 6200 4b00 e8070101180000", "invalid timestamp 2024-01-01 24:00:00: hour must be in 0..23"),
        ("01 6200 4b00 e80701010a3c00", "minute must be in 0..59"),
        ("01 6200 4b00 e80701010a003c", "second must be in 0..59"),
        ("01 6200 4b00 00000000000000", "unknown (0) year, month or day is not supported"),
        ("01 6200 4b00 e8070001000000", "unknown (0) year, month or day is not supported"),
        ("01 6200 4b00 e8030101000000", "invalid timestamp 1000-01-01 00:00:00: year outside 1582..9999"),
        ("01 6200 4b00 ffff0101000000", "year outside 1582..9999"),
        ("00 6500 4b00", "SpO2 101 % outside 0..100"),
        ("02 6200 4b00 1f00", "measurement status: reserved bits 0-4 set (0x001f)"),
        ("04 6200 4b00 0000ff", "device and sensor status: reserved bits 16-23 set"),
        ("08 6200 4b00 00f8", "pulse amplitude index -204.8 is negative"),
    ],
)
def test_spot_check_malformed(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=r"PLX Spot-Check Measurement \(0x2A5E\)") as info:
        decode_plx_spot_check_measurement(bytes.fromhex(hex_))
    assert problem in str(info.value)


def test_spot_check_encode_errors() -> None:
    aware = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(GattEncodeError, match="timestamp must be naive"):
        encode_plx_spot_check_measurement(PlxSpotCheckMeasurement(F(98), F(70), timestamp=aware))
    old = datetime(1500, 1, 1)
    with pytest.raises(GattEncodeError, match=r"year 1500 outside 1582\.\.9999"):
        encode_plx_spot_check_measurement(PlxSpotCheckMeasurement(F(98), F(70), timestamp=old))
    with pytest.raises(GattEncodeError, match=r"SpO2 101 % outside 0\.\.100"):
        encode_plx_spot_check_measurement(PlxSpotCheckMeasurement(F(101), F(70)))
    with pytest.raises(GattEncodeError, match="SpO2: expected MedFloat, got float"):
        encode_plx_spot_check_measurement(PlxSpotCheckMeasurement(98.0, F(70)))  # type: ignore[arg-type]


def test_spot_check_encode_drops_microseconds() -> None:
    ts = datetime(2024, 5, 15, 12, 30, 0, 999_999)
    decoded = decode_plx_spot_check_measurement(
        encode_plx_spot_check_measurement(PlxSpotCheckMeasurement(F(98), F(70), timestamp=ts))
    )
    assert decoded.timestamp == ts.replace(microsecond=0)


def test_continuous_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match="SpO2PR-Fast: SpO2 and pulse rate must both be given"):
        encode_plx_continuous_measurement(PlxContinuousMeasurement(F(98), F(70), spo2_fast=F(97)))
    with pytest.raises(GattEncodeError, match="pulse rate -1 is negative"):
        encode_plx_continuous_measurement(PlxContinuousMeasurement(F(98), F(-1)))
    with pytest.raises(GattEncodeError, match="reserved bits 0-4 set"):
        encode_plx_continuous_measurement(
            PlxContinuousMeasurement(F(98), F(70), measurement_status=MeasurementStatus(1))
        )
    with pytest.raises(GattEncodeError, match="reserved bits 16-23 set"):
        encode_plx_continuous_measurement(
            PlxContinuousMeasurement(F(98), F(70), device_sensor_status=DeviceSensorStatus(1 << 16))
        )
    with pytest.raises(GattEncodeError, match="more digits than SFLOAT holds"):
        encode_plx_continuous_measurement(PlxContinuousMeasurement(F.from_float(97.123456), F(70)))


# --- Features ------------------------------------------------------------------------------------


def test_features_recorded() -> None:
    data = bytes.fromhex("7f00e0ffffff00")
    f = decode_plx_features(data)
    assert f.features == PlxFeatureFlags(0x7F)
    assert f.measurement_status_support == MeasurementStatus(0xFFE0)
    assert f.device_sensor_status_support == DeviceSensorStatus(0xFFFF)
    assert encode_plx_features(f) == data
    only_flags = decode_plx_features(bytes.fromhex("f000"))
    assert only_flags == PlxFeatures(
        PlxFeatureFlags.spo2pr_fast
        | PlxFeatureFlags.spo2pr_slow
        | PlxFeatureFlags.pulse_amplitude_index
        | PlxFeatureFlags.multiple_bonds
    )
    dss_only = decode_plx_features(bytes.fromhex("0200000800"))
    assert dss_only.measurement_status_support is None
    assert dss_only.device_sensor_status_support == DeviceSensorStatus.sensor_unconnected_to_user


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "truncated: needs at least 2 bytes"),
        ("00", "truncated: needs at least 2 bytes"),
        ("0001", "reserved feature bits 8-15 set (0x0100)"),
        ("0100", "truncated: features 0x0001 needs 4 bytes, got 2"),
        ("0300e0ff", "truncated: features 0x0003 needs 7 bytes, got 4"),
        ("000000", "1 trailing byte(s)"),
        ("0100e1ff", "measurement status support: reserved bits 0-4 set (0xffe1)"),
        ("0200ffffff", "device and sensor status support: reserved bits 16-23 set (0xffffff)"),
    ],
)
def test_features_malformed(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=r"PLX Features \(0x2A60\)") as info:
        decode_plx_features(bytes.fromhex(hex_))
    assert problem in str(info.value)


def test_features_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match="measurement_status_support must be given iff"):
        encode_plx_features(PlxFeatures(PlxFeatureFlags.measurement_status_support))
    with pytest.raises(GattEncodeError, match="device_sensor_status_support must be given iff"):
        encode_plx_features(PlxFeatures(PlxFeatureFlags(0), device_sensor_status_support=DeviceSensorStatus(1)))
    with pytest.raises(GattEncodeError, match="reserved bits 8-15 set"):
        encode_plx_features(PlxFeatures(PlxFeatureFlags(0x100)))


# --- Properties ----------------------------------------------------------------------------------

_absent = st.sampled_from(list(AbsentReason)).map(MedFloat.absent)
spo2s = st.one_of(
    st.builds(MedFloat, st.integers(0, 100), st.just(0)),
    st.builds(MedFloat, st.integers(0, 1000), st.just(-1)),
    _absent,
)
non_negatives = st.one_of(st.builds(MedFloat, st.integers(0, 2045), st.integers(-8, 7)), _absent)
measurement_statuses = st.integers(0, 0x7FF).map(lambda bits: MeasurementStatus(bits << 5))
device_statuses = st.integers(0, 0xFFFF).map(DeviceSensorStatus)
timestamps = st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda ts: ts.replace(microsecond=0)
)


@st.composite
def continuous(draw: st.DrawFn) -> PlxContinuousMeasurement:
    fast = draw(st.booleans())
    slow = draw(st.booleans())
    return PlxContinuousMeasurement(
        spo2=draw(spo2s),
        pulse_rate=draw(non_negatives),
        spo2_fast=draw(spo2s) if fast else None,
        pulse_rate_fast=draw(non_negatives) if fast else None,
        spo2_slow=draw(spo2s) if slow else None,
        pulse_rate_slow=draw(non_negatives) if slow else None,
        measurement_status=draw(st.none() | measurement_statuses),
        device_sensor_status=draw(st.none() | device_statuses),
        pulse_amplitude_index=draw(st.none() | non_negatives),
    )


spot_checks = st.builds(
    PlxSpotCheckMeasurement,
    spo2=spo2s,
    pulse_rate=non_negatives,
    timestamp=st.none() | timestamps,
    measurement_status=st.none() | measurement_statuses,
    device_sensor_status=st.none() | device_statuses,
    pulse_amplitude_index=st.none() | non_negatives,
    device_clock_not_set=st.booleans(),
)


@st.composite
def features(draw: st.DrawFn) -> PlxFeatures:
    flags = PlxFeatureFlags(draw(st.integers(0, 0xFF)))
    return PlxFeatures(
        flags,
        draw(measurement_statuses) if flags & PlxFeatureFlags.measurement_status_support else None,
        draw(device_statuses) if flags & PlxFeatureFlags.device_and_sensor_status_support else None,
    )


@given(continuous())
def test_continuous_round_trip(m: PlxContinuousMeasurement) -> None:
    data = encode_plx_continuous_measurement(m)
    assert decode_plx_continuous_measurement(data) == m
    assert decode_plx_continuous_measurement(bytearray(data)) == m


@given(spot_checks)
def test_spot_check_round_trip(m: PlxSpotCheckMeasurement) -> None:
    assert decode_plx_spot_check_measurement(encode_plx_spot_check_measurement(m)) == m


@given(features())
def test_features_round_trip(f: PlxFeatures) -> None:
    assert decode_plx_features(encode_plx_features(f)) == f
