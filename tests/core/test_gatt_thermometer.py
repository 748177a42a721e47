"""Temperature Measurement (0x2A1C), Type (0x2A1D), Intermediate (0x2A1E), Measurement Interval (0x2A21)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import AbsentReason, MedFloat
from wardwatch.core.gatt.thermometer import (
    IntermediateTemperature,
    MeasurementInterval,
    TemperatureMeasurement,
    TemperatureType,
    TemperatureUnit,
    decode_intermediate_temperature,
    decode_measurement_interval,
    decode_temperature_measurement,
    decode_temperature_type,
    encode_intermediate_temperature,
    encode_measurement_interval,
    encode_temperature_measurement,
    encode_temperature_type,
)


def test_celsius_with_timestamp_and_type() -> None:
    data = bytes.fromhex("06720100ffe807050f0c1e0002")
    m = decode_temperature_measurement(data)
    assert m == TemperatureMeasurement(
        MedFloat(370, -1), TemperatureUnit.celsius, datetime(2024, 5, 15, 12, 30), TemperatureType.body
    )
    assert m.celsius == 37.0
    assert encode_temperature_measurement(m) == data


def test_fahrenheit_is_converted_on_request() -> None:
    m = decode_temperature_measurement(bytes.fromhex("01f20300ff"))  # 101.0 °F
    assert m.unit == TemperatureUnit.fahrenheit
    assert m.celsius == pytest.approx(38.333, abs=0.001)


def test_nan_temperature_is_absent() -> None:
    m = decode_temperature_measurement(bytes.fromhex("00ffff7f00"))
    assert m.temperature.absent_reason == AbsentReason.nan
    assert m.celsius is None


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "empty"),
        ("08 720100ff", "reserved flag bits"),
        ("00 720100", "truncated"),
        ("00 720100ff 00", "trailing"),
        ("04 720100ff 00", "reserved temperature type 0"),
        ("04 720100ff 0a", "reserved temperature type 10"),
        ("02 720100ff e8070d0f0c1e00", "invalid timestamp"),
    ],
)
def test_malformed_measurement(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=problem):
        decode_temperature_measurement(bytes.fromhex(hex_.replace(" ", "")))


def test_type_interval_and_intermediate() -> None:
    assert decode_temperature_type(b"\x03") == TemperatureType.ear
    with pytest.raises(GattDecodeError):
        decode_temperature_type(b"\x00")
    assert decode_measurement_interval(b"\x2c\x01") == MeasurementInterval(300)
    with pytest.raises(GattEncodeError):
        encode_measurement_interval(MeasurementInterval(70000))
    inter = decode_intermediate_temperature(bytes.fromhex("00720100ff"))
    assert inter == IntermediateTemperature(TemperatureMeasurement(MedFloat(370, -1)))


_absent = st.sampled_from(list(AbsentReason)).map(MedFloat.absent)
floats = st.one_of(st.builds(MedFloat, st.integers(-8388605, 8388605), st.integers(-128, 127)), _absent)
timestamps = st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda ts: ts.replace(microsecond=0)
)
measurements = st.builds(
    TemperatureMeasurement,
    floats,
    st.sampled_from(list(TemperatureUnit)),
    st.none() | timestamps,
    st.none() | st.sampled_from(list(TemperatureType)),
)


@given(measurements)
def test_measurement_round_trip(m: TemperatureMeasurement) -> None:
    assert decode_temperature_measurement(encode_temperature_measurement(m)) == m


@given(measurements)
def test_intermediate_round_trip(m: TemperatureMeasurement) -> None:
    value = IntermediateTemperature(m)
    assert decode_intermediate_temperature(encode_intermediate_temperature(value)) == value


@given(st.sampled_from(list(TemperatureType)), st.integers(0, 0xFFFF))
def test_type_and_interval_round_trip(kind: TemperatureType, seconds: int) -> None:
    assert decode_temperature_type(encode_temperature_type(kind)) == kind
    interval = MeasurementInterval(seconds)
    assert decode_measurement_interval(encode_measurement_interval(interval)) == interval
