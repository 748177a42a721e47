"""The helpers the flags-led GATT codecs share: layouts per flags value, the checked unpack, non-negative SFLOATs."""

from __future__ import annotations

import struct

import pytest

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import AbsentReason, MedFloat
from wardwatch.core.gatt._common import DATE_TIME_FORMAT, flag_layouts, unpack_flagged
from wardwatch.core.gatt.ieee11073 import encode_sfloat_non_negative, sfloat_non_negative, sfloat_to_raw

NAME = "Test Measurement (0xFFFF)"
LAYOUTS = flag_layouts("H", ((0x01, DATE_TIME_FORMAT), (0x02, "B")), 0x04)


def test_flag_layouts_append_the_optional_fields_in_wire_order() -> None:
    assert [layout.format for layout in LAYOUTS] == ["<H", "<HHBBBBB", "<HB", "<HHBBBBBB"]
    assert [layout.size for layout in LAYOUTS] == [2, 9, 3, 10]


def test_unpack_flagged_returns_the_flags_and_the_fields_they_select() -> None:
    data = bytes((0x02,)) + struct.pack("<HB", 0x1234, 7)
    assert unpack_flagged(data, NAME, LAYOUTS, reserved=0xFC, reserved_bits="2-7", minimum="flags and a u16") == (
        0x02,
        (0x1234, 7),
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty: needs at least flags and a u16"),
        (b"\x04\x00\x00", "reserved flag bits 2-7 set (flags=0x04)"),
        (b"\x02\x00\x00", "truncated: flags 0x02 needs 4 bytes, got 3"),
        (b"\x00\x00\x00\x00", "1 trailing byte(s): flags 0x00 is 3 bytes, got 4"),
    ],
)
def test_unpack_flagged_says_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(GattDecodeError) as caught:
        unpack_flagged(data, NAME, LAYOUTS, reserved=0xFC, reserved_bits="2-7", minimum="flags and a u16")
    assert caught.value.characteristic == NAME
    assert caught.value.problem == problem
    assert caught.value.data == data


def test_unpack_flagged_picks_the_layout_by_the_masked_flags() -> None:
    data = bytes((0x80 | 0x02,)) + struct.pack("<HB", 1, 2)  # bit 7 is a flag with no field of its own
    flags, fields = unpack_flagged(
        data, NAME, LAYOUTS, reserved=0x7C, reserved_bits="2-6", minimum="flags and a u16", layout_mask=0x03
    )
    assert (flags, fields) == (0x82, (1, 2))


def test_non_negative_sfloat_round_trips_and_allows_special_values() -> None:
    for value in (MedFloat(0, 0), MedFloat(1205, -1), MedFloat.absent(AbsentReason.nan)):
        raw = struct.unpack("<H", encode_sfloat_non_negative(value, "pulse rate"))[0]
        assert sfloat_non_negative(raw, "pulse rate", NAME, b"") == value


def test_non_negative_sfloat_refuses_a_negative_value_both_ways() -> None:
    negative = MedFloat(-5, 0)
    with pytest.raises(GattEncodeError, match="pulse rate -5 is negative"):
        encode_sfloat_non_negative(negative, "pulse rate")
    with pytest.raises(GattDecodeError, match="pulse rate -5 is negative"):
        sfloat_non_negative(sfloat_to_raw(negative), "pulse rate", NAME, b"\x00")
