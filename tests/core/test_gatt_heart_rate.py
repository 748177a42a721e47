"""Heart Rate Measurement (0x2A37) and Body Sensor Location (0x2A38)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    BodySensorLocation,
    HeartRateMeasurement,
    decode_body_sensor_location,
    decode_heart_rate_measurement,
    encode_body_sensor_location,
    encode_heart_rate_measurement,
    rr_ticks_from_seconds,
)


def test_reference_example() -> None:
    m = decode_heart_rate_measurement(bytes.fromhex("1e46640033036603"))
    assert m.heart_rate == 70
    assert m.sensor_contact is True
    assert m.energy_expended == 100
    assert m.rr_ticks == (0x0333, 0x0366)
    assert m.rr_intervals == pytest.approx((0.7998, 0.8496), abs=1e-4)
    assert m.wide_heart_rate is False
    assert encode_heart_rate_measurement(m) == bytes.fromhex("1e46640033036603")


@pytest.mark.parametrize(
    ("hex_", "expected"),
    [
        ("0048", HeartRateMeasurement(72)),
        ("0648", HeartRateMeasurement(72, sensor_contact=True)),
        ("0448", HeartRateMeasurement(72, sensor_contact=False)),
        ("0248", HeartRateMeasurement(72, sensor_contact=None)),  # detected without supported
        ("014801", HeartRateMeasurement(328, wide_heart_rate=True)),
        ("014800", HeartRateMeasurement(72, wide_heart_rate=True)),
        ("0000", HeartRateMeasurement(0)),  # 0 accepted: sensors send it without a reading
        ("103c1c04", HeartRateMeasurement(60, rr_ticks=(1052,))),
        ("103c", HeartRateMeasurement(60)),  # RR flag with no intervals
        ("0848ffff", HeartRateMeasurement(72, energy_expended=65535)),
        ("11b4001c041c041c041c041c041c041c04", HeartRateMeasurement(180, rr_ticks=(1052,) * 7, wide_heart_rate=True)),
    ],
)
def test_recorded(hex_: str, expected: HeartRateMeasurement) -> None:
    assert decode_heart_rate_measurement(bytes.fromhex(hex_)) == expected


def test_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex("1e46640033036603")
    expected = decode_heart_rate_measurement(raw)
    assert decode_heart_rate_measurement(bytearray(raw)) == expected
    assert decode_heart_rate_measurement(memoryview(raw)) == expected


def test_many_rr_intervals_beyond_precompiled_layouts() -> None:
    data = bytes.fromhex("1048") + bytes.fromhex("0004") * 40
    assert decode_heart_rate_measurement(data).rr_ticks == (1024,) * 40


def test_encoder_lets_caller_choose_u16() -> None:
    assert encode_heart_rate_measurement(HeartRateMeasurement(72, wide_heart_rate=True)) == bytes.fromhex("014800")
    assert encode_heart_rate_measurement(HeartRateMeasurement(72)) == bytes.fromhex("0048")
    assert encode_heart_rate_measurement(HeartRateMeasurement(300)) == bytes.fromhex("012c01")  # forced


def test_rr_seconds_helpers() -> None:
    ticks = rr_ticks_from_seconds([0.8, 1.0])
    assert ticks == (819, 1024)
    assert HeartRateMeasurement(60, rr_ticks=ticks).rr_intervals == (819 / 1024, 1.0)


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "truncated: needs at least 2 bytes"),
        ("00", "truncated: needs at least 2 bytes"),
        ("2048", "reserved flag bits 5-7 set (flags=0x20)"),
        ("8048", "reserved flag bits 5-7 set (flags=0x80)"),
        ("0148", "truncated: u16 heart rate needs 3 bytes, got 2"),
        ("084864", "truncated: energy expended needs 4 bytes, got 3"),
        ("104833", "RR intervals: odd number of bytes (1)"),
        ("004800", "1 trailing byte(s) after offset 2 (RR flag not set)"),
    ],
)
def test_malformed(hex_: str, problem: str) -> None:
    data = bytes.fromhex(hex_)
    with pytest.raises(GattDecodeError) as info:
        decode_heart_rate_measurement(data)
    assert problem in str(info.value)
    assert "Heart Rate Measurement (0x2A37)" in str(info.value)
    assert info.value.data == data
    assert info.value.characteristic == "Heart Rate Measurement (0x2A37)"


@pytest.mark.parametrize(
    ("m", "problem"),
    [
        (HeartRateMeasurement(70000), "heart rate 70000 is not an integer in 0..65535"),
        (HeartRateMeasurement(-1), "heart rate -1"),
        (HeartRateMeasurement(70, energy_expended=65536), "energy expended (kJ) 65536"),
        (HeartRateMeasurement(70, rr_ticks=(70000,)), "RR interval (1/1024 s ticks) 70000"),
        (HeartRateMeasurement(70.5), "heart rate 70.5"),  # type: ignore[arg-type]
    ],
)
def test_encode_errors(m: HeartRateMeasurement, problem: str) -> None:
    with pytest.raises(GattEncodeError) as info:
        encode_heart_rate_measurement(m)
    assert problem in str(info.value)


def test_encode_wrong_type() -> None:
    with pytest.raises(GattEncodeError, match="expected HeartRateMeasurement, got str"):
        encode_heart_rate_measurement("70")  # type: ignore[arg-type]


@st.composite
def measurements(draw: st.DrawFn) -> HeartRateMeasurement:
    hr = draw(st.integers(0, 0xFFFF))
    wide = draw(st.booleans()) or hr > 0xFF
    return HeartRateMeasurement(
        heart_rate=hr,
        sensor_contact=draw(st.none() | st.booleans()),
        energy_expended=draw(st.none() | st.integers(0, 0xFFFF)),
        rr_ticks=tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=20))),
        wide_heart_rate=wide,
    )


@given(measurements())
def test_round_trip(m: HeartRateMeasurement) -> None:
    data = encode_heart_rate_measurement(m)
    decoded = decode_heart_rate_measurement(data)
    assert decoded == m
    assert decoded.rr_ticks == m.rr_ticks  # raw ticks, exactly
    assert encode_heart_rate_measurement(decoded) == data


# --- Body Sensor Location ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "location"),
    [(0, "other"), (1, "chest"), (2, "wrist"), (3, "finger"), (4, "hand"), (5, "ear_lobe"), (6, "foot")],
)
def test_body_sensor_location(raw: int, location: str) -> None:
    decoded = decode_body_sensor_location(bytes((raw,)))
    assert decoded.name == location
    assert encode_body_sensor_location(decoded) == bytes((raw,))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x07", "reserved location value 7"),
        (b"\xff", "reserved location value 255"),
        (b"", "needs exactly 1 byte, got 0"),
        (b"\x01\x00", "needs exactly 1 byte, got 2"),
    ],
)
def test_body_sensor_location_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(GattDecodeError, match="Body Sensor Location") as info:
        decode_body_sensor_location(data)
    assert problem in str(info.value)


@given(st.sampled_from(list(BodySensorLocation)))
def test_body_sensor_location_round_trip(location: BodySensorLocation) -> None:
    assert decode_body_sensor_location(encode_body_sensor_location(location)) is location


def test_body_sensor_location_encode_wrong_type() -> None:
    with pytest.raises(GattEncodeError, match="expected BodySensorLocation"):
        encode_body_sensor_location(9)  # type: ignore[arg-type]
