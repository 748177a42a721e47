"""IEEE 11073 SFLOAT/FLOAT: recorded patterns, special values, float conversion, round trips."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    AbsentReason,
    MedFloat,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    float_from_raw,
    float_to_raw,
    sfloat_from_raw,
    sfloat_to_raw,
)


@pytest.mark.parametrize(
    ("raw", "mantissa", "exponent", "value"),
    [
        (0x005F, 95, 0, 95.0),
        (0x003C, 60, 0, 60.0),
        (0xF034, 52, -1, 5.2),
        (0xE0C8, 200, -2, 2.0),  # "2.00" (HL7 PHD table)
        (0x1002, 2, 1, 20.0),
        (0x0B2E, -1234, 0, -1234.0),
        (0x0000, 0, 0, 0.0),
        (0x7001, 1, 7, 1e7),
        (0x8001, 1, -8, 1e-8),
        (0x17FF, 2047, 1, 20470.0),  # special mantissa with exponent != 0 is a number
    ],
)
def test_sfloat_recorded(raw: int, mantissa: int, exponent: int, value: float) -> None:
    f = decode_sfloat(raw.to_bytes(2, "little"))
    assert (f.mantissa, f.exponent, f.absent_reason) == (mantissa, exponent, None)
    assert f.value == pytest.approx(value)
    assert not f.is_absent


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (0x07FF, AbsentReason.nan),
        (0x0800, AbsentReason.nres),
        (0x07FE, AbsentReason.positive_infinity),
        (0x0802, AbsentReason.negative_infinity),
        (0x0801, AbsentReason.reserved),
    ],
)
def test_sfloat_specials_are_absent_not_floats(raw: int, reason: AbsentReason) -> None:
    f = sfloat_from_raw(raw)
    assert f.value is None
    assert f.absent_reason is reason
    assert f.is_absent
    assert sfloat_to_raw(f) == raw
    assert sfloat_to_raw(MedFloat.absent(reason)) == raw


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (0x007FFFFF, AbsentReason.nan),
        (0x00800000, AbsentReason.nres),
        (0x007FFFFE, AbsentReason.positive_infinity),
        (0x00800002, AbsentReason.negative_infinity),
        (0x00800001, AbsentReason.reserved),
    ],
)
def test_float_specials(raw: int, reason: AbsentReason) -> None:
    f = float_from_raw(raw)
    assert f.value is None
    assert f.absent_reason is reason
    assert float_to_raw(f) == raw


@pytest.mark.parametrize(
    ("raw", "mantissa", "exponent"),
    [(0x00000002, 2, 0), (0xFF000014, 20, -1), (0xFE0000C8, 200, -2), (0x00FFFB2E, -1234, 0), (0x80000001, 1, -128)],
)
def test_float_recorded(raw: int, mantissa: int, exponent: int) -> None:
    f = decode_float(raw.to_bytes(4, "little"))
    assert (f.mantissa, f.exponent) == (mantissa, exponent)
    assert encode_float(f) == raw.to_bytes(4, "little")


@pytest.mark.parametrize(
    ("value", "decimals", "mantissa", "exponent"),
    [
        (95.0, None, 95, 0),
        (5.2, None, 52, -1),
        (100.0, None, 100, 0),
        (0.0, None, 0, 0),
        (-0.0, None, 0, 0),
        (-3.25, None, -325, -2),
        (95.0, 1, 950, -1),
        (5.25, 1, 53, -1),  # half-up
        (97.123456, 1, 971, -1),
        (1234.0, -1, 123, 1),
    ],
)
def test_from_float(value: float, decimals: int | None, mantissa: int, exponent: int) -> None:
    f = MedFloat.from_float(value, decimals)
    assert (f.mantissa, f.exponent, f.absent_reason) == (mantissa, exponent, None)


def test_from_float_non_finite() -> None:
    assert MedFloat.from_float(math.nan).absent_reason is AbsentReason.nan
    assert MedFloat.from_float(math.inf).absent_reason is AbsentReason.positive_infinity
    assert MedFloat.from_float(-math.inf).absent_reason is AbsentReason.negative_infinity


def test_encode_examples() -> None:
    assert encode_sfloat(MedFloat.from_float(95.0)) == bytes.fromhex("5f00")
    assert encode_sfloat(5.2) == bytes.fromhex("34f0")
    assert encode_sfloat(30000.0) == bytes.fromhex("2c21")  # 300 e2: trailing zeros folded into exponent
    assert encode_sfloat(MedFloat(0, -20)) == bytes.fromhex("0080")  # zero clamps its exponent
    assert encode_float(5.2) == bytes.fromhex("340000ff")


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(GattEncodeError, match="more digits than SFLOAT holds"):
        encode_sfloat(0.1 + 0.2)
    with pytest.raises(GattEncodeError, match="more digits than SFLOAT holds"):
        encode_sfloat(MedFloat(2047, 1))  # would look like NaN to mantissa-only decoders
    with pytest.raises(GattEncodeError, match="out of SFLOAT range"):
        encode_sfloat(1e20)
    with pytest.raises(GattEncodeError, match="out of SFLOAT range"):
        encode_sfloat(MedFloat(1, -9))
    with pytest.raises(GattEncodeError, match="more digits than FLOAT holds"):
        encode_float(MedFloat(8_388_606, 0))
    with pytest.raises(GattEncodeError, match="must be integers"):
        encode_sfloat(MedFloat(1.5, 0))  # type: ignore[arg-type]
    with pytest.raises(GattEncodeError, match="expected MedFloat or float"):
        encode_sfloat("5.2")  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x00\x00"])
def test_sfloat_wrong_length(data: bytes) -> None:
    with pytest.raises(GattDecodeError, match="needs exactly 2 bytes"):
        decode_sfloat(data)


def test_float_wrong_length() -> None:
    with pytest.raises(GattDecodeError, match="needs exactly 4 bytes, got 3"):
        decode_float(b"\x00\x00\x00")


def test_str() -> None:
    assert str(MedFloat(52, -1)) == "5.2"
    assert str(MedFloat(3, 2)) == "300"
    assert str(MedFloat.absent(AbsentReason.nres)) == "nres"


_reasons = st.sampled_from(list(AbsentReason)).map(MedFloat.absent)
sfloats = st.one_of(st.builds(MedFloat, st.integers(-2045, 2045), st.integers(-8, 7)), _reasons)
floats32 = st.one_of(st.builds(MedFloat, st.integers(-8_388_605, 8_388_605), st.integers(-128, 127)), _reasons)


@given(sfloats)
def test_sfloat_round_trip(f: MedFloat) -> None:
    assert decode_sfloat(encode_sfloat(f)) == f


@given(floats32)
def test_float_round_trip(f: MedFloat) -> None:
    assert decode_float(encode_float(f)) == f


@given(st.integers(0, 0xFFFF))
def test_every_sfloat_pattern_decodes_and_value_survives_reencoding(raw: int) -> None:
    f = sfloat_from_raw(raw)
    if f.absent_reason is not None:
        assert sfloat_to_raw(f) == raw
    elif abs(f.mantissa) <= 2045:
        assert sfloat_from_raw(sfloat_to_raw(f)).value == f.value


@given(st.integers(-2045, 2045), st.integers(0, 3))
def test_from_float_is_exact_to_requested_precision(mantissa: int, decimals: int) -> None:
    x = mantissa / 10**decimals
    f = MedFloat.from_float(x, decimals)
    assert (f.mantissa, f.exponent) == (mantissa, -decimals)
    shortest = MedFloat.from_float(x)
    assert shortest.value == x
    assert decode_sfloat(encode_sfloat(shortest)).value == x
