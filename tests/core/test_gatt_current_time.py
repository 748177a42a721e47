"""Current Time (0x2A2B): what a gateway writes to set a device's clock."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt.current_time import EXTERNAL_REFERENCE, CurrentTime, decode_current_time, encode_current_time


def test_example_and_of() -> None:
    data = bytes.fromhex("e807050f0c1e00038002")
    value = decode_current_time(data)
    assert value == CurrentTime(datetime(2024, 5, 15, 12, 30), 3, 128, EXTERNAL_REFERENCE)
    assert encode_current_time(value) == data
    assert CurrentTime.of(datetime(2024, 5, 15, 12, 30, 0, 500_000)) == value


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("e807050f0c1e000300", "truncated"),
        ("e807050f0c1e00080002", "day of week"),
        ("e807050f0c1e00030010", "reserved"),
    ],
)
def test_malformed(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=problem):
        decode_current_time(bytes.fromhex(hex_))


def test_encode_errors() -> None:
    with pytest.raises(GattEncodeError):
        encode_current_time(CurrentTime(datetime(2024, 1, 1), 9))


@given(
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda ts: ts.replace(microsecond=0)
    ),
    st.integers(0, 7),
    st.integers(0, 255),
    st.integers(0, 15),
)
def test_round_trip(ts: datetime, day: int, fractions: int, reason: int) -> None:
    value = CurrentTime(ts, day, fractions, reason)
    assert decode_current_time(encode_current_time(value)) == value
